"""Generation 2 OpenShell (NemoClaw >= v0.0.44): each sandbox is a plain Docker container.

The container is found by name or by a label selector. OpenShell's Docker driver
names a sandbox's container ``openshell-<name>-<sandbox id>`` (from OpenShell
v0.0.88 ``openshell-<workspace>--<name>-<id>``), and a recreated sandbox has a new
sandbox id, so the *name* changes with every recreation. Its labels
(``openshell.ai/managed-by=openshell``, ``openshell.ai/sandbox-name=<name>``) do not:
that is the selector ``clawguard init`` writes.

A sandbox's identity is the container ID. A recreated sandbox is a new container,
with a new ID and an empty writable layer: everything placed by hand is gone.

Every command runs with ``docker exec`` in the sandbox container itself, so paths
resolve in the sandbox's own mount namespace and reads (the verification) see
exactly what the agent sees.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import docker.errors

from .._yaml import Located
from ..errors import ConfigError, SandboxGone, TargetError
from ..schema import Bool, Context, Field, Int, MapOf, Record, Str
from . import _docker
from .base import DEFAULT_GATEWAY, Discovery, ExecResult, Found, Instance, Sink, Target

# Docker's own rule for container names; a container ID matches it too.
_CONTAINER = r"[a-zA-Z0-9][a-zA-Z0-9_.-]*"
_LABEL_KEY = r"[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?"
# The events that can mean our sandbox container came, went or changed its name.
EVENTS = ("create", "start", "die", "destroy", "rename")
# Labels NemoClaw's sandboxes carry (OpenShell crates/openshell-driver-docker).
MANAGED_BY_LABEL = "openshell.ai/managed-by"
MANAGED_BY_VALUE = "openshell"
SANDBOX_NAME_LABEL = "openshell.ai/sandbox-name"

_NEITHER = "give the sandbox's container (container: NAME) or a label selector (labels: {LABEL: VALUE})"
_BOTH = "give container or labels, not both"


def _sibling(key: str, name: str) -> str:
    return f"{key.rpartition('.')[0]}.{name}"


@dataclass
class _ContainerName(Str):
    """``container``: a Docker container name, refused next to ``labels``."""

    def validate(self, node: Located, key: str, ctx: Context) -> str:
        # The validator records the line of every key present before validating it.
        if _sibling(key, "labels") in ctx.lines:
            raise ctx.error(key, _BOTH, node.line)
        return super().validate(node, key, ctx)


_LABELS = MapOf(Str(pattern=_LABEL_KEY, hint="a Docker label key such as openshell.ai/sandbox-name"), Str())


@dataclass
class _LabelSelector(Record):
    """``labels``. A Record only because the validator fills in a *missing* Record
    field by validating an empty one: that call is where "neither container nor
    labels" is caught, with the target's file and line, so ``clawguard check``
    reports it like any other config error."""

    fields: Mapping[str, Field] = field(default_factory=dict)
    type_name: str = "a mapping of Docker label to value"

    def validate(self, node: Located, key: str, ctx: Context) -> dict[str, str] | None:  # type: ignore[override]
        given = key in ctx.lines
        container = _sibling(key, "container") in ctx.lines
        if not given:
            if container:
                return None
            target = key.rpartition(".")[0]
            raise ctx.error(target, _NEITHER, ctx.lines.get(target, node.line))  # the line of "target:"
        if container:
            raise ctx.error(key, _BOTH, node.line)
        labels: dict[str, str] = _LABELS.validate(node, key, ctx)
        if not labels:
            raise ctx.error(key, "name at least one label", node.line)
        return labels


def nemoclaw_labels(sandbox: str) -> dict[str, str]:
    """The label selector of the OpenShell generation 2 sandbox ``sandbox`` (as NemoClaw makes it)."""
    return {MANAGED_BY_LABEL: MANAGED_BY_VALUE, SANDBOX_NAME_LABEL: sandbox}


class DockerTarget(Target):
    kind = "docker"
    generation = 2
    params = {
        "container": Field(
            _ContainerName(pattern=_CONTAINER, hint="a Docker container name or ID"),
            "The sandbox's Docker container, by name. Give this or labels; NemoClaw's container names change "
            "when a sandbox is recreated, so prefer labels there.",
            example="openshell-my-assistant",
        ),
        "labels": Field(
            _LabelSelector(),
            "Find the one running container that carries all these labels. NemoClaw: "
            "{openshell.ai/managed-by: openshell, openshell.ai/sandbox-name: <sandbox>}. Give this or container.",
            example="{openshell.ai/managed-by: openshell, openshell.ai/sandbox-name: my-assistant}",
        ),
        "privileged": Field(
            Bool(),
            "Run clawguard's commands with docker exec --privileged: for sandbox containers that drop every "
            "capability, where root cannot set owners or write the agent's files.",
            False,
        ),
        "docker_host": Field(
            Str(), "Docker daemon URL; defaults to DOCKER_HOST or the local socket.", example="unix:///run/docker.sock"
        ),
        "timeout": Field(Int(minimum=1, maximum=3600), "Seconds allowed for one command.", 120),
    }

    def __init__(self, sandbox: str, values: Mapping[str, Any]) -> None:
        super().__init__(sandbox, values)
        self.container: str | None = self.values.get("container")
        self.labels: dict[str, str] = dict(self.values.get("labels") or {})
        # The config schema already refuses both and neither; this guards values built in code.
        if bool(self.container) == bool(self.labels):
            raise ConfigError(_BOTH if self.container else _NEITHER, key=f"sandboxes.{sandbox}.target")
        self._client: docker.DockerClient | None = None

    def identity(self) -> tuple[object, ...]:
        return ("docker", self.values.get("docker_host"), self.container, tuple(sorted(self.labels.items())))

    @classmethod
    def discover(cls, into: Discovery) -> None:
        """Every running container labelled ``openshell.ai/managed-by=openshell``, one sandbox
        per ``openshell.ai/sandbox-name``, located with the label selector the config will hold."""
        client = into.docker_client()
        if client is None:
            return
        try:
            containers = client.api.containers(all=True, filters={"label": [f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"]})
        except (docker.errors.DockerException, OSError) as exc:
            into.engine_down(exc)
            return
        running: set[str] = set()
        for container in containers:
            sandbox = (container.get("Labels") or {}).get(SANDBOX_NAME_LABEL)
            if not sandbox:
                continue
            if container.get("State") == "running":
                running.add(sandbox)
            else:
                into.notes.append(f"{_docker.container_name(container)}: {container.get('State')}, skipped")
        for sandbox in sorted(running):
            target = cls(sandbox, {"labels": nemoclaw_labels(sandbox)})
            keys = {"kind": cls.kind, "labels": target.labels}
            into.add(target, partial(Found, sandbox, cls.kind, keys, DEFAULT_GATEWAY, generation=cls.generation))

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = _docker.client(self.values.get("docker_host"), self.values["timeout"])
        return self._client

    @property
    def selector(self) -> str:
        """For humans: ``container NAME`` or ``labels k=v,k=v``."""
        if self.container:
            return f"container {self.container}"
        return "labels " + ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))

    # ---------------------------------------------------------------- locate

    def locate(self) -> Instance:
        try:
            return self._by_name() if self.container else self._by_labels()
        except docker.errors.APIError as exc:
            raise TargetError(f"Docker refused to list containers: {exc.explanation}") from None
        except (docker.errors.DockerException, OSError) as exc:
            raise TargetError(f"Docker is not reachable: {exc}") from None

    def _by_name(self) -> Instance:
        assert self.container is not None
        try:
            info = self.client.api.inspect_container(self.container)
        except docker.errors.NotFound:
            raise TargetError(f"sandbox container {self.container} not found (is the sandbox running?)") from None
        state = info.get("State") or {}
        if not state.get("Running") or state.get("Paused") or state.get("Restarting"):
            raise TargetError(f"sandbox container {self.container} is {state.get('Status', '?')}, not running")
        return Instance(str(info["Id"]), f"container {self.container}")

    def _by_labels(self) -> Instance:
        selector = [f"{key}={value}" for key, value in sorted(self.labels.items())]
        # all=True: a stopped match makes a better message than "nothing found".
        found = self.client.api.containers(all=True, filters={"label": selector})
        running = [c for c in found if c.get("State") == "running"]
        where = self.selector
        if not running:
            idle = ", ".join(f"{_docker.container_name(c)} ({c.get('State')})" for c in found)
            raise TargetError(f"no running sandbox container with {where}" + (f"; not running: {idle}" if idle else ""))
        if len(running) > 1:
            shown = ", ".join(f"{_docker.container_name(c)} ({str(c['Id'])[:12]})" for c in running)
            raise TargetError(
                f"{len(running)} running containers match {where} ({shown}); "
                "add a label that tells them apart, or name the container"
            )
        return Instance(str(running[0]["Id"]), f"container {_docker.container_name(running[0])}")

    # ------------------------------------------------------------------ exec

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
        # No inspect first: exec_create itself answers 404 (removed, i.e. recreated)
        # or 409 (stopped), which saves a Docker round trip on every command.
        streamed: dict[str, Any] = {} if out is None and limit is None else {"out": out, "limit": limit}
        try:
            return _docker.exec_in(
                self.client.api,
                instance.id,
                argv,
                stdin,
                self.values["timeout"],
                user=user or "0:0",
                privileged=bool(self.values.get("privileged")),
                **streamed,
            )
        except docker.errors.NotFound:
            raise SandboxGone(f"sandbox container {instance.short_id} is gone (removed or recreated)") from None
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                raise SandboxGone(f"sandbox container {instance.short_id} is not running ({exc.explanation})") from None
            raise TargetError(f"Docker refused a command in {instance.short_id}: {exc.explanation}") from None
        except _docker.ExecTimeout as exc:
            raise TargetError(f"a command in sandbox container {instance.short_id} did not finish: {exc}") from None
        except (docker.errors.DockerException, OSError) as exc:
            raise TargetError(f"Docker is not reachable: {exc}") from None

    # ----------------------------------------------------------------- watch

    def event_filters(self) -> dict[str, Any]:
        filters: dict[str, Any] = {"type": "container", "event": list(EVENTS)}
        if self.labels:
            filters["label"] = [f"{key}={value}" for key, value in sorted(self.labels.items())]
        # By name, we filter ourselves: Docker's container filter misses a rename
        # away from our name (the event carries the new name).
        return filters

    def concerns(self, event: Mapping[str, Any]) -> bool:
        """Whether a (server-side filtered) container event may be about our sandbox."""
        if self.labels:
            return True
        actor = event.get("Actor") or {}
        attributes = actor.get("Attributes") or {}
        names = {attributes.get("name"), str(attributes.get("oldName") or "").lstrip("/")}
        return self.container in names or str(actor.get("ID") or event.get("id") or "").startswith(str(self.container))

    def watch(self, wake: Callable[[str], None], stop: threading.Event) -> None:
        """Docker events for the sandbox container (create, start, die, destroy,
        rename) wake the daemon, which then locates the container: one call."""
        try:
            # Its own connection: the stream blocks for hours.
            events = _docker.client(self.values.get("docker_host"), 3600).events(
                decode=True, filters=self.event_filters()
            )
        except (docker.errors.DockerException, OSError) as exc:
            raise TargetError(f"cannot follow Docker events: {exc}") from None
        # docker-py's stream turns an error answer (a proxy's 403, a 500) into a quiet end of
        # the stream: read the status of the response it holds, so Docker's answer is reported.
        response = getattr(events, "_response", None)
        status = getattr(response, "status_code", 200)
        if isinstance(status, int) and status >= 400:
            body = getattr(response, "text", "") or ""
            events.close()
            raise TargetError(f"Docker refused to stream events ({status}): {body.strip()[:300]}")
        finished = threading.Event()
        threading.Thread(
            target=_close_on_stop, args=(events, stop, finished), name=f"docker-events-{self.sandbox}", daemon=True
        ).start()
        try:
            for event in events:  # ends when the stream does (Docker restarted, or closed on stop)
                if stop.is_set():
                    return
                if self.concerns(event):
                    wake(f"container {event.get('Action') or event.get('status')}")
        except (docker.errors.DockerException, OSError) as exc:
            if not stop.is_set():
                raise TargetError(f"Docker events stopped: {exc}") from None
        finally:
            finished.set()


def _close_on_stop(events: Any, stop: threading.Event, finished: threading.Event) -> None:
    """Closing the stream is the only way to end a blocked read on it."""
    while not finished.is_set():
        if stop.wait(0.5):
            with contextlib.suppress(docker.errors.DockerException, OSError):  # already closed
                events.close()
            return
