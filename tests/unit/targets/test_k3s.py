from __future__ import annotations

import pytest

from clawguard.targets.k3s import _gone

CID = "a" * 64


def test_gone_detection() -> None:
    assert _gone(b'ctr: container "abc" in namespace "k8s.io": not found')
    assert _gone(b"ctr: no running task found: task abc not found: not found")
    assert not _gone(b"tar: short read")


def _target(monkeypatch: pytest.MonkeyPatch, labels_out: str, marker_out: str, locate: str = "auto"):  # type: ignore[no-untyped-def]
    from clawguard.config import parse_config
    from clawguard.targets.base import ExecResult
    from clawguard.targets.k3s import _LIST_BY_MARKER, K3sTarget

    config = parse_config(
        f"version: 1\nsandboxes:\n  my-assistant:\n    target: {{kind: k3s, locate: {locate}}}\n    archive: /x\n",
        "c.yaml",
    )
    target = K3sTarget("my-assistant", config.sandboxes["my-assistant"].target)
    calls: list[list[str]] = []

    def fake(argv, stdin=None):  # type: ignore[no-untyped-def]
        calls.append(list(argv))
        out = marker_out if argv[2] == _LIST_BY_MARKER else labels_out
        return ExecResult(0, out.encode(), b"")

    monkeypatch.setattr(target, "_cluster_exec", fake)
    return target, calls


OTHER = "b" * 64
TASKS = f"TASK PID STATUS\n{CID} 10 RUNNING\n{OTHER} 11 RUNNING\n"


def test_labels_pick_the_running_pod_container(monkeypatch: pytest.MonkeyPatch) -> None:
    target, _ = _target(monkeypatch, f"{CID}\n--labelled--\n--tasks--\n{TASKS}", "")
    assert target.locate().id == CID


def test_no_marker_fallback_while_other_pods_are_labelled(monkeypatch: pytest.MonkeyPatch) -> None:
    # Our pod is between two containers; another sandbox's pod is running. The
    # marker search would find *that* pod: it must not be used.
    from clawguard import TargetError

    rootfs = f"/run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io/{OTHER}/rootfs\n"
    target, calls = _target(monkeypatch, f"\n--labelled--\n{OTHER}\n", rootfs)
    with pytest.raises(TargetError, match="no running sandbox found"):
        target.locate()
    assert len(calls) == 1


def test_marker_fallback_without_kubelet_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    rootfs = f"/run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io/{CID}/rootfs\n"
    target, calls = _target(monkeypatch, "\n--labelled--\n", rootfs + "--labelled--\n")
    assert target.locate().id == CID
    assert calls[1][-3:] == ["ctr", "/run/k3s/containerd/containerd.sock", 'labels."io.kubernetes.container.name"']


def test_the_marker_fallback_takes_nothing_once_a_labelled_pod_appears(monkeypatch: pytest.MonkeyPatch) -> None:
    # The soak caught it (a docker restart of the cluster): the kubelet had deleted every old
    # container, so nothing was labelled when other-uid's locate asked; a moment later
    # my-assistant's new pod ran, the marker search found it, and other-uid's archive was
    # written into my-assistant's pod. A labelled container listed after the mounts ends it.
    from clawguard import TargetError

    rootfs = f"/run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io/{OTHER}/rootfs\n"
    target, calls = _target(monkeypatch, "\n--labelled--\n", f"{rootfs}--labelled--\n{OTHER}\n")
    with pytest.raises(TargetError, match="no running sandbox found"):
        target.locate()
    assert len(calls) == 2


def test_an_explicit_marker_locate_does_not_ask_for_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    rootfs = f"/run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io/{CID}/rootfs\n"
    target, calls = _target(monkeypatch, "", rootfs, locate="marker")
    assert target.locate().id == CID
    assert calls[-1][4:] == ["/run/k3s/containerd", "k8s.io", target.values["marker"]]


FAKE_CTR = """#!/bin/sh
echo "$*" >> "$CTR_LOG"
case "$*" in
  *"containers ls -q labels.\\"io.kubernetes.pod.name\\""*) printf '%s' "$OURS" ;;
  *"containers ls -q"*) printf '%s\\n' "$ANY" ;;
  *"tasks ls"*) printf 'TASK PID STATUS\\n%s 10 RUNNING\\n' "$OURS" ;;
esac
"""


@pytest.mark.parametrize(
    ("ours", "other", "found", "labelled", "runs"),
    [
        (CID, OTHER, [CID], True, 2),  # the usual case: our pod's containers and the tasks
        ("", OTHER, [], True, 2),  # between two containers: are there kubelet labels at all?
        ("", "", [], False, 2),
    ],
)
def test_a_locate_by_labels_is_two_ctr_runs(  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch, tmp_path, ours: str, other: str, found: list[str], labelled: bool, runs: int
) -> None:
    import subprocess

    from clawguard.targets.base import ExecResult

    ctr = tmp_path / "ctr"
    ctr.write_text(FAKE_CTR)
    ctr.chmod(0o755)
    log = tmp_path / "log"
    env = {"PATH": "/usr/bin:/bin", "CTR_LOG": str(log), "OURS": ours, "ANY": f"{ours}\n{other}".strip()}
    target, _ = _target(monkeypatch, "", "")

    def run(argv, stdin=None):  # type: ignore[no-untyped-def]
        argv = [str(ctr) if a == target.values["ctr"] else a for a in argv]
        done = subprocess.run(argv, capture_output=True, env=env, check=False)
        return ExecResult(done.returncode, done.stdout, done.stderr)

    monkeypatch.setattr(target, "_cluster_exec", run)
    assert target._by_labels() == (found, labelled)
    assert len(log.read_text().splitlines()) == runs
