"""Writes docs/configuration.md from the schema, so the reference cannot drift.

    python -m clawguard._docgen > docs/configuration.md

tests/unit/test_docgen.py fails when the committed file differs.
"""

from __future__ import annotations

from typing import Any

from .config import config_schema
from .schema import Field, Mode, Record, walk

HEADER = """\
# Configuration reference

Generated from the schema by `python -m clawguard._docgen`; a test fails if it is out of date.

The file is YAML: `$XDG_CONFIG_HOME/clawguard/config.yaml` by default, or `--config FILE`, or the
`CLAWGUARD_CONFIG` environment variable. Every key below is the whole contract: an unknown key, a wrong
type or a bad value is an error naming the file, the key path and the line, and clawguard exits with
status 2 before touching any sandbox. `<name>` is a sandbox name (lower-case letters, digits and `-`),
`[]` an item of a list, and `(kind=x)` the keys that apply when `kind` is `x`.

```yaml
version: 1
sandboxes:
  my-assistant:
    target:
      kind: k3s
      cluster: openshell-cluster-nemoclaw
    archive: ~/sandbox-restore
    user: sandbox
    layout:
      style: auto                  # split (until 2026-05) or flat; auto reads it from each pod
    plan:                          # optional; see docs/archive.md
      - {kind: exec_approvals}
      - {kind: chown, path: /sandbox/.openclaw-data/telegram}
```

| key | type | default | example | meaning |
|---|---|---|---|---|
"""

# Examples for keys without a default, by their last name; the rest show their default.
EXAMPLES = {
    "version": "1",
    "sandboxes": "{my-assistant: {...}}",
    "target": "{kind: k3s}",
    "archive": "~/sandbox-restore",
    "plan": "[{kind: soul}]",
    "persist": "[/sandbox/.openclaw-data/workspace/MEMORY.md]",
    "kind": "k3s",
    "name": "proxmox-skill",
    "owner": "sandbox",
    "mode": '"0644"',
    "file_mode": '"0600"',
    "dir_mode": '"0700"',
    "restart_gateway": "true",
    "dest": "/sandbox/.openclaw-data/workspace/SOUL.md",
    "source": "skills/proxmox",
    "path": "/sandbox/.openclaw-data/telegram",
    "target_path": "/sandbox/.openclaw-data/proxmox.sh",
    "links": "[/sandbox/.openclaw/proxmox.sh]",
    "layout": "file",
    "container": "openshell-my-assistant",
    "labels": "{openshell.ai/sandbox-name: my-assistant}",
    "docker_host": "unix:///run/docker.sock",
    "pod": "my-assistant",
    "on_restored": '[notify-send, "sandbox restored"]',
    "on_failed": "[/home/me/bin/page-me, clawguard]",
    "on_drift": "[logger, -t, clawguard, drift]",
    "timeout": "30",
    "ssh_options": '["ServerAliveInterval=15"]',
    "config_dir": "/sandbox/.openclaw",
    "data_dir": "/sandbox/.openclaw-data",
    "workspace": "/sandbox/.openclaw-data/workspace",
    "telegram_dir": "/sandbox/.openclaw-data/telegram",
    "script_links": "false",
    "stop": "openclaw gateway stop --force",
    "secret": "true",
    "listen": '"127.0.0.1:9464"',
}
RECORD_EXAMPLE = "(the keys below)"


def _default(spec: Field) -> str:
    if spec.required:
        return "required"
    value: Any = spec.default
    if value is None or value == {}:
        return ""
    if isinstance(spec.schema, Mode):
        return f"`{value:04o}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def example(key: str, spec: Field) -> str:
    """A value to copy: the default when there is one, else a typical value for the key."""
    last = key.rsplit(".", 1)[-1].split("(")[0].rstrip("[]")
    if last in EXAMPLES and (spec.required or spec.default in (None, {}, [])):
        return f"`{EXAMPLES[last]}`"
    if isinstance(spec.schema, Record):
        return RECORD_EXAMPLE
    default = _default(spec)
    return default if default and default != "required" else ""


def render() -> str:
    rows = []
    for key, spec in walk(config_schema()):
        meaning = spec.doc.replace("|", "/")
        rows.append(f"| `{key}` | {spec.schema.type_name} | {_default(spec)} | {example(key, spec)} | {meaning} |")
    return HEADER + "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(render(), end="")
