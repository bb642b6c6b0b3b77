"""The agent's own command line, run inside the sandbox as the sandbox user.

clawguard judges a restore the way the agent does: ``openclaw --version`` says which
rules apply, ``openclaw config validate`` decides whether an openclaw.json is one the
agent accepts, and ``openclaw approvals get|set`` read and write the approvals that
current versions keep in their own database. Always as the sandbox user with its own
HOME: as root the CLI would create root-owned files in ~/.openclaw that the agent
then cannot write (NemoClaw #1973). Only ``--json`` output is parsed: the text output
opens with a random tagline.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..entries import Ids
from ..errors import TargetError
from ..targets import ExecResult, Instance, Target


class AgentError(TargetError):
    """The agent's CLI failed or answered something we cannot read."""


class AgentCLI:
    def __init__(self, target: Target, instance: Instance, ids: Ids, home: str, command: str = "openclaw") -> None:
        self.target = target
        self.instance = instance
        self.ids = ids
        self.home = home
        self.command = command

    def run(self, args: Sequence[str], stdin: bytes | None = None, env: dict[str, str] | None = None) -> ExecResult:
        assignments = [f"{key}={value}" for key, value in {"HOME": self.home, **(env or {})}.items()]
        argv = ["env", *assignments, self.command, *args]
        return self.target.exec(self.instance, argv, stdin, user=f"{self.ids.uid}:{self.ids.gid}")

    def _json(self, what: str, result: ExecResult, *, ok_codes: tuple[int, ...] = (0,)) -> Any:
        if result.code not in ok_codes:
            raise AgentError(f"`{self.command} {what}` failed ({result.code}): {_tail(result)}")
        try:
            return json.loads(result.stdout)
        except ValueError:
            raise AgentError(f"`{self.command} {what}` printed no JSON: {_tail(result)}") from None

    def version(self) -> str:
        """The first line of ``openclaw --version`` (``OpenClaw 2026.9.6 (eb377ac)``)."""
        result = self.run(["--version"])
        if result.code != 0:
            raise AgentError(f"`{self.command} --version` failed ({result.code}): {_tail(result)}")
        return result.stdout.decode(errors="replace").strip().splitlines()[0] if result.stdout.strip() else ""

    def validate_config(self, data: bytes) -> list[str]:
        """The agent's objections to ``data`` as its openclaw.json; empty when it accepts it.

        The candidate goes in on stdin (``OPENCLAW_CONFIG_PATH=/dev/stdin``), so nothing
        is staged in the sandbox and the running config stays as it is.
        """
        result = self.run(["config", "validate", "--json"], data, {"OPENCLAW_CONFIG_PATH": "/dev/stdin"})
        answer = self._json("config validate", result, ok_codes=(0, 1))
        if not isinstance(answer, dict) or "valid" not in answer:
            raise AgentError(f"`{self.command} config validate` answered {str(answer)[:200]}")
        if answer["valid"]:
            return []
        issues = answer.get("issues") or [{"message": "invalid"}]
        return [f"{issue.get('path') or '(root)'}: {issue.get('message')}" for issue in issues]

    def approvals_get(self) -> dict[str, Any]:
        answer = self._json("approvals get --json", self.run(["approvals", "get", "--json"]))
        if not isinstance(answer, dict):
            raise AgentError(f"`{self.command} approvals get` answered {str(answer)[:200]}")
        return answer

    def approvals_set(self, data: bytes) -> dict[str, Any]:
        answer = self._json("approvals set --stdin --json", self.run(["approvals", "set", "--stdin", "--json"], data))
        if not isinstance(answer, dict):
            raise AgentError(f"`{self.command} approvals set` answered {str(answer)[:200]}")
        return answer


def _tail(result: ExecResult) -> str:
    text = (result.stderr or result.stdout).decode(errors="replace").strip()
    return text[-300:] if text else "(no output)"
