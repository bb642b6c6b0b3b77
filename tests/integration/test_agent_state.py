"""Nothing the real agent owns is lost when its pod is replaced.

For OpenClaw 2026.9.6 and NemoClaw's pin 2026.6.10, with the default ``persist:``: the
daemon restores a fresh pod and starts its gateway. Then the agent's own state is made
through the agent's own calls: its CLI pairs as a device (2026.6.10 asks for the admin
scope, approved with ``openclaw devices approve``), a cron job (``openclaw cron add``),
a conversation (``openclaw agent --message`` opens the session through the gateway, which
has no model offline; ``chat.inject`` adds the agent's reply to its transcript) and a
workspace file the agent edits (``agents.files.set``, the gateway's own editor). The
daemon captures it; the pod is replaced (new container, fresh overlay); the daemon
restores it before it starts the gateway again. From inside, as the sandbox user and as
the agent's own CLI lists them: the same paired device (the CLI is still that device: no
new pairing), the same cron job, the session and its messages, USER.md, with the owners
and modes they had.

Where 2026.9.6 keeps them: identity, pairing, cron in ``state/openclaw.sqlite``; the
conversation in ``agents/main/agent/openclaw-agent.sqlite``. 2026.6.10: ``identity/``,
``devices/``, ``agents/main/sessions/`` as files, cron in ``state/openclaw.sqlite``.
"""

from __future__ import annotations

import json
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed import Testbed

from .conftest import clawguard_env, wait_for
from .test_daemon import DaemonProcess
from .test_real_agents import _healthy_on, _status, agent_archive

pytestmark = pytest.mark.integration

VERSIONS = ("2026.9.6", "2026.6.10")
HOME = "/sandbox/.openclaw"
SESSION = "agent:main:explicit:s1"
USER_MD = "# USER\n\nName: Ada. Likes green tea, no sugar.\n"
REPLY = "Noted: Ada likes green tea."
# What must come back with its owner and mode, per version (paths under ~/.openclaw).
KEPT = {
    "2026.9.6": [
        "state",
        "state/openclaw.sqlite",
        "agents/main",
        "agents/main/agent",
        "agents/main/agent/openclaw-agent.sqlite",
        "workspace",
        "workspace/USER.md",
        "config-journal-fingerprint.key",
    ],
    "2026.6.10": [
        "state",
        "state/openclaw.sqlite",
        "identity",
        "identity/device.json",
        "identity/device-auth.json",
        "devices",
        "devices/paired.json",
        "agents/main/sessions",
        "agents/main/sessions/sessions.json",
        "agents/main/sessions/s1.jsonl",
        "workspace",
        "workspace/USER.md",
    ],
}


@pytest.fixture(scope="module")
def agents(testbed: Testbed) -> tuple[str, ...]:
    testbed.build_agents(VERSIONS)
    return VERSIONS


@pytest.fixture
def sandbox(testbed: Testbed, agents: tuple[str, ...], request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"state-{request.node.callspec.params['version'].replace('.', '-')}"
    testbed.remove_sandbox(name)
    yield name
    testbed.remove_sandbox(name)


def _cli(testbed: Testbed, name: str, *args: str, ok: bool = True) -> Any:
    """``openclaw ARGS`` as the sandbox user; its JSON answer (None when it printed none)."""
    code, out, err = testbed.agent_cli(name, args)
    if ok:
        assert code == 0, f"openclaw {' '.join(args)}: exit {code}: {err[-800:]}"
    start = out.find("{")
    return json.loads(out[start:]) if start >= 0 else None


def _call(testbed: Testbed, name: str, method: str, params: dict[str, Any]) -> Any:
    return _cli(testbed, name, "gateway", "call", method, "--json", "--params", json.dumps(params))


def _approved(testbed: Testbed, name: str, *args: str) -> Any:
    """``openclaw ARGS`` from a paired CLI. The CLI is a device of the gateway, paired on
    loopback with the scopes of its first call; 2026.6.10 holds a call that asks for more
    (``cron add``: operator.admin) until the request is approved, as a user approves it:
    ``openclaw devices approve`` (its local fallback, on the gateway's own host)."""
    for _ in range(4):
        code, out, err = testbed.agent_cli(name, args)
        if code == 0:
            start = out.find("{")
            return json.loads(out[start:]) if start >= 0 else None
        assert "pairing required" in err or "pending approval" in err, f"openclaw {' '.join(args)}: {err[-800:]}"
        pending = _cli(testbed, name, "devices", "list", "--json")["pending"]
        if pending:
            _cli(testbed, name, "devices", "approve", pending[-1]["requestId"], "--json", ok=False)
    raise AssertionError(f"openclaw {' '.join(args)} was never approved")


def _agent_state(testbed: Testbed, name: str) -> dict[str, Any]:
    """The agent's state as its own CLI and gateway list it."""
    devices = _cli(testbed, name, "devices", "list", "--json")
    jobs = _cli(testbed, name, "cron", "list", "--json")["jobs"]
    sessions = _cli(testbed, name, "sessions", "--json")["sessions"]
    history = _call(testbed, name, "chat.history", {"sessionKey": SESSION})["messages"]
    return {
        "paired": sorted(
            (d["deviceId"], d["publicKey"], tuple(sorted(d.get("scopes") or []))) for d in devices["paired"]
        ),
        "pending": devices["pending"],
        "cron": sorted((j["id"], j["name"], json.dumps(j["schedule"], sort_keys=True)) for j in jobs),
        "sessions": sorted((s["key"], s["sessionId"]) for s in sessions),
        "replies": [
            part["text"]
            for message in history
            if message.get("role") == "assistant"
            for part in message.get("content") or []
            if part.get("type") == "text"
        ],
    }


def _files(testbed: Testbed, name: str, paths: list[str]) -> dict[str, str]:
    """Owner, group and mode of each path, and the content of USER.md, read as the sandbox user."""
    argv = ["stat", "-c", "%U %G %a %n", *(f"{HOME}/{p}" for p in paths)]
    code, out, err = testbed.exec_in_sandbox(name, argv, user="sandbox")
    assert code == 0, err.decode()
    found = {line.split(" ", 3)[3]: line.rsplit(" ", 1)[0] for line in out.decode().splitlines()}
    code, out, err = testbed.exec_in_sandbox(name, ["cat", f"{HOME}/workspace/USER.md"], user="sandbox")
    assert code == 0, err.decode()
    found["USER.md"] = out.decode()
    return found


def _captured(tmp_path: Path, name: str) -> list[str]:
    """The names in the newest generation on the host."""
    newest = sorted((tmp_path / "state" / "clawguard" / name / "persist").glob("*.tar"))[-1]
    with tarfile.open(newest, ignore_zeros=True) as tar:  # one stream of files, one of database snapshots
        return tar.getnames()


@pytest.mark.parametrize("version", VERSIONS)
def test_the_agents_own_state_comes_back_in_a_replaced_pod(
    version: str, sandbox: str, testbed: Testbed, tmp_path: Path
) -> None:
    name, started = sandbox, time.monotonic()
    first_pod = testbed.add_sandbox(name, agent=version)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""version: 1
daemon: {{persist_interval: 2, verify_interval: 3600, health_interval: 30}}
sandboxes:
  {name}:
    target: {{kind: k3s, cluster: {testbed.cluster_name}}}
    archive: {agent_archive(tmp_path)}
"""
    )
    bin_dir = tmp_path / "bin"
    testbed.install_openshell(bin_dir)
    env = clawguard_env(PATH=f"{bin_dir}:{clawguard_env()['PATH']}")
    daemon = DaemonProcess(config, env, tmp_path / "daemon.log")
    try:
        wait_for("the first restore and a live gateway", lambda: _healthy_on(config, name, first_pod), 240, 1)
        # The agent's own state, made through its own calls.
        _cli(testbed, name, "devices", "list", "--json")  # pairs the CLI
        _approved(
            testbed, name, "cron", "add", "--name", "tea-reminder", "--every", "1h", "--message", "Tea?", "--json"
        )
        _cli(testbed, name, "agent", "--message", "Remember: I like green tea.", "--session-id", "s1", ok=False)
        _call(testbed, name, "chat.inject", {"sessionKey": SESSION, "message": REPLY})
        _call(testbed, name, "agents.files.set", {"agentId": "main", "name": "USER.md", "content": USER_MD})
        before = _agent_state(testbed, name)
        assert before["paired"] and not before["pending"], before
        assert "tea-reminder" in [job[1] for job in before["cron"]]
        assert (SESSION, "s1") in before["sessions"] and REPLY in before["replies"]
        files = _files(testbed, name, KEPT[version])
        assert files["USER.md"] == USER_MD
        made = time.time()
        wait_for(
            "a capture of the agent's state",
            lambda: ((_status(config, name).get("persist") or {}).get("last_capture_at") or 0) > made,
            60,
            0.5,
        )
        captured = _captured(tmp_path, name)
        for path in KEPT[version]:
            assert f"{HOME}/{path}".lstrip("/") in captured, path
        assert not [n for n in captured if n.endswith(("-wal", "-shm")) or "/workspace/SOUL.md" in n]
        print(f"{version}: state made and captured after {time.monotonic() - started:.1f}s")

        replaced_at = time.monotonic()
        new_pod = testbed.restart(name)
        wait_for("the new pod restored, gateway live", lambda: _healthy_on(config, name, new_pod), 240, 0.5)
        print(f"{version}: pod replaced -> restored and gateway live in {time.monotonic() - replaced_at:.1f}s")
        restore = _status(config, name)["last_restore"]
        persisted = next(s for s in restore["steps"] if s["name"] == "persisted state")
        assert persisted["outcome"] == "changed", restore

        # From inside, as the sandbox user, and as the agent's own CLI lists them.
        assert _files(testbed, name, KEPT[version]) == files
        after = _agent_state(testbed, name)
        assert after == before, (before, after)
        # The gateway was started on the restored state: it answers as the same gateway (the
        # CLI, the same device, was let in without a new pairing request).
        assert testbed.gateway_status(name) == {"ok": True, "status": "live"}
    finally:
        code = daemon.stop()
        print("\n".join(daemon.lines()[-10:]))
    print(f"{version}: {time.monotonic() - started:.1f}s in all")
    assert code == 0
    log = daemon.log.read_text()
    assert "Traceback" not in log
    starts = [n for n, line in enumerate(log.splitlines()) if "event=gateway.start" in line]
    restored = [n for n, line in enumerate(log.splitlines()) if 'step="persisted state"' in line]
    assert restored and starts and restored[-1] < starts[-1], "the gateway started before the state was back"
