"""The agent's own runtime state, carried across pod restarts.

The restore archive brings back what the user put in a sandbox. Persisted paths
are what the agent writes while it runs (the telegram offset, MEMORY.md,
memory/): clawguard captures them from the live pod into generations under
``$XDG_STATE_HOME/clawguard/<sandbox>/persist/`` and writes the latest good one
into the next pod, after the archive steps and before the gateway starts.

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
import hashlib
import io
import json
import os
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO

import structlog

from .agent.versions import UNKNOWN, Capabilities
from .entries import Entry, Ids
from .errors import TargetError, printable
from .layout import Layout
from .state import StateStore, atomic_write
from .targets.base import OutputTooLarge

if TYPE_CHECKING:
    from .config import DaemonSettings
    from .context import SandboxContext
    from .pod import Pod

log = structlog.get_logger("clawguard.persist")

# Node.js program: an online backup (VACUUM INTO) of the database argv[1] into argv[2].
# A consistent copy while the gateway writes, without its -wal and -shm files.
SNAPSHOT_JS = (
    'const {DatabaseSync} = require("node:sqlite");'
    "const db = new DatabaseSync(process.argv[1], {readOnly: true});"
    'db.exec("VACUUM INTO \'" + process.argv[2].replace(/\'/g, "\'\'") + "\'");'
    "db.close();"
)

# Arguments: the node command, SNAPSHOT_JS, then absolute paths or glob patterns. Runs as the sandbox
# user. Prints a tar stream of every match (relative to /), then one more tar stream
# holding an online-backup snapshot of each matched *.sqlite file with its directory, under
# the same names; nothing when nothing matches. Patterns are expanded by the shell's
# pathname expansion only: their text is never evaluated. Matches are kept as positional
# parameters and reach tar through references ("${7}"), so a name may hold any byte (a
# newline included); the eval only ever sees those references.
CAPTURE_SCRIPT = r"""
node=$1 snapshot=$2; shift 2
cd / || exit 3
n=$#; k=0; files=''; dbs=''
IFS=''
for pattern do
  for path in $pattern; do
    [ -L "$path" ] || [ -e "$path" ] || continue
    set -- "$@" "${path#/}"; k=$((k + 1))
    if [ -f "$path" ] && [ ! -L "$path" ] && [ "${path%.sqlite}" != "$path" ]; then dbs="$dbs $k"
    else files="$files \"\${$k}\""; fi
  done
done
IFS=' '
set -f
shift "$n"
if [ -n "$files" ]; then eval "tar -c -f - -- $files" || exit 3; fi
[ -n "$dbs" ] || exit 0
stage=$(mktemp -d) || exit 3
trap 'rm -rf "$stage"' EXIT
dirs=''; last=''
for i in $dbs; do
  eval "db=\${$i}"
  dir=${db%/*}
  mkdir -p "$stage/$dir" || exit 3
  chmod "$(stat -c %a "/$dir")" "$stage/$dir" || exit 3
  if ! "$node" -e "$snapshot" "/$db" "$stage/$db" 2>/dev/null; then
    printf 'clawguard: snapshot of /%s failed\n' "$db" >&2; exit 5
  fi
  chmod "$(stat -c %a "/$db")" "$stage/$db" || exit 3
  if [ "$dir" != "$last" ]; then set -- "$@" "$dir"; dirs="$dirs \"\${$#}\""; last=$dir; fi
done
cd "$stage" && eval "tar -c -f - -- $dirs" || exit 3
"""


def default_paths(layout: Layout, agent: Capabilities = UNKNOWN) -> list[str]:
    """What the agent writes and a pod restart must not lose, where this version keeps it."""
    if agent.state == "sqlite":  # the telegram offset, sessions and approvals: one database
        state = str(PurePosixPath(layout.config_dir, "state", "openclaw.sqlite"))
    else:
        state = str(PurePosixPath(layout.telegram_dir, "update-offset-*.json"))
    return [state, str(PurePosixPath(layout.workspace, "MEMORY.md")), str(PurePosixPath(layout.workspace, "memory"))]


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
    directories on the way to one), and anything below a captured symlink are
    dropped; devices, fifos and hard links too. A path the stream holds twice is taken
    once, as it comes last. ``owner`` maps the sandbox user's ids
    when the capture was taken to its ids now: an image rebuilt with ``useradd -r``
    may give it another uid, and the agent must still own its files.
    """
    if not data:
        return []
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
                inside = any(covered(path, p) for p in patterns)
                if not inside and not (info.isdir() and any(above(path, p) for p in patterns)):
                    continue
                ids = Ids(info.uid, info.gid)
                if owner is not None:
                    then, now = owner
                    ids = Ids(now.uid if ids.uid == then.uid else ids.uid, now.gid if ids.gid == then.gid else ids.gid)
                mode = info.mode & 0o777
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


@dataclass(frozen=True)
class CaptureOutcome:
    """What one capture attempt did: ``saved``, ``unchanged``, or ``skipped`` with the reason."""

    outcome: str
    reason: str = ""
    capture: Capture | None = None


def capture(ctx: SandboxContext, patterns: Sequence[str], pod: Pod, reason: str) -> CaptureOutcome:
    """Capture the persisted paths of a live pod, as the sandbox user. Call with the
    sandbox lock held.

    Raises TargetError when the sandbox cannot be read; nothing is stored then.
    """
    sandbox, state = ctx.name, ctx.store
    max_bytes, node = ctx.config.limits.max_persist_bytes, ctx.config.agent.node
    bound = log.bind(sandbox=sandbox, container_id=pod.short_id, reason=reason)
    if not patterns:
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
    store.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Streamed to a file beside the generations, never held in memory: the agent decides
    # how much its files hold, and past max_bytes the capture is stopped in the pod.
    fd, name = tempfile.mkstemp(dir=store.directory, prefix=".capture-")
    stream = Path(name)
    try:
        with os.fdopen(fd, "w+b") as handle:
            sink = _Sink(handle)
            argv = ["sh", "-c", CAPTURE_SCRIPT, "sh", node, SNAPSHOT_JS, *patterns]
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
            if result.code != 0:
                text = result.stderr.decode(errors="replace").strip()[-300:]
                raise TargetError(
                    f"{sandbox}: capturing persisted paths failed: {text or f'exit status {result.code}'}"
                )
            handle.flush()
            handle.seek(0)
            try:
                members = _tar_members(handle) if sink.size else []
            except CaptureRejected as exc:
                raise TargetError(f"{sandbox}: {exc}") from None
        latest = store.latest()
        if latest is not None and not members and latest.files:
            bound.warning("persist.capture_empty", kept_generation=latest.generation)
            return CaptureOutcome("skipped", "the pod holds none of the persisted paths; the previous capture stays")
        if latest is not None and latest.sha256 == sink.hexdigest():
            set_persist_state(state, sandbox, last_capture_at=as_of, last_capture_generation=latest.generation)
            return CaptureOutcome("unchanged", capture=latest)
        saved = store.save(stream, pod.id, reason, members, as_of, owner)
    finally:
        stream.unlink(missing_ok=True)
    set_persist_state(state, sandbox, last_capture_at=as_of, last_capture_generation=saved.generation)
    bound.info(
        "persist.captured",
        generation=saved.generation,
        files=saved.files,
        bytes=saved.size,
        duration=round(time.monotonic() - started, 3),
    )
    if saved.shrunk:
        # Stored (it is the agent's state now), but the good generations before it stay.
        bound.warning("persist.capture_shrunk", generation=saved.generation, shrunk=saved.shrunk)
    return CaptureOutcome("saved", capture=saved)


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


def _tar_members(handle: BinaryIO) -> list[tarfile.TarInfo]:
    try:
        # ignore_zeros: the capture is one stream of files and one of database snapshots.
        with tarfile.open(fileobj=handle, mode="r:", ignore_zeros=True) as tar:
            return tar.getmembers()
    except (tarfile.TarError, EOFError) as exc:
        raise CaptureRejected(f"the capture is not a complete tar stream ({exc})") from None
