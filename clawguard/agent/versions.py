"""What each OpenClaw version needs from a restore: the table behind ``docs/compatibility.md``.

OpenClaw moved what clawguard restores. Until 2026.6.1 the telegram offset is a JSON
file in ``~/.openclaw/telegram/``; from then on a row of ``~/.openclaw/state/openclaw.sqlite``.
Until 2026.8.1 exec approvals are ``~/.openclaw/exec-approvals.json``; from then on
they live in the same database, the gateway imports a legacy JSON file once and
deletes it (or blocks every approval when it finds one later), refuses a symlinked
one at start, and owns approvals through ``openclaw approvals get|set``.

The rest of the agent's own state moved too (measured with 2026.6.10 and 2026.9.6; the
default ``persist:`` set, ``persist.default_paths``, carries every place): 2026.6.x keeps
its device identity (``identity/``), paired devices (``devices/``) and conversations
(``agents/<id>/sessions/``) as files and its cron jobs in the state database; 2026.9.x
keeps identity, pairing and cron in ``state/openclaw.sqlite`` and conversations in
``agents/<id>/agent/openclaw-agent.sqlite``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

StateKeeping = Literal["files", "sqlite"]  # where a version keeps its own state


@dataclass(frozen=True, order=True)
class Version:
    """An OpenClaw calendar version, ``2026.9.6``; betas compare equal to their release."""

    year: int
    month: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> Version | None:
        """The version in ``openclaw --version``'s output (``OpenClaw 2026.9.6 (eb377ac)``), if any."""
        match = re.search(r"\b(20\d\d)\.(\d{1,2})\.(\d{1,3})\b", text)
        return cls(*(int(part) for part in match.groups())) if match else None

    def __str__(self) -> str:
        return f"{self.year}.{self.month}.{self.patch}"


@dataclass(frozen=True)
class Capabilities:
    """How clawguard treats one range of OpenClaw versions (one row of docs/compatibility.md)."""

    since: Version
    #: file: ~/.openclaw/exec-approvals.json is read as a file; cli: the agent keeps its
    #: approvals in state/openclaw.sqlite and owns them through ``openclaw approvals
    #: set|get`` (a JSON file there is imported once and deleted, or blocks approvals).
    approvals: Literal["file", "cli"]
    #: A symlinked exec-approvals.json: rw (read and written through), read-only (read,
    #: but the agent refuses to save an approval through it), refused (the gateway exits 78).
    approvals_symlink: Literal["rw", "read-only", "refused"]
    #: files: the telegram offset is a JSON file in the telegram directory; sqlite: a row
    #: of state/openclaw.sqlite (plugin state namespace telegram.update-offsets).
    state: StateKeeping
    #: Measured against the real agent from npm, or found in its published code.
    evidence: str

    def refuses_approvals(self, how: str) -> str | None:
        """Why this version cannot work with exec approvals kept as ``how`` (``layout.exec_approvals``
        or an exec_approvals step's ``layout``: file, symlink or cli); None when it can."""
        if how == "symlink" and self.approvals_symlink == "refused":
            return "refuses a symlinked exec-approvals.json (its gateway exits at start)"
        if how in ("file", "symlink") and self.approvals == "cli":
            return (
                "keeps exec approvals in its SQLite database: an exec-approvals.json is imported once and deleted, "
                'then blocks every approval and `openclaw skills list` ("Legacy exec approvals exist ... Run '
                '`openclaw doctor --fix`")'
            )
        return None


#: Oldest first. A version older than the first row gets the first row.
TABLE: tuple[Capabilities, ...] = (
    Capabilities(
        Version(2026, 2, 0),
        approvals="file",
        approvals_symlink="rw",
        state="files",
        evidence="2026.3.31 run here: reads and writes approvals through NemoClaw's symlink",
    ),
    Capabilities(
        Version(2026, 4, 24),
        approvals="file",
        approvals_symlink="read-only",
        state="files",
        evidence="2026.4.24 run here: reads a symlinked file, refuses to write through it",
    ),
    Capabilities(
        Version(2026, 6, 1),
        approvals="file",
        approvals_symlink="read-only",
        state="sqlite",
        evidence="2026.6.10 run here; the telegram.update-offsets namespace first ships in 2026.6.1",
    ),
    Capabilities(
        Version(2026, 8, 1),
        approvals="cli",
        approvals_symlink="refused",
        state="sqlite",
        evidence="2026.9.6 run here; the approvals importer and the symlink refusal first ship in 2026.8.1",
    ),
)

#: What clawguard assumes when the version cannot be learned (no ``openclaw`` in the
#: sandbox, or a stand-in): the seed's era, files everywhere.
UNKNOWN = TABLE[0]


def capabilities(version: Version | None) -> Capabilities:
    if version is None:
        return UNKNOWN
    chosen = TABLE[0]
    for row in TABLE:
        if version >= row.since:
            chosen = row
    return chosen
