"""YAML loading that remembers where every value came from.

Error messages must name the file, the key path and the line, so we compose the
document into nodes ourselves and keep each node's line next to its value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


@dataclass(frozen=True)
class Located:
    """A plain Python value, with the 1-based line it came from and its raw text."""

    value: Any
    line: int
    raw: str | None = None  # the scalar's text as written, e.g. "0444"
    key_lines: dict[str, int] | None = None  # for mappings: the line of each key

    def key_line(self, key: str) -> int:
        return (self.key_lines or {}).get(key, self.line)


# A loader with no stream, used only to turn scalar nodes into Python values
# with the normal YAML resolution rules (ints, bools, nulls...).
_SCALARS = yaml.SafeLoader("")


def load(path: Path) -> Located:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError("file not found", file=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=path, line=line) from None
    return loads(text, path)


def loads(text: str, path: Path) -> Located:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"YAML syntax error: {problem}", file=path, line=line) from None
    except yaml.reader.ReaderError as exc:  # control characters: the reader knows the offset, not the line
        line = text.count("\n", 0, exc.position) + 1
        what = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        raise ConfigError(f"YAML error: unacceptable character {what}: {exc.reason}", file=path, line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML error: {exc}", file=path) from None
    if node is None:
        return Located({}, 1)
    return _convert(node, path)


def _convert(node: yaml.Node, path: Path) -> Located:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Located] = {}
        keys: dict[str, Located] = {}
        for key_node, value_node in node.value:
            key = _convert(key_node, path)
            if not isinstance(key.value, str):
                raise ConfigError(f"keys must be strings, got {key.raw!r}", file=path, line=key.line)
            if key.value in result:
                raise ConfigError(
                    f"duplicate key {key.value!r} (first on line {keys[key.value].line})",
                    file=path,
                    line=key.line,
                )
            keys[key.value] = key
            result[key.value] = _convert(value_node, path)
        return Located(result, line, key_lines={k: v.line for k, v in keys.items()})
    if isinstance(node, yaml.SequenceNode):
        return Located([_convert(item, path) for item in node.value], line)
    assert isinstance(node, yaml.ScalarNode)
    try:
        value = _SCALARS.construct_object(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"bad value: {exc}", file=path, line=line) from None
    return Located(value, line, node.value)
