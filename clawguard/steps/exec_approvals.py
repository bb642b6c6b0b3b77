from __future__ import annotations

import json
from pathlib import Path

from ..archive import source_file
from ..entries import Entry
from ..errors import ArchiveError
from ..schema import ArchivePath, Field, Mode, Str
from .base import Step, StepContext, join

_SECURITY = ("deny", "allowlist", "full")
_ASK = ("off", "on-miss", "always")


class ExecApprovalsStep(Step):
    """exec-approvals.json must exist before the gateway starts, or every tool call is
    denied with "exec denied: allowlist miss" (seed 000, what broke #2)."""

    kind = "exec_approvals"
    summary = "Install exec-approvals.json, as a symlink into the data dir or as a real file."
    restarts_gateway = True  # the gateway reads it at start; without it every exec is denied
    params = {
        "name": Field(Str(), "Label shown in progress and reports."),
        "source": Field(ArchivePath(), "The file, relative to the archive.", "exec-approvals.json"),
        "layout": Field(Str(choices=("symlink", "file")), "Overrides layout.exec_approvals for this step."),
        "mode": Field(Mode(), "Mode of the real file.", 0o644),
    }

    def default_name(self) -> str:
        return "exec-approvals"

    def entries(self, ctx: StepContext) -> list[Entry]:
        path = source_file(ctx.archive, self.values["source"], self.origin.key)
        validate(path, ctx.archive, self.values["source"], self.origin.key)
        link = join(ctx.layout.config_dir, "exec-approvals.json")
        owner = ctx.user
        if (self.values["layout"] or ctx.layout.exec_approvals) == "file":
            return [Entry(link, "file", self.values["mode"], owner, source=path)]
        real = join(ctx.layout.data_dir, "exec-approvals.json")
        return [
            Entry(real, "file", self.values["mode"], owner, source=path),
            Entry(link, "symlink", link=real),
        ]


def validate(path: Path, archive: Path, rel: str, key: str) -> None:
    """The shape openclaw's src/infra/exec-approvals.ts reads; a typo here is a denied agent."""

    def fail(message: str) -> ArchiveError:
        return ArchiveError(f"{rel}: {message}", file=archive, key=key)

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise fail(f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise fail("must be a JSON object")
    if data.get("version") != 1:
        raise fail(f"'version' must be 1, got {data.get('version')!r}")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise fail("'defaults' must be an object")
    if "security" in defaults and defaults["security"] not in _SECURITY:
        raise fail(f"defaults.security must be one of {', '.join(_SECURITY)}")
    if "ask" in defaults and defaults["ask"] not in _ASK:
        raise fail(f"defaults.ask must be one of {', '.join(_ASK)}")
    if not isinstance(data.get("agents", {}), dict):
        raise fail("'agents' must be an object")
