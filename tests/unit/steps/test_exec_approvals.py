from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

from clawguard.agent import AgentCLI
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
