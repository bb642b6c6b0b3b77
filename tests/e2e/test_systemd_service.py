"""Issue 3's acceptance under a real systemd user manager.

clawguard is installed from a wheel into a lingering user's venv inside the
systemd testbed, `clawguard install-service` writes the unit, systemd runs it
(Type=notify, watchdog), and the OpenShell testbed's pod is restarted under it.
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.systemd import SystemdHost
from tests.integration.conftest import SANDBOX, sandbox_exec, wait_for

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
VENV = "/home/claw/venv"
# Secrets the journal must never show: in a URL of the config, in a hook's arguments,
# and in the service's environment (issue 5).
URL_TOKEN = "url-" + secrets.token_hex(16)
HOOK_TOKEN = "hook-" + secrets.token_hex(16)
ENV_TOKEN = "env-" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def host(testbed: object, wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SystemdHost]:
    wheels = wheelhouse
    systemd = SystemdHost()
    systemd.build_image()
    systemd.up(repo=REPO, wheelhouse=wheels)
    # What the user's machine has: the docker CLI (for openshell) and the openshell CLI.
    docker_cli = shutil.which("docker")
    assert docker_cli
    systemd.put_file("/usr/local/bin/docker", Path(docker_cli).read_bytes(), mode=0o755)
    bin_dir = tmp_path_factory.mktemp("bin")
    openshell = testbed.install_openshell(bin_dir)  # type: ignore[attr-defined]
    systemd.put_file("/usr/local/bin/openshell", openshell.read_bytes(), mode=0o755)
    _run(systemd, ["python3", "-m", "venv", VENV])
    _run(systemd, [f"{VENV}/bin/pip", "install", "--quiet", "--no-index", "--find-links", "/wheels", "clawguard"])
    config = f"""version: 1
daemon: {{poll_interval: 10, health_interval: 10}}
sandboxes:
  {SANDBOX}:
    target: {{kind: k3s, cluster: openshell-cluster-nemoclaw}}
    archive: /src/restore-archive
    gateway: {{health_url: "http://127.0.0.1:18789/?token={URL_TOKEN}"}}
    hooks:
      on_restored: [sh, -c, 'echo "hook saw $TELEGRAM_BOT_TOKEN and $0" >&2; exit 1', "Authorization: Bearer {HOOK_TOKEN}"]
"""
    systemd.put_file("/home/claw/.config/clawguard/config.yaml", config.encode(), user=True)
    yield systemd
    systemd.down()


def _run(host: SystemdHost, argv: list[str], timeout: float = 300) -> str:
    code, out, err = host.run(argv, user=True, timeout=timeout)
    assert code == 0, f"{argv}: {out}\n{err}"
    return out


def _show(host: SystemdHost, prop: str) -> str:
    return _run(host, ["systemctl", "--user", "show", "clawguard", "-p", prop, "--value"]).strip()


def _status(host: SystemdHost) -> dict[str, object]:
    data = json.loads(_run(host, [f"{VENV}/bin/clawguard", "status", "--json"]))
    return next(s for s in data["sandboxes"] if s["sandbox"] == SANDBOX)


def _healthy_on(host: SystemdHost, container_id: str) -> bool:
    status = _status(host)
    gateway = status.get("gateway") or {}
    return status.get("container_id") == container_id and bool(gateway.get("healthy"))  # type: ignore[union-attr]


def test_the_service_restores_a_restarted_pod(host: SystemdHost, testbed: object) -> None:
    out = _run(host, [f"{VENV}/bin/clawguard", "install-service"])
    assert "loginctl enable-linger" in out
    _run(host, ["systemctl", "--user", "daemon-reload"])
    _run(host, ["systemctl", "--user", "set-environment", f"TELEGRAM_BOT_TOKEN={ENV_TOKEN}"])
    _run(host, ["systemctl", "--user", "enable", "--now", "clawguard"], timeout=240)
    assert _show(host, "ActiveState") == "active"
    assert _show(host, "StatusText").startswith(f"{SANDBOX}: ")
    status = _run(host, ["systemctl", "--user", "status", "clawguard", "--no-pager"])
    assert "active (running)" in status and "Status:" in status

    new_id = testbed.restart(SANDBOX)  # type: ignore[attr-defined]
    took = wait_for("restore and gateway on the new pod", lambda: _healthy_on(host, new_id), timeout=120, every=0.25)
    print(f"service restored the new pod and the gateway is healthy {took:.1f}s after the restart")
    assert sandbox_exec(testbed, SANDBOX, ["stat", "-c", "%U", "/sandbox/.openclaw-data/telegram"]).strip() == "sandbox"
    gateway = testbed.gateway_status(SANDBOX)  # type: ignore[attr-defined]
    assert gateway is not None and gateway["exec"] == "allowed"

    journal = _run(host, ["journalctl", "--user", "-u", "clawguard", "--no-pager", "-o", "cat"])
    for event in ("event=sandbox.detected", "event=restore.step", "event=gateway.start", "event=gateway.health"):
        assert event in journal, event
    priorities = _run(host, ["journalctl", "--user", "-u", "clawguard", "--no-pager", "-o", "json", "-n", "50"])
    assert any(json.loads(line).get("PRIORITY") == "6" for line in priorities.splitlines() if line.strip())

    # The hook failed loudly, echoing every secret it had; the journal shows none of them.
    wait_for("the hook's failure in the journal", lambda: "event=hook.done" in _journal(host), timeout=60)
    journal = _journal(host)
    assert "outcome=failed" in journal and "***" in journal
    for token in (URL_TOKEN, HOOK_TOKEN, ENV_TOKEN):
        assert token not in journal

    # The unit's hardening is really in force in a user unit, on the running process.
    pid = _show(host, "MainPID")
    proc_status = _run(host, ["cat", f"/proc/{pid}/status"])
    assert "NoNewPrivs:\t1" in proc_status
    assert "Seccomp:\t2" in proc_status  # SystemCallFilter= installed a filter
    assert _show(host, "UMask") == "0077"


def _journal(host: SystemdHost) -> str:
    return _run(host, ["journalctl", "--user", "-u", "clawguard", "--no-pager", "-o", "cat"])


def test_a_stopped_daemon_is_killed_by_the_watchdog_and_converges(host: SystemdHost, testbed: object) -> None:
    pid = _show(host, "MainPID")
    restarts = int(_show(host, "NRestarts"))
    _run(host, ["kill", "-STOP", pid])
    wait_for(
        "the watchdog to restart the service",
        # Mid-restart, systemctl show can answer an empty NRestarts: not yet, not an error.
        lambda: int(_show(host, "NRestarts") or -1) > restarts,
        timeout=150,
        every=0.25,
    )
    assert _show(host, "MainPID") != pid
    wait_for(
        "the restarted service to be active", lambda: _show(host, "ActiveState") == "active", timeout=200, every=0.25
    )
    new_id = testbed.restart(SANDBOX)  # type: ignore[attr-defined]
    wait_for("convergence after the watchdog restart", lambda: _healthy_on(host, new_id), timeout=120, every=0.25)
