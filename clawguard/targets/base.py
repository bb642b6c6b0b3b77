"""Where a sandbox lives. A target finds the live sandbox and runs commands in it.

Everything else (inspecting and writing files, resolving users) is built on
``exec`` in ``clawguard.sandboxfs``, so a new target is one module with a
parameter schema, ``locate`` and ``exec``.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, ClassVar, Protocol

from ..errors import ClawguardError, SandboxStarted, TargetError
from ..schema import Field

REGISTRY: dict[str, type[Target]] = {}
#: The OpenShell gateway NemoClaw creates (cluster openshell-cluster-nemoclaw).
DEFAULT_GATEWAY = "nemoclaw"


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
    stdout: bytes  # empty when it was streamed into an ``out``
    stderr: bytes


class Sink(Protocol):
    """Where a command's stdout may be streamed: a binary file, or anything with its write."""

    def write(self, data: bytes, /) -> object: ...


@dataclass(frozen=True)
class Found:
    """One sandbox that a target kind's ``discover`` saw running on this machine, and
    already located the way the config it suggests will locate it."""

    name: str  # its OpenShell name: the pod, or openshell.ai/sandbox-name
    kind: str  # the target kind
    target: dict[str, Any]  # the config's target keys (kind and what differs from the defaults)
    gateway: str  # the OpenShell gateway, for the SSH proxy
    instance: Instance
    generation: int  # OpenShell's generation: 1 a k3s pod, 2 a plain container, 3 an OpenShell 0.1.x sandbox
    # Target keys to add when the config names the sandbox differently (its name is taken).
    keys_if_renamed: dict[str, Any] = field(default_factory=dict)


@dataclass
class Discovery:
    found: list[Found] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was seen but left out, and why
    docker_host: str | None = None  # the Docker engine the engine-based kinds search
    # Makes a Docker client for docker_host (targets._docker.client); none: no engine is searched.
    connect: Callable[[str | None], Any] | None = field(default=None, repr=False)
    _docker: Any = field(default=None, repr=False)
    _docker_down: str | None = field(default=None, repr=False)

    def docker_client(self) -> Any | None:
        """A Docker client for the kinds that find sandboxes through a container engine, or
        None once Docker proved unreachable (``engine_down``): the kinds that need no
        engine are still searched."""
        if self._docker is None and self._docker_down is None:
            if self.connect is None:
                self.engine_down("no Docker client was given to this search")
                return None
            try:
                self._docker = self.connect(self.docker_host)
            except ClawguardError as exc:
                self.engine_down(exc)
        return self._docker

    def engine_down(self, error: object) -> None:
        """Docker did not answer: said once in the notes, with the host tried."""
        if self._docker_down is None:
            where = self.docker_host or os.environ.get("DOCKER_HOST") or "the local socket"
            said = str(error).removeprefix("Docker is not reachable: ")
            self._docker_down = f"Docker is not reachable at {where} ({said}): no k3s or docker sandbox searched"
            self.notes.append(self._docker_down)
        self._docker = None

    @property
    def docker_down(self) -> str | None:
        """Why the engine-based kinds searched nothing, when Docker was not reachable."""
        return self._docker_down

    def add(self, located_by: Target, found: Callable[[Instance], Found]) -> None:
        """Keep a sandbox only if the config's own target finds it: what init writes must work."""
        try:
            instance = located_by.locate()
        except ClawguardError as exc:
            self.notes.append(f"{located_by.sandbox} ({located_by.kind}): skipped: {exc}")
            return
        self.found.append(found(instance))


class OutputTooLarge(TargetError):
    """A command printed more than the limit its caller set: it was stopped, and what it
    printed is incomplete. ``stderr`` is what it had said on stderr by then."""

    def __init__(self, message: str, stderr: bytes = b"") -> None:
        super().__init__(message)
        self.stderr = stderr


_HEADER = re.compile(r"\A(?:#[^\n]*\n)*")
_INCLUDE = re.compile(r"^\. \./([a-z0-9-]+\.sh)\n", re.MULTILINE)


@functools.cache
def shell_script(name: str) -> str:
    """The shell script ``clawguard/data/sh/<name>`` as it runs in a pod or a cluster container
    (package data, read once): without the comment lines it starts with (its arguments and
    output, and shellcheck's directives), and with each line ``. ./OTHER.sh`` replaced by
    OTHER.sh's own text, so that one ``sh -c`` gets the whole script and shellcheck (``-x``,
    scripts/test.sh) checks each part with what it is used with."""
    text = (resources.files("clawguard") / "data" / "sh" / name).read_text(encoding="utf-8")
    return _INCLUDE.sub(lambda include: shell_script(include[1]), _HEADER.sub("", text, count=1))


# Runs argv after saying its own pid on stderr. exec keeps the pid, and a container
# runtime starts each exec as a session leader (runc: setsid), so the pid is also the
# group of everything the command starts: a kill of -pid stops all of it.
_SAY_PID = 'printf "clawguard-pid %s\\n" "$$" >&2; exec "$@"'
_PID_LINE = re.compile(rb"\Aclawguard-pid (\d+)\n")


class Target(ABC):
    kind: ClassVar[str]
    params: ClassVar[Mapping[str, Field]] = {}
    generation: ClassVar[int] = 0  # OpenShell's sandbox generation this kind serves (0: none in particular)
    # Whether exec can run as root. False for a kind whose every command runs as the sandbox
    # user (OpenShell 0.1.x's gateway API): it is never sent work that needs root.
    runs_as_root: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            REGISTRY[cls.kind] = cls

    def __init__(self, sandbox: str, values: Mapping[str, Any]) -> None:
        self.sandbox = sandbox
        # The config fills in every default; a target built in code gets the same ones here.
        self.values = {**self.defaults(), **values}
        # Told each time the target asks its platform to start the sandbox (SandboxStarted),
        # whichever caller's locate made it ask: the daemon fires its on_started hook here.
        self.on_started: Callable[[SandboxStarted], None] | None = None

    def started(self, event: SandboxStarted) -> SandboxStarted:
        """``event``, after telling ``on_started`` of it: ``raise self.started(SandboxStarted(...))``."""
        if self.on_started is not None:
            self.on_started(event)
        return event

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every parameter's default, from its one declaration in ``params``."""
        return {name: spec.default for name, spec in cls.params.items()}

    def identity(self) -> tuple[object, ...] | None:
        """Which sandbox the config names, as far as the config alone tells: two sandboxes
        with the same identity would locate the same pod and restore over each other.
        None when a kind cannot tell."""
        return None

    def host_key_fingerprint(self, instance: Instance) -> str | None:
        """The SSH host key fingerprint (``SHA256:...``) the platform publishes for this
        instance, for ``gateway.host_key: gateway``; None where it publishes none."""
        return None

    @abstractmethod
    def locate(self) -> Instance:
        """Find the running sandbox. Raises TargetError when it cannot be found."""

    @abstractmethod
    def exec(
        self,
        instance: Instance,
        argv: Sequence[str],
        stdin: bytes | None = None,
        *,
        user: str | None = None,
        out: Sink | None = None,
        limit: int | None = None,
    ) -> ExecResult:
        """Run argv inside the sandbox, as root or as ``user`` ("UID:GID", numeric: a name
        would be looked up outside the sandbox by some runtimes). Raises SandboxGone if
        it was replaced.

        With ``out``, stdout is written there as it arrives instead of being returned.
        With ``limit``, more than that many bytes of stdout raise OutputTooLarge, and the
        connection to the command is closed then: nothing past the limit is read or kept.
        (Closing does not end a command in the sandbox; exec_limited does that.)"""

    def exec_limited(
        self, instance: Instance, argv: Sequence[str], out: Sink, *, limit: int, user: str | None = None
    ) -> ExecResult:
        """Run argv with its stdout streamed into ``out``, and stop it past ``limit`` bytes:
        the connection is closed and the command's whole process group killed inside the
        sandbox, then OutputTooLarge is raised. The host never holds more than a read
        buffer of the output, whatever the command prints.

        A target whose ``exec`` takes no ``out`` (a plug-in or a test double written before
        it existed) is still served, by reading the whole output and checking it after."""
        wrapped = ["sh", "-c", _SAY_PID, "sh", *argv]
        if "out" not in inspect.signature(self.exec).parameters:
            result = self.exec(instance, wrapped, None, user=user)
            if len(result.stdout) > limit:
                raise OutputTooLarge(f"the output passed {limit} bytes", _without_pid(result.stderr))
            out.write(result.stdout)
            return ExecResult(result.code, b"", _without_pid(result.stderr))
        try:
            result = self.exec(instance, wrapped, None, user=user, out=out, limit=limit)
        except OutputTooLarge as exc:
            said = _PID_LINE.match(exc.stderr)
            if said and int(said.group(1)) > 1:
                # As root: the command may run as another user. Best effort: it may have ended.
                self.exec(instance, ["sh", "-c", 'kill -9 "-$1" 2>/dev/null; true', "sh", said.group(1).decode()])
            raise OutputTooLarge(str(exc), _without_pid(exc.stderr)) from None
        return ExecResult(result.code, result.stdout, _without_pid(result.stderr))

    @classmethod
    def discover(cls, into: Discovery) -> None:
        """Add every running sandbox of this kind to ``into``, and what was seen but left out
        to its notes. Each kind reaches its sandboxes its own way (a kind that needs a
        container engine asks ``into.docker_client()``). Kinds that cannot be discovered
        keep the default: nothing."""
        return None

    def watch(self, wake: Callable[[str], None], stop: threading.Event) -> None:
        """Call ``wake(reason)`` whenever the sandbox may have changed, until ``stop``.

        Targets without an event source keep the default, and the daemon's poll
        does all the work. Raise to have the daemon back off and call again.
        """
        stop.wait()


def _without_pid(stderr: bytes) -> bytes:
    return _PID_LINE.sub(b"", stderr, count=1)
