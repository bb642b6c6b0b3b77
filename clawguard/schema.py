"""A small, strict, declarative validator for the YAML config.

Every config key is declared here or in a step module's ``params``; anything else
is an error that names the file, the key path and the line. The same declarations
feed ``docs/configuration.md``'s drift test, so the reference cannot fall behind.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ._yaml import Located
from .errors import ConfigError

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class Context:
    """Where we are in the document, and what we have learned about it."""

    file: Path
    lines: dict[str, int] = field(default_factory=dict)

    def error(self, key: str, message: str, line: int | None) -> ConfigError:
        return ConfigError(message, file=self.file, key=key or "(top level)", line=line)


class Schema:
    """Base class: ``validate`` returns the plain Python value or raises ConfigError."""

    type_name = "value"

    def validate(self, node: Located, key: str, ctx: Context) -> Any:
        raise NotImplementedError


def _type_error(schema: Schema, node: Located, key: str, ctx: Context) -> ConfigError:
    got = type(node.value).__name__ if node.value is not None else "nothing"
    if isinstance(node.value, dict):
        got = "a mapping"
    elif isinstance(node.value, list):
        got = "a list"
    return ctx.error(key, f"expected {schema.type_name}, got {got}", node.line)


@dataclass
class Str(Schema):
    pattern: str | None = None
    choices: tuple[str, ...] = ()
    hint: str = ""
    type_name: str = "a string"
    #: For a template (``{sandbox}`` is replaced): the placeholders it may use. A typo such
    #: as ``{sandbx}`` would otherwise reach ssh as text.
    placeholders: tuple[str, ...] | None = None

    def validate(self, node: Located, key: str, ctx: Context) -> str:
        if not isinstance(node.value, str):
            raise _type_error(self, node, key, ctx)
        value = node.value
        if self.choices and value not in self.choices:
            raise ctx.error(key, f"{value!r} is not one of {', '.join(self.choices)}", node.line)
        if self.pattern and not re.fullmatch(self.pattern, value):
            raise ctx.error(key, f"{value!r} is not valid{': ' + self.hint if self.hint else ''}", node.line)
        if _CONTROL.search(value) and not self.pattern:
            raise ctx.error(key, "control characters are not allowed", node.line)
        if self.placeholders is not None:
            unknown = sorted({name for name in re.findall(r"\{([^{}]*)\}", value) if name not in self.placeholders})
            if unknown:
                known = ", ".join("{" + name + "}" for name in self.placeholders) or "none"
                shown = ", ".join("{" + name + "}" for name in unknown)
                raise ctx.error(key, f"unknown placeholder {shown}; the placeholders are {known}", node.line)
        return value


@dataclass
class Int(Schema):
    minimum: int | None = None
    maximum: int | None = None
    type_name: str = "an integer"
    word: str | None = None  # a word also accepted instead of a number ("auto")

    def validate(self, node: Located, key: str, ctx: Context) -> int | str:
        if self.word is not None and node.value == self.word:
            return self.word
        if isinstance(node.value, bool) or not isinstance(node.value, int):
            raise _type_error(self, node, key, ctx)
        if self.minimum is not None and node.value < self.minimum:
            raise ctx.error(key, f"must be at least {self.minimum}", node.line)
        if self.maximum is not None and node.value > self.maximum:
            raise ctx.error(key, f"must be at most {self.maximum}", node.line)
        return node.value


@dataclass
class Bool(Schema):
    type_name: str = "true or false"

    def validate(self, node: Located, key: str, ctx: Context) -> bool:
        if not isinstance(node.value, bool):
            raise _type_error(self, node, key, ctx)
        return node.value


@dataclass
class Mode(Schema):
    """A file mode, always read as octal from the text as written.

    YAML 1.1 reads ``0644`` as octal but ``644`` as decimal; users mean octal either
    way, so we ignore YAML's reading and parse the raw text.
    """

    type_name: str = 'an octal file mode such as "0644"'

    def validate(self, node: Located, key: str, ctx: Context) -> int:
        raw = node.raw if node.raw is not None else None
        if raw is None or isinstance(node.value, bool | float) or node.value is None:
            raise _type_error(self, node, key, ctx)
        text = raw.removeprefix("0o")
        if not re.fullmatch(r"[0-7]{3,4}", text):
            raise ctx.error(key, f'{raw!r} is not an octal file mode such as "0644"', node.line)
        mode = int(text, 8)
        if mode & 0o7000:
            raise ctx.error(key, f"{raw!r}: setuid, setgid and sticky bits are not allowed", node.line)
        return mode


@dataclass
class SandboxPath(Schema):
    """An absolute, normalised POSIX path inside the sandbox."""

    type_name: str = "an absolute path inside the sandbox"

    def validate(self, node: Located, key: str, ctx: Context) -> str:
        if not isinstance(node.value, str):
            raise _type_error(self, node, key, ctx)
        return check_sandbox_path(node.value, lambda msg: ctx.error(key, msg, node.line))


def check_sandbox_path(value: str, fail: Callable[[str], Exception]) -> str:
    if _CONTROL.search(value):
        raise fail(f"{value!r}: control characters are not allowed in paths")
    if not value.startswith("/"):
        raise fail(f"{value!r} must be an absolute path")
    parts = value.split("/")
    if ".." in parts or "." in parts:
        raise fail(f"{value!r} must not contain '.' or '..' components")
    normal = str(PurePosixPath(value))
    if normal != value.rstrip("/") and value != "/":
        raise fail(f"{value!r} is not normalised (did you mean {normal!r}?)")
    return normal


@dataclass
class ArchivePath(Schema):
    """A relative path inside the restore archive."""

    type_name: str = "a path relative to the archive"

    def validate(self, node: Located, key: str, ctx: Context) -> str:
        if not isinstance(node.value, str) or not node.value:
            raise _type_error(self, node, key, ctx)
        value = node.value
        if _CONTROL.search(value):
            raise ctx.error(key, f"{value!r}: control characters are not allowed in paths", node.line)
        if value.startswith("/") or ".." in value.split("/"):
            raise ctx.error(key, f"{value!r} must stay inside the archive (relative, no '..')", node.line)
        return str(PurePosixPath(value))


@dataclass
class HostPath(Schema):
    type_name: str = "a path on the host"

    def validate(self, node: Located, key: str, ctx: Context) -> Path:
        if not isinstance(node.value, str) or not node.value:
            raise _type_error(self, node, key, ctx)
        if _CONTROL.search(node.value):
            raise ctx.error(key, "control characters are not allowed in paths", node.line)
        path = Path(node.value).expanduser()
        if not path.is_absolute():
            path = (ctx.file.parent / path).resolve()
        return path


@dataclass
class Owner(Schema):
    """A user in the sandbox: a name from its /etc/passwd, a uid, or ``user:group``."""

    type_name: str = "a user name, a uid, or user:group"

    def validate(self, node: Located, key: str, ctx: Context) -> str | int:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise _type_error(self, node, key, ctx)
        if isinstance(value, int):
            if not 0 <= value < 2**31:
                raise ctx.error(key, f"uid {value} is out of range", node.line)
            return value
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?", value):
            raise ctx.error(key, f"{value!r} is not a user name, uid or user:group", node.line)
        return value


@dataclass
class Field:
    """One key: its type, default, meaning and an example, declared together (the reference
    in docs/configuration.md is generated from these, and every example is validated)."""

    schema: Schema
    doc: str
    default: Any = None
    required: bool = False
    example: str | None = None  # YAML text to copy, for keys whose default does not show one


@dataclass
class Record(Schema):
    """A mapping with a fixed set of keys. Unknown keys are errors."""

    fields: Mapping[str, Field]
    type_name: str = "a mapping"

    def validate(self, node: Located, key: str, ctx: Context) -> dict[str, Any]:
        if node.value is None:
            node = Located({}, node.line)
        if not isinstance(node.value, dict):
            raise _type_error(self, node, key, ctx)
        result: dict[str, Any] = {}
        for name, child in node.value.items():
            child_key = f"{key}.{name}" if key else name
            if name not in self.fields:
                known = ", ".join(sorted(self.fields))
                raise ctx.error(child_key, f"unknown key {name!r} (known keys: {known})", node.key_line(name))
            ctx.lines[child_key] = node.key_line(name)
            result[name] = self.fields[name].schema.validate(child, child_key, ctx)
        for name, spec in self.fields.items():
            if name not in result:
                child_key = f"{key}.{name}" if key else name
                if spec.required:
                    # The line of the mapping's own key ("my-assistant:"), not of its first child.
                    raise ctx.error(child_key, "is required", ctx.lines.get(key, node.line))
                if isinstance(spec.schema, Record):  # an absent section still gets its defaults
                    result[name] = spec.schema.validate(Located({}, node.line), child_key, ctx)
                else:
                    result[name] = spec.default
        return result


@dataclass
class MapOf(Schema):
    """A mapping from user-chosen names to values of one schema."""

    key: Str
    value: Schema
    type_name: str = "a mapping"

    def validate(self, node: Located, key: str, ctx: Context) -> dict[str, Any]:
        if node.value is None:
            return {}
        if not isinstance(node.value, dict):
            raise _type_error(self, node, key, ctx)
        result: dict[str, Any] = {}
        for name, child in node.value.items():
            child_key = f"{key}.{name}"
            self.key.validate(Located(name, node.key_line(name)), child_key, ctx)
            ctx.lines[child_key] = node.key_line(name)
            result[name] = self.value.validate(child, child_key, ctx)
        return result


@dataclass
class ListOf(Schema):
    item: Schema
    type_name: str = "a list"

    def validate(self, node: Located, key: str, ctx: Context) -> list[Any]:
        if node.value is None:
            return []
        if isinstance(node.value, str):
            # Mostly a hook written as a command line: nothing ever splits it, and no shell runs it.
            raise ctx.error(
                key,
                "expected a list, got a string: write a YAML list such as [a, b] (a string is never split)",
                node.line,
            )
        if not isinstance(node.value, list):
            raise _type_error(self, node, key, ctx)
        out = []
        for index, child in enumerate(node.value):
            child_key = f"{key}[{index}]"
            ctx.lines[child_key] = child.line
            out.append(self.item.validate(child, child_key, ctx))
        return out


@dataclass
class Tagged(Schema):
    """A mapping whose ``tag`` key picks which Record validates the rest."""

    tag: str
    variants: Mapping[str, Record]
    type_name: str = "a mapping"

    def validate(self, node: Located, key: str, ctx: Context) -> dict[str, Any]:
        if not isinstance(node.value, dict):
            raise _type_error(self, node, key, ctx)
        tag_node = node.value.get(self.tag)
        if tag_node is None:
            raise ctx.error(key, f"missing {self.tag!r} (one of {', '.join(self.variants)})", node.line)
        if tag_node.value not in self.variants:
            raise ctx.error(
                f"{key}.{self.tag}",
                f"{tag_node.value!r} is not one of {', '.join(self.variants)}",
                tag_node.line,
            )
        record = self.variants[tag_node.value]
        rest = Located({k: v for k, v in node.value.items() if k != self.tag}, node.line, key_lines=node.key_lines)
        result = record.validate(rest, key, ctx)
        result[self.tag] = tag_node.value
        return result


def walk(schema: Schema, prefix: str = "") -> list[tuple[str, Field]]:
    """Every documented key below ``schema`` as (dotted path, field), for the docs test.

    Names chosen by the user appear as ``<name>``, list items as ``[]``, and the
    variants of a tagged mapping as ``<tag>=<variant>``.
    """
    found: list[tuple[str, Field]] = []
    if isinstance(schema, Record):
        for name, spec in schema.fields.items():
            key = f"{prefix}.{name}" if prefix else name
            found.append((key, spec))
            found += walk(spec.schema, key)
    elif isinstance(schema, MapOf):
        found += walk(schema.value, f"{prefix}.<name>")
    elif isinstance(schema, ListOf):
        found += walk(schema.item, f"{prefix}[]")
    elif isinstance(schema, Tagged):
        for variant, record in schema.variants.items():
            found += walk(record, f"{prefix}({schema.tag}={variant})")
    return found
