"""Debian root filesystems made with ``debootstrap``, cached on disk.

Shared by the systemd host (:mod:`testbed.systemd`) and the real-agent
sandboxes (:mod:`testbed._agent_image`). A rootfs is built in ``DEST.tmp`` and
renamed to ``DEST`` only when debootstrap succeeded, so a ``DEST`` that exists
is complete; ``DEST.key`` beside it records the inputs (suite, variant,
packages, mirror), and a different key rebuilds it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

#: Where the test bed caches what it builds (rootfs trees, agent installs, npm's cache).
DEFAULT_CACHE = Path("/var/cache/clawguard-testbed")
MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
VARIANT = "minbase"


def rootfs_key(packages: Sequence[str], *, suite: str = SUITE, variant: str = VARIANT, mirror: str = MIRROR) -> str:
    """The inputs of a debootstrap rootfs, as recorded in its ``.key`` file."""
    return json.dumps({"suite": suite, "variant": variant, "packages": sorted(packages), "mirror": mirror})


def ensure_rootfs(
    dest: Path,
    packages: Sequence[str],
    *,
    say: Callable[[str], None],
    error: type[Exception],
    suite: str = SUITE,
    variant: str = VARIANT,
    mirror: str = MIRROR,
) -> Path:
    """``debootstrap --variant=VARIANT --include=PACKAGES SUITE dest MIRROR`` unless ``dest`` is cached.

    Needs root. Raises ``error`` with the log's tail when debootstrap fails.
    """
    key = rootfs_key(packages, suite=suite, variant=variant, mirror=mirror)
    key_file = dest.with_name(dest.name + ".key")
    if dest.is_dir() and key_file.is_file() and key_file.read_text() == key:
        say(f"reusing rootfs {dest}")
        return dest
    if os.geteuid() != 0:
        raise error("debootstrap needs root; run the integration tests as root")
    debootstrap = shutil.which("debootstrap") or install_debootstrap(say, error)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = dest.with_name(dest.name + ".tmp")
    for stale in (work, dest):
        if stale.exists():
            say(f"removing stale {stale}")
            shutil.rmtree(stale)
    key_file.unlink(missing_ok=True)
    argv = [debootstrap, f"--variant={variant}", f"--include={','.join(packages)}", suite, str(work), mirror]
    say(f"debootstrap {suite} into {work} (a minute or two)")
    started = time.monotonic()
    log = dest.with_name(dest.name + ".debootstrap.log")
    with log.open("wb") as out:
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise error(f"debootstrap failed ({proc.returncode}); see {log}:\n" + "\n".join(tail))
    work.rename(dest)
    key_file.write_text(key)
    say(f"debootstrap done in {time.monotonic() - started:.1f}s")
    return dest


def install_debootstrap(say: Callable[[str], None], error: type[Exception]) -> str:
    """``apt-get install debootstrap``; returns its path."""
    say("installing debootstrap with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "--no-install-recommends", "debootstrap"]
    if subprocess.run(install, env=env, check=False, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=False, capture_output=True)
        proc = subprocess.run(install, env=env, check=False, capture_output=True, text=True)
        if proc.returncode != 0:
            raise error(f"apt-get install debootstrap failed: {proc.stderr.strip()}")
    path = shutil.which("debootstrap") or ("/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists() else None)
    if path is None:
        raise error("debootstrap not found after installing it")
    return path
