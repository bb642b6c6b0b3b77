"""The daemon restores sandboxes the real OpenClaw accepts, judged by the agent itself.

For each OpenClaw version the test bed runs (NemoClaw's layout of its era, the agent from npm,
an SSH endpoint that keeps its host key in memory): the daemon restores a fresh pod and starts
its gateway; the agent takes a Telegram update from the Bot API stand-in and stores its offset;
the pod is replaced; the daemon restores the new pod. Then, from inside, as the sandbox user,
with the agent's own CLI: its config validates, every archived skill is listed, its approvals
equal the archive's, /health is live on the gateway clawguard started, and the agent resumes
Telegram from the offset it had stored before the replacement. An edit of SOUL.md restarts
the gateway, which comes back live.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clawguard.steps.exec_approvals import normalize
from testbed import AGENT_VERSIONS, TELEGRAM_PORT, Testbed

from .conftest import REPO, clawguard, clawguard_env, wait_for
from .test_daemon import DaemonProcess

pytestmark = pytest.mark.integration

BOT_TOKEN = "123456789:AAF-clawguard-test-bot-token"
FIRST_UPDATE = 424242
SKILLS = sorted(p.name for p in (REPO / "restore-archive" / "skills").iterdir())
# Reads the telegram offset the agent keeps in its own database (2026.6.1 and later).
OFFSET_SQL = (
    'const {DatabaseSync} = require("node:sqlite");'
    "const db = new DatabaseSync(process.argv[1], {readOnly: true});"
    "const row = db.prepare(\"SELECT value_json FROM plugin_state_entries WHERE plugin_id = 'telegram' "
    "AND namespace = 'telegram.update-offsets' AND entry_key = 'default'\").get();"
    "console.log(row ? row.value_json : 'null');"
)


@pytest.fixture(scope="module")
def agents(testbed: Testbed) -> tuple[str, ...]:
    testbed.build_agents(AGENT_VERSIONS)
    return AGENT_VERSIONS


def agent_archive(tmp_path: Path) -> Path:
    """The example archive, its Telegram channel pointed at the Bot API stand-in in the pod."""
    archive = tmp_path / "archive"
    shutil.copytree(REPO / "restore-archive", archive)
    config = json.loads((archive / "openclaw.json").read_text())
    config["channels"]["telegram"].update(botToken=BOT_TOKEN, apiRoot=f"http://127.0.0.1:{TELEGRAM_PORT}")
    (archive / "openclaw.json").write_text(json.dumps(config, indent=2) + "\n")
    return archive


def _config(tmp_path: Path, name: str, archive: Path) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""version: 1
daemon: {{persist_interval: 2, verify_interval: 3600, health_interval: 30}}
sandboxes:
  {name}:
    target: {{kind: k3s, cluster: openshell-cluster-nemoclaw}}
    archive: {archive}
"""
    )
    return config


def _status(config: Path, name: str) -> dict[str, Any]:
    done = clawguard("--config", str(config), "status", "--json")
    assert done.returncode == 0, done.stderr
    return next(s for s in json.loads(done.stdout)["sandboxes"] if s["sandbox"] == name)


def _healthy_on(config: Path, name: str, container_id: str) -> bool:
    status = _status(config, name)
    return status.get("container_id") == container_id and bool((status.get("gateway") or {}).get("healthy"))


def _agent_json(testbed: Testbed, name: str, *args: str) -> Any:
    code, out, err = testbed.agent_cli(name, args)
    assert code == 0, f"openclaw {' '.join(args)}: {err[-800:]}"
    # 2026.3.31 writes `skills list --json` to stderr.
    return json.loads(out if out.strip() else err)


def _stored_offset(testbed: Testbed, name: str) -> int | None:
    """The update id the agent has stored: in its database (2026.6.1 on) or its offset file."""
    code, out, _ = testbed.exec_in_sandbox(
        name, ["node", "-e", OFFSET_SQL, "/sandbox/.openclaw/state/openclaw.sqlite"], user="sandbox"
    )
    if code == 0 and out.strip() not in (b"", b"null"):
        return int(json.loads(out)["lastUpdateId"])
    offset_file = "/sandbox/.openclaw/telegram/update-offset-default.json"  # through the symlink in split
    code, out, _ = testbed.exec_in_sandbox(name, ["cat", offset_file], user="sandbox")
    return int(json.loads(out)["lastUpdateId"]) if code == 0 else None


def _gateway_pids(testbed: Testbed, name: str) -> set[str]:
    code, out, _ = testbed.exec_in_sandbox(name, ["pgrep", "-u", "sandbox", "-f", "^openclaw"])
    return set(out.decode().split()) if code == 0 else set()


@pytest.fixture
def sandbox(testbed: Testbed, agents: tuple[str, ...], request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"agent-{request.node.callspec.params['version'].replace('.', '-')}"
    testbed.remove_sandbox(name)
    yield name
    testbed.remove_sandbox(name)


@pytest.mark.parametrize("version", AGENT_VERSIONS)
def test_the_daemon_restores_what_the_real_agent_accepts(
    version: str, sandbox: str, testbed: Testbed, tmp_path: Path
) -> None:
    name = sandbox
    first_pod = testbed.add_sandbox(name, agent=version)
    testbed.start_telegram(name, deliver=[FIRST_UPDATE])
    archive = agent_archive(tmp_path)
    config = _config(tmp_path, name, archive)
    bin_dir = tmp_path / "bin"
    testbed.install_openshell(bin_dir)
    env = clawguard_env(PATH=f"{bin_dir}:{clawguard_env()['PATH']}")
    daemon = DaemonProcess(config, env, tmp_path / "daemon.log")
    try:
        took = wait_for("the first restore and a live gateway", lambda: _healthy_on(config, name, first_pod), 240, 1)
        print(f"{version}: fresh pod restored, gateway live after {took:.1f}s")
        # The agent itself takes the update and stores the offset; then clawguard captures it.
        wait_for(
            "the agent to ask past the delivered update",
            lambda: any(c["offset"] == FIRST_UPDATE + 1 for c in testbed.telegram_calls(name)),
            120,
            1,
        )
        # The agent writes its offset once the update is handled: a moment after it asks for the next.
        wait_for("the agent to store the offset", lambda: _stored_offset(testbed, name) == FIRST_UPDATE, 60, 0.5)
        stored_at = time.time()
        wait_for(
            "a capture of the agent's state",
            lambda: ((_status(config, name).get("persist") or {}).get("last_capture_at") or 0) > stored_at,
            60,
            0.5,
        )

        replaced_at = time.monotonic()
        new_pod = testbed.restart(name)
        testbed.start_telegram(name)  # the Bot API is back, with nothing new to deliver
        took = wait_for("the new pod restored, gateway live", lambda: _healthy_on(config, name, new_pod), 240, 0.5)
        print(f"{version}: pod replaced -> restored and gateway live in {time.monotonic() - replaced_at:.1f}s")

        # The doctor knows which OpenClaw it is and what that version needs.
        doctor = clawguard("--config", str(config), "doctor", name, env=env)
        agent_line = next((line for line in doctor.stdout.splitlines() if f" {name}: agent:" in line), "")
        assert agent_line.startswith(f"✓ {name}: agent: OpenClaw {version}"), doctor.stdout + doctor.stderr

        # From inside, as the sandbox user, with the agent's own CLI.
        assert _agent_json(testbed, name, "config", "validate", "--json")["valid"] is True
        listed = {skill["name"] for skill in _agent_json(testbed, name, "skills", "list", "--json")["skills"]}
        assert set(SKILLS) <= listed, listed
        approvals = _agent_json(testbed, name, "approvals", "get", "--json")
        assert approvals["exists"] is True
        assert normalize(approvals["file"]) == normalize(json.loads((archive / "exec-approvals.json").read_text()))
        health = testbed.gateway_status(name)
        assert health == {"ok": True, "status": "live"}, health
        # Telegram resumes where the agent was: it asks for the update after the one it
        # had taken in the old pod, and its own state holds that offset.
        wait_for("the agent's first poll in the new pod", lambda: testbed.telegram_calls(name), 120, 1)
        assert testbed.telegram_calls(name)[0]["offset"] == FIRST_UPDATE + 1, testbed.telegram_calls(name)
        assert _stored_offset(testbed, name) == FIRST_UPDATE

        # A SOUL.md edit reaches the live pod and restarts the gateway, which comes back live.
        before = _gateway_pids(testbed, name)
        assert before
        edited = "# SOUL\n\nAnswer in one sentence.\n"
        (archive / "SOUL.md").write_text(edited)
        wait_for(
            "the gateway restarted for the new SOUL.md",
            lambda: (
                _healthy_on(config, name, new_pod)
                and _status(config, name)["last_restore"]["reason"] == "archive changed"
            ),
            240,
            1,
        )
        assert testbed.gateway_status(name) == {"ok": True, "status": "live"}
        after = _gateway_pids(testbed, name)
        assert after and not before & after, (before, after)
        code, out, _ = testbed.exec_in_sandbox(name, ["cat", "/sandbox/.openclaw/workspace/SOUL.md"], user="sandbox")
        assert code == 0 and out.decode() == edited
    finally:
        code = daemon.stop()
        print("\n".join(daemon.lines()[-15:]))
    assert code == 0
    log = daemon.log.read_text()
    assert "Traceback" not in log and BOT_TOKEN not in log
