"""clawguard run under a service manager that stops draining its notify socket."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..conftest import REPO, basic_config, full_notify_socket


def test_sigterm_stops_the_daemon_even_when_nobody_drains_the_notify_socket(archive: Path, tmp_path: Path) -> None:
    receiver = full_notify_socket(tmp_path / "notify.sock")
    config = tmp_path / "config.yaml"
    # A cluster that is not there: the workers wait, the main loop notifies.
    config.write_text(
        basic_config(archive, "    gateway: {enabled: false}\n").replace("openshell-cluster-nemoclaw", "no-cluster")
    )
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
        "WATCHDOG_USEC": "1500000",
        "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock",
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "clawguard", "--config", str(config), "run"], stdout=out, stderr=out, env=env
        )
    try:
        deadline = time.monotonic() + 60
        while "event=daemon.start " not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"the daemon did not start:\n{log.read_text()}"
            time.sleep(0.1)
        time.sleep(1.0)  # its main loop's first WATCHDOG=1 meets the full queue
        proc.send_signal(signal.SIGTERM)
        # Before: the main loop blocked in the send for good, and the signal handler's own
        # STOPPING=1 blocked too, so SIGTERM never stopped it.
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        receiver.close()
    text = log.read_text()
    assert code == 0, text
    assert "event=daemon.stopping signal=SIGTERM" in text and "event=daemon.stopped" in text
    # One line per episode, naming the message's key only (a STATUS line may name anything).
    assert text.count("event=systemd.notify_dropped") == 1
    assert "message=WATCHDOG" in text or "message=STATUS" in text or "message=STOPPING" in text


# `clawguard run` with the chroot sandbox of the unit tests as its target (the CLI builds
# its targets from the config; this is the same daemon, made the way run.py makes it).
RUN_ON_CHROOT = """
import sys
from pathlib import Path

from clawguard import log
from clawguard.api import Clawguard
from tests.unit.chroot_sandbox import ChrootTarget

log.configure("info")
guard = Clawguard.load(sys.argv[1], targets={"my-assistant": ChrootTarget(Path(sys.argv[2]))})
sys.exit(int(guard.daemon(log_level="info").run()))
"""


def test_sigterm_during_a_gateway_wait_ends_the_daemon_within_seconds(archive: Path, tmp_path: Path) -> None:
    """A gateway that never becomes healthy, start_timeout 300 s: SIGTERM ends the daemon within
    seconds, not after the whole wait (the worker sat in tenacity's sleep under ensure → _wait)."""
    from ..chroot_sandbox import make_sandbox_root

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text('#!/bin/sh\ncase "$*" in *curl*) echo 000;; esac\n')  # starts, never answers
    (bin_dir / "ssh").chmod(0o755)
    root = make_sandbox_root(tmp_path / "root")
    config = tmp_path / "config.yaml"
    config.write_text(basic_config(archive, "    gateway: {start_timeout: 300}\n"))
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "PYTHONPATH": str(REPO),
    }
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", RUN_ON_CHROOT, str(config), str(root)], stdout=out, stderr=out, env=env, cwd=REPO
        )
    try:
        deadline = time.monotonic() + 60
        while "event=gateway.waiting" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"the daemon never waited for its gateway:\n{log.read_text()}"
            time.sleep(0.1)
        time.sleep(1.0)  # well inside the wait
        proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        code = proc.wait(30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert code == 0, text
    assert took < 10, f"SIGTERM took {took:.1f}s:\n{text}"
    assert "event=daemon.stopping signal=SIGTERM" in text and "event=daemon.stopped" in text
    assert "Traceback" not in text
