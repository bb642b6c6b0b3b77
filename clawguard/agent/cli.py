"""The agent's own command line, run inside the sandbox as the sandbox user.

clawguard judges a restore the way the agent does: ``openclaw --version`` says which
rules apply, ``openclaw config validate`` decides whether an openclaw.json is one the
agent accepts, and ``openclaw approvals get|set`` read and write the approvals that
current versions keep in their own database. Always as the sandbox user with its own
HOME: as root the CLI would create root-owned files in ~/.openclaw that the agent
then cannot write (NemoClaw #1973). Only ``--json`` output is parsed: the text output
opens with a random tagline.

Every call is a Node.js cold start of seconds, on the way to the gateway's start when a
restore asks it: each is logged (``agent.cli``, with its duration), and an answer that
cannot change is not asked twice (:class:`Verdicts`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from ..entries import Ids
from ..errors import TargetError
from ..state import read_json, write_json
from ..targets import ExecResult, Instance, Target

log = structlog.get_logger("clawguard.agent")

#: Where a sandbox's :class:`Verdicts` are kept, in its state directory.
VERDICTS_FILE = "agent-verdicts.json"
#: Accepted candidates remembered per agent version, and agent versions remembered: the
#: newest are kept (an archive is edited a few times; an image is upgraded now and then).
VERDICTS_KEEP, VERSIONS_KEEP = 32, 4


class Verdicts:
    """The configs an agent version accepted (``openclaw config validate``), by the sha256
    of their bytes, kept in the sandbox's state directory across pods and restarts.

    The same version judges the same bytes the same way, so asking it again only costs a
    Node.js start before the config may be written, and so before the gateway may start.
    ``agent`` names the version as the pod's facts do (``openclaw 2026.9.6``, or the
    configured pin): another version asks again. Only acceptances are kept: a rejection
    stops the restore, and is asked again the next time. A file that cannot be read or
    written only means asking.
    """

    KEY = "config validate"

    def __init__(self, path: Path, agent: str) -> None:
        self.path = path
        self.agent = agent

    @staticmethod
    def digest(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def _accepted(self) -> dict[str, list[str]]:
        try:
            found = read_json(self.path).get(self.KEY)
        except OSError:
            return {}
        if not isinstance(found, dict):
            return {}
        return {k: [d for d in v if isinstance(d, str)] for k, v in found.items() if isinstance(v, list)}

    def accepted(self, data: bytes) -> bool:
        """Whether this agent version has accepted exactly ``data`` before."""
        return self.digest(data) in self._accepted().get(self.agent, [])

    def remember(self, data: bytes) -> None:
        """This agent version accepts ``data``."""
        accepted = self._accepted()
        digest = self.digest(data)
        mine = [d for d in accepted.pop(self.agent, []) if d != digest] + [digest]
        accepted[self.agent] = mine[-VERDICTS_KEEP:]  # the newest version last
        kept = dict(list(accepted.items())[-VERSIONS_KEEP:])
        try:
            write_json(self.path, {self.KEY: kept})
        except OSError as exc:
            log.warning("agent.verdict_not_kept", path=str(self.path), error=str(exc))


class AgentError(TargetError):
    """The agent's CLI failed or answered something we cannot read."""


class AgentCLI:
    def __init__(
        self,
        target: Target,
        instance: Instance,
        ids: Ids,
        home: str,
        command: str = "openclaw",
        verdicts: Verdicts | None = None,
    ) -> None:
        self.target = target
        self.instance = instance
        self.ids = ids
        self.home = home
        self.command = command
        self.verdicts = verdicts  # the answers to `config validate` this agent version gave before

    def run(self, args: Sequence[str], stdin: bytes | None = None, env: dict[str, str] | None = None) -> ExecResult:
        assignments = [f"{key}={value}" for key, value in {"HOME": self.home, **(env or {})}.items()]
        argv = ["env", *assignments, self.command, *args]
        started = time.monotonic()
        try:
            return self.target.exec(self.instance, argv, stdin, user=f"{self.ids.uid}:{self.ids.gid}")
        finally:
            log.info(
                "agent.cli",
                container_id=self.instance.short_id,
                command=" ".join(a for a in args[:2] if not a.startswith("-")) or " ".join(args[:1]),
                duration=round(time.monotonic() - started, 3),
            )

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
        is staged in the sandbox and the running config stays as it is. Bytes this agent
        version accepted before (``verdicts``) are not asked again.
        """
        if self.verdicts is not None and self.verdicts.accepted(data):
            log.info(
                "agent.known",
                container_id=self.instance.short_id,
                question="config validate",
                answer="accepted before by this agent version",
                agent=self.verdicts.agent,
            )
            return []
        objections = self._validate_config(data)
        if not objections and self.verdicts is not None:
            self.verdicts.remember(data)
        return objections

    def _validate_config(self, data: bytes) -> list[str]:
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
