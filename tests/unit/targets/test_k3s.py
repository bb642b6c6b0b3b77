from __future__ import annotations

import itertools

import pytest

from clawguard.targets.k3s import _gone, _is_pod_event

CID = "a" * 64


@pytest.mark.parametrize(
    ("line", "wakes"),
    [
        (f'2026-11-21 23:00:00.1 +0000 UTC k8s.io /tasks/start {{"container_id":"{CID}","pid":42}}', True),
        (f'2026-11-21 23:00:00.1 +0000 UTC k8s.io /tasks/exit {{"container_id":"{CID}","id":"{CID}","pid":42}}', True),
        (
            f'2026-11-21 23:00:00.1 +0000 UTC k8s.io /tasks/exit {{"container_id":"{CID}","id":"clawguard-7-3","pid":9}}',
            False,
        ),
        (f'2026-11-21 23:00:00.1 +0000 UTC k8s.io /tasks/exec-started {{"container_id":"{CID}","exec_id":"x"}}', False),
        (f'2026-11-21 23:00:00.1 +0000 UTC k8s.io /containers/delete {{"id":"{CID}"}}', True),
        ("2026-11-21 23:00:00.1 +0000 UTC k8s.io /snapshot/prepare {}", False),
    ],
)
def test_only_pod_events_wake_the_daemon(line: str, wakes: bool) -> None:
    assert _is_pod_event(line) is wakes


def test_gone_detection() -> None:
    assert _gone(b'ctr: container "abc" in namespace "k8s.io": not found')
    assert _gone(b"ctr: no running task found: task abc not found: not found")
    assert not _gone(b"tar: short read")


def _target(monkeypatch: pytest.MonkeyPatch, labels_out: str, marker_out: str, locate: str = "auto"):  # type: ignore[no-untyped-def]
    from clawguard.config import parse_config
    from clawguard.targets.base import ExecResult
    from clawguard.targets.k3s import K3sTarget

    config = parse_config(
        f"version: 1\nsandboxes:\n  my-assistant:\n    target: {{kind: k3s, locate: {locate}}}\n    archive: /x\n",
        "c.yaml",
    )
    target = K3sTarget("my-assistant", config.sandboxes["my-assistant"].target)
    calls: list[list[str]] = []

    def fake(argv, stdin=None):  # type: ignore[no-untyped-def]
        calls.append(list(argv))
        out = labels_out if "--labelled--" in argv[2] else marker_out
        return ExecResult(0, out.encode(), b"")

    monkeypatch.setattr(target, "_cluster_exec", fake)
    return target, calls


OTHER = "b" * 64
TASKS = f"TASK PID STATUS\n{CID} 10 RUNNING\n{OTHER} 11 RUNNING\n"


def test_labels_pick_the_running_pod_container(monkeypatch: pytest.MonkeyPatch) -> None:
    target, _ = _target(monkeypatch, f"{CID}\n--labelled--\n{CID}\n{OTHER}\n--tasks--\n{TASKS}", "")
    assert target.locate().id == CID


def test_no_marker_fallback_while_other_pods_are_labelled(monkeypatch: pytest.MonkeyPatch) -> None:
    # Our pod is between two containers; another sandbox's pod is running. The
    # marker search would find *that* pod: it must not be used.
    from clawguard import TargetError

    rootfs = f"/run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io/{OTHER}/rootfs\n"
    target, calls = _target(monkeypatch, f"--labelled--\n{OTHER}\n--tasks--\n{TASKS}", rootfs)
    with pytest.raises(TargetError, match="no running sandbox found"):
        target.locate()
    assert len(calls) == 1


def test_marker_fallback_without_kubelet_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    rootfs = f"/run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io/{CID}/rootfs\n"
    target, _ = _target(monkeypatch, f"--labelled--\n--tasks--\n{TASKS}", rootfs)
    assert target.locate().id == CID


def test_event_threads_survive_docker_going_away(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dockerd restart once killed the Docker-events thread with a raw traceback."""
    import io
    import threading
    import time

    from clawguard import log
    from clawguard.errors import TargetError

    out = io.StringIO()
    log.configure("info", out)
    target, _ = _target(monkeypatch, "", "")
    calls: list[int] = []

    def unreachable(*_args: object) -> None:
        calls.append(1)
        raise TargetError("Docker is not reachable: connection refused")

    monkeypatch.setattr(target, "_stream_client", unreachable)
    crashed: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashed.append(args.exc_value))
    woken: list[str] = []
    stop = threading.Event()
    watcher = threading.Thread(target=target.watch, args=(woken.append, stop))
    watcher.start()
    time.sleep(2.5)
    stop.set()
    watcher.join(5)
    assert not watcher.is_alive() and not crashed
    assert woken == ["docker unreachable: Docker is not reachable: connection refused"]  # once, not every retry
    assert len(calls) >= 3  # it kept trying, with backoff
    assert out.getvalue().count("event=events.docker_lost") == 1


class _VirtualStop:
    """A stop event on a virtual clock: wait(t) advances time instead of sleeping."""

    def __init__(self, clock: list[float], until: float) -> None:
        self.clock, self.until = clock, until

    def is_set(self) -> bool:
        return self.clock[0] >= self.until

    def wait(self, timeout: float | None = None) -> bool:
        self.clock[0] += timeout or 0.0
        return self.is_set()


def test_a_cluster_away_for_a_minute_costs_a_handful_of_docker_calls_and_one_log_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 13: while the cluster was stopped, the watcher retried every second, silently."""
    import io

    import docker.errors

    from clawguard import log
    from clawguard.targets import k3s

    out = io.StringIO()
    log.configure("info", out)
    target, _ = _target(monkeypatch, "", "")
    clock = [0.0]
    monkeypatch.setattr(k3s.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(k3s.threading, "Thread", lambda **_kwargs: type("T", (), {"start": lambda self: None})())
    calls: list[float] = []

    class Down:
        def exec_create(self, *_args: object, **_kwargs: object) -> None:
            calls.append(clock[0])
            raise docker.errors.APIError("409 Conflict: container openshell-cluster-nemoclaw is not running")

    monkeypatch.setattr(target, "_stream_client", lambda: type("C", (), {"api": Down()})())
    target.watch(lambda _reason: None, _VirtualStop(clock, until=120.0))  # type: ignore[arg-type]

    # 1, 2, 4, 8, 16, then every 30 s: six attempts in the first minute instead of sixty.
    assert [b - a for a, b in itertools.pairwise(calls)] == [1, 2, 4, 8, 16, 30, 30]
    assert len([t for t in calls if t < 60]) == 6
    lines = out.getvalue().splitlines()
    assert len([line for line in lines if "event=events.lost" in line]) == 1, lines
    assert "is not running" in next(line for line in lines if "event=events.lost" in line)


def test_the_event_stream_coming_back_is_said_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from clawguard import log
    from clawguard.targets import k3s

    out = io.StringIO()
    log.configure("info", out)
    target, _ = _target(monkeypatch, "", "")
    clock = [0.0]
    monkeypatch.setattr(k3s.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(k3s.threading, "Thread", lambda **_kwargs: type("T", (), {"start": lambda self: None})())
    outcomes = iter(["refused", "refused", None, None])

    def follow(_wake: object, _stop: object) -> str | None:
        clock[0] += 1.0
        return next(outcomes, None)

    monkeypatch.setattr(target, "_containerd_events", follow)
    target.watch(lambda _reason: None, _VirtualStop(clock, until=20.0))  # type: ignore[arg-type]
    events = [line.split("event=")[1].split()[0] for line in out.getvalue().splitlines() if "event=events." in line]
    assert events == ["events.lost", "events.resumed"]
