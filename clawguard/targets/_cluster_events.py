"""One event feed per OpenShell cluster container, shared by every k3s sandbox in it.

Shared, because a sandbox that follows its own two streams (Docker's events for the
cluster container, containerd's inside it) is woken by every pod event in the cluster:
after a cluster restart with 20 sandboxes, each locate found no pod 23 times over. One
feed per cluster container follows both streams and routes each event to the sandbox it
concerns:

* a pod container going away (``/tasks/exit``, ``/tasks/delete``, ``/containers/delete``)
  wakes the sandbox whose last located container it was;
* a container starting wakes the sandbox whose pod it belongs to, found from the
  container's kubelet labels with one ``ctr containers info`` for all of them. That
  lookup is made when the container is created (``/containers/create``), while its task
  is still being set up, so that the start wakes its sandbox without waiting for it;
* the cluster container itself starting or stopping wakes every sandbox in it.

A sandbox located by the marker file, not by labels, cannot be told apart: it is woken
by every pod event. While a source is away, it is retried after 1, 2, 4 …
at most :data:`BACKOFF_MAX` seconds, and the log says so once per change of state. An
error a stream did not expect (a bug) never ends its thread: it is logged with its
traceback (``events.crashed``) and the stream is followed again after the same backoff.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import docker.errors
import structlog
from docker.utils.socket import frames_iter

from .. import threads
from ..backoff import Backoff, keep_running
from ..errors import ClawguardError
from . import _docker
from .base import shell_script

log = structlog.get_logger("clawguard.events")

#: The longest wait between two attempts at an event source that is away: a cluster stopped
#: for a minute costs a handful of Docker calls, not one or two a second per sandbox.
BACKOFF_MAX = 30.0
# A stream that stayed up this long was healthy: its next loss starts the backoff over.
_HEALTHY_AFTER = 30.0

POD_TOPICS = ("/containers/create", "/tasks/start", "/tasks/exit", "/tasks/delete", "/containers/delete")
_CLUSTER_ACTIONS = ("start", "die", "stop", "restart", "destroy", "create")
_POD_LABEL = "io.kubernetes.pod.name"
_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"

# Runs `ctr events` until our connection closes (clawguard/data/sh/events-while-attached.sh).
EVENTS_WHILE_ATTACHED = shell_script("events-while-attached.sh")


@dataclass(frozen=True)
class PodEvent:
    topic: str
    container_id: str


def parse(line: str) -> PodEvent | None:
    """The pod container an event line is about; None for anything else, including the
    exits of ``ctr task exec`` processes (ours among them), which would otherwise wake a
    sandbox after every command run in it."""
    topic = next((word for word in line.split() if word.startswith("/")), "")
    if topic not in POD_TOPICS:
        return None
    try:
        payload = json.loads(line[line.find("{") :])
    except ValueError:
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    container = str(payload.get("container_id") or payload.get("id") or "")
    if topic == "/tasks/exit" and payload.get("id") not in (None, payload.get("container_id")):
        return None  # an exec in the container ended, not the container
    return PodEvent(topic, container)


@dataclass(eq=False)
class Subscriber:
    """One sandbox following its cluster's events."""

    sandbox: str
    pod: str | None  # None: located by the marker file, woken by every pod event
    namespace: str
    current: Callable[[], str | None]  # the container ID it last located
    wake: Callable[[str], None]


class ClusterEvents:
    """The shared feed of one cluster container (see the module's docstring)."""

    _feeds: ClassVar[dict[tuple[str | None, str], ClusterEvents]] = {}
    _feeds_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, cluster: str, docker_host: str | None, ctr: list[str], timeout: int) -> None:
        self.cluster = cluster
        self.docker_host = docker_host
        self.ctr = ctr  # ctr --address A -n NAMESPACE
        self.timeout = timeout
        self.subscribers: list[Subscriber] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # Set when the cluster container starts: containerd's stream is tried again at once,
        # not at the end of a backoff that grew while the cluster was down.
        self._cluster_started = threading.Event()
        self._pods: dict[str, tuple[str, str] | None] = {}  # container ID -> (pod, namespace)
        self._client: docker.DockerClient | None = None
        self._docker_away = False
        self.lookups = 0  # `ctr containers info` runs, for tests and the bench

    # ------------------------------------------------------------ membership

    @classmethod
    def join(cls, values: Mapping[str, Any], subscriber: Subscriber) -> ClusterEvents:
        """Add ``subscriber`` to the feed of its cluster container, starting it if needed."""
        key = (values.get("docker_host"), str(values["cluster"]))
        ctr = [values["ctr"], "--address", values["containerd_address"], "-n", values["containerd_namespace"]]
        with cls._feeds_lock:
            feed = cls._feeds.get(key)
            if feed is None:
                feed = cls(key[1], key[0], ctr, int(values["timeout"]))
                cls._feeds[key] = feed
                feed.start()
            with feed._lock:
                feed.subscribers.append(subscriber)
        return feed

    def leave(self, subscriber: Subscriber) -> None:
        """Remove ``subscriber``; the last one out stops the feed and its streams."""
        with type(self)._feeds_lock:
            with self._lock:
                if subscriber in self.subscribers:
                    self.subscribers.remove(subscriber)
                empty = not self.subscribers
            if empty:
                self._stop.set()
                self._cluster_started.set()  # ends a backoff wait now
                key = (self.docker_host, self.cluster)
                if type(self)._feeds.get(key) is self:
                    del type(self)._feeds[key]

    def start(self) -> None:
        for name, run in (("docker", self._follow_docker), ("containerd", self._follow_containerd)):
            threads.start(run, f"{name}-events-{self.cluster}")

    def _everyone(self) -> list[Subscriber]:
        with self._lock:
            return list(self.subscribers)

    def _wake_all(self, reason: str) -> None:
        for subscriber in self._everyone():
            subscriber.wake(reason)

    # --------------------------------------------------------------- routing

    def route(self, event: PodEvent) -> None:
        """Wake the sandboxes ``event`` concerns, and those that cannot be told apart."""
        everyone = self._everyone()
        labelled = [s for s in everyone if s.pod is not None]
        if event.topic == "/containers/create":
            # Nothing runs yet: only the lookup, taken off the start's way (100 ms or more).
            if labelled:
                self._pod_of(event.container_id)
            return
        woken = [s for s in everyone if s.pod is None]
        if event.topic == "/tasks/start":
            pod = self._pod_of(event.container_id) if labelled else None
            if pod is None and labelled:
                woken += labelled  # not known which pod it is: every sandbox looks
            else:
                woken += [s for s in labelled if (s.pod, s.namespace) == pod]
        else:
            woken += [s for s in labelled if s.current() == event.container_id]
            if event.topic == "/containers/delete":
                self._pods.pop(event.container_id, None)
        for subscriber in woken:
            subscriber.wake("containerd event")

    def _pod_of(self, container_id: str) -> tuple[str, str] | None:
        """The kubelet's pod name and namespace of a container: one exec for every sandbox.

        The cache is read once per call, never again after the lookup: Docker's thread clears
        it when the cluster container restarts, and a second read could find the key gone and
        end this thread with a KeyError."""
        try:
            return self._pods[container_id]
        except KeyError:
            pass
        self.lookups += 1
        pod = self._lookup(container_id)
        self._pods[container_id] = pod
        return pod

    def _lookup(self, container_id: str) -> tuple[str, str] | None:
        try:
            result = _docker.exec_in(
                self._short_client().api, self.cluster, [*self.ctr, "containers", "info", container_id], None, 30
            )
            labels = json.loads(result.stdout).get("Labels") or {} if result.code == 0 else {}
        except (docker.errors.DockerException, OSError, ClawguardError, ValueError, AttributeError):
            return None
        pod, namespace = labels.get(_POD_LABEL), labels.get(_NAMESPACE_LABEL)
        return (str(pod), str(namespace)) if pod and namespace else None

    # --------------------------------------------------------------- sources

    def _short_client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = _docker.client(self.docker_host, self.timeout)
        return self._client

    def _stream_client(self) -> docker.DockerClient:
        # Event streams block for hours: their own connection, with a long read timeout.
        return _docker.client(self.docker_host, 3600)

    def _follow_docker(self) -> None:
        # This thread must never die: when Docker is away (a dockerd restart), wake every
        # sandbox once and retry with capped backoff until the engine answers again.
        self._retrying("docker", self._docker_stream, self._stop)

    def _docker_stream(self) -> str | None:
        try:
            events = self._stream_client().events(decode=True, filters={"type": "container", "container": self.cluster})
            self._docker_away = False
            for event in events:
                action = str(event.get("Action") or event.get("status") or "")
                if action in _CLUSTER_ACTIONS:
                    self._pods.clear()  # a restarted cluster reuses nothing
                    if action in ("start", "restart"):
                        self._cluster_started.set()
                    self._wake_all(f"cluster {action}")
                if self._stop.is_set():
                    break
        except (docker.errors.DockerException, OSError, ClawguardError) as exc:
            if not self._docker_away:  # once per outage, not at every retry
                self._docker_away = True
                self._wake_all(f"docker unreachable: {exc}")
            return str(exc).strip()[-300:]
        return None

    def _follow_containerd(self) -> None:
        self._retrying("containerd", self._containerd_stream, self._cluster_started)

    def _containerd_stream(self) -> str | None:
        """Follow containerd's events until the stream ends. Returns why it could not be
        followed, None when it was followed until it ended."""
        sock: Any = None
        try:
            api = self._stream_client().api
            argv = ["sh", "-c", EVENTS_WHILE_ATTACHED, "sh", *self.ctr, "events"]
            created = api.exec_create(self.cluster, argv, stdout=True, stderr=False, stdin=True)
            # A socket, not a stream: only a held connection keeps the exec's stdin open.
            sock = api.exec_start(created["Id"], socket=True)
            pending = b""
            for _, chunk in frames_iter(sock, tty=False):  # type: ignore[no-untyped-call]
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    event = parse(line.decode(errors="replace"))
                    if event is not None:
                        self.route(event)
                if self._stop.is_set():
                    return None
        except (docker.errors.DockerException, OSError, ClawguardError) as exc:
            return str(exc).strip()[-300:]
        finally:
            if sock is not None:  # ends the exec now, not when the daemon exits
                with contextlib.suppress(OSError):
                    getattr(sock, "_sock", sock).close()
        return None

    def _retrying(self, source: str, follow: Callable[[], str | None], retry_now: threading.Event) -> None:
        """Run ``follow`` until the feed stops, with capped backoff between attempts (cut
        short, and started over, when ``retry_now`` is set) and one log line when the source
        is lost and one when it is back. An error ``follow`` did not expect (a bug) is logged
        with its traceback and the stream followed again after the backoff: detection never
        falls back to the poll in silence."""
        lost = False

        def attempt() -> None:
            error = follow()
            if error is not None:
                raise _Lost(error)

        def failed(exc: Exception, delay: float) -> None:
            nonlocal lost
            if isinstance(exc, _Lost):
                if not lost:
                    log.warning("events.lost", cluster=self.cluster, source=source, error=str(exc), retry="backoff")
                    lost = True
                return
            lost = True  # a crash is a loss too: the next good stream says it is back
            log.error(
                "events.crashed",
                cluster=self.cluster,
                source=source,
                error=repr(exc),
                retry_in=round(delay, 1),
                exc_info=exc,
            )

        def succeeded() -> None:
            nonlocal lost
            if lost:
                log.info("events.resumed", cluster=self.cluster, source=source)
                lost = False

        keep_running(
            attempt,
            stop=self._stop,
            backoff=Backoff(1.0, BACKOFF_MAX),
            retry_now=retry_now,
            healthy_after=_HEALTHY_AFTER,
            failed=failed,
            succeeded=succeeded,
        )


class _Lost(Exception):
    """An event source could not be followed (its reason is the message)."""
