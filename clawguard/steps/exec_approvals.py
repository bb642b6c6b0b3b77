from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..agent.cli import AgentCLI
from ..agent.state import AgentState
from ..archive import source_file
from ..entries import Entry
from ..errors import ArchiveError, ConfigError
from ..schema import ArchivePath, Field, Mode, Str
from .base import Step, StepContext, join

_SECURITY = ("deny", "allowlist", "full")
_ASK = ("off", "on-miss", "always")
# What the agent adds to the file it was given, which is not a difference in policy.
_GENERATED = ("socket",)
_GENERATED_RULE = ("id", "lastUsedAt", "lastUsedCommand", "lastResolvedPath")


class ExecApprovalsStep(Step):
    """exec approvals must be in place before the gateway starts, or every tool call is
    denied with "exec denied: allowlist miss" (seed 000, what broke #2).

    Where they go depends on the agent: a file for OpenClaw before 2026.8.1 (linked from
    ~/.openclaw in NemoClaw's split layout), its own SQLite database after, written with
    ``openclaw approvals set`` and read back with ``approvals get``.
    """

    kind = "exec_approvals"
    summary = "Install exec approvals: a file, a symlink into the data dir, or through `openclaw approvals set`."
    restarts_gateway = True  # the gateway reads them at start; without them every exec is denied
    params = {
        "name": Field(Str(), "Label shown in progress and reports.", example="exec-approvals"),
        "source": Field(ArchivePath(), "The file, relative to the archive.", "exec-approvals.json"),
        "layout": Field(
            Str(choices=("symlink", "file", "cli")),
            "Overrides layout.exec_approvals for this step (auto when unset).",
            example="file",
        ),
        "mode": Field(Mode(), "Mode of the real file (the agent itself keeps it 0600).", 0o600),
    }

    def default_name(self) -> str:
        return "exec-approvals"

    def how(self, ctx: StepContext) -> str:
        chosen = self.values["layout"] or ctx.layout.exec_approvals
        if chosen != "auto":
            return str(chosen)
        if ctx.agent.approvals == "cli":
            return "cli"
        if ctx.layout.style == "split" and ctx.agent.approvals_symlink != "refused":
            return "symlink"
        return "file"

    def _source(self, ctx: StepContext) -> Path:
        path = source_file(ctx.archive, self.values["source"], self.origin.key)
        validate(path, ctx.archive, self.values["source"], self.origin.key)
        return path

    def entries(self, ctx: StepContext) -> list[Entry]:
        path = self._source(ctx)
        how = self.how(ctx)
        link = join(ctx.layout.config_dir, "exec-approvals.json")
        if how == "cli":
            # 2026.8.1+ imports a legacy file once and deletes it, or, once its state
            # exists, blocks every approval until `openclaw doctor --fix`; a symlink stops it.
            why = f"{ctx.describe_agent()} keeps approvals in its database; a legacy file there blocks them"
            return [Entry(link, "absent", why=why)]
        refusal = ctx.agent.refuses_approvals(how)
        if refusal:
            fix = "use cli, or leave it out" if self.values["layout"] else "use auto or cli"
            raise ConfigError(
                f"exec_approvals: {how}: {ctx.describe_agent()} {refusal}; {fix} "
                "(the approvals then go through `openclaw approvals set`)",
                key=f"{self.origin.key}.layout" if self.values["layout"] else "layout.exec_approvals",
            )
        # 0600 like the agent keeps it, but a policy, not a credential.
        mode, owner = self.values["mode"], ctx.user
        if how == "file":
            return [Entry(link, "file", mode, owner, source=path, equivalent=same_approvals, secret=False)]
        real = join(ctx.layout.data_dir, "exec-approvals.json")
        return [
            Entry(real, "file", mode, owner, source=path, equivalent=same_approvals, secret=False),
            Entry(link, "symlink", link=real),
        ]

    def agent_states(self, ctx: StepContext) -> list[AgentState]:
        if self.how(ctx) != "cli":
            return []
        path = self._source(ctx)
        database = join(ctx.layout.config_dir, *STATE_DATABASE)
        return [ApprovalsInAgent(path.read_bytes(), path, database, str(ctx.version) if ctx.version else None)]

    def warnings(self, ctx: StepContext) -> list[str]:
        how = self.how(ctx)
        if how == "symlink" and ctx.agent.approvals_symlink == "read-only":
            return [
                f"{self.name}: {ctx.describe_agent()} reads a symlinked exec-approvals.json but cannot save "
                "an approval through it"
            ]
        return []


#: The agent's state database under ~/.openclaw, where 2026.8.1+ keeps its approvals: the
#: row ``current`` of ``exec_approvals_config``, its policy document in ``raw_json``.
STATE_DATABASE = ("state", "openclaw.sqlite")
APPROVALS_SQL = "SELECT raw_json FROM exec_approvals_config WHERE config_key = 'current'"
# Which OpenClaw last set the database up (each version records itself when it opens it).
WRITTEN_BY_SQL = "SELECT app_version FROM schema_meta WHERE meta_key = 'primary'"


class ApprovalsInAgent(AgentState):
    """Approvals that live in the agent's database: read with ``openclaw approvals get``,
    written with ``set``, whose ``--json`` answer is the snapshot it stored (the same
    redacted snapshot ``get`` prints), judged as the read-back.

    When the restore has just written the agent's state database (a capture of it, taken
    from the last pod), what ``get`` would answer is in those bytes: the same approvals
    cost no CLI call, and others go straight to ``set``. Only a database this very agent
    version set up last is read so (``schema_meta``); anything else is asked."""

    label = "exec approvals (agent database)"

    def __init__(self, data: bytes, source: Path, database: str | None = None, version: str | None = None) -> None:
        self.data = data
        self.source = source
        self.wanted = normalize(json.loads(data))
        self.database = database  # the agent's state database in the pod
        self.version = version  # the pod's agent version

    def problems(self, cli: AgentCLI) -> list[str]:
        return self._judge(cli.approvals_get())

    def known(self, written: Callable[[str], bytes | None]) -> list[str] | None:
        content = written(self.database) if self.database and self.version else None
        if content is None:
            return None
        try:
            written_by, raw = stored_approvals(content)
        except (sqlite3.Error, OSError, ValueError):
            return None  # not a database this code reads: the agent knows
        if written_by != self.version:
            return None  # another version's database: it may migrate or read it otherwise
        where = f"{self.database} (restored)"
        if raw is None:
            return [f"{where}: no approvals stored"]
        try:
            stored = json.loads(raw)
        except ValueError:
            return None  # the agent fails closed on it: let it say so
        if normalize(stored) != self.wanted:
            return [f"{where}: approvals differ from {self.source.name}"]
        return []

    def write(self, cli: AgentCLI) -> list[str]:
        return self._judge(cli.approvals_set(self.data))

    def _judge(self, snapshot: dict[str, Any]) -> list[str]:
        where = snapshot.get("path", "the agent database")
        if not snapshot.get("exists"):
            return [f"{where}: no approvals stored"]
        if normalize(snapshot.get("file") or {}) != self.wanted:
            return [f"{where}: approvals differ from {self.source.name}"]
        return []


def normalize(document: Any) -> Any:
    """The policy in an approvals document, without what the agent generates (socket, rule ids)."""
    if not isinstance(document, dict):
        return document
    result = {key: value for key, value in document.items() if key not in _GENERATED}
    agents = result.get("agents")
    if isinstance(agents, dict):
        result["agents"] = {
            name: (
                {
                    **agent,
                    "allowlist": [
                        {k: v for k, v in rule.items() if k not in _GENERATED_RULE} if isinstance(rule, dict) else rule
                        for rule in agent.get("allowlist") or []
                    ],
                }
                if isinstance(agent, dict) and "allowlist" in agent
                else agent
            )
            for name, agent in agents.items()
        }
    return result


def stored_approvals(database: bytes) -> tuple[str | None, str | None]:
    """Which OpenClaw version last set up ``database`` (the bytes of a state database), and
    the approvals document it stores (None: no row). Raises sqlite3.Error or ValueError when
    it is not such a database."""
    if not database.startswith(b"SQLite format 3\0") or len(database) < 100:
        raise ValueError("not an SQLite database")
    # Read in memory: a database in WAL mode (header bytes 18 and 19 = 2) is read as one in
    # rollback mode, which it is without its -wal (a restored database never has one).
    db = sqlite3.connect(":memory:")
    try:
        db.deserialize(database[:18] + b"\x01\x01" + database[20:])
        # The bytes come from the agent's pod: no function its schema names runs here.
        db.execute("PRAGMA trusted_schema = OFF")
        db.execute("PRAGMA query_only = ON")
        meta = db.execute(WRITTEN_BY_SQL).fetchone()
        row = db.execute(APPROVALS_SQL).fetchone()
    finally:
        with contextlib.suppress(sqlite3.Error):
            db.close()
    version = meta[0] if meta and isinstance(meta[0], str) else None
    if row is not None and not isinstance(row[0], str):
        raise ValueError("raw_json is not text")
    return version, row[0] if row else None


def same_approvals(wanted: bytes, found: bytes) -> bool:
    """The agent rewrites the file it reads (pretty-printed, with a socket and rule ids):
    the same policy is not drift, or every drift check would fight it."""
    try:
        return bool(normalize(json.loads(wanted)) == normalize(json.loads(found)))
    except (ValueError, UnicodeDecodeError):
        return False


def validate(path: Path, archive: Path, rel: str, key: str) -> None:
    """The shape openclaw's src/infra/exec-approvals.ts reads; a typo here is a denied agent."""

    def fail(message: str) -> ArchiveError:
        return ArchiveError(f"{rel}: {message}", file=archive, key=key)

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise fail(f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise fail("must be a JSON object")
    if data.get("version") != 1:
        raise fail(f"'version' must be 1, got {data.get('version')!r}")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise fail("'defaults' must be an object")
    if "security" in defaults and defaults["security"] not in _SECURITY:
        raise fail(f"defaults.security must be one of {', '.join(_SECURITY)}")
    if "ask" in defaults and defaults["ask"] not in _ASK:
        raise fail(f"defaults.ask must be one of {', '.join(_ASK)}")
    if not isinstance(data.get("agents", {}), dict):
        raise fail("'agents' must be an object")
