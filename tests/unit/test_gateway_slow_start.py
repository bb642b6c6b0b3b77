"""A start that nothing answers for a whole start_timeout, while the process it put in the
background still works on it, is waited for once more, not started a second time beside it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from clawguard import gateway as gateway_module
from clawguard.agent import SandboxFacts
from clawguard.gateway import Gateway, GatewayStartup, Health, Started, _said_started
from clawguard.pod import Pod
from clawguard.sandboxfs import UserTable
from clawguard.targets.base import ExecResult, Instance, Target

from .test_gateway import _gateway, _ssh


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ("clawguard-gateway-started 0 4242", (0, 4242)),
        ("clawguard-gateway-started 0 ", (0, None)),  # nothing was put in the background
        ("clawguard-gateway-started 127", (127, None)),
        ("clawguard-gateway-started 0 -1", (0, None)),
        ("clawguard-gateway-started 0 99999999999", (0, None)),  # no such pid: not looked at
        ("clawguard-gateway-started zero 1", None),
        ("the gateway said clawguard-gateway-started 0 1", None),
    ],
)
def test_what_the_start_said(line: str, said: tuple[int, int | None] | None) -> None:
    assert _said_started(line) == said


class _SlowGateway:
    """A Gateway whose start puts pid 4242 in the background and whose probes never get an
    answer; ``cpu`` is the process's CPU time at each look (None: gone)."""

    def __init__(self, cpu: list[float | None], timeout: int = 1) -> None:
        self.sandbox = "my-assistant"
        self.values: dict[str, Any] = {"start_timeout": timeout, "stop": None, "ssh_timeout": 30}
        self.cpu = cpu
        self.starts = 0
        self.looks = 0

    def probe(self, pod: Pod) -> Health:
        return Health(False, "no answer", 0.0)

    def can_watch(self, pod: Pod) -> bool:
        return False

    def start(self, pod: Pod) -> Started:
        self.starts += 1
        return Started(4242)

    def cpu_seconds(self, pod: Pod, pid: int) -> float | None:
        assert pid == 4242
        self.looks += 1
        return self.cpu.pop(0) if self.cpu else None


def _pod() -> Pod:
    return cast(Pod, type("P", (), {"short_id": "0" * 12, "id": "0" * 64})())


def _run(fake: _SlowGateway, monkeypatch: pytest.MonkeyPatch, logs: list[dict[str, Any]]) -> Health:
    """Its startup's steps, each when it is due, until there is an answer (at most 20 s)."""
    monkeypatch.setattr(gateway_module, "PROGRESS_WINDOW", 0.2)
    monkeypatch.setattr(gateway_module.log, "info", lambda event, **kw: logs.append({"event": event, **kw}))
    startup = GatewayStartup(cast(Gateway, fake), _pod(), fresh=True)
    deadline = time.monotonic() + 20
    while (health := startup.step()) is None:
        assert time.monotonic() < deadline, "no answer"
        time.sleep(max(0.0, startup.next_at - time.monotonic()))
    return health


def test_a_start_still_at_work_after_start_timeout_gets_one_more(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _SlowGateway([3.0, 3.5, 9.0])
    logs: list[dict[str, Any]] = []
    health = _run(fake, monkeypatch, logs)
    assert not health.healthy and fake.starts == 1  # never a second gateway beside it
    assert fake.looks == 2  # looked at twice, then given its one more start_timeout, once
    (said,) = [e for e in logs if e["event"] == "gateway.still_starting"]
    assert said["pid"] == 4242 and said["cpu_seconds"] == 0.5 and said["more"] == 1


def test_an_idle_process_is_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _SlowGateway([3.0, 3.05])
    logs: list[dict[str, Any]] = []
    assert not _run(fake, monkeypatch, logs).healthy
    assert fake.looks == 2 and not [e for e in logs if e["event"] == "gateway.still_starting"]


def test_a_process_gone_is_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _SlowGateway([None])
    logs: list[dict[str, Any]] = []
    assert not _run(fake, monkeypatch, logs).healthy
    assert fake.looks == 1 and not [e for e in logs if e["event"] == "gateway.still_starting"]


class _ProcTarget(Target):
    """A pod whose /proc/<pid>/stat is ``stat`` (None: no such process)."""

    def __init__(self, stat: bytes | None) -> None:
        super().__init__("my-assistant", {})
        self.stat = stat
        self.users: list[str | None] = []

    def locate(self) -> Instance:
        return Instance("a" * 64, "test")

    def exec(
        self, instance: Instance, argv: Sequence[str], stdin: bytes | None = None, *, user: str | None = None
    ) -> ExecResult:
        self.users.append(user)
        if self.stat is None:
            return ExecResult(1, b"", b"cat: /proc/4242/stat: No such file or directory")
        return ExecResult(0, self.stat, b"")


def _proc_pod(target: Target) -> Pod:
    users = UserTable({"sandbox": (998, 998)}, {"sandbox": 998}, {"sandbox": "/sandbox"})
    return Pod(target, target.locate(), SandboxFacts("a" * 64, users, "flat", None, "test"), "sandbox")


@pytest.mark.parametrize(
    ("stat", "seconds"),
    [
        # The name is the agent's to set: ") S 1 2" in it must not shift the fields.
        (b"4242 (node) S 1 ) S 1 2 3) R 1 4242 4242 0 -1 4194560 1 0 0 0 250 50 0 0 20 0 11 0\n", 3.0),
        (b"4242 (openclaw-gateway) Z 1 4242 4242 0 -1 4194560 1 0 0 0 250 50 0 0 20 0 1 0\n", None),
        (None, None),
        (b"garbage", None),
    ],
)
def test_the_cpu_time_of_a_process_in_the_pod(
    archive: Path, tmp_path: Path, stat: bytes | None, seconds: float | None
) -> None:
    target = _ProcTarget(stat)
    got = _gateway(archive, tmp_path).cpu_seconds(_proc_pod(target), 4242)
    assert got == (None if seconds is None else pytest.approx(seconds * 100 / gateway_module.os.sysconf("SC_CLK_TCK")))
    assert target.users == ["998:998"]  # read as the sandbox user, whose process it is


def test_the_shell_in_the_pod_says_what_the_start_put_in_the_background(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start command and the line after it, run by a real sh (as sshd would): ``$!``."""
    _ssh(tmp_path, monkeypatch, 'for last; do :; done\nexec sh -c "$last"\n')
    gateway = _gateway(archive, tmp_path, "    gateway: {start: 'sleep 30 > /dev/null 2>&1 &'}\n")
    target = _ProcTarget(b"")
    started = gateway.start(_proc_pod(target))
    assert started.pid is not None and started.watch is None
    try:
        assert Path(f"/proc/{started.pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"sleep", b"30"]
    finally:
        subprocess.run(["kill", str(started.pid)], check=False)


def test_a_flood_before_the_status_line_is_kept_to_a_bound() -> None:
    """What the sandbox prints is the agent's to choose (a login shell's profile runs first):
    a line without end is not gathered whole in the daemon's memory."""
    script = "head -c 50000000 /dev/zero | tr '\\0' x; echo; echo 'clawguard-gateway-started 0 77'; printf '000\\n'"
    proc = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        said, after = gateway_module._started(proc, 30)
        assert said == (0, 77)
        assert after in ("", "000\n")  # the watch's first words, when they came in the same read
    finally:
        proc.kill()
        proc.communicate()
