"""docker-py plumbing shared by targets: a client, and exec with stdin.

docker-py's high-level ``exec_run`` cannot send stdin, which we need to stream a
tar into the sandbox, so we drive the hijacked exec socket ourselves. The
testbeds use the same function.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import docker
import docker.errors

from ..errors import TargetError
from .base import ExecResult, OutputTooLarge, Sink

# stderr is kept for messages only: its last bytes, however much a command prints there.
STDERR_KEPT = 64 * 1024


def container_name(container: Mapping[str, Any]) -> str:
    """A container's name as the Engine API's container list gives it (``/name``), or its short ID."""
    names = container.get("Names") or []
    return str(names[0]).lstrip("/") if names else str(container.get("Id", ""))[:12]


def client(base_url: str | None = None, timeout: int = 60) -> docker.DockerClient:
    try:
        if base_url:
            return docker.DockerClient(base_url=base_url, timeout=timeout)
        return docker.from_env(timeout=timeout)
    except docker.errors.DockerException as exc:
        raise TargetError(f"Docker is not reachable: {exc}") from None


class ExecTimeout(TimeoutError):
    """The command did not finish in time."""


def exec_in(
    api: Any,
    container: str,
    argv: Sequence[str],
    stdin: bytes | None,
    timeout: float | None,
    *,
    user: str = "",
    environment: dict[str, str] | None = None,
    workdir: str | None = None,
    privileged: bool = False,
    out: Sink | None = None,
    limit: int | None = None,
) -> ExecResult:
    """Run argv in a Docker container; collect exit code, stdout and stderr.

    stdin is fed from a thread while output is read, so a command that writes
    before it has read all its input cannot deadlock us. With ``out``, stdout is
    written there as it arrives (the result's stdout is empty); with ``limit``,
    stdout past that many bytes raises OutputTooLarge, and the connection is closed
    without reading further. Docker keeps the command running (it drains its output):
    Target.exec_limited kills it. Only the last STDERR_KEPT bytes of stderr are kept.
    """
    exec_id = api.exec_create(
        container,
        list(argv),
        stdin=stdin is not None,
        stdout=True,
        stderr=True,
        tty=False,
        user=user,
        environment=[f"{k}={v}" for k, v in (environment or {}).items()] or None,
        workdir=workdir,
        privileged=privileged,
    )["Id"]
    handle = api.exec_start(exec_id, socket=True)
    sock: socket.socket = getattr(handle, "_sock", handle)
    deadline = None if timeout is None else time.monotonic() + timeout
    writer: threading.Thread | None = None
    if stdin is not None:
        data = stdin

        def feed() -> None:
            try:
                sock.sendall(data)
            except OSError:
                pass  # the process exited without reading it all; its exit code tells
            finally:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)  # EOF on the process's stdin

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
    stdout, err = bytearray(), bytearray()
    printed = 0
    try:
        while True:
            sock.settimeout(None if deadline is None else max(0.01, deadline - time.monotonic()))
            header = _recv_exact(sock, 8)
            if len(header) < 8:
                break
            # Docker's stream format: 8-byte header (stream, 0, 0, 0, big-endian size).
            stream, size = header[0], struct.unpack(">I", header[4:])[0]
            if stream == 2:
                err.extend(_recv_exact(sock, size))
                del err[:-STDERR_KEPT]
                continue
            printed += size
            if limit is not None and printed > limit:
                # Shut down, not only closed: the HTTP response keeps the socket open otherwise,
                # and Docker would go on writing into it (and the command on printing) until its
                # buffers fill, blocking the container's next exec.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                raise OutputTooLarge(f"{list(argv)[:1]}... printed more than {limit} bytes", bytes(err))
            for chunk in _recv_chunks(sock, size):
                if out is None:
                    stdout.extend(chunk)
                else:
                    out.write(chunk)
    except TimeoutError:
        raise ExecTimeout(f"{list(argv)[:3]}... timed out after {timeout}s") from None
    finally:
        if writer is not None:
            writer.join(timeout=5)
        sock.close()
    until = time.monotonic() + 10
    while True:
        info = api.exec_inspect(exec_id)
        if not info.get("Running") and info.get("ExitCode") is not None:
            return ExecResult(int(info["ExitCode"]), bytes(stdout), bytes(err))
        if time.monotonic() > until:
            raise ExecTimeout(f"{list(argv)[:3]}...: docker exec reported no exit code")
        time.sleep(0.02)


def _recv_chunks(sock: socket.socket, n: int) -> Iterator[bytes]:
    """The next ``n`` bytes, as they arrive: a frame is never held whole."""
    while n > 0:
        chunk = sock.recv(min(n, 1 << 16))
        if not chunk:
            return
        n -= len(chunk)
        yield chunk


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks: list[bytes] = []
    while n > 0:
        chunk = sock.recv(min(n, 1 << 16))
        if not chunk:
            break
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)
