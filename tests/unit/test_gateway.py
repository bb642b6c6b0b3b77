from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from clawguard.agent import SandboxFacts
from clawguard.config import parse_config
from clawguard.errors import SandboxGone
from clawguard.gateway import STOP_SCRIPT, Gateway, GatewayError
from clawguard.pod import Pod
from clawguard.sandboxfs import UserTable
from clawguard.targets.base import ExecResult, Instance, Target

from .conftest import basic_config

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleExampleExampleExampleExample root@pod"


class FakePodTarget(Target):
    """Answers what the gateway asks of the pod itself: its key file, the stop script and
    `openclaw health`; ``on_stop`` is what stopping does to the fake gateway."""

    def __init__(self, key: str = KEY, health: bytes = b'{"ok": false}', on_stop: Callable[[], None] = lambda: None):
        super().__init__("my-assistant", {})
        self.key = key
        self.health = health
        self.on_stop = on_stop
        self.calls: list[tuple[list[str], str | None]] = []

    def locate(self) -> Instance:
        return Instance("a" * 64, "test")

    def exec(
        self, instance: Instance, argv: Sequence[str], stdin: bytes | None = None, *, user: str | None = None
    ) -> ExecResult:
        self.calls.append((list(argv), user))
        if STOP_SCRIPT in argv:
            self.on_stop()
            return ExecResult(0, b"", b"")
        if "health" in argv:
            return ExecResult(0, self.health, b"")
        return ExecResult(0 if self.key else 1, self.key.encode(), b"")

    @property
    def key_reads(self) -> int:
        return sum(1 for argv, _ in self.calls if argv[0] == "cat")


class LiveHealth(BaseHTTPRequestHandler):
    """A gateway's /health that answers live."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"ok":true,"status":"live"}')

    def log_message(self, *_args: object) -> None:
        pass


def _pod(target: Target) -> Pod:
    users = UserTable({"sandbox": (998, 998)}, {"sandbox": 998}, {"sandbox": "/sandbox"})
    facts = SandboxFacts("a" * 64, users, "flat", None, "test")
    return Pod(target, target.locate(), facts, "sandbox")


def _ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "ssh").write_text("#!/bin/sh\n" + body)
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


@pytest.fixture
def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An `ssh` on PATH that records its argv and answers like the gateway would."""
    _ssh(
        tmp_path,
        monkeypatch,
        f'printf "%s\\n" "$@" > {tmp_path}/ssh-argv\n'
        'case "$*" in *curl*) printf "%s\\n%s" "${FAKE_HTTP:-200}" "${FAKE_BODY:-}";; *) echo started;; esac\n',
    )
    return tmp_path / "ssh-argv"


def _gateway(archive: Path, tmp_path: Path, extra: str = "") -> Gateway:
    config = parse_config(basic_config(archive, extra), "c.yaml")
    return Gateway("my-assistant", dict(config.sandboxes["my-assistant"].gateway), tmp_path)


def test_defaults_follow_nemoclaw_and_openshell(archive: Path, tmp_path: Path) -> None:
    values = _gateway(archive, tmp_path).values
    assert values["ssh_proxy"] == "openshell ssh-proxy --gateway-name nemoclaw --name {sandbox}"
    assert values["start"] == "nohup openclaw gateway run > /tmp/gateway.log 2>&1 &"
    assert values["health_url"] == "http://127.0.0.1:18789/health"
    assert values["host_key"] == "proxy" and values["stop"] is None
    assert _gateway(archive, tmp_path).port == 18789


def test_the_proxy_is_the_trust_anchor_by_default(archive: Path, tmp_path: Path, fake_ssh: Path) -> None:
    """OpenShell's endpoint has a new in-memory host key at every start and no key file:
    like OpenShell's own CLI, trust the authenticated proxy, and read nothing in the pod."""
    target = FakePodTarget(key="")
    health = _gateway(archive, tmp_path).probe(_pod(target))
    assert health.healthy and health.status == "200"
    argv = fake_ssh.read_text().splitlines()
    for option in ("StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "GlobalKnownHostsFile=/dev/null"):
        assert option in argv
    assert "ProxyCommand=openshell ssh-proxy --gateway-name nemoclaw --name my-assistant" in argv
    assert "sandbox@openshell-my-assistant" in argv
    assert target.key_reads == 0 and not (tmp_path / "known_hosts").exists()


def test_pinned_host_key_and_strict_checking(archive: Path, tmp_path: Path, fake_ssh: Path) -> None:
    target = FakePodTarget()
    gateway = _gateway(archive, tmp_path, "    gateway: {host_key: pin}\n")
    pod = _pod(target)
    health = gateway.probe(pod)
    assert health.healthy and health.status == "200"
    argv = fake_ssh.read_text().splitlines()
    assert "StrictHostKeyChecking=yes" in argv
    assert "StrictHostKeyChecking=no" not in argv
    assert f"UserKnownHostsFile={tmp_path}/known_hosts" in argv
    assert (tmp_path / "known_hosts").read_text() == "openshell-my-assistant ssh-ed25519 " + KEY.split()[1] + "\n"
    gateway.probe(pod)
    assert target.key_reads == 1  # pinned once per pod


def test_unreadable_host_key_names_the_default_that_works(archive: Path, tmp_path: Path, fake_ssh: Path) -> None:
    gateway = _gateway(archive, tmp_path, "    gateway: {host_key: pin}\n")
    with pytest.raises(GatewayError, match="cannot read the sandbox's host key.*host_key: proxy"):
        gateway.probe(_pod(FakePodTarget(key="")))


def test_health_url_travels_quoted(archive: Path, tmp_path: Path, fake_ssh: Path) -> None:
    gateway = _gateway(archive, tmp_path, '    gateway:\n      health_url: "http://127.0.0.1:18789/?a=1&b=$(id)"\n')
    gateway.probe(_pod(FakePodTarget()))
    remote = fake_ssh.read_text().splitlines()[-1]
    assert "'http://127.0.0.1:18789/?a=1&b=$(id)'" in remote


def test_live_json_and_401_are_up(
    archive: Path, tmp_path: Path, fake_ssh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = _gateway(archive, tmp_path)
    monkeypatch.setenv("FAKE_BODY", '{"ok":true,"status":"live"}')
    assert gateway.probe(_pod(FakePodTarget())).healthy
    monkeypatch.setenv("FAKE_HTTP", "401")
    monkeypatch.setenv("FAKE_BODY", "")
    assert gateway.probe(_pod(FakePodTarget())).healthy


def test_an_error_answer_asks_the_agent_before_calling_it_down(
    archive: Path, tmp_path: Path, fake_ssh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2026.3.31 answers 500 to every HTTP request when a plugin dependency is missing,
    while its WebSocket (and `openclaw health`) works."""
    gateway = _gateway(archive, tmp_path)
    monkeypatch.setenv("FAKE_HTTP", "500")
    up = FakePodTarget(health=b'{"ok": true, "durationMs": 19}')
    health = gateway.probe(_pod(up))
    assert health.healthy and health.status == "HTTP 500; openclaw health: ok"
    [(argv, user)] = [call for call in up.calls if "health" in call[0]]
    assert argv[-4:] == ["health", "--json", "--timeout", "3000"] and user == "998:998"
    assert "HOME=/sandbox" in argv
    down = gateway.probe(_pod(FakePodTarget(health=b'{"ok": false}')))
    assert not down.healthy and down.answered and down.status == "HTTP 500"
    monkeypatch.setenv("FAKE_HTTP", "200")
    monkeypatch.setenv("FAKE_BODY", '{"ok": false}')
    assert not gateway.probe(_pod(FakePodTarget())).healthy


def test_no_answer_is_down_without_asking_the_agent(
    archive: Path, tmp_path: Path, fake_ssh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_HTTP", "000")
    target = FakePodTarget(health=b'{"ok": true}')
    health = _gateway(archive, tmp_path).probe(_pod(target))
    assert not health.healthy and not health.answered and health.status == "no answer"
    assert not target.calls


def test_bad_gateway_config(archive: Path) -> None:
    from clawguard import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_config(basic_config(archive, "    gateway:\n      host_key: none\n"), "c.yaml")
    assert info.value.key == "sandboxes.my-assistant.gateway.host_key"


def _counting_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, up: Path) -> None:
    """Healthy while ``up`` exists, which `gateway run` creates (on its third probe after)."""
    _ssh(
        tmp_path,
        monkeypatch,
        'case "$*" in\n'
        f"  *curl*) if [ -e {up} ]; then echo 200; else echo 000; fi; echo probe >> {tmp_path}/calls;;\n"
        f"  *'gateway run'*) touch {up}; echo start >> {tmp_path}/calls;;\n"
        "esac\n",
    )


def test_ensure_starts_and_waits_with_backoff(archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    up = tmp_path / "up"
    _counting_ssh(tmp_path, monkeypatch, up)
    beats: list[int] = []
    health = _gateway(archive, tmp_path).ensure(_pod(FakePodTarget()), heartbeat=lambda: beats.append(1))
    assert health.healthy
    assert (tmp_path / "calls").read_text().splitlines() == ["probe", "start", "probe"]  # started exactly once
    assert beats  # the watchdog was fed while waiting


def test_a_fresh_pod_is_started_without_a_doomed_probe(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    up = tmp_path / "up"
    _counting_ssh(tmp_path, monkeypatch, up)
    assert _gateway(archive, tmp_path).ensure(_pod(FakePodTarget()), fresh=True).healthy
    assert (tmp_path / "calls").read_text().splitlines() == ["start", "probe"]


def test_ensure_gives_up_after_start_timeout(
    archive: Path, tmp_path: Path, fake_ssh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_HTTP", "000")
    gateway = _gateway(archive, tmp_path, "    gateway: {start_timeout: 1}\n")
    health = gateway.ensure(_pod(FakePodTarget()))
    assert not health.healthy and health.status == "no answer"


def test_a_pod_replaced_while_waiting_is_noticed_at_once(
    archive: Path, tmp_path: Path, fake_ssh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pod replaced while the gateway starts ends the wait at once, not after its 60 s start."""
    monkeypatch.setenv("FAKE_HTTP", "000")
    gateway = _gateway(archive, tmp_path, "    gateway: {start_timeout: 60}\n")
    asked: list[int] = []

    def replaced() -> bool:
        asked.append(1)
        return len(asked) >= 2

    started = time.monotonic()
    with pytest.raises(SandboxGone):
        gateway.ensure(_pod(FakePodTarget()), replaced=replaced)
    assert time.monotonic() - started < 5


def test_restart_for_a_changed_soul_stops_then_starts_once(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    up = tmp_path / "up"
    up.touch()  # the gateway is running
    _counting_ssh(tmp_path, monkeypatch, up)
    target = FakePodTarget(on_stop=lambda: up.unlink())
    gateway = _gateway(archive, tmp_path)
    assert gateway.ensure(_pod(target)).healthy
    assert "start" not in (tmp_path / "calls").read_text()  # healthy and nothing changed: left alone
    (tmp_path / "calls").unlink()
    assert gateway.ensure(_pod(target), restart_for=["SOUL.md"]).healthy
    stops = [(argv, user) for argv, user in target.calls if STOP_SCRIPT in argv]
    # Stopped as root through the target, by the gateway's port, with the grace period.
    assert len(stops) == 1 and stops[0][1] is None and stops[0][0][-2:] == ["18789", "15"]
    # No probe before a restart (it must start again anyway): stopped, started, probed healthy.
    assert (tmp_path / "calls").read_text().splitlines() == ["start", "probe"]


def test_a_custom_stop_runs_over_ssh(archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    up = tmp_path / "up"
    up.touch()
    _ssh(
        tmp_path,
        monkeypatch,
        'case "$*" in\n'
        f"  *curl*) if [ -e {up} ]; then echo 200; else echo 000; fi;;\n"
        f"  *'my-stop'*) rm -f {up}; echo stop >> {tmp_path}/calls;;\n"
        f"  *'gateway run'*) touch {up}; echo start >> {tmp_path}/calls;;\n"
        "esac\n",
    )
    target = FakePodTarget()
    gateway = _gateway(archive, tmp_path, "    gateway: {stop: my-stop}\n")
    assert gateway.ensure(_pod(target), restart_for=["SOUL.md"]).healthy
    assert (tmp_path / "calls").read_text() == "stop\nstart\n"
    assert not [argv for argv, _ in target.calls if STOP_SCRIPT in argv]


def test_a_hung_proxy_is_killed_with_ssh_on_timeout(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ssh starts its ProxyCommand and waits for it, like the real client with a hung proxy.
    _ssh(tmp_path, monkeypatch, f"sleep 300 &\necho $! > {tmp_path}/proxy.pid\nwait\n")
    gateway = _gateway(archive, tmp_path, "    gateway: {ssh_timeout: 1}\n")
    health = gateway.probe(_pod(FakePodTarget()))
    assert not health.healthy and "timed out after 1s" in health.status
    pid = int((tmp_path / "proxy.pid").read_text())
    time.sleep(0.2)
    state = Path(f"/proc/{pid}/stat")
    assert not state.exists() or state.read_text().split()[2] == "Z"  # gone (or a zombie awaiting init)


def test_a_probe_that_times_out_is_not_nothing_listening(
    archive: Path, tmp_path: Path, fake_ssh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probe that times out is told from "no answer": a slow gateway must not get a second
    one started beside it."""
    gateway = _gateway(archive, tmp_path)
    monkeypatch.setenv("FAKE_HTTP", "timeout")
    slow = gateway.probe(_pod(FakePodTarget()))
    assert not slow.healthy and slow.timed_out and not slow.answered and "5s" in slow.status
    monkeypatch.setenv("FAKE_HTTP", "000")
    gone = gateway.probe(_pod(FakePodTarget()))
    assert not gone.healthy and not gone.timed_out and gone.status == "no answer"


def _slow_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answers: int) -> None:
    """A gateway that accepts connections but answers only from its ``answers``-th probe on."""
    _ssh(
        tmp_path,
        monkeypatch,
        'case "$*" in\n'
        f"  *curl*) echo probe >> {tmp_path}/calls; n=$(grep -c probe {tmp_path}/calls);\n"
        f'    if [ "$n" -ge {answers} ]; then echo 200; else echo timeout; fi;;\n'
        f"  *'gateway run'*) echo start >> {tmp_path}/calls;;\n"
        "esac\n",
    )


def test_a_slow_gateway_is_waited_for_not_started_twice(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _slow_ssh(tmp_path, monkeypatch, answers=4)
    health = _gateway(archive, tmp_path, "    gateway: {start_timeout: 60}\n").ensure(_pod(FakePodTarget()))
    assert health.healthy
    assert (tmp_path / "calls").read_text().splitlines() == ["probe"] * 4  # never a start


def test_a_gateway_that_never_answers_in_time_is_restarted_after_start_timeout(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slow is waited for; listening without ever answering for a whole start_timeout is wedged."""
    up = tmp_path / "up"
    _ssh(
        tmp_path,
        monkeypatch,
        'case "$*" in\n'
        f"  *curl*) if [ -e {up} ]; then echo 200; else echo timeout; fi;;\n"
        f"  *'gateway run'*) touch {up}; echo start >> {tmp_path}/calls;;\n"
        "esac\n",
    )
    target = FakePodTarget()
    health = _gateway(archive, tmp_path, "    gateway: {start_timeout: 1}\n").ensure(_pod(target))
    assert health.healthy and (tmp_path / "calls").read_text() == "start\n"
    assert len([argv for argv, _ in target.calls if STOP_SCRIPT in argv]) == 1  # stopped first


def test_a_stop_event_ends_the_wait_at_once(
    archive: Path, tmp_path: Path, fake_ssh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM during a gateway wait: the wait used to sit in tenacity's sleep for start_timeout."""
    import threading

    from clawguard.backoff import Stopped

    monkeypatch.setenv("FAKE_HTTP", "000")
    gateway = _gateway(archive, tmp_path, "    gateway: {start_timeout: 300}\n")
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    started = time.monotonic()
    with pytest.raises(Stopped):
        gateway.ensure(_pod(FakePodTarget()), stop=stop)
    assert time.monotonic() - started < 3


def test_the_step_by_step_startup_says_when_each_step_is_due(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon runs one step per round: none of them waits."""
    up = tmp_path / "up"
    _counting_ssh(tmp_path, monkeypatch, up)
    startup = _gateway(archive, tmp_path).startup(_pod(FakePodTarget()))
    phases, answers = [], []
    while not answers or answers[-1] is None:
        before = time.monotonic()
        answers.append(startup.step())
        assert time.monotonic() - before < 2  # one probe, or the start: never a wait
        phases.append(startup.phase)
    assert phases == ["start", "up", "up"]  # checked (down), started, probed
    health = answers[-1]
    assert health is not None and health.healthy
    assert (tmp_path / "calls").read_text().splitlines() == ["probe", "start", "probe"]


@pytest.mark.parametrize("client", ["curl", "wget"])
def test_the_probe_script_tells_a_slow_listener_from_none(client: str, tmp_path: Path) -> None:
    """The probe itself, run here: nothing on the port is 000; a listener that accepts and
    never answers is "timeout" (after 5 s); a live one is 200 with its body."""
    import shutil
    import socket
    import subprocess
    import threading
    from http.server import HTTPServer

    from clawguard.gateway import _PROBE

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    busybox = shutil.which("busybox")
    tools = ["sed", "tail", "printf", "timeout"]
    if client == "curl":
        curl = shutil.which("curl")
        if curl is None:
            pytest.skip("no curl here")
        (bin_dir / "curl").symlink_to(curl)
    else:
        if busybox is None:
            pytest.skip("no busybox here")
        tools.append("wget")
    for tool in tools:
        found = busybox if client == "wget" else shutil.which(tool)
        if found is not None:
            (bin_dir / tool).symlink_to(found)
    env = {"PATH": str(bin_dir)}
    sh = busybox or "/bin/sh"

    def probe(url: str) -> str:
        argv = [sh, "sh", "-c", _PROBE, "sh", url] if busybox else [sh, "-c", _PROBE, "sh", url]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=False).stdout

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert probe(f"http://127.0.0.1:{port}/health").splitlines()[0] == "000"

    with socket.socket() as mute:  # accepts (the backlog) and never answers
        mute.bind(("127.0.0.1", 0))
        mute.listen(4)
        assert probe(f"http://127.0.0.1:{mute.getsockname()[1]}/health").splitlines()[0] == "timeout"

    server = HTTPServer(("127.0.0.1", 0), LiveHealth)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        code, _, body = probe(f"http://127.0.0.1:{server.server_address[1]}/health").partition("\n")
        assert code == "200" and '"live"' in body
    finally:
        server.shutdown()
