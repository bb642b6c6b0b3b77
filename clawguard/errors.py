"""The small exception hierarchy that the CLI maps onto exit codes.

``InputError`` (and its children) mean "you gave me something wrong": exit 2, and
nothing was written. ``RestoreFailed`` and ``TargetError`` mean the world did not
cooperate: exit 1.
"""

from __future__ import annotations

import re
from pathlib import Path

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def printable(text: str) -> str:
    """``text`` with control characters escaped (a newline becomes \\n)."""
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


class ClawguardError(Exception):
    """Base class of every error clawguard raises on purpose."""

    exit_code = 1


class InputError(ClawguardError):
    """Bad config, plan or archive. Raised before anything touches a sandbox."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: Path | str | None = None,
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.key = key
        self.line = line
        super().__init__(self.__str__())

    def __str__(self) -> str:
        # The file and the key path are the user's own text (a sandbox name, an unknown
        # key): escaped, so that they cannot forge a second line or drive the terminal.
        where = ""
        if self.file:
            where = printable(self.file)
            if self.line:
                where += f":{self.line}"
            where += ": "
        key = f"{printable(self.key)}: " if self.key else ""
        return f"{where}{key}{self.message}"


class ConfigError(InputError):
    """The YAML config is unreadable or does not match the schema."""


class ArchiveError(InputError):
    """The host-side restore archive does not match the plan or is unsafe."""


class TargetError(ClawguardError):
    """The sandbox could not be reached: Docker down, cluster stopped, pod missing."""


class SandboxGone(TargetError):
    """The pod we were working on was replaced or stopped under us."""


class SandboxStarted(TargetError):
    """The sandbox was not running, and clawguard asked its platform to start it: ``outcome`` is
    "requested", "refused" (the platform said no) or "recreated" (deleted and created again from
    its recorded spec, ``recover: recreate``). Not reachable yet; the on_started hook is told."""

    def __init__(self, message: str, *, outcome: str = "requested") -> None:
        super().__init__(message)
        self.outcome = outcome

    @property
    def refused(self) -> bool:
        return self.outcome == "refused"


class RestoreFailed(ClawguardError):
    """At least one step did not reach its verified state."""
