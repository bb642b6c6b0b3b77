"""The starter config and empty archives that ``clawguard init`` writes for the sandboxes found.

Discovery itself belongs to the targets (``clawguard.targets.discover``); this module
turns what they found into a config clawguard accepts and one archive folder per
sandbox, and never touches what is already there.
"""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

from .config import SANDBOX_NAME, parse_config
from .state import atomic_write
from .targets import DEFAULT_GATEWAY, Found

ARCHIVE_FOLDERS = ("credentials", "scripts", "skills")


def config_keys(found: list[Found], notes: list[str]) -> list[tuple[str, Found]]:
    """A config key per sandbox: its own name, unless that is taken or not a valid key."""
    keys: list[tuple[str, Found]] = []
    taken: set[str] = set()
    for item in found:
        if not re.fullmatch(SANDBOX_NAME, item.name):
            notes.append(f"{item.name} ({item.kind}): skipped: not usable as a config key (a-z, 0-9 and '-')")
            continue
        key, number = item.name, 2
        while key in taken:  # the same name in two generations
            suffix = f"-{number}"
            key = item.name[: 63 - len(suffix)].rstrip("-") + suffix
            number += 1
        taken.add(key)
        keys.append((key, item))
    return keys


def _q(value: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(value)


def render(entries: list[tuple[str, Found]], archives: Path) -> str:
    lines = [
        f"# Written by `clawguard init` on {date.today().isoformat()} from the sandboxes found on this machine.",
        "# Every key: docs/configuration.md. Validate with `clawguard check`.",
        "# Switching a sandbox between OpenShell generations means changing only its target:",
        "# kind: k3s (a pod in openshell-cluster-<gateway>), kind: docker (a plain container)",
        "# or kind: openshell (OpenShell 0.1.x, through its gateway's API).",
        "version: 1",
        "sandboxes:",
    ]
    for key, item in entries:
        where = item.instance.where
        if item.generation == 1:
            lines.append(f"  # generation 1: {where}")
        elif item.generation == 3:
            lines.append(f"  # generation 3: {where}; every command runs as the sandbox user,")
            lines.append("  # through the gateway's API (no Docker, no SSH)")
        else:
            lines.append(f"  # generation 2: {where}; NemoClaw renames it when it recreates the sandbox,")
            lines.append("  # its labels stay")
        lines += [f"  {key}:", "    target:", f"      kind: {item.kind}"]
        for name, value in item.target.items():
            if name == "kind":
                continue
            if isinstance(value, dict):
                lines.append(f"      {name}:")
                lines += [f"        {_q(k)}: {_q(v)}" for k, v in value.items()]
            else:
                lines.append(f"      {name}: {_q(value)}")
        if key != item.name:
            lines += [f"      {name}: {_q(value)}" for name, value in item.keys_if_renamed.items()]
        lines.append(f"    archive: {_q(str(archives / key))}")
        proxy_name = "{sandbox}" if key == item.name else item.name
        if item.generation == 3:
            lines.append("    # gateway: started and checked through the target (gateway.transport: auto)")
        elif item.gateway != DEFAULT_GATEWAY or key != item.name:
            lines += [
                "    gateway:",
                f"      ssh_proxy: {_q(f'openshell ssh-proxy --gateway-name {item.gateway} --name {proxy_name}')}",
            ]
            if key != item.name:
                lines.append(f"      ssh_host: {_q(f'openshell-{item.name}')}")
        else:
            proxy = f"openshell ssh-proxy --gateway-name {DEFAULT_GATEWAY} --name {{sandbox}}"
            lines.append(f"    # gateway: reached over `{proxy}` (the default)")
    return "\n".join(lines) + "\n"


def readme(key: str, item: Found) -> str:
    return f"""# Restore archive of sandbox `{key}`

Made by `clawguard init` for {item.instance.where}. Put here what you placed in the
sandbox by hand; clawguard puts it back after every restart. The layout is the plan
(docs/archive.md); empty folders restore nothing.

| here                  | lands in the sandbox                                                   |
|-----------------------|------------------------------------------------------------------------|
| `exec-approvals.json` | `/sandbox/.openclaw-data/exec-approvals.json`, linked from `/sandbox/.openclaw/` |
| `openclaw.json`       | `/sandbox/.openclaw/openclaw.json`, root, 0444                          |
| `credentials/*`       | `/sandbox/.openclaw-data/credentials/`, 0600 (keep them `chmod 600` here too) |
| `scripts/*`           | `/sandbox/.openclaw-data/<name>`, 0755, linked from `/sandbox/.openclaw/` |
| `skills/<name>/`      | `/sandbox/.openclaw-data/skills/<name>/`, the exact tree               |
| `SOUL.md`             | `/sandbox/.openclaw-data/workspace/SOUL.md`                             |

Paths are those of NemoClaw's split layout (OpenClaw before 2026.4.24); in the flat layout
every `.openclaw-data` path above is under `/sandbox/.openclaw/` itself, and from OpenClaw
2026.8.1 exec approvals go in through `openclaw approvals set`. clawguard reads each pod's
layout and version: `clawguard plan {key}` shows the paths for yours (docs/archive.md).

The telegram directory's owner is always fixed.{_GENERATION_3 if item.generation == 3 else ""} Then: `clawguard check`,
`clawguard restore {key}`.
"""


_GENERATION_3 = """ This sandbox runs on OpenShell 0.1.x, where clawguard works
only as the sandbox user, through the gateway's API: the flat layout, every file the sandbox
user's (`clawguard check` refuses a root owner, naming the step)."""


def write_archive(directory: Path, key: str, item: Found) -> list[str]:
    """Create what is missing of an empty archive; never touch what is there. Returns what was made."""
    made = []
    if not directory.exists():
        made.append(str(directory))
    directory.mkdir(parents=True, exist_ok=True)
    for folder in ARCHIVE_FOLDERS:
        path = directory / folder
        if not path.exists():
            path.mkdir(mode=0o700 if folder == "credentials" else 0o755)
            made.append(f"{folder}/")
    readme_path = directory / "README.md"
    if not readme_path.exists():
        readme_path.write_text(readme(key, item))
        made.append("README.md")
    return made


def check(text: str, path: Path) -> None:
    """Never write (or print) a config clawguard itself would refuse: raises ConfigError."""
    parse_config(text, path)


def write(path: Path, archives: Path, entries: list[tuple[str, Found]]) -> list[str]:
    """Check the config text, create what is missing of each archive, then write the config.
    Returns what was made, for the user."""
    text = render(entries, archives)
    check(text, path)
    made = []
    for key, item in entries:
        created = write_archive(archives / key, key, item)
        if created:
            made.append(f"archive {archives / key}: created {', '.join(created)}")
    atomic_write(path, text.encode(), dir_mode=0o777)  # the config dir: the usual umask applies
    return made
