"""Where things live inside a NemoClaw sandbox. Every default can be overridden."""

from __future__ import annotations

from dataclasses import dataclass

from .schema import Bool, Field, Record, SandboxPath, Str

LAYOUT_SCHEMA = Record(
    {
        "root": Field(SandboxPath(), "Every write must land under this directory.", "/sandbox"),
        "config_dir": Field(SandboxPath(), "OpenClaw's root-owned config directory.", "/sandbox/.openclaw"),
        "data_dir": Field(SandboxPath(), "The writable data directory.", "/sandbox/.openclaw-data"),
        "workspace": Field(SandboxPath(), "The agent workspace (SOUL.md).", "/sandbox/.openclaw-data/workspace"),
        "telegram_dir": Field(SandboxPath(), "Telegram's state directory.", "/sandbox/.openclaw-data/telegram"),
        "exec_approvals": Field(
            Str(choices=("symlink", "file")),
            "symlink: a real file in data_dir linked from config_dir (the seed's layout); "
            "file: a real file in config_dir (newer OpenClaw refuses symlinks).",
            "symlink",
        ),
        "script_links": Field(Bool(), "Link each script from config_dir too, so ~/.openclaw/<script> works.", True),
    }
)


@dataclass(frozen=True)
class Layout:
    root: str = "/sandbox"
    config_dir: str = "/sandbox/.openclaw"
    data_dir: str = "/sandbox/.openclaw-data"
    workspace: str = "/sandbox/.openclaw-data/workspace"
    telegram_dir: str = "/sandbox/.openclaw-data/telegram"
    exec_approvals: str = "symlink"
    script_links: bool = True
