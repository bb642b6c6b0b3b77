"""The agent's own runtime state, carried across pod restarts.

The restore archive brings back what the user put in a sandbox. Persisted paths
are what the agent writes while it runs: its device identity and paired devices,
conversations, cron jobs, the credentials it wrote, its workspace and its state
database (the default set follows the agent's version: ``default_paths``).
clawguard captures them from the live pod into generations under
``$XDG_STATE_HOME/clawguard/<sandbox>/persist/`` and writes the latest good one
into the next pod, after the archive steps and before the gateway starts.

A persist list holds glob patterns of what to carry and, in the default set,
exclusions written ``!PATTERN``: ``!/abs/path/glob`` leaves out that path and
everything below it (what the archive restores: the archive wins), ``!*.tmp``
every entry whose name matches (temporaries, locks). A SQLite database
(``*.sqlite``) anywhere in the set is never copied as a file: its consistent
snapshot is taken with SQLite's online backup (``VACUUM INTO``, by the agent's
own Node.js), the leases of the live pod's processes in it (``VOLATILE_TABLES``)
deleted from the copy, and its ``-wal``, ``-shm`` and ``-journal`` files never travel.

A capture costs little while nothing changes: one exec lists the set with
``stat`` (size, times, inode, mode and owner of every entry, a database's
``-wal`` included) and compares its digest with the last capture's manifest. The
same digest: nothing is read, nothing stored, no Node.js started. When only
databases changed, one Node.js process reads them and compares their rows with
the last capture's (the tables a running agent rewrites on a timer,
``VOLATILE_TABLES``, left out): the same rows, nothing stored either. Only then
is the set written out (tar) and the databases snapshotted.

Two rules keep a capture from ever replacing good data with bad:

* A pod is *live* for persistence only once its persisted paths are known to be
  the agent's own: it was restored from the latest capture, or there was no
  capture to restore. Captures are taken from live pods only, so a new or
  half-restored pod is never captured. The live pod is recorded in state.json.
* An empty capture never replaces a non-empty one, and a capture that fails
  halfway (the pod died, tar failed) is discarded; generations are written
  atomically.

Generations are kept by age, as backup tools prune (``Retention``): every one from the
last hour, then the newest of each hour and of each day for a while, and the newest few
whatever their age. A capture much smaller than the newest good one (MEMORY.md
truncated, memory/ wiped) is *shrunk*: it is stored, as it is the agent's state now, but
it never takes a good generation's place, so the good ones stay as long as they would
have without it.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import json
import os
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO

import structlog

from .agent.versions import Capabilities
from .entries import Entry, Ids
from .errors import TargetError, printable
from .layout import Layout
from .state import StateStore, atomic_write
from .targets.base import OutputTooLarge, shell_script

if TYPE_CHECKING:
    from .config import DaemonSettings
    from .context import SandboxContext
    from .pod import Pod

log = structlog.get_logger("clawguard.persist")

#: Tables of leases held by the live pod's processes, which a running agent rewrites on a timer
#: or for each process: OpenClaw 2026.9.6's gateway renews its owner lease (``state_leases``, in
#: state/openclaw.sqlite) every 30 s, and each process that opens an agent's database leases it
#: (``agent_database_leases``). A capture that finds only these changed stores nothing, and a
#: snapshot holds them empty: no process of the old pod lives in the next one, and 2026.9.6's
#: gateway refuses to start while an unexpired owner lease of another host is in its database
#: ("Another Gateway owner lease is still active for this state directory", for up to 5 minutes;
#: a re-created pod has a new hostname).
VOLATILE_TABLES = ("state_leases", "agent_database_leases")

#: Never carried as files: a database's journals belong to the live database alone.
JOURNALS = ("-wal", "-shm", "-journal")

# Node.js program, run as the sandbox user with the pod's own node (no agent CLI), from
# STAGE/snapshot.js (find's -exec takes no argument holding "{}"):
#   node STAGE/snapshot.js MODE STAGE DB...
# For each database DB (a path relative to /), its key (size, mtime and inode of the file
# and of its -wal) and a digest of its schema and rows (the tables of STAGE/volatile.json,
# a JSON list, and virtual tables left out: their shadow tables hold the data).
# STAGE/known.json is the last capture's manifest, {"/path": {"stat": KEY, "digest":
# DIGEST}}: a database whose key is unchanged keeps its known digest unread.
#   check:    exit 0 when every DB's digest is the known one (nothing new in it), else 1.
#   snapshot: an online backup (VACUUM INTO) of each DB to STAGE/root/DB, with the rows of the
#             volatile tables (the live pod's leases) deleted, and the mode and mtime of the live
#             file; its digest is taken from that copy.
# Either way one line per DB goes to STAGE/dbs: "clawguard-db " + JSON {path, stat, digest}.
# A failure is one line on stderr and exit 5.
SNAPSHOT_JS = r"""
const {DatabaseSync} = require("node:sqlite");
const fs = require("node:fs"), path = require("node:path"), crypto = require("node:crypto");
const [mode, stage, ...dbs] = process.argv.slice(2);
const read = (name) => JSON.parse(fs.readFileSync(path.join(stage, name), "utf8"));
const known = read("known.json"), volatile = new Set(read("volatile.json"));
function key(file) {
  return [file, file + "-wal"].map((f) => {
    try { const s = fs.lstatSync(f, {bigint: true}); return `${s.size}:${s.mtimeNs}:${s.ino}`; }
    catch { return "-"; }
  }).join(" ");
}
function digest(file) {
  const db = new DatabaseSync(file, {readOnly: true});
  try {
    db.exec("BEGIN");
    const hash = crypto.createHash("sha256");
    const schema = db.prepare("SELECT type, name, sql FROM sqlite_master ORDER BY type, name").all();
    for (const item of schema) hash.update(JSON.stringify([item.type, item.name, item.sql]) + "\n");
    for (const item of schema) {
      if (item.type !== "table" || volatile.has(item.name) || /^\s*CREATE\s+VIRTUAL/i.test(item.sql || "")) continue;
      const rows = db.prepare(`SELECT * FROM "${item.name.replace(/"/g, '""')}"`);
      rows.setReadBigInts(true);
      hash.update(`table ${item.name}\n`);
      for (const row of rows.iterate()) {
        for (const value of Object.values(row)) {
          if (value === null) hash.update("n;");
          else if (value instanceof Uint8Array) { hash.update(`b${value.length}:`); hash.update(value); }
          else {
            const text = String(value);
            hash.update(`${typeof value}${Buffer.byteLength(text)}:`);
            hash.update(text);
          }
        }
        hash.update("\n");
      }
    }
    db.exec("COMMIT");
    return hash.digest("hex");
  } finally { db.close(); }
}
function forget(file) {
  const copy = new DatabaseSync(file);
  try {
    for (const item of copy.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all()) {
      if (volatile.has(item.name)) copy.exec(`DELETE FROM "${item.name.replace(/"/g, '""')}"`);
    }
  } finally { copy.close(); }
}
let same = true, current = "";
const lines = [];
try {
  for (const db of dbs) {
    current = db;
    const stat = key(db), before = known["/" + db];
    let sum;
    if (mode === "snapshot") {
      const target = path.join(stage, "root", db), info = fs.statSync(db);
      fs.mkdirSync(path.dirname(target), {recursive: true});
      const source = new DatabaseSync(db, {readOnly: true});
      try { source.exec("VACUUM INTO '" + target.replace(/'/g, "''") + "'"); } finally { source.close(); }
      forget(target);
      fs.chmodSync(target, info.mode & 0o7777);
      fs.utimesSync(target, info.atime, info.mtime);
      sum = digest(target);
    } else {
      sum = before && before.stat === stat ? before.digest : digest(db);
    }
    same = same && !!before && before.digest === sum;
    lines.push("clawguard-db " + JSON.stringify({path: "/" + db, stat, digest: sum}) + "\n");
  }
} catch (error) {
  const message = String((error && error.message) || error).split("\n")[0];
  process.stderr.write(`clawguard: ${mode} of /${current} failed: ${message}\n`);
  process.exit(5);
}
fs.appendFileSync(path.join(stage, "dbs"), lines.join(""));
process.exit(mode === "check" && !same ? 1 : 0);
"""

# The capture of the agent's persisted paths (persist.capture), as the sandbox user: its
# arguments (capture_argv) and what it prints, clawguard/data/sh/capture.sh.
CAPTURE_SCRIPT = shell_script("capture.sh")


def default_paths(layout: Layout, agent: Capabilities | None = None) -> list[str]:
    """What the agent writes and a pod restart must not lose, where ``agent`` (this version's
    row of agent/versions.py; None: the version is not known) keeps it, as a persist list:
    patterns, then ``!`` exclusions (caches, logs, temporaries, locks). Every database in
    it is carried by online backup. What the archive restores is left out by
    ``archive_wins``, with the plan's entries.

    Measured with OpenClaw 2026.6.10 and 2026.9.6 (docs/compatibility.md): the agent's own
    backup (``openclaw backup create``) carries the whole of ~/.openclaw but its caches,
    logs and temporaries; this is that set, by name, so that a cache a later version adds
    does not fill the capture (limits.max_persist_bytes stops the whole capture)."""
    config, data, work = (PurePosixPath(p) for p in (layout.config_dir, layout.data_dir, layout.workspace))
    offsets = str(PurePosixPath(layout.telegram_dir, "update-offset-*.json"))
    if agent is None:
        # Not known which OpenClaw (no `openclaw` in the sandbox, or a stand-in): only what
        # every version keeps in the same place, and the seeds' offset files.
        return [offsets, str(work / "MEMORY.md"), str(work / "memory")]
    paths = [
        str(work),  # the whole workspace: USER.md, MEMORY.md, memory/, IDENTITY.md, notes...
        str(data / "agents"),  # sessions (files, or agents/<id>/agent/openclaw-agent.sqlite) and auth profiles
        str(data / "identity"),  # the device identity (a file until 2026.6.x, then in the state database)
        str(data / "devices"),  # paired and pending devices and their tokens (idem)
        str(data / "cron"),  # scheduled jobs (jobs.json; in the state database since 2026.6.x)
        str(data / "credentials"),  # what the agent wrote there (channel logins, OAuth); the archive's win
        str(data / "skills"),  # skills the agent installed; the archive's win
        str(data / "canvas"),  # documents the agent made for its canvas host
        str(config / "state"),  # state/openclaw.sqlite and the other databases of the agent
        str(config / ".env"),  # keys `openclaw configure` writes
        str(config / "workspace-attestations"),  # 2026.6.x: attestations of the workspace files
        str(config / "config-journal-fingerprint.key"),  # 2026.9.x: the key of its config journal
    ]
    named = str(data / "workspace-*")  # named agents' workspaces
    if not covered(str(work), named):
        paths.insert(1, named)
    if agent.state == "files":  # until 2026.6.1 the telegram offset is a file per account
        paths.append(offsets)
    excluded = [
        str(data / "agents" / "*" / "agent" / "tmp"),  # the agent's temporary files (its backup skips them)
        str(data / "agents" / "*" / "agent" / ".tmp"),
        str(data / "cron" / "runs"),  # run logs
        *TRANSIENT,
    ]
    return _unique(paths) + [f"!{pattern}" for pattern in _unique(excluded)]


#: Names never carried, anywhere in the set: what the agent's own backup skips as transient
#: (sockets, pid files, temporaries) and lock files, which would hold a dead pod's process:
#: ``*.lock`` (a session store's ``sessions.json.lock``, memory's ``embed.lock.lock``), and the
#: SQLite files 2026.9.x locks with (``*.lock.sqlite``: ``gateway.<hash>.lock.sqlite``,
#: ``device-identity.<hash>.lock.sqlite``, ``<family>.<hash>.lock.sqlite``; ``*-lock.sqlite``:
#: a memory index's ``<db>.generation-lock.sqlite`` and ``<db>.reindex-lock.sqlite``), which
#: a capture would otherwise take for databases. docs/compatibility.md says where each is.
TRANSIENT = ("*.sock", "*.pid", "*.tmp", "*.lock", "*.lock.sqlite", "*-lock.sqlite")


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


@dataclass(frozen=True)
class PersistSet:
    """A persist list parsed: what to carry (``include``), and what not (``paths``: ``!/abs``
    patterns, the subtree of every match; ``names``: ``!name`` patterns, any entry whose
    name matches, and what is below it)."""

    include: tuple[str, ...]
    paths: tuple[str, ...] = ()
    names: tuple[str, ...] = ()

    @classmethod
    def of(cls, patterns: Iterable[str]) -> PersistSet:
        include: list[str] = []
        paths: list[str] = []
        names: list[str] = []
        for pattern in patterns:
            if not pattern.startswith("!"):
                include.append(pattern)
            elif pattern.startswith("!/"):
                paths.append(pattern[1:])
            else:
                names.append(pattern[1:])
        return cls(tuple(include), tuple(paths), tuple(names))

    def excluded(self, path: str) -> bool:
        """Whether ``path`` (absolute) is left out."""
        if any(covered(path, pattern) for pattern in self.paths):
            return True
        parts = PurePosixPath(path).parts[1:]
        if parts and parts[-1].endswith(tuple(".sqlite" + journal for journal in JOURNALS)):
            return True
        return any(fnmatchcase(part, name) for part in parts for name in self.names)

    def carried(self, path: str) -> bool:
        return any(covered(path, pattern) for pattern in self.include) and not self.excluded(path)

    @property
    def digest(self) -> str:
        """Names the set: a manifest taken for another set says nothing about this one."""
        return hashlib.sha256(json.dumps([self.include, self.paths, self.names, VOLATILE_TABLES]).encode()).hexdigest()


def archive_wins(patterns: Sequence[str], entries: Iterable[Entry]) -> list[str]:
    """The default persist list without what the archive restores (``entries``, the plan's):
    a path comes from one place, and for what the archive writes that is the archive.

    What the archive declares below a pattern is left out (``!path``, and all below it: a
    directory it keeps exact, or one it makes inside the agent's); a pattern inside a
    directory the archive keeps exact is dropped. A directory a pattern names and the
    archive creates (credentials/) is the archive's, its contents the agent's: the
    pattern becomes its children."""
    include = [p for p in patterns if not p.startswith("!")]
    exclude = [p for p in patterns if p.startswith("!")]
    entries = list(entries)
    for entry in entries:
        if entry.kind == "dir" and entry.exact:
            include = [p for p in include if not covered(p, entry.path)]
    result: list[str] = []
    for pattern in include:
        inside = [e for e in entries if covered(e.path, pattern)]
        if any(e.kind == "dir" and not e.exact and e.path == pattern for e in inside):
            escaped = glob.escape(pattern)
            result += [f"{escaped}/*", f"{escaped}/.[!.]*", f"{escaped}/..?*"]
        else:
            result.append(pattern)
        for entry in inside:
            if entry.kind == "dir" and not entry.exact and entry.path == pattern:
                continue  # its contents stay the agent's; the directory itself is not captured
            exclude.append("!" + glob.escape(entry.path))
    paths = [p for p in _unique(exclude) if p.startswith("!/")]
    # An exclusion below another says nothing more.
    redundant = {p for p in paths for other in paths if other != p and covered(p[1:], other[1:])}
    return _unique(result) + [p for p in _unique(exclude) if p not in redundant]


def covered(path: str, pattern: str) -> bool:
    """True when ``path`` is what ``pattern`` matches, or below it."""
    want = PurePosixPath(pattern).parts
    have = PurePosixPath(path).parts
    return len(have) >= len(want) and all(fnmatchcase(h, w) for h, w in zip(have, want, strict=False))


def above(path: str, pattern: str) -> bool:
    """True when ``path`` is a directory on the way to what ``pattern`` matches."""
    want = PurePosixPath(pattern).parts
    have = PurePosixPath(path).parts
    return len(have) < len(want) and all(fnmatchcase(h, w) for h, w in zip(have, want, strict=False))


@dataclass(frozen=True)
class Capture:
    """One stored generation: ``<generation>.tar`` and its ``<generation>.json``."""

    generation: int
    taken_at: float
    container_id: str
    reason: str
    files: int
    size: int  # bytes of the tar stream
    sha256: str
    tops: list[str]
    tar: Path
    owner: Ids | None = None  # the sandbox user's ids when it was taken (an image rebuild may change them)
    #: Bytes of regular files under each of ``tops`` (None in generations written before it was kept).
    sizes: dict[str, int] | None = None
    #: Why it is much smaller than the newest good generation before it; empty when it is good.
    shrunk: str = ""
    #: Digest of what it holds, times left out (``_tar_members``); empty in older generations.
    content: str = ""

    def read(self) -> bytes:
        data = self.tar.read_bytes()
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise TargetError(f"persisted capture {self.tar} is damaged (checksum mismatch)")
        return data

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data["tar"] = str(self.tar)
        data["owner"] = [self.owner.uid, self.owner.gid] if self.owner else None
        return data


HOUR, DAY = 3600, 86400
#: A persisted path that held at least this many bytes and now holds less than half as
#: many (or is gone) makes a capture *shrunk*.
SHRINK_MIN_BYTES = 64


@dataclass(frozen=True)
class Retention:
    """Which generations are kept, by age (borg prune's --keep-within, --keep-hourly,
    --keep-daily and --keep-last), given the time now. Defaults: DAEMON_SCHEMA's."""

    within: int = HOUR  # seconds: every generation taken this recently
    hourly: int = 48  # the newest generation of each of the last this many clock hours (UTC)
    daily: int = 14  # the newest generation of each of the last this many days (UTC)
    last: int = 5  # the newest this many, whatever their age

    @classmethod
    def from_settings(cls, settings: DaemonSettings) -> Retention:
        return cls(
            within=settings.persist_keep_within,
            hourly=settings.persist_keep_hourly,
            daily=settings.persist_keep_daily,
            last=settings.persist_keep,
        )

    @property
    def horizon(self) -> int:
        """Seconds back that the age rules reach: a good generation older than this is no
        longer what a new capture is compared with."""
        return max(self.within, self.hourly * HOUR, self.daily * DAY)

    def keep(self, generations: Sequence[Capture], now: float) -> set[int]:
        """The generation numbers to keep. The rules are applied to every generation and
        again to the good ones alone: a shrunk capture is kept like any other, but the good
        generation it would have displaced from an hour, a day or the newest few stays."""
        good = [capture for capture in generations if not capture.shrunk]
        return self._schedule(generations, now) | self._schedule(good, now)

    def _schedule(self, generations: Sequence[Capture], now: float) -> set[int]:
        ordered = sorted(generations, key=lambda c: (c.taken_at, c.generation))
        kept = {c.generation for c in ordered[-self.last :]} if self.last > 0 else set()
        kept |= {c.generation for c in ordered if now - c.taken_at < self.within}
        for count, length in ((self.hourly, HOUR), (self.daily, DAY)):
            if count <= 0:
                continue
            oldest = int(now // length) - count  # buckets after this one are kept
            newest: dict[int, Capture] = {}
            for capture in ordered:  # the last one seen in a bucket is its newest
                bucket = int(capture.taken_at // length)
                if bucket > oldest:
                    newest[bucket] = capture
            kept |= {c.generation for c in newest.values()}
        return kept


class CaptureStore:
    """The generations of one sandbox, oldest first. Only this module writes them.

    ``retention`` decides which are kept after each save (an integer: the newest that many
    and the default age rules); ``clock`` is the time now, for the age rules (tests set it)."""

    def __init__(
        self,
        store: StateStore,
        sandbox: str,
        retention: Retention | int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sandbox = sandbox
        if retention is None:
            retention = Retention()
        elif isinstance(retention, int):
            retention = Retention(last=retention)
        self.retention = retention
        self.clock = clock
        self.directory = store.sandbox_dir(sandbox) / "persist"

    def generations(self) -> list[Capture]:
        result: list[Capture] = []
        if not self.directory.is_dir():
            return result
        for meta in sorted(self.directory.glob("*.json")):
            capture = self._load(meta)
            if capture is not None:
                result.append(capture)
        return sorted(result, key=lambda c: c.generation)

    def latest(self) -> Capture | None:
        generations = self.generations()
        return generations[-1] if generations else None

    def get(self, generation: int) -> Capture | None:
        """Generation ``generation``, if it is stored whole."""
        return self._load(self.directory / f"{generation:08d}.json")

    def latest_good(self) -> Capture | None:
        """The newest generation whose tar still matches its checksum (a damaged one is skipped)."""
        for capture in reversed(self.generations()):
            try:
                capture.read()
            except (OSError, TargetError):
                log.warning("persist.capture_damaged", sandbox=self.sandbox, generation=capture.generation)
                continue
            return capture
        return None

    def _load(self, meta: Path) -> Capture | None:
        try:
            data = json.loads(meta.read_text())
            tar = meta.with_suffix(".tar")
            if not tar.is_file():
                return None
            return Capture(
                generation=int(data["generation"]),
                taken_at=float(data["taken_at"]),
                container_id=str(data["container_id"]),
                reason=str(data.get("reason", "")),
                files=int(data["files"]),
                size=int(data["size"]),
                sha256=str(data["sha256"]),
                tops=[str(t) for t in data["tops"]],
                tar=tar,
                owner=Ids(*(int(i) for i in data["owner"])) if data.get("owner") else None,
                sizes={str(k): int(v) for k, v in data["sizes"].items()} if data.get("sizes") is not None else None,
                shrunk=str(data.get("shrunk") or ""),
                content=str(data.get("content") or ""),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None  # an unfinished or foreign file is not a generation

    def save(
        self,
        data: bytes | Path,
        container_id: str,
        reason: str,
        members: list[tarfile.TarInfo],
        taken_at: float | None = None,
        owner: Ids | None = None,
        content: str = "",
    ) -> Capture:
        """Store a capture: ``data`` is the tar stream, or a file of it in this store's
        directory, which is moved into place (never read into memory)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        generations = self.generations()
        generation = (generations[-1].generation + 1) if generations else 1
        tar = self.directory / f"{generation:08d}.tar"
        names = {_top(m.name) for m in members}
        tops = sorted(n for n in names if not any(n.startswith(other + "/") for other in names))
        sizes = _sizes(members, tops)
        taken_at = taken_at if taken_at is not None else self.clock()
        size, digest = (len(data), hashlib.sha256(data).hexdigest()) if isinstance(data, bytes) else _digest(data)
        capture = Capture(
            generation=generation,
            taken_at=taken_at,
            container_id=container_id,
            reason=reason,
            files=sum(1 for m in members if m.isfile()),
            size=size,
            sha256=digest,
            tops=tops,
            tar=tar,
            owner=owner,
            sizes=sizes,
            shrunk=_shrunk(sizes, self._baseline(generations, taken_at)),
            content=content,
        )
        # The tar first, then its metadata: a generation exists only once both are complete.
        if isinstance(data, bytes):
            atomic_write(tar, data)
        else:
            with data.open("rb") as handle:
                os.fsync(handle.fileno())
            os.replace(data, tar)
        meta = capture.summary()
        del meta["tar"]
        atomic_write(tar.with_suffix(".json"), json.dumps(meta, indent=2, sort_keys=True).encode() + b"\n")
        self._prune([*generations, capture])
        return capture

    def _baseline(self, generations: Sequence[Capture], now: float) -> Capture | None:
        """What a new capture is compared with: the newest good generation within the
        retention's horizon. After that long, a smaller state is the agent's new normal."""
        for capture in reversed(generations):
            if not capture.shrunk:
                return capture if now - capture.taken_at <= self.retention.horizon else None
        return None

    def _prune(self, generations: Sequence[Capture] | None = None) -> None:
        generations = self.generations() if generations is None else generations
        kept = self.retention.keep(generations, self.clock())
        for old in generations:
            if old.generation in kept:
                continue
            with contextlib.suppress(FileNotFoundError):
                old.tar.with_suffix(".json").unlink()
                old.tar.unlink()
        # Temp files of a capture whose writer was killed mid-way (SIGKILL, power loss).
        for stale in self.directory.glob(".*"):
            with contextlib.suppress(OSError):
                if time.time() - stale.stat().st_mtime > 3600:
                    stale.unlink()


def _top(name: str) -> str:
    return "/" + name.strip("/")


def _sizes(members: Sequence[tarfile.TarInfo], tops: Sequence[str]) -> dict[str, int]:
    """Bytes of regular files under each persisted path that the capture holds."""
    sizes = dict.fromkeys(tops, 0)
    for member in members:
        if not member.isfile():
            continue
        path = _top(member.name)
        for top in tops:
            if path == top or path.startswith(top + "/"):
                sizes[top] += member.size
                break
    return sizes


def _shrunk(sizes: Mapping[str, int], baseline: Capture | None) -> str:
    """Why a capture whose paths hold ``sizes`` is much smaller than ``baseline``, or ''."""
    if baseline is None or baseline.sizes is None:
        return ""
    lost = [
        f"{_shown(top)} {before} -> {sizes.get(top, 0)} bytes"
        for top, before in sorted(baseline.sizes.items())
        if before >= SHRINK_MIN_BYTES and sizes.get(top, 0) * 2 < before
    ]
    return f"smaller than generation {baseline.generation}: " + "; ".join(lost) if lost else ""


def _shown(path: str) -> str:
    """A path as the agent named it, printable whatever bytes it holds."""
    return printable(path.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))


@dataclass(frozen=True)
class Member:
    """One path from a capture, as it will be written back."""

    entry: Entry
    ids: Ids


class CaptureRejected(Exception):
    """The stream from the sandbox is not something we will store or write back."""


def read_members(data: bytes, patterns: Sequence[str], root: str, owner: tuple[Ids, Ids] | None = None) -> list[Member]:
    """Parse a capture into entries, keeping only paths the persist list declares.

    The stream comes from inside the sandbox, so it is not trusted: absolute or
    ``..`` names, paths outside ``root`` or outside every pattern (but for the
    directories on the way to one), what the list excludes, a database's journals, and
    anything below a captured symlink are dropped; devices, fifos and hard links too. A
    path the stream holds twice is taken once, as it comes last. ``owner`` maps the sandbox user's ids
    when the capture was taken to its ids now: an image rebuilt with ``useradd -r``
    may give it another uid, and the agent must still own its files.
    """
    if not data:
        return []
    wanted = PersistSet.of(patterns)
    result: dict[str, Member] = {}
    links: list[str] = []
    prefix = root.rstrip("/") + "/"
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:", ignore_zeros=True) as tar:
            for info in tar:
                name = info.name.strip("/")
                parts = name.split("/")
                path = "/" + name
                # Any other name is the agent's own, whatever bytes it holds (a newline, a
                # backslash, bytes that are not UTF-8): it is written back as it was.
                if not name or ".." in parts or "." in parts:
                    continue
                if not path.startswith(prefix) or any(path.startswith(link + "/") for link in links):
                    continue
                if wanted.excluded(path):
                    continue
                inside = any(covered(path, p) for p in wanted.include)
                if not inside and not (info.isdir() and any(above(path, p) for p in wanted.include)):
                    continue
                ids = Ids(info.uid, info.gid)
                if owner is not None:
                    then, now = owner
                    ids = Ids(now.uid if ids.uid == then.uid else ids.uid, now.gid if ids.gid == then.gid else ids.gid)
                # A directory keeps its setgid and sticky bits (NemoClaw's are 2770); a file, its permissions.
                mode = info.mode & (0o7777 if info.isdir() else 0o777)
                if info.isdir():
                    entry = Entry(path, "dir", mode)
                elif info.issym():
                    entry = Entry(path, "symlink", link=info.linkname)
                    links.append(path)
                elif info.isfile():
                    handle = tar.extractfile(info)
                    content = handle.read() if handle else b""
                    entry = Entry(path, "file", mode, content=content)
                else:
                    continue
                result[path] = Member(entry, ids)
    except (tarfile.TarError, EOFError) as exc:
        raise CaptureRejected(f"the capture is not a complete tar stream ({exc})") from None
    return list(result.values())


def stale_journals(members: Sequence[Member]) -> list[Entry]:
    """A restored database must not meet another database's -wal or -shm beside it:
    SQLite would replay that journal into it."""
    return [
        Entry(member.entry.path + suffix, "absent", why="the journal of another database")
        for member in members
        if member.entry.kind == "file" and member.entry.path.endswith(".sqlite")
        for suffix in ("-wal", "-shm")
    ]


def live_pod(store: StateStore, sandbox: str) -> str | None:
    persist = store.load(sandbox).get("persist") or {}
    value = persist.get("live_pod")
    return value if isinstance(value, str) else None


def set_persist_state(store: StateStore, sandbox: str, **changes: Any) -> None:
    """Merge into state.json's ``persist`` section. Call with the sandbox lock held."""
    persist = dict(store.load(sandbox).get("persist") or {})
    persist.update(changes)
    store.update(sandbox, persist=persist)


#: The reason of an ``unchanged`` outcome that read nothing: the pod's listing (and its
#: databases' rows) were the last capture's.
NOTHING_NEW = "nothing changed in the pod since the last capture"


@dataclass(frozen=True)
class CaptureOutcome:
    """What one capture attempt did: ``saved``, ``unchanged``, or ``skipped`` with the reason."""

    outcome: str
    reason: str = ""
    capture: Capture | None = None


def capture(ctx: SandboxContext, patterns: Sequence[str], pod: Pod, reason: str) -> CaptureOutcome:
    """Capture the persisted paths of a live pod, as the sandbox user. Call with the
    sandbox lock held.

    One exec: when the pod's listing (and its databases' rows) match the manifest of the
    last capture, nothing is read or stored (``unchanged``); otherwise the set is streamed
    and stored unless it is the latest generation again.

    Raises TargetError when the sandbox cannot be read; nothing is stored then.
    """
    sandbox, state = ctx.name, ctx.store
    max_bytes, node = ctx.config.limits.max_persist_bytes, ctx.config.agent.node
    bound = log.bind(sandbox=sandbox, container_id=pod.short_id, reason=reason)
    wanted = PersistSet.of(patterns)
    if not wanted.include:
        return CaptureOutcome("skipped", "nothing to persist")
    if live_pod(state, sandbox) != pod.id:
        # A new pod, or one whose restore has not finished: what it holds is not the agent's.
        bound.info("persist.capture_skipped", why="pod not restored yet")
        return CaptureOutcome("skipped", "this pod has not been restored yet")
    try:
        owner = pod.ids
    except LookupError as exc:
        raise TargetError(f"{sandbox}: cannot capture: {exc}") from None
    started = time.monotonic()
    # The capture holds the data as of the moment tar started reading: that is its time.
    as_of = time.time()
    store = CaptureStore(state, sandbox, Retention.from_settings(ctx.settings))
    known = Manifest.known(state, store, sandbox, pod.id, wanted)
    store.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Streamed to a file beside the generations, never held in memory: the agent decides
    # how much its files hold, and past max_bytes the capture is stopped in the pod.
    fd, name = tempfile.mkstemp(dir=store.directory, prefix=".capture-")
    stream = Path(name)
    try:
        with os.fdopen(fd, "w+b") as handle:
            sink = _Sink(handle)
            argv = capture_argv(node, wanted, known)
            try:
                # As the agent: its own files, and no root process reading what it wrote.
                result = pod.target.exec_limited(
                    pod.instance, argv, sink, limit=max_bytes, user=f"{owner.uid}:{owner.gid}"
                )
            except OutputTooLarge:
                raise CaptureTooLarge(
                    f"{sandbox}: persisted paths hold more than {max_bytes} bytes, over limits.max_persist_bytes; "
                    "the capture was stopped and the previous one stays"
                ) from None
            said = Said.parse(result.stderr)
            if result.code != 0:
                text = said.rest.decode(errors="replace").strip()[-300:]
                raise TargetError(
                    f"{sandbox}: capturing persisted paths failed: {text or f'exit status {result.code}'}"
                )
            if said.unchanged and known is not None and not sink.size:
                # The pod holds what the latest generation holds: nothing was read, nothing is stored.
                latest = store.get(known.generation)  # the latest: Manifest.known checked it
                if latest is not None:
                    set_persist_state(
                        state,
                        sandbox,
                        last_capture_at=as_of,
                        last_capture_generation=latest.generation,
                        manifest=known.moved(said).to_json(),
                    )
                    bound.debug("persist.unchanged", generation=latest.generation, read=False)
                    return CaptureOutcome("unchanged", NOTHING_NEW, latest)
            handle.flush()
            handle.seek(0)
            try:
                members, content = _tar_members(handle) if sink.size else ([], "")
            except CaptureRejected as exc:
                raise TargetError(f"{sandbox}: {exc}") from None
        latest = store.latest()
        if latest is not None and not any(m.isfile() for m in members) and latest.files:
            # Its directories alone (an image makes them): the agent's files are gone.
            bound.warning("persist.capture_empty", kept_generation=latest.generation)
            return CaptureOutcome("skipped", "the pod holds none of the persisted files; the previous capture stays")
        if latest is not None and (latest.sha256 == sink.hexdigest() or (latest.content and latest.content == content)):
            _record(state, sandbox, as_of, Manifest.taken(pod.id, wanted, latest.generation, said), latest.generation)
            return CaptureOutcome("unchanged", capture=latest)
        saved = store.save(stream, pod.id, reason, members, as_of, owner, content)
    finally:
        stream.unlink(missing_ok=True)
    _record(state, sandbox, as_of, Manifest.taken(pod.id, wanted, saved.generation, said), saved.generation)
    bound.info(
        "persist.captured",
        generation=saved.generation,
        files=saved.files,
        bytes=saved.size,
        databases=len(said.databases) or None,
        duration=round(time.monotonic() - started, 3),
    )
    if saved.shrunk:
        # Stored (it is the agent's state now), but the good generations before it stay.
        bound.warning("persist.capture_shrunk", generation=saved.generation, shrunk=saved.shrunk)
    return CaptureOutcome("saved", capture=saved)


def _record(
    state: StateStore, sandbox: str, as_of: float, manifest: Manifest | None, generation: int | None = None
) -> None:
    """A capture that holds the pod's state now: its time, its generation and what it saw."""
    set_persist_state(
        state,
        sandbox,
        last_capture_at=as_of,
        last_capture_generation=manifest.generation if manifest else generation,
        manifest=manifest.to_json() if manifest else None,
    )


def capture_argv(node: str, wanted: PersistSet, known: Manifest | None) -> list[str]:
    """The capture's command line: CAPTURE_SCRIPT's arguments for ``wanted``, compared with
    the ``known`` manifest (None: nothing to compare with, everything is read)."""
    paths = [pattern.lstrip("/") for pattern in wanted.paths]  # find -path sees names relative to /
    return [
        "sh",
        "-c",
        CAPTURE_SCRIPT,
        "sh",
        node,
        SNAPSHOT_JS,
        known.all if known else "",
        known.files if known else "",
        json.dumps(known.databases if known else {}, sort_keys=True),
        json.dumps(list(VOLATILE_TABLES)),
        str(len(paths)),
        str(len(wanted.names)),
        *paths,
        *wanted.names,
        *wanted.include,
    ]


@dataclass(frozen=True)
class Said:
    """What the capture script said on stderr before anything else: its fingerprints, its
    databases and whether nothing changed; ``rest`` is the stderr after those lines."""

    all: str = ""
    files: str = ""
    databases: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    unchanged: bool = False
    rest: bytes = b""

    @classmethod
    def parse(cls, stderr: bytes) -> Said:
        lines = stderr.split(b"\n")
        fingerprint: list[str] = []
        databases: dict[str, dict[str, str]] = {}
        unchanged = False
        index = 0
        while index < len(lines):
            line = lines[index]
            if line.startswith(b"clawguard-fingerprint "):
                fingerprint = line.decode("ascii", "replace").split()[1:3]
            elif line.startswith(b"clawguard-db "):
                try:
                    item = json.loads(line[len(b"clawguard-db ") :])
                    databases[str(item["path"])] = {"stat": str(item["stat"]), "digest": str(item["digest"])}
                except (ValueError, KeyError, TypeError):
                    break
            elif line == b"clawguard-unchanged":
                unchanged = True
            else:
                break
            index += 1
        all_, files = [*fingerprint, "", ""][:2]
        return cls(all_, files, databases, unchanged, b"\n".join(lines[index:]))


@dataclass(frozen=True)
class Manifest:
    """What the last capture saw of a pod (kept in state.json as ``persist.manifest``): the
    digests of its listing and its databases, and the generation that holds that state.
    Only valid for the same pod, the same persist set and the latest generation."""

    pod: str
    set: str
    generation: int
    all: str
    files: str
    databases: Mapping[str, Mapping[str, str]]

    @classmethod
    def taken(cls, pod: str, wanted: PersistSet, generation: int, said: Said) -> Manifest | None:
        if not said.all:
            return None
        return cls(pod, wanted.digest, generation, said.all, said.files, dict(said.databases))

    def moved(self, said: Said) -> Manifest:
        """The same generation, as the pod lists it now (a database rewrote only volatile rows)."""
        if not said.all:
            return self
        databases = {**self.databases, **said.databases}
        return Manifest(self.pod, self.set, self.generation, said.all, said.files or self.files, databases)

    @classmethod
    def known(
        cls, state: StateStore, store: CaptureStore, sandbox: str, pod: str, wanted: PersistSet
    ) -> Manifest | None:
        persist = state.load(sandbox).get("persist") or {}
        data = persist.get("manifest")
        if not isinstance(data, dict):
            return None
        try:
            manifest = cls(
                str(data["pod"]),
                str(data["set"]),
                int(data["generation"]),
                str(data["all"]),
                str(data["files"]),
                {str(k): {"stat": str(v["stat"]), "digest": str(v["digest"])} for k, v in data["databases"].items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        if manifest.pod != pod or manifest.set != wanted.digest:
            return None
        if persist.get("last_capture_generation") != manifest.generation:
            return None
        if not (store.directory / f"{manifest.generation:08d}.tar").is_file():
            return None
        return manifest

    def to_json(self) -> dict[str, Any]:
        return {
            "pod": self.pod,
            "set": self.set,
            "generation": self.generation,
            "all": self.all,
            "files": self.files,
            "databases": {k: dict(v) for k, v in self.databases.items()},
        }


class CaptureTooLarge(TargetError):
    """The persisted paths hold more than limits.max_persist_bytes: the capture was stopped."""


class _Sink:
    """Writes through to a file, counting and hashing what passes."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes, /) -> int:
        self._handle.write(data)
        self._hash.update(data)
        self.size += len(data)
        return len(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _tar_members(handle: BinaryIO) -> tuple[list[tarfile.TarInfo], str]:
    """The members of a capture stream, and the digest of what they hold: names, kinds,
    modes, owners, links and contents, but not their times (a directory's mtime moves
    whenever a database's -wal comes and goes; it is not the agent's state)."""
    digest = hashlib.sha256()
    members = []
    try:
        # ignore_zeros: the capture is one stream of files and one of database snapshots.
        with tarfile.open(fileobj=handle, mode="r:", ignore_zeros=True) as tar:
            for info in tar:
                members.append(info)
                name = info.name.encode("utf-8", "surrogateescape")
                link = info.linkname.encode("utf-8", "surrogateescape")
                head = f"{len(name)}:{info.type!r}:{info.mode:o}:{info.uid}:{info.gid}:{len(link)}:{info.size}:"
                digest.update(head.encode() + name + link)
                if info.isfile():
                    data = tar.extractfile(info)
                    while data is not None and (chunk := data.read(1 << 20)):
                        digest.update(chunk)
    except (tarfile.TarError, EOFError) as exc:
        raise CaptureRejected(f"the capture is not a complete tar stream ({exc})") from None
    return members, digest.hexdigest()
