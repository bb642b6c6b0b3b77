"""The ``agent:`` section of a sandbox's config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..schema import Bool, Field, Record, Str

AGENT_SCHEMA = Record(
    {
        "command": Field(
            Str(pattern=r"[A-Za-z0-9_./-]+", hint="a command name or an absolute path"),
            "The agent's CLI inside the sandbox, run as the sandbox user.",
            "openclaw",
        ),
        "version": Field(
            Str(pattern=r"auto|20\d\d\.\d{1,2}\.\d{1,3}", hint='"auto" or a version such as "2026.9.6"'),
            "The OpenClaw version in the sandbox, which decides how approvals and state are restored "
            "(docs/compatibility.md); auto reads it in each new pod from the agent's npm package (the version "
            "`openclaw --version` prints), and asks `openclaw --version` when the command is not one.",
            "auto",
        ),
        "validate_config": Field(
            Bool(),
            "Have the agent's own `openclaw config validate` accept openclaw.json before it is written; "
            "a rejected file stops the restore (exit 2) and the running config stays.",
            True,
        ),
        "node": Field(
            Str(pattern=r"[A-Za-z0-9_./-]+", hint="a command name or an absolute path"),
            "Node.js inside the sandbox (the agent's own), used to snapshot persisted SQLite databases.",
            "node",
        ),
    }
)


@dataclass(frozen=True)
class AgentSettings:
    command: str = "openclaw"
    version: str = "auto"
    validate_config: bool = True
    node: str = "node"

    @classmethod
    def from_config(cls, values: dict[str, Any]) -> AgentSettings:
        return cls(**values)

    @property
    def pinned_version(self) -> str | None:
        return None if self.version == "auto" else self.version
