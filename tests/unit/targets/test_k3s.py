from __future__ import annotations

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
    import threading
    import time

    from clawguard.errors import TargetError

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
