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
from clawguard.daemon import Daemon, Phase, SocketNotifier
from clawguard.persist import CaptureStore
from clawguard.state import StateStore
from clawguard.targets.base import ExecResult, Instance

from .chroot_sandbox import ChrootTarget, make_sandbox_root
from .conftest import basic_config, full_notify_socket


class Recorder:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def notify(self, state: str) -> None:
        self.messages.extend(state.split("\n"))  # sd_notify: one assignment a line


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
        if instance.id != self.instance.id:  # like a container that was replaced
            raise TargetError(f"no such container: {instance.id[:12]}")
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


def _restored(sandbox: str = "my-assistant") -> bool:
    return (StateStore().load(sandbox).get("last_restore") or {}).get("outcome") == "ok"


def test_restores_on_start_then_on_pod_replacement(daemon_parts) -> None:  # type: ignore[no-untyped-def]
    _daemon, target, recorder = daemon_parts
    _wait(lambda: "READY=1" in recorder.messages and _restored())
    state = StateStore().load("my-assistant")
    assert state["container_id"] == "0" * 64
    assert state["last_restore"]["outcome"] == "ok" and state["last_restore"]["reason"] == "daemon start"
    _wait(lambda: any(m.startswith("STATUS=my-assistant: restored 10 steps") for m in recorder.messages))
    assert "WATCHDOG=1" in recorder.messages

    locates = target.locates
    target.replace_pod("1" * 64)  # the event wakes the worker long before the 30 s poll
    _wait(lambda: StateStore().load("my-assistant").get("container_id") == "1" * 64, timeout=10)
    # The round's locate finds the new pod and the restore takes it from there (an event
    # during the restore is checked by one more; with a gateway, one after its start).
    assert target.locates - locates == 1
    state = StateStore().load("my-assistant")
    assert state["last_restore"]["reason"] == "pod replaced" and state["last_restore"]["changed"] == 10
    assert (target.root / "sandbox/.openclaw-data/workspace/SOUL.md").exists()


def test_waits_without_dying_while_the_cluster_is_away(daemon_parts) -> None:  # type: ignore[no-untyped-def]
    _daemon, target, recorder = daemon_parts
    _wait(lambda: "READY=1" in recorder.messages and _restored())
    target.reachable = False
    target.replace_pod("2" * 64)
    _wait(lambda: any("waiting: cluster container" in m for m in recorder.messages))
    count = recorder.messages.count("WATCHDOG=1")
    _wait(lambda: recorder.messages.count("WATCHDOG=1") > count)  # still alive and pinging
    target.reachable = True
    target.woken and target.woken("test: cluster back")  # type: ignore[func-returns-value]
    _wait(lambda: StateStore().load("my-assistant").get("container_id") == "2" * 64)


def test_a_hung_worker_stops_the_watchdog(daemon_parts) -> None:  # type: ignore[no-untyped-def]
    daemon, _target, recorder = daemon_parts
    _wait(lambda: "READY=1" in recorder.messages and _restored() and daemon.workers[0].phase is Phase.WATCHING)
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
        _wait(lambda: StateStore().load("my-assistant").get("last_restore"))  # the first restore is complete
        import shutil

        shutil.rmtree(skill)  # deleted by hand inside the sandbox
        try:
            _wait(lambda: (skill / "SKILL.md").exists(), timeout=20)
        except AssertionError:
            raise AssertionError("not repaired; daemon log:\n" + out.getvalue()[-3000:]) from None
        _wait(lambda: "event=sandbox.drift" in out.getvalue())
        drift = next(line for line in out.getvalue().splitlines() if "event=sandbox.drift" in line)
        assert "skills/proxmox" in drift
        assert StateStore().load("my-assistant")["last_restore"]["reason"] == "drift check"
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
        _wait(lambda: StateStore().load("my-assistant").get("last_restore"))
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
        assert StateStore().load("my-assistant")["last_restore"]["outcome"] == "ok"
    finally:
        daemon.shutdown()
        thread.join(10)


def test_stopping_daemon_captures_the_agents_state(archive: Path, tmp_path: Path) -> None:
    daemon, target, thread, _out = _start(basic_config(archive, "    gateway: {enabled: false}\n"), tmp_path / "root")
    _wait(lambda: StateStore().load("my-assistant").get("last_restore"))
    memory = target.root / "sandbox/.openclaw-data/workspace/MEMORY.md"
    memory.write_text("written just before SIGTERM\n")
    daemon.shutdown()
    thread.join(20)
    assert not thread.is_alive()
    from clawguard.persist import read_members

    latest = CaptureStore(StateStore(), "my-assistant", 5).latest()
    assert latest is not None and latest.reason == "daemon stopping"
    members = read_members(latest.read(), ["/sandbox"], "/sandbox")
    assert [m.entry.data() for m in members if m.entry.kind == "file"] == [b"written just before SIGTERM\n"]


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

    def startup(self, pod: Instance, restart_for: object = (), fresh: bool = False) -> object:
        gateway = self

        class Steps:
            next_at = 0.0

            def step(self) -> object:
                return gateway.ensure(pod)

            def describe(self) -> str:
                return "starting the gateway"

            def close(self) -> None:
                pass  # no health watch to end

        return Steps()


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
        _wait(lambda: "READY=1" in recorder.messages and target.woken is not None and _restored())
        gateway.healthy = False  # the container restarted: same ID, files intact, gateway gone
        assert target.woken is not None
        target.woken("test: container restarted")
        _wait(lambda: StateStore().load("my-assistant")["last_restore"]["reason"] == "gateway down", timeout=10)
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

    worker._tick()
    assert calls == ["0" * 64] and worker.last_id is None and worker.phase is Phase.FAILED  # failed
    delay = worker._tick()
    assert calls == ["0" * 64] and 0 < delay <= 1.0  # not again at once: after the delay
    worker.deadline = time.monotonic()  # the delay is over
    worker._tick()
    assert calls == ["0" * 64] * 2 and worker.retry.peek() == 4.0  # doubled after each failure
    target.replace_pod("5" * 64)  # a new pod, with tar: restored without waiting
    worker._tick()
    assert calls[-1] == "5" * 64 and worker.last_id == "5" * 64 and worker.phase is Phase.WATCHING


def test_a_replacement_after_a_failed_recovery_is_still_a_replacement(archive: Path, tmp_path: Path) -> None:
    """After a failed converge, the next real pod replacement is still "pod replaced", with
    the previous pod: for the hooks' CLAWGUARD_REASON, pod_replacements and the detection
    histogram (sandbox.detected)."""
    out = io.StringIO()
    log.configure("info", out)
    record = tmp_path / "hook-restored"
    config = parse_config(
        f"hooks:\n  on_restored: [sh, -c, 'echo \"$CLAWGUARD_REASON\" >> {record}']\n"
        + basic_config(archive, "    gateway: {enabled: false}\n"),
        "c.yaml",
    )
    target = PodTarget(make_sandbox_root(tmp_path / "root"))
    (target.root / "bin" / "tar").unlink()  # its restore fails
    worker = Daemon(config, Recorder(), targets={"my-assistant": target}).workers[0]
    worker._tick()
    assert worker.last_id is None and StateStore().load("my-assistant")["last_restore"]["reason"] == "daemon start"
    target.replace_pod("7" * 64)  # the kubelet replaces the pod: a real replacement
    worker._tick()
    assert worker.last_id == "7" * 64
    assert StateStore().load("my-assistant")["last_restore"]["reason"] == "pod replaced"
    detected = [line for line in out.getvalue().splitlines() if "event=sandbox.detected" in line]
    assert len(detected) == 1 and "previous=000000000000" in detected[0]
    _wait(lambda: record.exists() and record.read_text() == "pod replaced\n")


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
    """A JSON typo in one sandbox's openclaw.json at daemon start does not stop the daemon:
    that sandbox is in the config-error state (journal at err, status, STATUS=, on_failed),
    the other one is restored, and fixing the archive starts protecting it."""
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
        _wait(
            lambda: (
                "READY=1" in recorder.messages and _restored("good") and StateStore().load("bad").get("config_error")
            )
        )
        assert StateStore().load("good")["last_restore"]["outcome"] == "ok"
        error = StateStore().load("bad")["config_error"]
        assert "openclaw.json: not valid JSON" in error["message"] and error["reason"] == "daemon start"
        status = next(m for m in reversed(recorder.messages) if m.startswith("STATUS="))
        assert "good: restored" in status and "bad: config error:" in status
        assert "level=error event=sandbox.config_error sandbox=bad" in out.getvalue()
        _wait(lambda: (tmp_path / "hook-failed").exists())
        assert (tmp_path / "hook-failed").read_text() == "bad config error (daemon start)\n"
        assert not (targets["bad"].root / "sandbox/.openclaw-data/workspace/SOUL.md").exists()

        (bad / "openclaw.json").write_text(good_json)  # fixed: the watcher sees it
        _wait(lambda: (StateStore().load("bad").get("last_restore") or {}).get("outcome") == "ok", timeout=30)
        assert StateStore().load("bad")["config_error"] is None
        assert (targets["bad"].root / "sandbox/.openclaw-data/workspace/SOUL.md").exists()
        assert "event=sandbox.config_fixed sandbox=bad" in out.getvalue()
    finally:
        daemon.shutdown()
        runner.join(20)


def test_waiting_for_the_lock_feeds_the_watchdog_and_says_what_for(archive: Path, tmp_path: Path) -> None:
    """While a one-shot `clawguard restore` holds the lock, the daemon waiting for it keeps
    feeding systemd's watchdog (which would kill it otherwise) and says what it waits for."""
    log.configure("error", io.StringIO())
    config = parse_config(basic_config(archive, "    gateway: {enabled: false}\n"), "c.yaml")
    target = PodTarget(make_sandbox_root(tmp_path / "root"))
    daemon = Daemon(config, Recorder(), targets={"my-assistant": target})
    worker = daemon.workers[0]
    with StateStore().lock("my-assistant"):  # as `clawguard restore` would
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
        lines = state.split("\n")
        self.messages.extend([f"refused {line}" for line in lines] if refused else lines)
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


def never_healthy_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An `ssh` on PATH for a gateway that starts but never answers; returns its start log."""
    starts = tmp_path / "gateway-starts"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "ssh").write_text(f'#!/bin/sh\ncase "$*" in *curl*) echo 000;; *) echo start >> {starts};; esac\n')
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return starts


def test_ready_captures_and_the_lock_while_the_first_gateway_starts(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the first gateway starts: READY=1 is sent (waiting for a slow gateway would make
    a restart loop), interval captures go on, and the sandbox's lock is not held, so a
    one-shot `clawguard capture` is not kept waiting."""
    from clawguard.converge import capture_sandbox

    starts = never_healthy_ssh(tmp_path, monkeypatch)
    out = io.StringIO()
    log.configure("info", out)
    config = parse_config(
        "daemon: {poll_interval: 30, persist_interval: 1}\n"
        + basic_config(archive, "    gateway: {start_timeout: 300}\n"),
        "c.yaml",
    )
    target = PodTarget(make_sandbox_root(tmp_path / "root"))
    recorder = Recorder()
    daemon = Daemon(config, recorder, targets={"my-assistant": target})
    worker = daemon.workers[0]
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        _wait(lambda: worker.phase is Phase.GATEWAY and starts.exists())
        _wait(lambda: "READY=1" in recorder.messages)
        assert worker.phase is Phase.GATEWAY  # READY=1 is out; the gateway is not healthy
        _wait(
            lambda: any(
                m.startswith("STATUS=my-assistant: restored, waiting for the gateway") for m in recorder.messages
            )
        )
        # The daemon captures the agent's state meanwhile…
        (target.root / "sandbox/.openclaw-data/workspace/MEMORY.md").write_text("written while the gateway starts\n")
        _wait(lambda: "event=persist.captured" in out.getvalue() and "reason=interval" in out.getvalue())
        # …and a one-shot capture is not kept waiting for the sandbox's lock.
        started = time.monotonic()
        outcome = capture_sandbox(worker.ctx, reason="manual", lock_timeout=5)
        assert outcome.outcome in ("saved", "unchanged") and time.monotonic() - started < 5
        assert worker.phase is Phase.GATEWAY and starts.read_text() == "start\n"  # one start, still waiting
    finally:
        stopping = time.monotonic()
        daemon.shutdown()
        thread.join(15)
    assert not thread.is_alive() and time.monotonic() - stopping < 10  # the stop does not wait out the start


def test_a_full_disk_does_not_kill_the_main_loop(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC writing daemon.json is logged once and the main loop goes on (and logs the recovery)."""
    import errno

    monkeypatch.setenv("WATCHDOG_USEC", "1500000")  # a main-loop round every 0.5 s
    out = io.StringIO()
    log.configure("info", out)
    full = [True]
    real = daemon_module.write_json

    def write_json(path: Path, data: object) -> None:
        if full[0]:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(daemon_module, "write_json", write_json)
    config = parse_config(
        "daemon: {poll_interval: 30}\n" + basic_config(archive, "    gateway: {enabled: false}\n"), "c.yaml"
    )
    recorder = Recorder()
    daemon = Daemon(config, recorder, targets={"my-assistant": PodTarget(make_sandbox_root(tmp_path / "root"))})
    thread = threading.Thread(target=daemon.run)
    thread.start()
    try:
        _wait(lambda: "event=daemon.state_write_failed" in out.getvalue())
        pings = recorder.messages.count("WATCHDOG=1")
        _wait(lambda: recorder.messages.count("WATCHDOG=1") >= pings + 3)  # rounds go on
        assert thread.is_alive() and out.getvalue().count("event=daemon.state_write_failed") == 1  # once
        assert "No space left on device" in out.getvalue()
        full[0] = False
        _wait(lambda: "event=daemon.state_write_recovered" in out.getvalue())
    finally:
        daemon.shutdown()
        thread.join(10)
    assert not thread.is_alive()


def test_a_soul_edit_restarts_the_gateway_without_a_probe_or_a_capture_first(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SOUL.md edit restarts the gateway at once: no capture before the re-sync (it writes
    archive steps only, never a persisted path) and no probe before the stop (the gateway
    starts again anyway)."""
    calls = tmp_path / "ssh-calls"
    up = tmp_path / "up"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(
        '#!/bin/sh\ncase "$*" in\n'
        f"  *curl*) echo probe >> {calls}; if [ -e {up} ]; then echo 200; else echo 000; fi;;\n"
        f"  *'gateway run'*) echo start >> {calls}; touch {up};;\n"
        "esac\n"
    )
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    daemon, _target, thread, out = _start(
        "daemon: {poll_interval: 30, persist_interval: 3600}\n" + basic_config(archive), tmp_path / "root"
    )
    try:
        _wait(lambda: "event=gateway.health" in out.getvalue() and daemon.workers[0].phase is Phase.WATCHING)
        calls.unlink()
        mark = len(out.getvalue())
        (archive / "SOUL.md").write_text("# SOUL\nBe brief.\n")
        _wait(
            lambda: (
                'reason="archive changed"' in out.getvalue()[mark:] and "event=gateway.health" in out.getvalue()[mark:]
            )
        )
        assert calls.read_text().splitlines() == ["start", "probe"]  # stopped (through the target), started, healthy
        after = out.getvalue()[mark:]
        assert "before restore" not in after and "event=gateway.restart" in after
    finally:
        daemon.shutdown()
        thread.join(10)


def test_a_gateway_wait_given_up_ends_its_health_watch(archive: Path, tmp_path: Path) -> None:
    """A pod replaced while its gateway is waited for: the watch session in the old pod is
    ended, not left polling it until its length runs out."""
    log.configure("error", io.StringIO())
    config = parse_config(basic_config(archive), "c.yaml")
    target = PodTarget(make_sandbox_root(tmp_path / "root"))
    worker = Daemon(config, Recorder(), targets={"my-assistant": target}).workers[0]
    closed: list[bool] = []

    class Startup:
        def close(self) -> None:
            closed.append(True)

    worker.gateway_run = daemon_module.GatewayRun(None, Startup(), "pod replaced", False)  # type: ignore[arg-type]
    worker._start_over("the pod was replaced while waiting for its gateway", "pod replaced")
    assert worker.gateway_run is None and closed == [True]
