"""OpenShell 0.1.x, end to end: clawguard reaches a sandbox running the real OpenClaw only through
the gateway's gRPC API (the stand-in gateway speaks the SDK's own wire protocol, with mTLS).

Docker is pointed nowhere for clawguard in every test here: this kind must not need it. Files are
read back from inside the sandbox as the sandbox user, and the agent's own CLI judges the result.
"""

from __future__ import annotations

import json
import shutil
import signal
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed import LATEST_AGENT
from testbed.openshell_gateway import GatewayStandin

from .conftest import REPO, clawguard, clawguard_env, require_docker, wait_for
from .test_daemon import DaemonProcess

pytestmark = pytest.mark.integration

GATEWAY = "lab"
SANDBOX = "my-assistant"
NOWHERE = "unix:///nonexistent/docker.sock"
SECRET = "sk-clawguard-test-secret-3f9c0a1b"


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStandin]:
    require_docker()
    home = tmp_path_factory.mktemp("openshell-home")
    gateway = GatewayStandin(home, GATEWAY)
    gateway.up()
    gateway.create(SANDBOX, agent=LATEST_AGENT)
    yield gateway
    gateway.destroy()


def _env(standin: GatewayStandin, **extra: str) -> dict[str, str]:
    # The SDK reads the OpenShell CLI's files from $XDG_CONFIG_HOME/openshell, like the CLI.
    return clawguard_env(XDG_CONFIG_HOME=str(standin.home), DOCKER_HOST=NOWHERE, **extra)


def _archive(tmp_path: Path) -> Path:
    archive = tmp_path / "archive"
    shutil.copytree(REPO / "restore-archive", archive)
    # A credential whose content must never reach the gateway's command log.
    (archive / "credentials" / "clawguard-test.env").write_text(f"API_KEY={SECRET}\n")
    return archive


def _config(tmp_path: Path, archive: Path, daemon: str = "", extra: str = "") -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""version: 1
{daemon}sandboxes:
  {SANDBOX}:
    target: {{kind: openshell, gateway: {GATEWAY}}}
    archive: {archive}
{extra}"""
    )
    return config


def _inside(standin: GatewayStandin, *argv: str) -> str:
    code, out, err = standin.exec_as_sandbox_user(SANDBOX, list(argv))
    assert code == 0, f"{argv}: {err.decode(errors='replace')[-500:]}"
    return out.decode()


def _captured_memory(tmp_path: Path) -> bytes:
    """MEMORY.md as the newest capture on the host holds it (empty when none does)."""
    stored = sorted((tmp_path / "state" / "clawguard" / SANDBOX / "persist").glob("*.json"))  # written last
    if not stored:
        return b""
    with tarfile.open(stored[-1].with_suffix(".tar"), ignore_zeros=True) as tar:  # files, then db snapshots
        for member in tar.getmembers():
            if member.isfile() and member.name.endswith("workspace/MEMORY.md"):
                held = tar.extractfile(member)
                return held.read() if held else b""
    return b""


def _status(config: Path, env: dict[str, str]) -> dict[str, Any]:
    done = clawguard("--config", str(config), "status", "--json", env=env)
    assert done.returncode == 0, done.stderr
    return next(s for s in json.loads(done.stdout)["sandboxes"] if s["sandbox"] == SANDBOX)


def _healthy(config: Path, env: dict[str, str], not_on: str | None = None) -> bool:
    status = _status(config, env)
    live = bool((status.get("gateway") or {}).get("healthy"))
    return live and (not_on is None or status.get("container_id") != not_on)


def _restored_as_the_agent_sees_it(standin: GatewayStandin) -> None:
    """Read back from inside, as the sandbox user, and judged by the agent's own CLI."""
    soul = _inside(standin, "cat", "/sandbox/.openclaw/workspace/SOUL.md")
    assert soul == (REPO / "restore-archive" / "SOUL.md").read_text()
    owner = _inside(standin, "stat", "-c", "%U %a", "/sandbox/.openclaw/credentials/clawguard-test.env").split()
    assert owner[0] == "sandbox"
    _inside(standin, "openclaw", "config", "validate")
    listed = _inside(standin, "sh", "-c", "openclaw skills list --json 2>&1")
    names = {s["name"] for s in json.loads(listed[listed.index("{") :])["skills"]}
    assert {p.name for p in (REPO / "restore-archive" / "skills").iterdir()} <= names
    assert '"ok":true' in _inside(standin, "curl", "-s", "http://127.0.0.1:18789/health").replace(" ", "")


def test_init_finds_the_sandbox_through_the_gateway_api(standin: GatewayStandin, tmp_path: Path) -> None:
    done = clawguard("--config", str(tmp_path / "c.yaml"), "init", "--print", env=_env(standin))
    assert done.returncode == 0, done.stderr
    assert "generation 3 (openshell)" in done.stderr and "kind: openshell" in done.stdout
    assert "Docker is not reachable" in done.stderr  # said once, and not an end


def test_restore_by_hand_then_again_is_idempotent(standin: GatewayStandin, tmp_path: Path) -> None:
    config = _config(tmp_path, _archive(tmp_path))
    env = _env(standin)
    assert clawguard("--config", str(config), "check", env=env).returncode == 0
    first = clawguard("--config", str(config), "restore", env=env)
    assert first.returncode == 0, first.stderr + first.stdout
    assert "verified" in first.stdout
    _restored_as_the_agent_sees_it(standin)
    again = clawguard("--config", str(config), "restore", "--no-gateway", env=env)
    assert again.returncode == 0 and "changed" not in again.stdout.split("verified")[-1]
    # Nothing secret in any command the gateway logged (it logs the first 120 characters of each).
    logged = "\n".join(standin.exec_log())
    assert logged and SECRET not in logged


def test_a_plan_that_needs_root_is_refused_before_anything_is_written(standin: GatewayStandin, tmp_path: Path) -> None:
    archive = _archive(tmp_path)
    config = _config(tmp_path, archive)
    config.write_text(
        config.read_text()
        + "    plan:\n      - {kind: file, source: SOUL.md, dest: /sandbox/.openclaw/root.md, owner: root}\n"
    )
    before = len(standin.exec_log())
    for command in ("check", "plan", "restore"):
        done = clawguard("--config", str(config), command, env=_env(standin))
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert "never as root" in done.stderr and "plan[0]" in done.stderr
    assert "root.md" not in _inside(standin, "ls", "/sandbox/.openclaw")
    assert not any("tar" in line for line in standin.exec_log()[before:])


def test_the_daemon_keeps_the_sandbox_through_every_kind_of_change(standin: GatewayStandin, tmp_path: Path) -> None:
    started = tmp_path / "started.log"
    hook = f"    hooks: {{on_started: [sh, -c, 'echo $CLAWGUARD_OUTCOME >> {started}']}}\n"
    config = _config(tmp_path, _archive(tmp_path), "daemon: {poll_interval: 30, health_interval: 5}\n", hook)
    env = _env(standin)
    daemon = DaemonProcess(config, env, tmp_path / "daemon.log")
    try:
        wait_for("the first restore and a live gateway", lambda: _healthy(config, env), timeout=240, every=1)
        first = _status(config, env)["container_id"]

        # Deleted and created again: a new id, everything gone. Noticed once the new one is READY.
        standin.recreate(SANDBOX)
        ready_at = time.time()
        wait_for("the re-created sandbox restored", lambda: _healthy(config, env, not_on=first), timeout=240, every=1)
        detected = daemon.event_time("sandbox.detected", ready_at - 5)
        assert detected is not None and detected - ready_at < 2, "\n".join(daemon.lines()[-30:])
        _restored_as_the_agent_sees_it(standin)
        second = _status(config, env)["container_id"]

        # The pod re-created: a new agent_pod, /sandbox kept.
        standin.replace_pod(SANDBOX)
        wait_for("the new pod restored", lambda: _healthy(config, env, not_on=second), timeout=240, every=1)
        _restored_as_the_agent_sees_it(standin)
        third = _status(config, env)["container_id"]

        # The main process relaunched: same instance, the gateway checked (and started) again.
        relaunched_at = time.time()
        standin.restart_main(SANDBOX)
        wait_for(
            "the gateway checked after the main process relaunched",
            lambda: (
                daemon.event_time("gateway.probe", relaunched_at) is not None
                or daemon.event_time("gateway.start", relaunched_at) is not None
                or any("main process relaunched" in line for line in daemon.lines())
            ),
            timeout=30,
        )
        assert _status(config, env)["container_id"] == third

        # A gateway outage of 20 s: the daemon waits, and serves again after it.
        standin.down()
        time.sleep(20)
        assert daemon.proc.poll() is None
        standin.up()
        standin.replace_pod(SANDBOX)
        wait_for("a new pod restored after the outage", lambda: _healthy(config, env, not_on=third), timeout=240)
        fourth = _status(config, env)["container_id"]

        # ERROR (a Docker or host restart): started again with StartSandbox, and its gateway too.
        failed_at = time.time()
        standin.fail(SANDBOX)
        wait_for("the sandbox READY again", lambda: standin.phase(SANDBOX) == "READY", timeout=120)
        wait_for(
            "the gateway live again",
            lambda: _healthy(config, env) and daemon.event_time("openshell.start_requested", failed_at) is not None,
            timeout=240,
            every=1,
        )
        _restored_as_the_agent_sees_it(standin)
        assert fourth  # (a started sandbox keeps its pod on this driver or gets a new one: both are served)
        wait_for("the on_started hook", lambda: started.exists() and "requested" in started.read_text(), timeout=30)
    finally:
        daemon.proc.send_signal(signal.SIGTERM)
        code = daemon.proc.wait(30)
        daemon.handle.close()
    assert code == 0, "\n".join(daemon.lines()[-30:])
    text = daemon.log.read_text()
    assert "Traceback" not in text and SECRET not in text
    assert SECRET not in "\n".join(standin.exec_log())


def test_recover_recreate_brings_back_a_sandbox_openshell_will_not_start(
    standin: GatewayStandin, tmp_path: Path
) -> None:
    """A crash (or OOM) death: StartSandbox is refused. With recover: recreate, clawguard deletes it,
    creates it again from the spec it recorded while it ran, and restores it, the agent's captured
    memory included."""
    started = tmp_path / "started.log"
    extra = (
        f"    hooks: {{on_started: [sh, -c, 'echo $CLAWGUARD_OUTCOME >> {started}']}}\n"
        "    target: {kind: openshell, gateway: " + GATEWAY + ", recover: recreate}\n"
    )
    config = _config(tmp_path, _archive(tmp_path), "daemon: {persist_interval: 2}\n", extra)
    config.write_text(config.read_text().replace(f"    target: {{kind: openshell, gateway: {GATEWAY}}}\n", "", 1))
    env = _env(standin)
    daemon = DaemonProcess(config, env, tmp_path / "daemon.log")
    try:
        wait_for("a restored sandbox and a live gateway", lambda: _healthy(config, env), timeout=240, every=1)
        before = standin.get(SANDBOX).metadata.id

        def captures() -> int:
            return sum("event=persist.captured" in line for line in daemon.lines())

        wait_for("a first capture", captures, timeout=120)
        _inside(standin, "sh", "-c", "echo 'remember: the crash drill' >> /sandbox/.openclaw/workspace/MEMORY.md")
        # Read the host's newest capture itself: one already under way when the agent wrote may lack it.
        wait_for("a capture of the memory", lambda: b"the crash drill" in _captured_memory(tmp_path), timeout=120)
        crashed = _status(config, env)["container_id"]
        standin.crash(SANDBOX)

        def recreated() -> bool:
            try:
                # The status must be the new sandbox's: the crashed one's said healthy too.
                return bool(standin.get(SANDBOX).metadata.id != before and _healthy(config, env, not_on=crashed))
            except Exception:  # NOT_FOUND between the delete and the create
                return False

        wait_for("the sandbox re-created and restored", recreated, timeout=300, every=1)
        assert "recreated" in started.read_text()
        assert "the crash drill" in _inside(standin, "cat", "/sandbox/.openclaw/workspace/MEMORY.md")
        _restored_as_the_agent_sees_it(standin)
    finally:
        daemon.proc.send_signal(signal.SIGTERM)
        code = daemon.proc.wait(30)
        daemon.handle.close()
    assert code == 0, "\n".join(daemon.lines()[-30:])
