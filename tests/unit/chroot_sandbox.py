"""A sandbox for unit tests: a busybox chroot that mirrors NemoClaw's layout.

It is a fake *target* (no Docker, no containerd) but the scripts clawguard runs
inside it are the real ones, run by a real busybox, so the engine's shell
protocol is exercised for real. As root, commands run with chroot(8) and the
sandbox user owns its files for real. Without root (or with
CLAWGUARD_TESTS_UNPRIVILEGED=1), :func:`make_sandbox_root` makes a root that
runs in an unprivileged user namespace where that ownership is virtual
(userns_sandbox.py): the same engine, without the kernel's permission checks.
Tests read and set owners with :func:`owner` and :func:`chown`, which serve both.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from clawguard import SandboxContext
from clawguard.config import DaemonSettings, SandboxConfig
from clawguard.converge import open_pod
from clawguard.pod import Pod
from clawguard.state import StateStore
from clawguard.targets.base import ExecResult, Instance, OutputTooLarge, Sink, Target

from . import userns_sandbox

# Whether make_sandbox_root makes an unprivileged root unless told: always without root.
UNPRIVILEGED = os.geteuid() != 0 or os.environ.get("CLAWGUARD_TESTS_UNPRIVILEGED", "") not in ("", "0")


def needs_root(why: str) -> pytest.MarkDecorator:
    """Skips a test the unprivileged sandbox cannot serve (userns_sandbox.py): ``why`` says
    what it needs of root (the kernel's permission checks, real owners)."""
    return pytest.mark.skipif(UNPRIVILEGED, reason=f"needs root: {why}")


CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"
BUSYBOX = shutil.which("busybox") or "/bin/busybox"
APPLETS = [
    "sh",
    "cat",
    "chmod",
    "chown",
    "dirname",
    "echo",
    "env",
    "find",
    "grep",
    "head",
    "id",
    "kill",
    "ls",
    "mkdir",
    "mktemp",
    "mv",
    "od",
    "pwd",
    "readlink",
    "rm",
    "rmdir",
    "sed",
    "sha256sum",
    "sleep",
    "sort",
    "stat",
    "tar",
    "test",
    "tr",
]


# A stand-in for the agent's CLI, enough for the facts and the preflight of a restore:
# `--version`, and `config validate --json`, which accepts any JSON object on stdin.
FAKE_OPENCLAW = """#!/bin/sh
case "$*" in
  --version) echo "OpenClaw $VERSION (unit)" ;;
  "config validate --json") if head -c 1 | grep -q '{'; then echo '{"valid":true,"path":"/dev/stdin"}'; \
    else echo '{"valid":false,"path":"/dev/stdin","issues":[{"path":"<root>","message":"not an object"}]}'; exit 1; fi ;;
  *) echo "openclaw $*: not in the unit-test stand-in" >&2; exit 2 ;;
esac
"""


def make_sandbox_root(
    root: Path, uid: int = 998, agent: str | None = "2026.3.31", npm: bool = True, unprivileged: bool | None = None
) -> Path:
    """A chroot with NemoClaw's split layout and, unless ``agent`` is None, a stand-in
    ``openclaw`` that says it is that version: installed as ``npm install -g`` does (a
    symlink into its package, beside its package.json), or with ``npm=False`` a script
    with no package. ``unprivileged`` (default: :data:`UNPRIVILEGED`): a root that
    ChrootTarget enters in an unprivileged user namespace, with virtual owners."""
    if unprivileged is None:
        unprivileged = UNPRIVILEGED
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    if agent is not None:
        script = root / "bin" / "openclaw"
        if npm:
            package = root / "usr/local/lib/node_modules/openclaw"
            package.mkdir(parents=True)
            (package / "package.json").write_text(json.dumps({"name": "openclaw", "version": agent}))
            script = package / "openclaw.sh"
            (root / "bin" / "openclaw").symlink_to("../usr/local/lib/node_modules/openclaw/openclaw.sh")
        script.write_text(FAKE_OPENCLAW.replace("$VERSION", agent))
        script.chmod(0o755)
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text(f"root:x:0:0:root:/root:/bin/sh\nsandbox:x:{uid}:{uid}::/sandbox:/bin/sh\n")
    (root / "etc" / "group").write_text(f"root:x:0:\nsandbox:x:{uid}:\n")
    (root / "tmp").mkdir(mode=0o1777)
    if unprivileged:
        userns_sandbox.prepare(root)  # and no mknod: its /dev/null is the host's, mounted
    else:
        (root / "dev").mkdir()
        os.mknod(root / "dev" / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        (root / "dev" / "null").chmod(0o666)  # as in a pod: the sandbox user writes to it too (mknod obeys the umask)
    sandbox = root / "sandbox"
    config, data = sandbox / ".openclaw", sandbox / ".openclaw-data"
    for sub in ("agents", "extensions", "workspace", "skills", "hooks", "identity", "devices", "canvas", "cron"):
        (data / sub).mkdir(parents=True)
    (data / "telegram").mkdir()
    config.mkdir()
    for sub in ("agents", "extensions", "workspace", "skills", "hooks", "identity", "devices", "canvas", "cron"):
        (config / sub).symlink_to(f"/sandbox/.openclaw-data/{sub}")
    (config / "openclaw.json").write_text('{"gateway": {"port": 18789}}\n')
    (config / "openclaw.json").chmod(0o444)
    for path in [sandbox, data, *data.iterdir()]:
        if path.name != "telegram":
            chown(path, uid, uid)
    return root


def _unprivileged_root(path: Path) -> Path | None:
    for above in (path, *path.parents):
        if userns_sandbox.is_unprivileged(above):
            return above
    return None


def owner(path: Path) -> tuple[int, int]:
    """Who owns ``path`` (not followed): uid and gid, real or, in an unprivileged root, virtual."""
    root = _unprivileged_root(path.parent)
    if root is None:
        info = path.lstat()
        return info.st_uid, info.st_gid
    return userns_sandbox.owner(root, path)


def chown(path: Path, uid: int, gid: int) -> None:
    """os.chown, not followed, real or, in an unprivileged root, virtual."""
    root = _unprivileged_root(path.parent)
    if root is None:
        os.chown(path, uid, gid, follow_symlinks=False)
    else:
        userns_sandbox.chown(root, path, uid, gid)


class ChrootTarget(Target):
    """Runs every command with chroot(8) into a directory: as root, or in an unprivileged
    user namespace for a root make_sandbox_root made so."""

    params: Mapping[str, Any] = {}

    def __init__(self, root: Path) -> None:
        super().__init__("chroot", {})
        self.root = root
        self.instance = Instance("0" * 64, f"chroot {root}")
        self.calls: list[list[str]] = []
        self.users: list[str | None] = []  # who each call ran as: None for root, else "UID:GID"

    def locate(self) -> Instance:
        return self.instance

    def exec(
        self,
        instance: Instance,
        argv: Sequence[str],
        stdin: bytes | None = None,
        *,
        user: str | None = None,
        out: Sink | None = None,
        limit: int | None = None,
    ) -> ExecResult:
        self.calls.append(list(argv))
        self.users.append(user)
        env = {"PATH": "/bin"}
        if userns_sandbox.is_unprivileged(self.root):
            env[userns_sandbox.ID_VARIABLE] = userns_sandbox.ids_of(self.root, user)
            with userns_sandbox.running(self.root):
                return self._run(userns_sandbox.command(self.root, CHROOT, argv), env, stdin, out, limit)
        as_user = [f"--userspec={user}"] if user else []
        return self._run([CHROOT, *as_user, str(self.root), *argv], env, stdin, out, limit)

    def _run(
        self, command: list[str], env: dict[str, str], stdin: bytes | None, out: Sink | None, limit: int | None
    ) -> ExecResult:
        if out is None and limit is None:
            done = subprocess.run(command, input=stdin or b"", capture_output=True, env=env, check=False)
            return ExecResult(done.returncode, done.stdout, done.stderr)
        # Streamed, like the real targets: a session of its own, as runc starts an exec.
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        assert stdin is None, "the chroot streams only commands without stdin"
        err = bytearray()

        def read_stderr(stream: BinaryIO) -> None:
            while chunk := stream.read1(4096):  # type: ignore[attr-defined]
                err.extend(chunk)

        reader = threading.Thread(target=read_stderr, args=(proc.stderr,), daemon=True)
        reader.start()
        kept, printed = bytearray(), 0
        while chunk := proc.stdout.read1(1 << 16):
            printed += len(chunk)
            if limit is not None and printed > limit:
                # Like dockerd, keep draining what the command prints, so that only a kill
                # ends it; and let stderr's first line arrive, as it would have in a pod.
                threading.Thread(target=_drain, args=(proc,), daemon=True).start()
                time.sleep(0.1)
                raise OutputTooLarge(f"printed more than {limit} bytes", bytes(err))
            if out is None:
                kept += chunk
            else:
                out.write(chunk)
        proc.stdout.close()
        code = proc.wait()
        reader.join()
        return ExecResult(code, bytes(kept), bytes(err))


def _drain(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    while proc.stdout.read1(1 << 16):
        pass
    proc.wait()


def processes_in(root: Path) -> list[int]:
    """The pids of processes running chrooted into ``root``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "root") == str(root):
                    found.append(int(entry.name))
    return found


def snapshot(root: Path) -> dict[str, tuple[int, int, int, bytes | str | None]]:
    """Every path under root with mode, owner and content or link target (but the
    unprivileged sandbox's own files, in /dev)."""
    result: dict[str, tuple[int, int, int, bytes | str | None]] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if name.startswith("dev/clawguard-"):
            continue
        content: bytes | str | None = None
        if path.is_symlink():
            content = os.readlink(path)
        elif path.is_file():
            content = path.read_bytes()
        result[name] = (path.lstat().st_mode, *owner(path), content)
    return result


def pod_of(target: Target, sandbox: SandboxConfig) -> Pod:
    """The target's pod with its facts read as a restore reads them (no agent: version unknown)."""
    return open_pod(sandbox, target, target.locate())


def context(sandbox: SandboxConfig, target: Target, store: StateStore | None = None) -> SandboxContext:
    """``sandbox`` on ``target`` with the default daemon settings (state: $XDG_STATE_HOME)."""
    return SandboxContext(sandbox, DaemonSettings.defaults(), target, store or StateStore())
