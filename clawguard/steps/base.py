"""What every step kind has in common.

A step turns its parameters and the archive into a list of desired ``Entry``
objects. Checking and applying are done by the engine from those entries, so a
step kind is only a parameter schema plus an ``entries`` method, in one module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

from ..agent.state import AgentState, Preflight
from ..agent.versions import UNKNOWN, Capabilities, Version
from ..entries import Entry, OwnerRef
from ..layout import Layout
from ..schema import Bool, Field

REGISTRY: dict[str, type[Step]] = {}


@dataclass(frozen=True)
class Origin:
    """Where a step was declared, for error messages."""

    key: str  # "sandboxes.x.plan[2]" or "archive convention: skills/foo"
    file: str | None = None
    line: int | None = None


@dataclass(frozen=True)
class StepContext:
    archive: Path
    layout: Layout
    user: OwnerRef  # the sandbox user from the config
    agent: Capabilities = UNKNOWN  # what the agent's version needs (agent/versions.py)
    version: Version | None = None  # the agent's version, when known
    validate_config: bool = False  # the agent is there to accept openclaw.json first

    def describe_agent(self) -> str:
        return f"OpenClaw {self.version}" if self.version else "this OpenClaw version"


class Step(ABC):
    kind: ClassVar[str]
    params: ClassVar[Mapping[str, Field]]
    summary: ClassVar[str]
    # Whether a change made by this kind needs a gateway restart to take effect
    # (the gateway reads it only at start). A step's ``restart_gateway`` overrides it.
    restarts_gateway: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            default = "yes" if cls.restarts_gateway else "no"
            cls.params = {
                **cls.params,
                "restart_gateway": Field(
                    Bool(),
                    f"Restart a running gateway when this step changes something (default: {default}).",
                    example="no" if cls.restarts_gateway else "yes",
                ),
            }
            REGISTRY[cls.kind] = cls

    def __init__(self, values: Mapping[str, Any], origin: Origin) -> None:
        self.values = dict(values)
        self.origin = origin

    @property
    def name(self) -> str:
        return self.values.get("name") or self.default_name()

    @abstractmethod
    def default_name(self) -> str:
        """A short label for progress lines, e.g. ``skills/proxmox``."""

    @abstractmethod
    def entries(self, ctx: StepContext) -> list[Entry]:
        """The desired state. Validates the archive files it reads (ArchiveError)."""

    def agent_states(self, ctx: StepContext) -> list[AgentState]:
        """State the agent keeps itself and this step restores through its CLI (after the files)."""
        return []

    def preflights(self, ctx: StepContext) -> list[Preflight]:
        """What the agent must accept before this step writes anything."""
        return []

    def warnings(self, ctx: StepContext) -> list[str]:
        """Safe to restore, but the user should know."""
        return []

    @property
    def restart_gateway(self) -> bool:
        value = self.values.get("restart_gateway")
        return self.restarts_gateway if value is None else bool(value)

    def owner(self, ctx: StepContext) -> OwnerRef:
        value = self.values.get("owner")
        return ctx.user if value is None else value

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def join(base: str, *parts: str) -> str:
    return str(PurePosixPath(base, *parts))
