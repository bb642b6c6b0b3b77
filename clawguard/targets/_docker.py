"""docker-py plumbing shared by targets: a client, and exec with stdin.

docker-py's high-level ``exec_run`` cannot send stdin, which we need to stream a
tar into the sandbox, so we drive the hijacked exec socket ourselves.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence
from typing import Any

import docker
import docker.errors

from ..errors import TargetError
from .base import ExecResult


def client(base_url: str | None = None, timeout: int = 60) -> docker.DockerClient:
    try:
        if base_url:
            return docker.DockerClient(base_url=base_url, timeout=timeout)
        return docker.from_env(timeout=timeout)
    except docker.errors.DockerException as exc:
        raise TargetError(f"Docker is not reachable: {exc}") from None


def exec_in(api: Any, container: str, argv: Sequence[str], stdin: bytes | None, timeout: float) -> ExecResult:
    """Run argv in a Docker container and collect exit code, stdout and stderr."""
    created = api.exec_create(container, list(argv), stdin=stdin is not None, stdout=True, stderr=True)
    exec_id = created["Id"]
    if stdin is None:
        out, err = api.exec_start(exec_id, demux=True)
        stdout, stderr = out or b"", err or b""
    else:
        sock = api.exec_start(exec_id, socket=True)
        raw: socket.socket = getattr(sock, "_sock", sock)
        raw.settimeout(timeout)
        try:
            raw.sendall(stdin)
            raw.shutdown(socket.SHUT_WR)  # EOF on the process's stdin
            stdout, stderr = _read_frames(raw)
        finally:
            sock.close()
    code = api.exec_inspect(exec_id).get("ExitCode")
    return ExecResult(code if code is not None else -1, stdout, stderr)


def _read_frames(raw: socket.socket) -> tuple[bytes, bytes]:
    """Demultiplex Docker's stream format: 8-byte header (stream, 0, 0, 0, size)."""
    buffers = {1: bytearray(), 2: bytearray()}
    pending = bytearray()
    while True:
        chunk = raw.recv(65536)
        if not chunk:
            break
        pending += chunk
        while len(pending) >= 8:
            stream, size = struct.unpack(">BxxxL", pending[:8])
            if len(pending) < 8 + size:
                break
            buffers.setdefault(stream, bytearray()).extend(pending[8 : 8 + size])
            del pending[: 8 + size]
    return bytes(buffers[1]), bytes(buffers[2])
