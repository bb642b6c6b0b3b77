from __future__ import annotations

import os
import stat
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from clawguard.config import parse_config
from clawguard.gateway import Gateway, GatewayError
from clawguard.targets.base import ExecResult, Instance, Target

from .conftest import basic_config

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleExampleExampleExampleExample root@pod"


class KeyTarget(Target):
    def __init__(self, key: str = KEY) -> None:
        super().__init__("my-assistant", {})
        self.key = key
        self.reads = 0

    def locate(self) -> Instance:
        return Instance("a" * 64, "test")

    def exec(self, instance: Instance, argv: Sequence[str], stdin: bytes | None = None) -> ExecResult:
        self.reads += 1
        return ExecResult(0 if self.key else 1, self.key.encode(), b"")


@pytest.fixture
def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An `ssh` on PATH that records its argv and answers like the gateway would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "ssh"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > {tmp_path}/ssh-argv\n'
        'case "$*" in *curl*) echo "${FAKE_HTTP:-200}";; *) echo started;; esac\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "ssh-argv"


def _gateway(archive: Path, tmp_path: Path, target: Target, extra: str = "") -> Gateway:
    config = parse_config(basic_config(archive, extra), "c.yaml")
    return Gateway("my-assistant", dict(config.sandboxes["my-assistant"].gateway), target, tmp_path)


def test_defaults_follow_nemoclaw(archive: Path, tmp_path: Path) -> None:
    values = _gateway(archive, tmp_path, KeyTarget()).values
    assert values["ssh_proxy"] == "openshell ssh-proxy --gateway-name nemoclaw --name {sandbox}"
    assert values["start"] == "nohup openclaw gateway run > /tmp/gateway.log 2>&1 &"
    assert values["health_url"] == "http://127.0.0.1:18789/"


def test_pinned_host_key_and_strict_checking(archive: Path, tmp_path: Path, fake_ssh: Path) -> None:
    target = KeyTarget()
    gateway = _gateway(archive, tmp_path, target)
    instance = target.locate()
    health = gateway.probe(instance)
    assert health.healthy and health.status == "200"
    argv = fake_ssh.read_text().splitlines()
    assert "StrictHostKeyChecking=yes" in argv
    assert "StrictHostKeyChecking=no" not in argv
    assert f"UserKnownHostsFile={tmp_path}/known_hosts" in argv
    assert "ProxyCommand=openshell ssh-proxy --gateway-name nemoclaw --name my-assistant" in argv
    assert "sandbox@openshell-my-assistant" in argv
    assert (tmp_path / "known_hosts").read_text() == "openshell-my-assistant ssh-ed25519 " + KEY.split()[1] + "\n"
    gateway.probe(instance)
    assert target.reads == 1  # pinned once per pod


def test_health_url_travels_quoted(archive: Path, tmp_path: Path, fake_ssh: Path) -> None:
    gateway = _gateway(
        archive, tmp_path, KeyTarget(), '    gateway:\n      health_url: "http://127.0.0.1:18789/?a=1&b=$(id)"\n'
    )
    gateway.probe(KeyTarget().locate())
    remote = fake_ssh.read_text().splitlines()[-1]
    assert "'http://127.0.0.1:18789/?a=1&b=$(id)'" in remote


def test_401_is_up_and_500_is_down(
    archive: Path, tmp_path: Path, fake_ssh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = _gateway(archive, tmp_path, KeyTarget())
    monkeypatch.setenv("FAKE_HTTP", "401")
    assert gateway.probe(KeyTarget().locate()).healthy
    monkeypatch.setenv("FAKE_HTTP", "500")
    assert not gateway.probe(KeyTarget().locate()).healthy


def test_unreadable_host_key_is_a_clear_error(archive: Path, tmp_path: Path, fake_ssh: Path) -> None:
    gateway = _gateway(archive, tmp_path, KeyTarget(key=""))
    with pytest.raises(GatewayError, match="cannot read the sandbox's host key"):
        gateway.probe(KeyTarget().locate())


def test_bad_gateway_config(archive: Path) -> None:
    from clawguard import ConfigError

    with pytest.raises(ConfigError) as info:
        parse_config(basic_config(archive, "    gateway:\n      host_key: none\n"), "c.yaml")
    assert info.value.key == "sandboxes.my-assistant.gateway.host_key"


def test_ensure_starts_and_waits_with_backoff(archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin2"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(
        "#!/bin/sh\n"
        f"count=$(cat {tmp_path}/n 2>/dev/null || echo 0); echo $((count + 1)) > {tmp_path}/n\n"
        f'case "$*" in *curl*) if [ "$count" -ge 3 ]; then echo 200; else echo 000; fi;; *) echo start >> {tmp_path}/starts;; esac\n'
    )
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    beats: list[int] = []
    gateway = _gateway(archive, tmp_path, KeyTarget())
    health = gateway.ensure(KeyTarget().locate(), heartbeat=lambda: beats.append(1))
    assert health.healthy
    assert (tmp_path / "starts").read_text() == "start\n"  # started exactly once
    assert beats  # the watchdog was fed while waiting


def test_ensure_gives_up_after_start_timeout(
    archive: Path, tmp_path: Path, fake_ssh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_HTTP", "502")
    gateway = _gateway(archive, tmp_path, KeyTarget(), "    gateway: {start_timeout: 1}\n")
    health = gateway.ensure(KeyTarget().locate())
    assert not health.healthy and health.status == "502"


def test_restart_for_a_changed_soul_stops_then_starts_once(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin3"
    bin_dir.mkdir()
    up = tmp_path / "up"
    up.touch()  # the gateway is running
    (bin_dir / "ssh").write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        f"  *curl*) if [ -e {up} ]; then echo 200; else echo 000; fi;;\n"
        f"  *'gateway stop'*) rm -f {up}; echo stop >> {tmp_path}/calls;;\n"
        f"  *'gateway run'*) touch {up}; echo start >> {tmp_path}/calls;;\n"
        "esac\n"
    )
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    gateway = _gateway(archive, tmp_path, KeyTarget())
    instance = KeyTarget().locate()
    assert gateway.ensure(instance).healthy
    assert not (tmp_path / "calls").exists()  # healthy and nothing changed: left alone
    assert gateway.ensure(instance, restart_for=["SOUL.md"]).healthy
    assert (tmp_path / "calls").read_text() == "stop\nstart\n"


def test_a_hung_proxy_is_killed_with_ssh_on_timeout(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin4"
    bin_dir.mkdir()
    # ssh starts its ProxyCommand and waits for it, like the real client with a hung proxy.
    (bin_dir / "ssh").write_text(f"#!/bin/sh\nsleep 300 &\necho $! > {tmp_path}/proxy.pid\nwait\n")
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    gateway = _gateway(archive, tmp_path, KeyTarget(), "    gateway: {ssh_timeout: 1}\n")
    health = gateway.probe(KeyTarget().locate())
    assert not health.healthy and "timed out after 1s" in health.status
    pid = int((tmp_path / "proxy.pid").read_text())
    time.sleep(0.2)
    state = Path(f"/proc/{pid}/stat")
    assert not state.exists() or state.read_text().split()[2] == "Z"  # gone (or a zombie awaiting init)
