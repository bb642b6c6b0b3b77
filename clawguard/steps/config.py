from __future__ import annotations

import hashlib
import json
from typing import Any

from ..agent.state import ConfigAcceptance, Preflight
from ..archive import source_file
from ..entries import Entry
from ..errors import ArchiveError
from ..schema import ArchivePath, Field, Str
from .base import Step, StepContext, join

# Keys the gateway writes into its own openclaw.json (2026.4.x adds a token and meta at
# start): not drift unless the archive sets them itself.
_AGENT_WRITTEN = (("meta",), ("gateway", "auth", "token"))


class ConfigStep(Step):
    """openclaw.json, in the layout's hands: root-owned and read-only to the agent in
    NemoClaw's split layout (Landlock read_only), the agent's own file in the flat one.

    The agent's own validator (``openclaw config validate``) must accept it before it is
    written: its schema is strict, and a file it rejects stops the gateway (the seed's
    ``tool_policy`` lesson). Some NemoClaw images pin its hash in ``.config-hash``
    (``sha256sum`` format) and the entrypoint checks it, so when that file exists we
    rewrite it to match.
    """

    kind = "config"
    summary = "Install openclaw.json once the agent accepts it; root 0444 (split layout) or the agent's (flat)."
    params = {
        "name": Field(Str(), "Label shown in progress and reports.", example="openclaw.json"),
        "source": Field(ArchivePath(), "The file, relative to the archive.", "openclaw.json"),
    }

    def default_name(self) -> str:
        return "openclaw.json"

    def _data(self, ctx: StepContext) -> bytes:
        rel = self.values["source"]
        data = source_file(ctx.archive, rel, self.origin.key).read_bytes()
        try:
            parsed = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArchiveError(f"{rel}: not valid JSON ({exc})", file=ctx.archive, key=self.origin.key) from None
        if not isinstance(parsed, dict):
            raise ArchiveError(f"{rel}: must be a JSON object", file=ctx.archive, key=self.origin.key)
        return data

    def entries(self, ctx: StepContext) -> list[Entry]:
        data = self._data(ctx)
        path = source_file(ctx.archive, self.values["source"], self.origin.key)
        dest = join(ctx.layout.config_dir, "openclaw.json")
        digest = hashlib.sha256(data).hexdigest()
        owner, mode = ("root", 0o444) if ctx.layout.config_owner_root else (ctx.user, 0o660)
        return [
            Entry(dest, "file", mode, owner, source=path, equivalent=same_config),
            Entry(
                join(ctx.layout.config_dir, ".config-hash"),
                "file",
                mode,
                owner,
                content=f"{digest}  {dest}\n".encode(),
                if_present=True,
            ),
        ]

    def preflights(self, ctx: StepContext) -> list[Preflight]:
        if not ctx.validate_config:
            return []
        path = source_file(ctx.archive, self.values["source"], self.origin.key)
        return [ConfigAcceptance(self._data(ctx), path)]


def _without_agent_keys(config: Any, wanted: Any) -> Any:
    if not isinstance(config, dict):
        return config
    result = json.loads(json.dumps(config))
    for path in _AGENT_WRITTEN:
        if _has(wanted, path):
            continue
        parent = result
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if isinstance(parent, dict):
            parent.pop(path[-1], None)
    return result


def _has(document: Any, path: tuple[str, ...]) -> bool:
    for key in path:
        if not isinstance(document, dict) or key not in document:
            return False
        document = document[key]
    return True


def same_config(wanted: bytes, found: bytes) -> bool:
    """Equal as JSON once the keys the gateway writes itself are set aside."""
    try:
        want, have = json.loads(wanted), json.loads(found)
    except (ValueError, UnicodeDecodeError):
        return False
    return bool(_without_agent_keys(want, want) == _without_agent_keys(have, want))
