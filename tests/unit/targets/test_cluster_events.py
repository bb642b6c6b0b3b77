"""One event feed per cluster container: routed by pod, bounded retries, one log line per change."""

from __future__ import annotations

import io
import itertools
import threading
import time
from collections.abc import Callable

import docker.errors
import pytest

from clawguard import log
from clawguard.errors import TargetError
from clawguard.targets._cluster_events import BACKOFF_MAX, ClusterEvents, PodEvent, Subscriber, parse

CID = "a" * 64
LINE = "2026-11-21 23:00:00.1 +0000 UTC k8s.io"


@pytest.mark.parametrize(
    ("line", "event"),
    [
        (f'{LINE} /tasks/start {{"container_id":"{CID}","pid":42}}', PodEvent("/tasks/start", CID)),
        (f'{LINE} /tasks/exit {{"container_id":"{CID}","id":"{CID}","pid":42}}', PodEvent("/tasks/exit", CID)),
        (f'{LINE} /tasks/exit {{"container_id":"{CID}","id":"clawguard-7-3","pid":9}}', None),  # our own exec
        (f'{LINE} /tasks/exec-started {{"container_id":"{CID}","exec_id":"x"}}', None),
        (f'{LINE} /containers/delete {{"id":"{CID}"}}', PodEvent("/containers/delete", CID)),
        (
            f'{LINE} /containers/create {{"id":"{CID}","image":"x","runtime":{{"name":"io.containerd.runc.v2"}}}}',
            PodEvent("/containers/create", CID),
        ),
        (f"{LINE} /snapshot/prepare {{}}", None),
    ],
)
def test_only_pod_container_events_count(line: str, event: PodEvent | None) -> None:
    assert parse(line) == event


def _feed(pods: dict[str, str]) -> ClusterEvents:
    """A feed whose lookup answers from ``pods`` (container ID -> pod name), without Docker."""
    feed = ClusterEvents("openshell-cluster-nemoclaw", None, ["ctr"], 30)
    feed._lookup = lambda cid: (pods[cid], "openshell") if cid in pods else None  # type: ignore[method-assign]
    return feed


def _subscribe(feed: ClusterEvents, name: str, current: dict[str, str], pod: str | None = "") -> list[str]:
    woken: list[str] = []
    feed.subscribers.append(
        Subscriber(name, name if pod == "" else pod, "openshell", lambda: current.get(name), woken.append)
    )
    return woken


def test_a_cluster_restart_with_20_sandboxes_wakes_each_for_its_own_pod_only() -> None:
    """Each sandbox is woken by its own pod's events only, and one lookup per new container
    serves them all (woken by every pod event, each would locate 23 times in vain)."""
    names = [f"sandbox-{n:02d}" for n in range(20)]
    old = {name: f"{n:064x}" for n, name in enumerate(names)}
    new = {name: f"{n + 100:064x}" for n, name in enumerate(names)}
    feed = _feed({cid: name for name, cid in new.items()})
    current = dict(old)
    woken = {name: _subscribe(feed, name, current) for name in names}

    for name in names:  # the kubelet re-creates every pod: old container gone, new one started
        feed.route(PodEvent("/tasks/exit", old[name]))
        feed.route(PodEvent("/containers/delete", old[name]))
    for name in names:
        feed.route(PodEvent("/tasks/start", new[name]))
        current[name] = new[name]  # the woken sandbox locates its new container
        feed.route(PodEvent("/tasks/exit", f"{999:064x}"))  # someone else's container

    assert {name: len(w) for name, w in woken.items()} == {name: 3 for name in names}
    assert feed.lookups == 20  # one lookup per new container, for all sandboxes together


def test_a_new_container_is_looked_up_when_created_so_its_start_wakes_at_once() -> None:
    """The lookup runs while the task is set up: at /tasks/start the pod is known already."""
    feed = _feed({CID: "my-assistant"})
    current: dict[str, str] = {}
    mine = _subscribe(feed, "my-assistant", current)
    other = _subscribe(feed, "other", current)
    marker = _subscribe(feed, "legacy", current, pod=None)

    feed.route(PodEvent("/containers/create", CID))
    assert (feed.lookups, mine, other, marker) == (1, [], [], [])  # nothing runs yet: nobody looks

    looked_up = feed._lookup
    feed._lookup = lambda cid: pytest.fail(f"{cid[:12]} looked up again at its start")  # type: ignore[method-assign]
    feed.route(PodEvent("/tasks/start", CID))
    assert (len(mine), other, len(marker)) == (1, [], 1)
    feed._lookup = looked_up  # type: ignore[method-assign]


def test_a_sandbox_found_by_marker_hears_every_pod_event() -> None:
    feed = _feed({CID: "my-assistant"})
    current: dict[str, str] = {}
    marker = _subscribe(feed, "legacy", current, pod=None)
    labelled = _subscribe(feed, "other", current)
    feed.route(PodEvent("/tasks/start", CID))
    feed.route(PodEvent("/tasks/exit", CID))
    assert len(marker) == 2 and labelled == []


def test_a_start_that_cannot_be_looked_up_wakes_every_sandbox() -> None:
    feed = _feed({})  # the container is gone already, or has no kubelet labels
    current: dict[str, str] = {}
    woken = [_subscribe(feed, name, current) for name in ("a", "b")]
    feed.route(PodEvent("/tasks/start", CID))
    assert [len(w) for w in woken] == [1, 1]


class _VirtualStop:
    """The feed's stop event on a virtual clock: wait(t) advances time instead of sleeping."""

    def __init__(self, clock: list[float], until: float) -> None:
        self.clock, self.until = clock, until

    def is_set(self) -> bool:
        return self.clock[0] >= self.until

    def wait(self, timeout: float | None = None) -> bool:
        self.clock[0] += timeout or 0.0
        return self.is_set()

    def set(self) -> None:
        self.until = self.clock[0]


class _VirtualEvent:
    """An event on the same virtual clock: wait(t) advances time unless it is set."""

    def __init__(self, clock: list[float]) -> None:
        self.clock, self.flag = clock, False

    def is_set(self) -> bool:
        return self.flag

    def set(self) -> None:
        self.flag = True

    def clear(self) -> None:
        self.flag = False

    def wait(self, timeout: float | None = None) -> bool:
        if not self.flag:
            self.clock[0] += timeout or 0.0
        return self.flag


def _virtual(monkeypatch: pytest.MonkeyPatch, feed: ClusterEvents, until: float) -> list[float]:
    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])  # the backoff helper's clock too
    feed._stop = _VirtualStop(clock, until)  # type: ignore[assignment]
    feed._cluster_started = _VirtualEvent(clock)  # type: ignore[assignment]
    return clock


def test_a_cluster_away_for_a_minute_costs_a_handful_of_docker_calls_and_one_log_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stopped cluster is retried with capped backoff, not every second per sandbox, and
    logged once."""
    out = io.StringIO()
    log.configure("info", out)
    feed = _feed({})
    clock = _virtual(monkeypatch, feed, until=120.0)
    calls: list[float] = []

    class Down:
        def exec_create(self, *_args: object, **_kwargs: object) -> None:
            calls.append(clock[0])
            raise docker.errors.APIError("409 Conflict: container openshell-cluster-nemoclaw is not running")

    monkeypatch.setattr(feed, "_stream_client", lambda: type("C", (), {"api": Down()})())
    feed._follow_containerd()

    # 1, 2, 4, 8, 16, then every 30 s: six attempts in the first minute instead of sixty per sandbox.
    assert [b - a for a, b in itertools.pairwise(calls)] == [1, 2, 4, 8, 16, BACKOFF_MAX, BACKOFF_MAX]
    assert len([t for t in calls if t < 60]) == 6
    lost = [line for line in out.getvalue().splitlines() if "event=events.lost" in line]
    assert len(lost) == 1 and "is not running" in lost[0] and "source=containerd" in lost[0], lost


def test_a_source_coming_back_is_said_once(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    log.configure("info", out)
    feed = _feed({})
    clock = _virtual(monkeypatch, feed, until=20.0)
    outcomes = iter(["refused", "refused", None, None])

    def follow() -> str | None:
        clock[0] += 1.0
        return next(outcomes, None)

    feed._retrying("containerd", follow, feed._cluster_started)
    events = [line.split("event=")[1].split()[0] for line in out.getvalue().splitlines() if "event=events." in line]
    assert events == ["events.lost", "events.resumed"]


def test_the_cluster_starting_cuts_the_containerd_backoff_short(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a long outage the backoff had grown: the new pods' start events were missed for
    up to 30 s. The cluster container's start (seen by Docker's stream) retries at once."""
    log.configure("info", io.StringIO())
    feed = _feed({})
    clock = _virtual(monkeypatch, feed, until=80.0)
    attempts: list[float] = []

    def follow() -> str | None:
        attempts.append(clock[0])
        if clock[0] >= 40.0:
            return None  # the cluster is back: the stream is followed (until it ends)
        if len(attempts) == 6:  # while down, after 31 s of backoff: the cluster container starts
            feed._cluster_started.set()
        return "409 Conflict: container is not running"

    feed._retrying("containerd", follow, feed._cluster_started)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[:5] == [1, 2, 4, 8, 16]
    assert gaps[5] == 0  # retried at once, not 30 s later


def test_docker_going_away_wakes_every_sandbox_once_not_at_every_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    log.configure("info", io.StringIO())
    feed = _feed({})
    _virtual(monkeypatch, feed, until=100.0)
    woken = [_subscribe(feed, name, {}) for name in ("a", "b")]
    tries: list[int] = []

    def unreachable() -> None:
        tries.append(1)
        raise TargetError("Docker is not reachable: connection refused")

    monkeypatch.setattr(feed, "_stream_client", unreachable)
    feed._follow_docker()
    assert len(tries) >= 5  # it kept trying, with backoff
    assert woken == [["docker unreachable: Docker is not reachable: connection refused"]] * 2


def test_sandboxes_of_one_cluster_share_one_feed_and_the_last_one_out_stops_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[ClusterEvents] = []
    monkeypatch.setattr(ClusterEvents, "start", lambda self: started.append(self))
    values = {
        "cluster": "openshell-cluster-test-feed",
        "docker_host": None,
        "ctr": "ctr",
        "containerd_address": "/run/k3s/containerd/containerd.sock",
        "containerd_namespace": "k8s.io",
        "timeout": 120,
    }
    nothing: Callable[[str], None] = lambda _reason: None  # noqa: E731
    first = Subscriber("a", "a", "openshell", lambda: None, nothing)
    second = Subscriber("b", "b", "openshell", lambda: None, nothing)
    feed = ClusterEvents.join(values, first)
    assert ClusterEvents.join(values, second) is feed and started == [feed]
    feed.leave(first)
    assert not feed._stop.is_set()
    feed.leave(second)
    assert feed._stop.is_set()
    assert ClusterEvents.join(values, first) is not feed  # a new feed for the next one
    assert len(started) == 2
    ClusterEvents._feeds.clear()


def test_a_cluster_restart_while_a_start_is_looked_up_does_not_kill_the_thread() -> None:
    """`_pod_of` does not read the cache again after storing the lookup: Docker's thread
    clears it when the cluster container restarts, and a KeyError would end containerd's thread."""

    class ClearedRightAfter(dict[str, tuple[str, str] | None]):
        """Docker's thread clears the cache just after the lookup is stored."""

        def __setitem__(self, key: str, value: tuple[str, str] | None) -> None:
            super().__setitem__(key, value)
            self.clear()

    feed = _feed({CID: "my-assistant"})
    feed._pods = ClearedRightAfter()
    woken = _subscribe(feed, "my-assistant", {})
    feed.route(PodEvent("/tasks/start", CID))
    assert woken == ["containerd event"]


def test_an_unexpected_error_in_a_stream_is_logged_and_the_stream_followed_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An error the stream does not expect is logged with its traceback and the stream is
    followed again, with backoff: detection never falls back to the 30 s poll in silence."""
    out = io.StringIO()
    log.configure("info", out)
    feed = _feed({})
    clock = _virtual(monkeypatch, feed, until=30.0)
    attempts: list[float] = []

    def follow() -> str | None:
        attempts.append(clock[0])
        if len(attempts) <= 2:
            raise KeyError("a" * 64)  # a bug in routing
        return None

    feed._retrying("containerd", follow, feed._cluster_started)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[:3] == [1, 2, 4]  # followed again, with backoff
    events = [line.split("event=")[1].split()[0] for line in out.getvalue().splitlines() if "event=events." in line]
    assert events[:3] == ["events.crashed", "events.crashed", "events.resumed"]
    assert "KeyError" in out.getvalue() and "level=error" in out.getvalue()


def test_the_event_threads_outlive_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real threads: containerd's body raises at first, and is run again."""
    log.configure("error", io.StringIO())
    feed = _feed({})
    calls = {"docker": 0, "containerd": 0}
    again = threading.Event()

    def docker_stream() -> str | None:
        calls["docker"] += 1
        feed._stop.wait(0.01)
        return None

    def containerd_stream() -> str | None:
        calls["containerd"] += 1
        if calls["containerd"] == 1:
            raise KeyError("gone")
        again.set()
        feed._stop.wait(0.01)
        return None

    monkeypatch.setattr(feed, "_docker_stream", docker_stream)
    monkeypatch.setattr(feed, "_containerd_stream", containerd_stream)
    feed.start()
    try:
        assert again.wait(10), "the containerd thread died with its first error"
    finally:
        feed._stop.set()
        feed._cluster_started.set()
