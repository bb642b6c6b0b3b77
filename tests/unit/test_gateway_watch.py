"""Waiting for a started gateway with one watch from inside the pod, not an ssh session per probe."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from http.server import HTTPServer
from pathlib import Path

import pytest

from clawguard.gateway import _PROBE, _WATCH, WATCH_EVERY, Watch

from .test_gateway import FakePodTarget, LiveHealth, _gateway, _pod, _ssh


def _run_watch(seconds: int, url: str) -> tuple[str, float]:
    if shutil.which("curl") is None:
        pytest.skip("no curl here")
    started = time.monotonic()
    done = subprocess.run(
        ["sh", "-c", _WATCH, "sh", str(seconds), str(WATCH_EVERY), _PROBE, url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout, time.monotonic() - started


def _free_port() -> int:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        return int(closed.getsockname()[1])


def _ssh_logging_to(calls: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ssh that logs each session's kind: a watch (answers live after 1 s), a probe (nothing
    listens yet) or the start."""
    _ssh(
        tmp_path,
        monkeypatch,
        'case "$*" in\n'
        f"  *'end=$(('*) echo watch >> {calls}; sleep 1; echo 200;;\n"
        f"  *curl*) echo probe >> {calls}; echo 000;;\n"
        f"  *'gateway run'*) echo start >> {calls};;\n"
        "esac\n",
    )


def test_the_watch_answers_as_soon_as_the_gateway_listens() -> None:
    """Run here: nothing listens for a second, then a live gateway; the watch prints its answer
    (the probe script's output) within a fraction of a second, long before its length."""
    port = _free_port()
    servers: list[HTTPServer] = []

    def later() -> None:
        time.sleep(1.0)
        server = HTTPServer(("127.0.0.1", port), LiveHealth)
        servers.append(server)
        server.serve_forever()

    threading.Thread(target=later, daemon=True).start()
    try:
        out, took = _run_watch(20, f"http://127.0.0.1:{port}/health")
    finally:
        for server in servers:
            server.shutdown()
    code, _, body = out.partition("\n")
    assert code == "200" and '"live"' in body
    assert 1.0 <= took < 4.0


def test_the_watch_gives_up_after_its_length_with_the_last_answer() -> None:
    out, took = _run_watch(1, f"http://127.0.0.1:{_free_port()}/health")
    assert out.splitlines()[0] == "000"
    assert took < 5.0


def test_a_started_gateway_is_watched_after_its_first_probe(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Check (nothing there), start, one probe (not up yet), then one watch session that answers
    when the gateway is up: no ssh session every 2 s. No step waits for the watch."""
    calls = tmp_path / "calls"
    _ssh_logging_to(calls, tmp_path, monkeypatch)
    startup = _gateway(archive, tmp_path).startup(_pod(FakePodTarget()))
    answer = None
    deadline = time.monotonic() + 30
    while answer is None and time.monotonic() < deadline:
        time.sleep(max(0.0, startup.next_at - time.monotonic()))
        before = time.monotonic()
        answer = startup.step()
        assert time.monotonic() - before < 0.9  # the watch runs in the background
    assert answer is not None and answer.healthy
    assert calls.read_text().splitlines() == ["probe", "start", "probe", "watch"]


def test_a_watch_that_saw_nothing_is_followed_by_another(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watch that ends with no answer (its length passed) is a probe that said "no answer":
    the wait goes on until start_timeout, with the probes' backoff between watches."""
    calls = tmp_path / "calls"
    _ssh(
        tmp_path,
        monkeypatch,
        f"case \"$*\" in *'end=$(('*) echo watch >> {calls}; echo 000;; *curl*) echo 000;; esac\n",
    )
    health = _gateway(archive, tmp_path, "    gateway: {start_timeout: 2}\n").ensure(_pod(FakePodTarget()))
    assert not health.healthy and health.status == "no answer"
    assert 1 <= calls.read_text().count("watch") <= 6  # backed off, not a busy loop


def test_through_the_targets_exec_the_start_is_waited_for_with_probes(archive: Path, tmp_path: Path) -> None:
    gateway = _gateway(archive, tmp_path, "    gateway: {transport: target}\n")
    pod = _pod(FakePodTarget())
    assert not gateway.can_watch(pod) and gateway.watch(pod, 10) is None


def test_a_watch_that_overruns_is_killed_and_is_an_ssh_failure(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = subprocess.Popen(
        ["sleep", "300"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    watch = Watch(["ssh"], proc, time.monotonic() + 60)
    assert watch.result() is None  # still running, not overdue
    watch.ends = time.monotonic() - 1
    result = watch.result()
    assert result is not None and result.returncode == 255 and proc.poll() is not None
    health = _gateway(archive, tmp_path).judge(_pod(FakePodTarget()), result)
    assert not health.healthy and health.status.startswith("ssh failed")


def test_a_wait_given_up_ends_its_watch(archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM (the stop event) during a watch: the watch's ssh is killed with the wait."""
    from clawguard.backoff import Stopped

    pids = tmp_path / "pids"
    _ssh(
        tmp_path,
        monkeypatch,
        f"case \"$*\" in *'end=$(('*) echo $$ >> {pids}; sleep 300;; *curl*) echo 000;; esac\n",
    )
    stop = threading.Event()
    threading.Timer(1.5, stop.set).start()
    with pytest.raises(Stopped):
        _gateway(archive, tmp_path, "    gateway: {start_timeout: 300}\n").ensure(_pod(FakePodTarget()), stop=stop)
    pid = int(pids.read_text().split()[0])
    time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_a_gateway_just_started_in_a_new_pod_is_watched_at_once(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new pod (fresh): no probe before the start, and none right after it either (a Node.js
    gateway is not live one round trip after its start): the start, then one watch."""
    calls = tmp_path / "calls"
    _ssh_logging_to(calls, tmp_path, monkeypatch)
    assert _gateway(archive, tmp_path).ensure(_pod(FakePodTarget()), fresh=True).healthy
    assert calls.read_text().splitlines() == ["start", "watch"]
