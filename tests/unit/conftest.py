from __future__ import annotations

import io
import shutil
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from clawguard import log

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_ARCHIVE = REPO / "restore-archive"


@pytest.fixture(autouse=True)
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """State, config and locks go to the test's own directories, never the user's."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config-home"))
    monkeypatch.delenv("CLAWGUARD_CONFIG", raising=False)
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)


@pytest.fixture(autouse=True)
def log_stream_of_its_own() -> Iterator[None]:
    """After each test, logging goes to a stream of nobody's: a CLI run configures it to the
    test's captured stderr, which pytest closes, and the next test that logs without
    configuring would fail with "I/O operation on closed file" (it depends on the order)."""
    yield
    log.configure("info", io.StringIO())


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    """A private copy of the example archive, safe to modify."""
    target = tmp_path / "archive"
    shutil.copytree(EXAMPLE_ARCHIVE, target, symlinks=True)
    return target


@pytest.fixture
def write_config(tmp_path: Path):  # type: ignore[no-untyped-def]
    def write(body: str, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(body).lstrip("\n"))
        return path

    return write


def basic_config(archive: Path, extra: str = "") -> str:
    return f"""\
version: 1
sandboxes:
  my-assistant:
    target:
      kind: k3s
      cluster: openshell-cluster-nemoclaw
    archive: {archive}
    user: sandbox
{extra}"""


def full_notify_socket(path: Path) -> socket.socket:
    """A bound datagram socket nobody reads, its queue already full whatever
    net.unix.max_dgram_qlen says: the next blocking send to it waits."""
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as filler:
        filler.connect(str(path))
        filler.setblocking(False)
        with pytest.raises(BlockingIOError):
            while True:
                filler.send(b"X=1")
    return receiver
