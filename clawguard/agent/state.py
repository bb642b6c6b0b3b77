"""What a plan asks of the agent's own CLI, beside files.

Two kinds, each declared by a step and run by the engine:

* ``AgentState``: something the agent keeps in its own database (exec approvals since
  2026.8.1). The engine reads it through the CLI, writes it when it differs, and judges
  the snapshot the agent answers with as the read-back, after the files and the
  persisted state are in place.
* ``Preflight``: a question the agent must answer yes to before anything is written
  (is this openclaw.json one you accept?). A "no" stops the restore as bad input.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .cli import AgentCLI


class AgentState(ABC):
    label: str

    @abstractmethod
    def problems(self, cli: AgentCLI) -> list[str]:
        """Read the agent's state and say how it differs from the plan's (empty: as wanted)."""

    def known(self, written: Callable[[str], bytes | None]) -> list[str] | None:
        """What :meth:`problems` would answer, when the restore knows it without asking the
        agent (a Node.js start): ``written(path)`` is the content of a file the restore has
        just put in the pod and verified (None for any other path). None: not known, ask."""
        return None

    @abstractmethod
    def write(self, cli: AgentCLI) -> list[str]:
        """Hand the plan's state to the agent, and say how what the agent answers it stored
        still differs (empty: as wanted). That answer is the read-back: asking again would
        be one more CLI call, a Node.js start of seconds, for the same snapshot."""


@dataclass(frozen=True)
class ConfigAcceptance:
    """The agent must accept ``data`` as its openclaw.json (``openclaw config validate``)."""

    data: bytes
    source: Path  # the archive file, for the error message

    def objections(self, cli: AgentCLI) -> list[str]:
        return cli.validate_config(self.data)


Preflight = ConfigAcceptance
