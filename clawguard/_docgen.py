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


def example(spec: Field) -> str:
    """A value to copy: the key's own example, else its default."""
    if spec.example is not None:
        return f"`{spec.example}`"
    if isinstance(spec.schema, Record):
        return RECORD_EXAMPLE
    default = _default(spec)
    return default if default and default != "required" else ""


def render() -> str:
    rows = []
    for key, spec in walk(config_schema()):
        meaning = spec.doc.replace("|", "/")
        rows.append(f"| `{key}` | {spec.schema.type_name} | {_default(spec)} | {example(spec)} | {meaning} |")
    return HEADER + "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(render(), end="")
