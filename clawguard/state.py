"""What the daemon remembers, per sandbox, and the lock that serialises restores.

Each sandbox has its own directory under ``$XDG_STATE_HOME/clawguard/`` with a
``state.json`` (written atomically, only while holding that sandbox's lock) and
a ``lock`` file. ``clawguard status`` only reads.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ClawguardError
from .redact import redact_value


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "clawguard"


def atomic_write(path: Path, data: bytes, dir_mode: int = 0o700) -> None:
    """Write-then-rename (the file is created 0600), so a reader or a crash never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True).encode() + b"\n")


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


class Busy(ClawguardError):
    """Another clawguard is restoring this sandbox and did not finish in time."""


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"pid {pid} (a clawguard restore, capture or daemon)" if pid.isdigit() else "another clawguard"


@dataclass(frozen=True)
class StateStore:
    """Where clawguard keeps what it remembers: one root, chosen once (``$XDG_STATE_HOME``
    by default) and handed to whatever reads or writes state, instead of a root passed
    along every call."""

    root: Path = field(default_factory=state_dir)

    def sandbox_dir(self, sandbox: str) -> Path:
        path = self.root / sandbox
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def load(self, sandbox: str) -> dict[str, Any]:
        return read_json(self.sandbox_dir(sandbox) / "state.json")

    def update(self, sandbox: str, **changes: Any) -> dict[str, Any]:
        """Merge ``changes`` into the sandbox's state. Call with the sandbox lock held."""
        path = self.sandbox_dir(sandbox) / "state.json"
        state = read_json(path)
        # `clawguard status` prints what is stored here: it gets the same masking as the logs.
        state.update(redact_value("", changes), sandbox=sandbox, updated_at=time.time())
        write_json(path, state)
        return state

    def update_when_free(self, sandbox: str, timeout: float = 10, **changes: Any) -> bool:
        """``update`` for writers outside a restore (health probes, hooks).

        They take the sandbox lock too, so their read-modify-write cannot drop a
        restore's update written by another process. Returns False, writing nothing,
        when a restore holds the lock for longer than ``timeout``: their news is
        informative and the restore records a fresher state anyway.
        """
        try:
            with self.lock(sandbox, timeout=timeout):
                self.update(sandbox, **changes)
        except Busy:
            return False
        return True

    @contextlib.contextmanager
    def lock(
        self, sandbox: str, timeout: float | None = None, on_wait: Callable[[str], None] | None = None
    ) -> Iterator[None]:
        """An exclusive flock: one restore per sandbox at a time, daemon or one-shot.

        The kernel drops it when the holder dies, so a SIGKILLed daemon never leaves
        a stale lock behind. The holder writes its pid into the file; while waiting,
        ``on_wait(what)`` is called about once a second with who holds it (the daemon
        feeds its watchdog there, and says what it waits for).
        """
        path = self.sandbox_dir(sandbox) / "lock"
        with open(path, "a+") as handle:
            deadline = None if timeout is None else time.monotonic() + timeout
            told = 0.0
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if deadline is not None and time.monotonic() > deadline:
                        raise Busy(f"{sandbox}: another clawguard is restoring it (lock {path})") from None
                    if on_wait is not None and time.monotonic() - told >= 1.0:
                        told = time.monotonic()
                        on_wait(f"{sandbox}'s lock, held by {_holder(path)}")
                    time.sleep(0.1)
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @property
    def daemon_file(self) -> Path:
        return self.root / "daemon.json"
