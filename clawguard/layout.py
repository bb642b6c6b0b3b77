"""Where things live inside a NemoClaw sandbox. Every default can be overridden.

NemoClaw has shipped two layouts. Until about 2026-05 (PR #2227) it split the
agent's home: a root-owned ``/sandbox/.openclaw`` with openclaw.json (root, 0444)
and symlinks into a writable ``/sandbox/.openclaw-data`` (*split*, the seeds'
layout). Since then ``/sandbox/.openclaw`` is one writable directory owned by the
sandbox user, openclaw.json included (*flat*). ``style: auto`` reads which one a
pod has; the other keys default to that style's paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .schema import Bool, Field, Record, SandboxPath, Str

STYLES = ("split", "flat")

LAYOUT_SCHEMA = Record(
    {
        "style": Field(
            Str(choices=("auto", *STYLES)),
            "NemoClaw's layout: split (root-owned .openclaw linking into .openclaw-data, until 2026-05), "
            "flat (one writable .openclaw), or auto: read from each pod.",
            "auto",
        ),
        "root": Field(SandboxPath(), "Every write must land under this directory.", "/sandbox"),
        "config_dir": Field(
            SandboxPath(), "OpenClaw's home, ~/.openclaw. Default: <root>/.openclaw.", example="/sandbox/.openclaw"
        ),
        "data_dir": Field(
            SandboxPath(),
            "Where the writable files go. Default: <root>/.openclaw-data (split) or the config_dir (flat).",
            example="/sandbox/.openclaw-data",
        ),
        "workspace": Field(
            SandboxPath(),
            "The agent workspace (SOUL.md). Default: <data_dir>/workspace.",
            example="/sandbox/.openclaw/workspace-bob",
        ),
        "telegram_dir": Field(
            SandboxPath(),
            "Telegram's state directory. Default: <data_dir>/telegram.",
            example="/sandbox/.openclaw/telegram",
        ),
        "exec_approvals": Field(
            Str(choices=("auto", "symlink", "file", "cli")),
            "symlink: a real file in data_dir linked from config_dir (the original NemoClaw layout, split); "
            "file: a real file in config_dir; cli: through `openclaw approvals set`, for versions that keep "
            "approvals in SQLite; auto: cli where the agent's version needs it, else symlink (split) or file (flat).",
            "auto",
        ),
        "script_links": Field(
            Bool(),
            "Link each script from config_dir too, so ~/.openclaw/<script> works. Default: on in split.",
            example="false",
        ),
    }
)


@dataclass(frozen=True)
class Layout:
    """A resolved layout: every path known (``LayoutSettings.resolve`` makes one)."""

    style: Literal["split", "flat"]
    root: str
    config_dir: str
    data_dir: str
    workspace: str
    telegram_dir: str
    exec_approvals: str
    script_links: bool

    @property
    def config_owner_root(self) -> bool:
        """openclaw.json is root's, read-only, in the split layout; the agent's own in the flat one."""
        return self.style == "split"


@dataclass(frozen=True)
class LayoutSettings:
    """The layout as configured; ``resolve`` fills in what the pod's style implies."""

    values: dict[str, Any]

    @property
    def style(self) -> str:
        return str(self.values["style"])

    @property
    def root(self) -> str:
        return str(self.values["root"])

    def split_dirs(self) -> tuple[str, str]:
        """Where a split layout would have its config and data directories (for detection)."""
        config = self.values.get("config_dir") or f"{self.root}/.openclaw"
        data = self.values.get("data_dir") or f"{self.root}/.openclaw-data"
        return str(config), str(data)

    def resolve(self, detected: str | None = None) -> Layout:
        """The layout for ``detected`` (a pod's style) unless the config pins one.
        With neither, split: the seeds' layout."""
        style = self.style if self.style != "auto" else (detected or "split")
        v, root = self.values, self.root
        config = v.get("config_dir") or f"{root}/.openclaw"
        data = v.get("data_dir") or (config if style == "flat" else f"{root}/.openclaw-data")
        links = v.get("script_links")
        return Layout(
            style="flat" if style == "flat" else "split",
            root=root,
            config_dir=config,
            data_dir=data,
            workspace=v.get("workspace") or f"{data}/workspace",
            telegram_dir=v.get("telegram_dir") or f"{data}/telegram",
            exec_approvals=v["exec_approvals"],
            script_links=(style == "split" and config != data) if links is None else bool(links),
        )
