from __future__ import annotations

import io
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from clawguard import TargetError, log, parse_config
from clawguard import daemon as daemon_module
from clawguard.daemon import Daemon, SocketNotifier
from clawguard.persist import CaptureStore
from clawguard.state import StateStore, load_state
from clawguard.targets.base import ExecResult, Instance

from .chroot_sandbox import ChrootTarget, make_sandbox_root
from .conftest import basic_config, full_notify_socket

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chroot and chown need root")


class Recorder:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def notify(self, state: str) -> None:
        self.messages.append(state)


class PodTarget(ChrootTarget):
    """A chroot whose 'pod' can be replaced (new ID, wiped files) or made unreachable."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reachable = True
        self.woken: Callable[[str], None] | None = None
        self.locates = 0

    def locate(self) -> Instance:
        self.locates += 1
        if not self.reachable:
            raise TargetError("cluster container openshell-cluster-nemoclaw is exited, not running")
        return self.instance

    def exec(
        self, instance: Instance, argv: Sequence[str], stdin: bytes | None = None, *, user: str | None = None
    ) -> ExecResult:
        return super().exec(instance, argv, stdin, user=user)

    def watch(self, wake: Callable[[str], None], stop: threading.Event) -> None:
        self.woken = wake
        stop.wait()

    def replace_pod(self, new_id: str) -> None:
        import shutil

        shutil.rmtree(self.root)
        make_sandbox_root(self.root)
        self.instance = Instance(new_id, "chroot")
        if self.woken:
            self.woken("test: pod replaced")


def _wait(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def daemon_parts(archive: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    log.configure("info", io.StringIO())  # the worker threads outlive pytest's captured stderr
    config = parse_config(
        "daemon: {poll_interval: 30}\n" + basic_config(archive, "    gateway: {enabled: false}\n"), "c.yaml"
    )
    target = PodTarget(make_sandbox_root(tmp_path / "root"))
    recorder = Recorder()
    daemon = Daemon(config, recorder, targets={"my-assistant": target})
    thread = threading.Thread(target=daemon.run)
    thread.start()
    yield daemon, target, recorder
    daemon.shutdown()
    thread.join(10)
    assert not thread.is_alive()


def test_restores_on_start_then_on_pod_replacement(daemon_parts) -> None:  # type: ignore[no-untyped-def]
    _daemon, target, recorder = daemon_parts
    _wait(lambda: "READY=1" in recorder.messages)
    state = load_state("my-assistant")
    assert state["container_id"] == "0" * 64
    assert state["last_restore"]["outcome"] == "ok" and state["last_restore"]["reason"] == "daemon start"
    assert any(m.startswith("STATUS=my-assistant: restored 10 steps") for m in recorder.messages)
    assert "WATCHDOG=1" in recorder.messages

    locates = target.locates
    target.replace_pod("1" * 64)  # the event wakes the worker long before the 30 s poll
    _wait(lambda: load_state("my-assistant").get("container_id") == "1" * 64, timeout=10)
    # The round's locate finds the new pod and the restore takes it from there; one more
    # at the end checks that it is still the same pod.
    assert target.locates - locates == 2
    state = load_state("my-assistant")
    assert state["last_restore"]["reason"] == "pod replaced" and state["last_restore"]["changed"] == 10
    assert (target.root / "sandbox/.openclaw-data/workspace/SOUL.md").exists()


def test_waits_without_dying_while_the_cluster_is_away(daemon_parts) -> None:  # type: ignore[no-untyped-def]
    _daemon, target, recorder = daemon_parts
    _wait(lambda: "READY=1" in recorder.messages)
    target.reachable = False
    target.replace_pod("2" * 64)
    _wait(lambda: any("waiting: cluster container" in m for m in recorder.messages))
    count = recorder.messages.count("WATCHDOG=1")
    _wait(lambda: recorder.messages.count("WATCHDOG=1") > count)  # still alive and pinging
    target.reachable = True
    target.woken and target.woken("test: cluster back")  # type: ignore[func-returns-value]
    _wait(lambda: load_state("my-assistant").get("container_id") == "2" * 64)


def test_a_hung_worker_stops_the_watchdog(daemon_parts) -> None:  # type: ignore[no-untyped-def]
    daemon, _target, recorder = daemon_parts
    _wait(lambda: "READY=1" in recorder.messages)
    out = io.StringIO()
    log.configure("info", out)  # the main loop's next events come here
    worker = daemon.workers[0]
    worker.status.beat -= 10_000  # as if the worker had been stuck for hours
    daemon.changed.set()
    _wait(lambda: out.getvalue().count("event=daemon.hung") >= 1)
    marker = len(recorder.messages)
    daemon.changed.set()
    # A whole round of the main loop went by (it said hung again): it sent no WATCHDOG=1.
    _wait(lambda: out.getvalue().count("event=daemon.hung") >= 2)
    assert "WATCHDOG=1" not in recorder.messages[marker:]
    assert "sandboxes=['my-assistant']" in out.getvalue()


def test_verify_pass_repairs_drift_and_names_it(archive: Path, tmp_path: Path) -> None:
    out = io.StringIO()
    log.configure("info", out)
    config = parse_config(
        "daemon: {poll_interval: 30, verify_interval: 5}\n" + basic_config(archive, "    gateway: {enabled: false}\n"),
        "c.yaml",
    )
    target = PodTarget(make_sandbox_root(tmp_path / "root"))
    daemon = Daemon(config, Recorder(), targets={"my-assistant": target})
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        skill = target.root / "sandbox/.openclaw-data/skills/proxmox"
        _wait(lambda: load_state("my-assistant").get("last_restore"))  # the first restore is complete
        import shutil

        shutil.rmtree(skill)  # deleted by hand inside the sandbox
        try:
            _wait(lambda: (skill / "SKILL.md").exists(), timeout=20)
        except AssertionError:
            raise AssertionError("not repaired; daemon log:\n" + out.getvalue()[-3000:]) from None
        _wait(lambda: "event=sandbox.drift" in out.getvalue())
        drift = next(line for line in out.getvalue().splitlines() if "event=sandbox.drift" in line)
        assert "skills/proxmox" in drift
        assert load_state("my-assistant")["last_restore"]["reason"] == "drift check"
    finally:
        daemon.shutdown()
        thread.join(10)


def _start(config_text: str, root: Path) -> tuple[Daemon, PodTarget, threading.Thread, io.StringIO]:
    out = io.StringIO()
    log.configure("info", out)
    config = parse_config(config_text, "c.yaml")
    target = PodTarget(make_sandbox_root(root))
    daemon = Daemon(config, Recorder(), targets={"my-assistant": target})
    thread = threading.Thread(target=daemon.run)
    thread.start()
    return daemon, target, thread, out


def test_archive_edits_reach_the_live_sandbox_and_invalid_ones_do_not(archive: Path, tmp_path: Path) -> None:
    daemon, target, thread, out = _start(basic_config(archive, "    gateway: {enabled: false}\n"), tmp_path / "root")
    try:
        _wait(lambda: load_state("my-assistant").get("last_restore"))
        live_soul = target.root / "sandbox/.openclaw-data/workspace/SOUL.md"
        (archive / "SOUL.md").write_text("# SOUL\nBe brief.\n")
        _wait(lambda: live_soul.read_text() == "# SOUL\nBe brief.\n", timeout=10)
        changed = next(line for line in out.getvalue().splitlines() if "event=archive.changed" in line)
        assert "SOUL.md" in changed and "proxmox" not in changed  # only the step the file feeds

        live_config = target.root / "sandbox/.openclaw/openclaw.json"
        before = live_config.read_bytes()
        (archive / "openclaw.json").write_text('{"gateway": {"port": 18789,}\n')  # a typo: invalid JSON
        _wait(lambda: "event=archive.invalid" in out.getvalue(), timeout=10)
        invalid = next(line for line in out.getvalue().splitlines() if "event=archive.invalid" in line)
        assert "openclaw.json" in invalid and "not valid JSON" in invalid
        assert live_config.read_bytes() == before
        # The last valid plan stays in force: a drift check still restores the old config.
        daemon.workers[0]._converge("drift check")
        assert live_config.read_bytes() == before
        assert load_state("my-assistant")["last_restore"]["outcome"] == "ok"
    finally:
        daemon.shutdown()
        thread.join(10)


def test_stopping_daemon_captures_the_agents_state(archive: Path, tmp_path: Path) -> None:
    daemon, target, thread, _out = _start(basic_config(archive, "    gateway: {enabled: false}\n"), tmp_path / "root")
    _wait(lambda: load_state("my-assistant").get("last_restore"))
    memory = target.root / "sandbox/.openclaw-data/workspace/MEMORY.md"
    memory.write_text("written just before SIGTERM\n")
    daemon.shutdown()
    thread.join(20)
    assert not thread.is_alive()
    from clawguard.persist import read_members

    latest = CaptureStore(StateStore(), "my-assistant", 5).latest()
    assert latest is not None and latest.reason == "daemon stopping"
    members = read_members(latest.read(), ["/sandbox"], "/sandbox")
    assert [m.entry.data() for m in members] == [b"written just before SIGTERM\n"]


class FakeGateway:
    """A gateway that dies when told to, and is started again by ensure()."""

    def __init__(self) -> None:
        self.healthy = True
        self.starts = 0

    def probe(self, _instance: Instance) -> object:
        from clawguard.gateway import Health

        return Health(self.healthy, "200" if self.healthy else "no answer", time.time())

    def ensure(self, instance: Instance, heartbeat: object = None, restart_for: object = (), **_: object) -> object:
        if not self.healthy:
            self.starts += 1
            self.healthy = True
        return self.probe(instance)


def test_an_event_on_the_same_container_checks_the_gateway_at_once(archive: Path, tmp_path: Path) -> None:
    """docker restart keeps the container ID and kills the gateway: do not wait for health_interval."""
    log.configure("info", io.StringIO())
    config = parse_config("daemon: {health_interval: 3600}\n" + basic_config(archive), "c.yaml")
    target = PodTarget(make_sandbox_root(tmp_path / "root"))
    recorder = Recorder()
    daemon = Daemon(config, recorder, targets={"my-assistant": target})
    gateway = FakeGateway()
    daemon.workers[0].ctx.gateway = gateway  # type: ignore[assignment]
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        _wait(lambda: "READY=1" in recorder.messages and target.woken is not None)
        gateway.healthy = False  # the container restarted: same ID, files intact, gateway gone
        assert target.woken is not None
        target.woken("test: container restarted")
        _wait(lambda: load_state("my-assistant")["last_restore"]["reason"] == "gateway down", timeout=10)
        assert gateway.starts == 1  # long before health_interval (an hour) would have come round
    finally:
        daemon.shutdown()
        runner.join(20)


def test_a_resync_that_lands_on_a_new_pod_asks_for_a_full_restore(archive: Path, tmp_path: Path) -> None:
    """The changed steps alone must not count as restoring a pod that was replaced meanwhile."""
    log.configure("error", io.StringIO())
    config = parse_config(basic_config(archive, "    gateway: {enabled: false}\n"), "c.yaml")
    target = PodTarget(make_sandbox_root(tmp_path / "root"))
    daemon = Daemon(config, Recorder(), targets={"my-assistant": target})
    worker = daemon.workers[0]
    worker._converge("daemon start")
    old = target.locate()
    assert worker.last_id == old.id
    (archive / "SOUL.md").write_text("# SOUL\nnew\n")
    target.replace_pod("9" * 64)  # between the round's locate and the re-sync
    worker._resync(old)
    assert worker.last_id is None  # the next round restores the new pod in full
    worker._converge("pod replaced")
    assert worker.last_id == "9" * 64
    assert (target.root / "sandbox/.openclaw-data/skills/proxmox/SKILL.md").exists()


def test_a_failing_restore_is_retried_with_backoff_and_a_new_pod_at_once(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore that fails on a pod (here: its image has no tar) is not hammered at every
    poll; a replacement pod is restored at once."""
    import clawguard.converge as converge_module

    log.configure("error", io.StringIO())
    calls: list[str] = []
    real = converge_module.run_plan

    def counted(plan, pod, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(pod.id)
        return real(plan, pod, **kwargs)

    monkeypatch.setattr(converge_module, "run_plan", counted)
    config = parse_config(basic_config(archive, "    gateway: {enabled: false}\n"), "c.yaml")
    target = PodTarget(make_sandbox_root(tmp_path / "root"))
    (target.root / "bin" / "tar").unlink()
    worker = Daemon(config, Recorder(), targets={"my-assistant": target}).workers[0]
    worker._seen_generation = worker.generation
    worker._backoff = 1.0
    worker._next_health = worker._next_verify = worker._next_capture = time.monotonic() + 3600
    worker._failed_pod, worker._retry_at, worker._retry_delay = None, 0.0, 1.0

    worker._tick()
    assert calls == ["0" * 64] and worker.last_id is None  # failed
    delay = worker._tick()
    assert calls == ["0" * 64] and 0 < delay <= 1.0  # not again at once: after the delay
    worker._retry_at = time.monotonic()  # the delay is over
    worker._tick()
    assert calls == ["0" * 64] * 2 and worker._retry_delay == 4.0  # doubled after each failure
    target.replace_pod("5" * 64)  # a new pod, with tar: restored without waiting
    worker._tick()
    assert calls[-1] == "5" * 64 and worker.last_id == "5" * 64 and worker._failed_pod is None


def _two_sandboxes(archive: Path, tmp_path: Path, bad: Path) -> tuple[str, dict[str, PodTarget]]:
    """`good` with the example archive, `bad` with an archive of its own; a recording on_failed hook."""
    record = tmp_path / "hook-failed"
    text = (
        f"hooks:\n  on_failed: [sh, -c, 'echo \"$CLAWGUARD_SANDBOX $CLAWGUARD_REASON\" >> {record}']\n"
        "version: 1\ndaemon: {poll_interval: 30}\nsandboxes:\n"
        f"  good:\n    target: {{kind: k3s}}\n    archive: {archive}\n    gateway: {{enabled: false}}\n"
        f"  bad:\n    target: {{kind: k3s}}\n    archive: {bad}\n    gateway: {{enabled: false}}\n"
    )
    targets = {name: PodTarget(make_sandbox_root(tmp_path / f"root-{name}")) for name in ("good", "bad")}
    return text, targets


def test_a_bad_archive_at_start_costs_only_its_own_sandbox(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13: a JSON typo in one sandbox's openclaw.json, then a reboot: the daemon used to
    exit 2 and protect nothing. Now that sandbox is in the config-error state (journal at
    err, status, STATUS=, on_failed) and the other one is restored; fixing the archive
    starts protecting it."""
    import shutil

    out = io.StringIO()
    log.configure("info", out)
    bad = tmp_path / "bad-archive"
    shutil.copytree(archive, bad)
    good_json = (bad / "openclaw.json").read_text()
    (bad / "openclaw.json").write_text('{"gateway": {"port": 18789,,}}\n')
    text, targets = _two_sandboxes(archive, tmp_path, bad)
    recorder = Recorder()
    daemon = Daemon(parse_config(text, "c.yaml"), recorder, targets=dict(targets))
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        _wait(lambda: "READY=1" in recorder.messages)  # both settled: one restored, one in error
        assert load_state("good")["last_restore"]["outcome"] == "ok"
        error = load_state("bad")["config_error"]
        assert "openclaw.json: not valid JSON" in error["message"] and error["reason"] == "daemon start"
        status = next(m for m in reversed(recorder.messages) if m.startswith("STATUS="))
        assert "good: restored" in status and "bad: config error:" in status
        assert "level=error event=sandbox.config_error sandbox=bad" in out.getvalue()
        _wait(lambda: (tmp_path / "hook-failed").exists())
        assert (tmp_path / "hook-failed").read_text() == "bad config error (daemon start)\n"
        assert not (targets["bad"].root / "sandbox/.openclaw-data/workspace/SOUL.md").exists()

        (bad / "openclaw.json").write_text(good_json)  # fixed: the watcher sees it
        _wait(lambda: (load_state("bad").get("last_restore") or {}).get("outcome") == "ok", timeout=30)
        assert load_state("bad")["config_error"] is None
        assert (targets["bad"].root / "sandbox/.openclaw-data/workspace/SOUL.md").exists()
        assert "event=sandbox.config_fixed sandbox=bad" in out.getvalue()
    finally:
        daemon.shutdown()
        runner.join(20)


def test_waiting_for_the_lock_feeds_the_watchdog_and_says_what_for(archive: Path, tmp_path: Path) -> None:
    """Issue 13: a long one-shot `clawguard restore` holds the lock; the daemon waited without a
    heartbeat, and systemd's watchdog could kill it."""
    from clawguard.state import sandbox_lock

    log.configure("error", io.StringIO())
    config = parse_config(basic_config(archive, "    gateway: {enabled: false}\n"), "c.yaml")
    target = PodTarget(make_sandbox_root(tmp_path / "root"))
    daemon = Daemon(config, Recorder(), targets={"my-assistant": target})
    worker = daemon.workers[0]
    with sandbox_lock("my-assistant"):  # as `clawguard restore` would
        runner = threading.Thread(target=daemon.run)
        runner.start()
        try:
            _wait(lambda: "waiting for" in worker.status.line)
            assert worker.status.line == (
                f"my-assistant: waiting for my-assistant's lock, held by pid {os.getpid()} "
                "(a clawguard restore, capture or daemon)"
            )
            beat = worker.status.beat
            _wait(lambda: worker.status.beat > beat)  # still beating while it waits
            # `clawguard status` shows it, from what the daemon publishes.
            from clawguard.state import read_json, state_dir

            _wait(lambda: "waiting for" in read_json(state_dir() / "daemon.json")["workers"]["my-assistant"])
        except BaseException:
            daemon.shutdown()
            runner.join(20)
            raise
    try:
        _wait(lambda: worker.last_id == "0" * 64)  # the lock was released: restored
    finally:
        daemon.shutdown()
        runner.join(20)


def test_a_notify_socket_nobody_drains_drops_notifications_instead_of_blocking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon_module, "NOTIFY_TIMEOUT", 0.05)
    out = io.StringIO()
    log.configure("info", out)
    receiver = full_notify_socket(tmp_path / "notify.sock")
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.connect(str(tmp_path / "notify.sock"))
    notifier = SocketNotifier(sender)
    for _ in range(5):
        notifier.notify("STATUS=my-assistant: token sk-not-a-secret")  # returns: the send gives up
    assert notifier.dropped == 5
    receiver.setblocking(False)
    with pytest.raises(BlockingIOError):  # systemd drains it again
        while True:
            receiver.recv(64)
    notifier.notify("WATCHDOG=1")
    assert receiver.recv(64) == b"WATCHDOG=1"
    for sock in (receiver, sender):
        sock.close()
    events = [word for line in out.getvalue().splitlines() for word in line.split() if "event=systemd" in word]
    assert events == ["event=systemd.notify_dropped", "event=systemd.notify_recovered"]  # once per episode
    assert "message=STATUS" in out.getvalue() and "dropped=5" in out.getvalue()
    assert "sk-not-a-secret" not in out.getvalue()  # the key is logged, never the line


class RefusingRecorder(Recorder):
    """A notify socket that refuses the first READY=1."""

    def __init__(self) -> None:
        super().__init__()
        self.to_refuse = {"READY"}

    def notify(self, state: str) -> bool:
        key = state.partition("=")[0]
        refused = key in self.to_refuse
        self.to_refuse.discard(key)
        self.messages.append(f"refused {state}" if refused else state)
        return not refused


def test_a_ready_that_could_not_be_sent_is_sent_again(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A unit whose READY=1 is lost would fail its start (Type=notify) though the daemon runs.
    monkeypatch.setenv("WATCHDOG_USEC", "1500000")  # a main-loop round every 0.5 s
    log.configure("info", io.StringIO())
    config = parse_config(
        "daemon: {poll_interval: 30}\n" + basic_config(archive, "    gateway: {enabled: false}\n"), "c.yaml"
    )
    recorder = RefusingRecorder()
    daemon = Daemon(config, recorder, targets={"my-assistant": PodTarget(make_sandbox_root(tmp_path / "root"))})
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        _wait(lambda: "READY=1" in recorder.messages)
    finally:
        daemon.shutdown()
        thread.join(10)
    assert recorder.messages.index("refused READY=1") < recorder.messages.index("READY=1")
    assert recorder.messages[-1] == "STOPPING=1"
