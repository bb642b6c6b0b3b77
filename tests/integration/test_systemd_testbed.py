"""The systemd test host: a real systemd user manager that can run clawguard's kind of unit.

Proves what clawguard's end-to-end tests rely on: a lingering user's
``systemd --user``, ``Type=notify`` units with a watchdog and
``Restart=on-failure``, per-user journals, and the host's Docker engine
reachable by that user (also from inside a user unit).

Without a reachable Docker engine these skip, except under CI (CI=true), where
that is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testbed.systemd import SystemdHost

from .conftest import require_docker

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
UNIT = "heartbeat.service"
WATCHDOG_SEC = 5

HEARTBEAT = b"""\
import os, socket, time

def notify(message):
    address = os.environ["NOTIFY_SOCKET"]
    if address.startswith("@"):
        address = "\\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())

print(f"heartbeat starting as pid {os.getpid()}", flush=True)
notify("READY=1\\nSTATUS=hello")
while True:
    notify("WATCHDOG=1")
    time.sleep(1)
"""

UNIT_FILE = f"""\
[Unit]
Description=clawguard testbed heartbeat

[Service]
Type=notify
ExecStart=/usr/bin/python3 -u %h/heartbeat.py
WatchdogSec={WATCHDOG_SEC}
Restart=on-failure
RestartSec=1
""".encode()

PING = """\
import http.client, socket
class Unix(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect("/var/run/docker.sock")
conn = Unix("localhost")
conn.request("GET", "/_ping")
response = conn.getresponse()
print(response.status, response.read().decode())
"""


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Mounted at /wheels; a test fills it on the host (the bind mount is live)."""
    path = tmp_path_factory.mktemp("wheelhouse")
    path.chmod(0o755)  # pytest makes it 0700; the bind mount keeps that, and the user must read it
    return path


@pytest.fixture(scope="module")
def host(wheelhouse: Path) -> Iterator[SystemdHost]:
    require_docker()
    bed = SystemdHost(name="clawguard-systemd-test")
    try:
        bed.up(repo=REPO, wheelhouse=wheelhouse)
        yield bed
    finally:
        if os.environ.get("CLAWGUARD_KEEP_TESTBED") != "1":
            bed.down()


def ok(bed: SystemdHost, argv: list[str], user: bool = False) -> str:
    code, out, err = bed.run(argv, user=user, timeout=60)
    assert code == 0, f"{argv} exited {code}: {out}{err}"
    return out


def wait_for(what: str, check: Callable[[], object], timeout: float) -> float:
    """Poll ``check()`` until truthy; return the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def unit_props(bed: SystemdHost, *props: str) -> dict[str, str]:
    out = ok(bed, ["systemctl", "--user", "show", UNIT, *(f"--property={p}" for p in props)], user=True)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.fixture(scope="module")
def heartbeat(host: SystemdHost) -> str:
    host.put_file(f"{host.home}/heartbeat.py", HEARTBEAT, user=True)
    host.put_file(f"{host.home}/.config/systemd/user/{UNIT}", UNIT_FILE, user=True)
    ok(host, ["systemctl", "--user", "daemon-reload"], user=True)
    ok(host, ["systemctl", "--user", "start", UNIT], user=True)  # Type=notify: returns after READY=1
    return UNIT


def test_user_manager_runs_and_lingers(host: SystemdHost) -> None:
    assert ok(host, ["loginctl", "show-user", host.user, "--property=Linger"]).strip() == "Linger=yes"
    assert ok(host, ["systemctl", "is-active", f"user@{host.uid}.service"]).strip() == "active"
    code, out, _ = host.run(["systemctl", "--user", "is-system-running"], user=True)
    assert out.strip() in ("running", "degraded"), (code, out)
    assert ok(host, ["id", "-un"], user=True).strip() == host.user


def test_run_passes_stdin_env_and_exit_code(host: SystemdHost) -> None:
    assert host.run(["cat"], stdin=b"payload\n") == (0, "payload\n", "")
    code, out, _ = host.run(["printenv", "MARK", "XDG_RUNTIME_DIR"], user=True, env={"MARK": "a b;$x"})
    assert (code, out) == (0, f"a b;$x\n/run/user/{host.uid}\n")
    assert host.run(["sh", "-c", "echo oops >&2; exit 3"])[0::2] == (3, "oops\n")


def test_notify_unit_runs_and_journals(host: SystemdHost, heartbeat: str) -> None:
    status = ok(host, ["systemctl", "--user", "status", "--no-pager", heartbeat], user=True)
    assert "active (running)" in status
    assert 'Status: "hello"' in status

    def journal() -> str:
        return host.run(["journalctl", "--user", "-u", heartbeat, "--no-pager", "-o", "cat"], user=True)[1]

    wait_for("the unit's output in the user journal", lambda: "heartbeat starting as pid" in journal(), 15)


def test_watchdog_kills_and_restarts_a_stopped_unit(host: SystemdHost, heartbeat: str) -> None:
    before = unit_props(host, "MainPID", "NRestarts")
    pid = before["MainPID"]
    assert pid != "0"
    ok(host, ["kill", "-STOP", pid], user=True)

    def restarted() -> bool:
        now = unit_props(host, "MainPID", "NRestarts", "ActiveState")
        return now["ActiveState"] == "active" and now["MainPID"] not in ("0", pid)

    took = wait_for("the watchdog to restart the unit", restarted, WATCHDOG_SEC + 10)
    assert took <= WATCHDOG_SEC + 6, took
    after = unit_props(host, "NRestarts", "StatusText")
    assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1
    assert after["StatusText"] == "hello"
    log = host.run(["journalctl", "--user", "-u", heartbeat, "--no-pager"], user=True)[1]
    assert "Watchdog timeout" in log
    assert "Failed with result 'watchdog'" in log


def test_user_reaches_the_docker_engine(host: SystemdHost) -> None:
    assert ok(host, ["python3", "-c", PING], user=True).strip() == "200 OK"
    # A user unit's processes get the socket's group too: that is how clawguard runs.
    out = ok(host, ["systemd-run", "--user", "--quiet", "--wait", "--pipe", "python3", "-c", PING], user=True)
    assert out.strip() == "200 OK"


def test_source_tree_is_mounted_read_only(host: SystemdHost) -> None:
    assert ok(host, ["test", "-f", "/src/pyproject.toml"]) == ""
    code, _, err = host.run(["touch", "/src/x"])
    assert code != 0 and "Read-only file system" in err


def test_clawguard_installs_from_host_built_wheels(host: SystemdHost, wheelhouse: Path, tmp_path: Path) -> None:
    # Build from a copy: pip builds in tree and /src is read-only (and the real tree should stay clean).
    src = tmp_path / "src"
    shutil.copytree(REPO / "clawguard", src / "clawguard", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(wheelhouse), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    venv = f"{host.home}/venv"
    ok(host, ["python3", "-m", "venv", venv], user=True)
    ok(host, [f"{venv}/bin/pip", "install", "-q", "--no-index", "--find-links", "/wheels", "clawguard"], user=True)
    assert "clawguard" in ok(host, [f"{venv}/bin/clawguard", "--version"], user=True)
    ping = "import docker; print(docker.from_env().ping())"
    assert ok(host, [f"{venv}/bin/python", "-c", ping], user=True).strip() == "True"
