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
  atomically and the last ``persist_keep`` are kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import tarfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import structlog

from .entries import Entry, Ids
from .errors import TargetError
from .layout import Layout
from .state import atomic_write, load_state, sandbox_dir, sandbox_lock, update_state
from .targets import Instance, Target, make_target

if TYPE_CHECKING:
    from .config import SandboxConfig

log = structlog.get_logger("clawguard.persist")

# Arguments: absolute paths or glob patterns. Prints a tar stream of every match
# (relative to /), or nothing when nothing matches. Patterns are expanded by the
# shell's pathname expansion only: their text is never evaluated.
CAPTURE_SCRIPT = r"""
IFS='
'
cd / || exit 3
list=''
for pattern in "$@"; do
  for path in $pattern; do
    if [ -L "$path" ] || [ -e "$path" ]; then list="$list${path#/}
"; fi
  done
done
[ -n "$list" ] || exit 0
set -f
exec tar -c -f - $list
"""

_GLOB = re.compile(r"[*?\[]")


def default_paths(layout: Layout) -> list[str]:
    return [
        str(PurePosixPath(layout.telegram_dir, "update-offset-default.json")),
        str(PurePosixPath(layout.workspace, "MEMORY.md")),
        str(PurePosixPath(layout.workspace, "memory")),
    ]


def covered(path: str, pattern: str) -> bool:
    """True when ``path`` is what ``pattern`` matches, or below it."""
    want = PurePosixPath(pattern).parts
    have = PurePosixPath(path).parts
    return len(have) >= len(want) and all(fnmatchcase(h, w) for h, w in zip(have, want, strict=False))


def is_glob(pattern: str) -> bool:
    return bool(_GLOB.search(pattern))


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

    def read(self) -> bytes:
        data = self.tar.read_bytes()
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise TargetError(f"persisted capture {self.tar} is damaged (checksum mismatch)")
        return data

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data["tar"] = str(self.tar)
        return data


class CaptureStore:
    """The generations of one sandbox, oldest first. Only this module writes them."""

    def __init__(self, sandbox: str, keep: int, state_root: Path | None = None) -> None:
        self.sandbox = sandbox
        self.keep = keep
        self.directory = sandbox_dir(sandbox, state_root) / "persist"

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
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None  # an unfinished or foreign file is not a generation

    def save(
        self, data: bytes, container_id: str, reason: str, members: list[tarfile.TarInfo], taken_at: float | None = None
    ) -> Capture:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        latest = self.latest()
        generation = (latest.generation + 1) if latest else 1
        tar = self.directory / f"{generation:08d}.tar"
        names = {_top(m.name) for m in members}
        tops = sorted(n for n in names if not any(n.startswith(other + "/") for other in names))
        capture = Capture(
            generation=generation,
            taken_at=taken_at if taken_at is not None else time.time(),
            container_id=container_id,
            reason=reason,
            files=sum(1 for m in members if m.isfile()),
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            tops=tops,
            tar=tar,
        )
        # The tar first, then its metadata: a generation exists only once both are complete.
        atomic_write(tar, data)
        meta = capture.summary()
        del meta["tar"]
        atomic_write(tar.with_suffix(".json"), json.dumps(meta, indent=2, sort_keys=True).encode() + b"\n")
        self._prune()
        return capture

    def _prune(self) -> None:
        for old in self.generations()[: -self.keep]:
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


@dataclass(frozen=True)
class Member:
    """One path from a capture, as it will be written back."""

    entry: Entry
    ids: Ids


class CaptureRejected(Exception):
    """The stream from the sandbox is not something we will store or write back."""


def read_members(data: bytes, patterns: Sequence[str], root: str) -> list[Member]:
    """Parse a capture into entries, keeping only paths the persist list declares.

    The stream comes from inside the sandbox, so it is not trusted: absolute or
    ``..`` names, paths outside ``root`` or outside every pattern, and anything
    below a captured symlink are dropped; devices, fifos and hard links too.
    """
    if not data:
        return []
    result: list[Member] = []
    links: list[str] = []
    prefix = root.rstrip("/") + "/"
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for info in tar:
                name = info.name.strip("/")
                parts = name.split("/")
                path = "/" + name
                if not name or ".." in parts or "." in parts or any(ord(c) < 32 for c in name):
                    continue
                if not path.startswith(prefix) or not any(covered(path, p) for p in patterns):
                    continue
                if any(path.startswith(link + "/") for link in links):
                    continue
                ids = Ids(info.uid, info.gid)
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
                result.append(Member(entry, ids))
    except (tarfile.TarError, EOFError) as exc:
        raise CaptureRejected(f"the capture is not a complete tar stream ({exc})") from None
    return result


def live_pod(sandbox: str, state_root: Path | None = None) -> str | None:
    persist = load_state(sandbox, state_root).get("persist") or {}
    value = persist.get("live_pod")
    return value if isinstance(value, str) else None


def set_persist_state(sandbox: str, state_root: Path | None = None, **changes: Any) -> None:
    """Merge into state.json's ``persist`` section. Call with the sandbox lock held."""
    persist = dict(load_state(sandbox, state_root).get("persist") or {})
    persist.update(changes)
    update_state(sandbox, state_root, persist=persist)


@dataclass(frozen=True)
class CaptureOutcome:
    """What one capture attempt did: ``saved``, ``unchanged``, or ``skipped`` with the reason."""

    outcome: str
    reason: str = ""
    capture: Capture | None = None


def capture(
    sandbox: str,
    patterns: Sequence[str],
    root: str,
    target: Target,
    instance: Instance,
    *,
    keep: int,
    max_bytes: int,
    reason: str,
    state_root: Path | None = None,
) -> CaptureOutcome:
    """Capture the persisted paths of a live pod. Call with the sandbox lock held.

    Raises TargetError when the sandbox cannot be read; nothing is stored then.
    """
    bound = log.bind(sandbox=sandbox, container_id=instance.short_id, reason=reason)
    if not patterns:
        return CaptureOutcome("skipped", "nothing to persist")
    if live_pod(sandbox, state_root) != instance.id:
        # A new pod, or one whose restore has not finished: what it holds is not the agent's.
        bound.info("persist.capture_skipped", why="pod not restored yet")
        return CaptureOutcome("skipped", "this pod has not been restored yet")
    started = time.monotonic()
    # The capture holds the data as of the moment tar started reading: that is its time.
    as_of = time.time()
    result = target.exec(instance, ["sh", "-c", CAPTURE_SCRIPT, "sh", *patterns])
    if result.code != 0:
        text = result.stderr.decode(errors="replace").strip()[-300:]
        raise TargetError(f"{sandbox}: capturing persisted paths failed: {text or f'exit status {result.code}'}")
    data = result.stdout
    if len(data) > max_bytes:
        raise TargetError(
            f"{sandbox}: persisted paths hold {len(data)} bytes, over limits.max_persist_bytes ({max_bytes}); "
            "the previous capture stays"
        )
    try:
        members = _tar_members(data)
    except CaptureRejected as exc:
        raise TargetError(f"{sandbox}: {exc}") from None
    store = CaptureStore(sandbox, keep, state_root)
    latest = store.latest()
    if latest is not None and not members and latest.files:
        bound.warning("persist.capture_empty", kept_generation=latest.generation)
        return CaptureOutcome("skipped", "the pod holds none of the persisted paths; the previous capture stays")
    if latest is not None and latest.sha256 == hashlib.sha256(data).hexdigest():
        set_persist_state(sandbox, state_root, last_capture_at=as_of, last_capture_generation=latest.generation)
        return CaptureOutcome("unchanged", capture=latest)
    saved = store.save(data, instance.id, reason, members, as_of)
    set_persist_state(sandbox, state_root, last_capture_at=as_of, last_capture_generation=saved.generation)
    bound.info(
        "persist.captured",
        generation=saved.generation,
        files=saved.files,
        bytes=saved.size,
        duration=round(time.monotonic() - started, 3),
    )
    return CaptureOutcome("saved", capture=saved)


def _tar_members(data: bytes) -> list[tarfile.TarInfo]:
    if not data:
        return []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            return tar.getmembers()
    except (tarfile.TarError, EOFError) as exc:
        raise CaptureRejected(f"the capture is not a complete tar stream ({exc})") from None


def capture_sandbox(
    sandbox: SandboxConfig,
    *,
    reason: str = "manual",
    target: Target | None = None,
    instance: Instance | None = None,
    lock_timeout: float | None = 60.0,
    state_root: Path | None = None,
) -> CaptureOutcome:
    """Locate the sandbox and capture its persisted paths once, under its lock.

    Raises state.Busy when a restore holds the lock past ``lock_timeout``, and
    TargetError when the sandbox cannot be reached or read.
    """
    target = target or make_target(sandbox.name, sandbox.target)
    with sandbox_lock(sandbox.name, state_root, timeout=lock_timeout):
        return capture(
            sandbox.name,
            sandbox.persist,
            sandbox.layout.root,
            target,
            instance or target.locate(),
            keep=sandbox.config.daemon.persist_keep,
            max_bytes=sandbox.limits.max_persist_bytes,
            reason=reason,
            state_root=state_root,
        )
