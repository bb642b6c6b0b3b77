"""Where a sandbox lives. A target finds the live sandbox and runs commands in it.

Everything else (inspecting and writing files, resolving users) is built on
``exec`` in ``clawguard.sandboxfs``, so a new target is one module with a
parameter schema, ``locate`` and ``exec``.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from ..schema import Field

REGISTRY: dict[str, type[Target]] = {}


@dataclass(frozen=True)
class Instance:
    """One incarnation of a sandbox: a pod restart gives a new one."""

    id: str  # the container ID, 64 hex digits
    where: str  # for humans: "pod openshell/my-assistant in openshell-cluster-nemoclaw"

    @property
    def short_id(self) -> str:
        return self.id[:12]


@dataclass(frozen=True)
class ExecResult:
    code: int
    stdout: bytes
    stderr: bytes


class Target(ABC):
    kind: ClassVar[str]
    params: ClassVar[Mapping[str, Field]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            REGISTRY[cls.kind] = cls

    def __init__(self, sandbox: str, values: Mapping[str, Any]) -> None:
        self.sandbox = sandbox
        self.values = dict(values)

    @abstractmethod
    def locate(self) -> Instance:
        """Find the running sandbox. Raises TargetError when it cannot be found."""

    @abstractmethod
    def exec(
        self, instance: Instance, argv: Sequence[str], stdin: bytes | None = None, *, user: str | None = None
    ) -> ExecResult:
        """Run argv inside the sandbox, as root or as ``user`` ("UID:GID", numeric: a name
        would be looked up outside the sandbox by some runtimes). Raises SandboxGone if
        it was replaced."""

    def watch(self, wake: Callable[[str], None], stop: threading.Event) -> None:
        """Call ``wake(reason)`` whenever the sandbox may have changed, until ``stop``.

        Targets without an event source keep the default, and the daemon's poll
        does all the work. Raise to have the daemon back off and call again.
        """
        stop.wait()
