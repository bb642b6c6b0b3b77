"""gateway.host_key: gateway: the real OpenSSH client accepts exactly the host key whose
fingerprint the OpenShell 0.1.x gateway published, against a real sshd on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clawguard.gateway import gateway_pin_options

SSHD = "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[tuple[int, Path, str]]:
    if not (os.path.exists(SSHD) and shutil.which("ssh") and os.geteuid() == 0):
        message = "needs OpenSSH's sshd and ssh, as root (scripts/setup-host.sh installs them)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True)
    shutil.copy(tmp_path / "client.pub", tmp_path / "authorized")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    port = _free_port()
    options = [f"ListenAddress=127.0.0.1:{port}", f"AuthorizedKeysFile={tmp_path / 'authorized'}", "StrictModes=no"]
    argv = [SSHD, "-D", "-e", "-h", str(tmp_path / "host"), *[f"-o{o}" for o in options]]
    proc = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    for _ in range(100):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(tmp_path / "host.pub")], capture_output=True, text=True
    ).stdout.split()[1]
    yield port, tmp_path / "client", fingerprint
    proc.kill()
    proc.wait()


def _ssh(port: int, key: Path, pinned: str) -> subprocess.CompletedProcess[str]:
    argv = ["ssh", "-T", "-p", str(port), "-i", str(key), "-o", "BatchMode=yes", *gateway_pin_options(pinned)]
    return subprocess.run([*argv, "root@127.0.0.1", "echo connected"], capture_output=True, text=True, timeout=30)


def test_the_published_key_is_accepted_and_any_other_refused(sshd: tuple[int, Path, str]) -> None:
    port, key, fingerprint = sshd
    assert fingerprint.startswith("SHA256:")
    ok = _ssh(port, key, fingerprint)
    assert ok.returncode == 0 and ok.stdout.strip() == "connected", ok.stderr
    other = _ssh(port, key, "SHA256:" + "A" * 43)
    assert other.returncode == 255 and "Host key verification failed" in other.stderr
