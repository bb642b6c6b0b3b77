from __future__ import annotations

import json
import secrets
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from clawguard.agent import AgentCLI
from clawguard.plan import PlannedStep
from clawguard.pod import Pod
from clawguard.restore import StepReport, _restore_agent_states
from clawguard.steps.exec_approvals import ApprovalsInAgent

WANTED = {
    "version": 1,
    "defaults": {"security": "allowlist"},
    "agents": {"main": {"allowlist": [{"pattern": "/bin/ls"}]}},
}


class FakeCLI:
    """The agent's `approvals get|set --json`, as OpenClaw 2026.9 answers them: the stored
    snapshot, with the socket and rule ids the agent adds."""

    def __init__(self, stored: dict[str, Any] | None, keeps: bool = True) -> None:
        self.stored = stored
        self.keeps = keeps  # False: a set that the agent reports not having stored
        self.calls: list[str] = []

    def _snapshot(self) -> dict[str, Any]:
        if self.stored is None:
            return {"path": "/sandbox/.openclaw/state/openclaw.sqlite", "exists": False}
        file = json.loads(json.dumps(self.stored))
        file["socket"] = {"path": "/sandbox/.openclaw/exec-approvals.sock"}
        for agent in (file.get("agents") or {}).values():
            for number, rule in enumerate(agent.get("allowlist") or []):
                rule["id"] = f"rule-{number}"
        return {"path": "/sandbox/.openclaw/state/openclaw.sqlite", "exists": True, "file": file}

    def approvals_get(self) -> dict[str, Any]:
        self.calls.append("get")
        return self._snapshot()

    def approvals_set(self, data: bytes) -> dict[str, Any]:
        self.calls.append("set")
        if self.keeps:
            self.stored = json.loads(data)
        return self._snapshot()


def _state() -> ApprovalsInAgent:
    return ApprovalsInAgent(json.dumps(WANTED).encode(), Path("exec-approvals.json"))


def test_the_answer_to_set_is_the_read_back() -> None:
    cli = FakeCLI(None)
    state = _state()
    assert state.problems(cast(AgentCLI, cli)) == ["/sandbox/.openclaw/state/openclaw.sqlite: no approvals stored"]
    assert state.write(cast(AgentCLI, cli)) == []
    assert cli.calls == ["get", "set"]  # two Node.js starts, not three


def test_a_set_the_agent_did_not_keep_is_reported() -> None:
    cli = FakeCLI({"version": 1, "defaults": {"security": "deny"}}, keeps=False)
    assert _state().write(cast(AgentCLI, cli)) == [
        "/sandbox/.openclaw/state/openclaw.sqlite: approvals differ from exec-approvals.json"
    ]


def test_what_the_agent_adds_is_not_drift() -> None:
    assert _state().problems(cast(AgentCLI, FakeCLI(WANTED))) == []


# Approvals known from a state database the restore has just written (a capture of the
# agent's own): what `approvals get` would answer is in its bytes, so no Node.js start for it.
DATABASE = "/sandbox/.openclaw/state/openclaw.sqlite"


def _database(tmp_path: Path, approvals: dict[str, Any] | None, version: str = "2026.9.6") -> bytes:
    """An OpenClaw state database as 2026.9.6 lays out what is read here (WAL mode, as the agent keeps it)."""
    path = tmp_path / f"openclaw-{secrets.token_hex(4)}.sqlite"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(
        "CREATE TABLE schema_meta (meta_key TEXT NOT NULL PRIMARY KEY, role TEXT NOT NULL, schema_version INTEGER "
        "NOT NULL, agent_id TEXT, app_version TEXT, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL) STRICT"
    )
    db.execute("INSERT INTO schema_meta VALUES ('primary', 'global', 18, NULL, ?, 1, 1)", (version,))
    db.execute(
        "CREATE TABLE exec_approvals_config (config_key TEXT NOT NULL PRIMARY KEY, raw_json TEXT NOT NULL, "
        "socket_path TEXT, has_socket_token INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL) STRICT"
    )
    if approvals is not None:
        # As the agent stores what it was given: pretty-printed, with its socket and rule ids.
        stored = json.loads(json.dumps(approvals))
        stored["socket"] = {"path": "/sandbox/.openclaw/exec-approvals.sock", "token": "t0k3n"}
        for agent in (stored.get("agents") or {}).values():
            for number, rule in enumerate(agent.get("allowlist") or []):
                rule["id"] = f"rule-{number}"
        db.execute(
            "INSERT INTO exec_approvals_config VALUES ('current', ?, NULL, 1, 1)", (json.dumps(stored, indent=2),)
        )
    db.commit()
    db.close()
    data = path.read_bytes()
    assert data[18:20] == b"\x02\x02"  # WAL mode, read all the same
    return data


def _known(state: ApprovalsInAgent, files: dict[str, bytes]) -> list[str] | None:
    return state.known(files.get)


def _in_database(version: str | None = "2026.9.6") -> ApprovalsInAgent:
    return ApprovalsInAgent(json.dumps(WANTED).encode(), Path("exec-approvals.json"), DATABASE, version)


def test_the_same_approvals_in_the_restored_database_are_known(tmp_path: Path) -> None:
    assert _known(_in_database(), {DATABASE: _database(tmp_path, WANTED)}) == []


def test_other_approvals_in_the_restored_database_are_known_to_differ(tmp_path: Path) -> None:
    other = {"version": 1, "defaults": {"security": "deny"}}
    assert _known(_in_database(), {DATABASE: _database(tmp_path, other)}) == [
        f"{DATABASE} (restored): approvals differ from exec-approvals.json"
    ]
    assert _known(_in_database(), {DATABASE: _database(tmp_path, None)}) == [
        f"{DATABASE} (restored): no approvals stored"
    ]


def test_what_the_restore_did_not_write_or_cannot_read_is_asked(tmp_path: Path) -> None:
    assert _known(_in_database(), {}) is None  # no database written: only the agent knows
    assert _known(_in_database(), {DATABASE: b"not a database"}) is None
    assert _known(_in_database(), {DATABASE: b"SQLite format 3\0" + bytes(200)}) is None
    # Another version set the database up last: it may migrate it, or read it otherwise.
    assert _known(_in_database(), {DATABASE: _database(tmp_path, WANTED, version="2026.8.1")}) is None
    assert _known(_in_database(version=None), {DATABASE: _database(tmp_path, WANTED)}) is None


class _Pod:
    """Just enough of a Pod for the engine's agent phase: its CLI and its id."""

    short_id = "0" * 12

    def __init__(self, cli: FakeCLI) -> None:
        self.cli = cli

    def agent(self) -> FakeCLI:
        return self.cli


def _agent_phase(cli: FakeCLI, files: dict[str, bytes], dry_run: bool = False) -> StepReport:
    planned = cast(PlannedStep, SimpleNamespace(agent_states=[_in_database()]))
    report = StepReport("exec-approvals", "exec_approvals", "ok", 0.0)
    _restore_agent_states(planned, report, cast(Pod, _Pod(cli)), dry_run, files.get)
    return report


def test_approvals_already_in_the_restored_database_cost_no_cli_call(tmp_path: Path) -> None:
    cli = FakeCLI(None)  # what the agent would say is beside the point: it is not asked
    report = _agent_phase(cli, {DATABASE: _database(tmp_path, WANTED)})
    assert cli.calls == [] and report.outcome == "ok"


def test_other_approvals_in_the_restored_database_are_set_without_asking_first(tmp_path: Path) -> None:
    cli = FakeCLI({"version": 1, "defaults": {"security": "deny"}})
    report = _agent_phase(cli, {DATABASE: _database(tmp_path, {"version": 1, "defaults": {"security": "deny"}})})
    assert cli.calls == ["set"]  # one Node.js start: `get` would only have said what the restore knows
    assert report.outcome == "changed" and cli.stored == WANTED
    dry = FakeCLI(None)
    assert _agent_phase(dry, {DATABASE: _database(tmp_path, None)}, dry_run=True).outcome == "would-change"
    assert dry.calls == []


def test_approvals_the_restore_does_not_know_are_asked_as_before() -> None:
    cli = FakeCLI({"version": 1, "defaults": {"security": "deny"}})
    assert _agent_phase(cli, {}).outcome == "changed"
    assert cli.calls == ["get", "set"]
    same = FakeCLI(WANTED)
    assert _agent_phase(same, {}).outcome == "ok" and same.calls == ["get"]
