"""A small Docker Engine API on a unix socket, for the real docker-py client to talk to.

It answers the endpoints clawguard uses, in the Engine's own wire format: ``/version``,
the container list (label filters, ``all``), container inspect, exec create, exec start
(the hijacked connection: ``101 UPGRADED``, stdin up to EOF, the multiplexed stdout/stderr
frames), exec inspect, and the event stream (chunked JSON, filtered on the server like
Docker does). A test configures a target with ``docker_host: engine.url`` and the real
target code and docker-py run against it; what a command prints is whatever ``engine.run``
answers for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import select
import shutil
import socket
import socketserver
import struct
import tempfile
import termios
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_VERSION = "1.45"
ENGINE_VERSION = "27.0.0-fake"


@dataclass
class Container:
    id: str
    name: str
    state: str = "running"  # Docker's State: running, exited, paused, restarting, created
    labels: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """As the container list gives it."""
        return {"Id": self.id, "Names": [f"/{self.name}"], "State": self.state, "Labels": self.labels}

    def inspect(self) -> dict[str, Any]:
        """As container inspect gives it."""
        state = {
            "Status": self.state,
            "Running": self.state in ("running", "paused", "restarting"),
            "Paused": self.state == "paused",
            "Restarting": self.state == "restarting",
        }
        return {"Id": self.id, "Name": f"/{self.name}", "State": state, "Config": {"Labels": self.labels}}


@dataclass(frozen=True)
class ExecCall:
    """One command, as the engine received it."""

    container: str  # the full ID
    argv: tuple[str, ...]
    user: str
    privileged: bool
    stdin: bytes | None  # None: the exec was created without stdin


@dataclass(frozen=True)
class Reply:
    code: int = 0
    stdout: bytes = b""
    stderr: bytes = b""


def no_command(call: ExecCall) -> Reply:
    return Reply(127, b"", f"{call.argv[0]}: not in this fake engine\n".encode())


# The largest frame the engine writes: output longer than this comes in several frames.
FRAME = 32 * 1024


@dataclass
class _Exec:
    call: ExecCall
    stdin: bool
    code: int | None = None
    running: bool = False


class FakeEngine:
    """A Docker Engine serving ``url`` until closed. Set ``containers``, ``run``, ``events``
    and ``refuse`` (path fragment → (HTTP status, message)) before the client asks."""

    def __init__(self, directory: Path | None = None) -> None:
        # A socket's path must fit in 108 bytes: pytest's tmp_path may not.
        self._dir = Path(tempfile.mkdtemp(prefix="engine-", dir=directory or "/tmp"))
        self.path = self._dir / "fake.sock"
        self.url = f"unix://{self.path}"
        self.containers: list[Container] = []
        self.run: Callable[[ExecCall], Reply] = no_command
        self.calls: list[ExecCall] = []
        self.events: list[dict[str, Any]] = []
        self.end_events = True  # False: after the events, the stream stays open until the client closes it
        self.refuse: dict[str, tuple[int, str]] = {}
        self.requests: list[str] = []  # "METHOD /path", version prefix removed
        self._execs: dict[str, _Exec] = {}
        self._ids = itertools.count(1)
        self._closing = threading.Event()
        self._server = _Server(str(self.path), _Handler, self)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def add(self, cid: str, name: str, state: str = "running", labels: Mapping[str, str] | None = None) -> Container:
        container = Container(cid, name, state, dict(labels or {}))
        self.containers.append(container)
        return container

    def find(self, ref: str) -> Container | None:
        """By name, full ID or unique ID prefix, as Docker resolves a reference."""
        for container in self.containers:
            if ref in (container.name, container.id):
                return container
        prefixed = [c for c in self.containers if c.id.startswith(ref)]
        return prefixed[0] if len(prefixed) == 1 else None

    def close(self) -> None:
        if self._closing.is_set():
            return
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._server.cut()
        self._thread.join(5)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> FakeEngine:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _matches(filters: Mapping[str, Sequence[str]], container: Container) -> bool:
    for selector in filters.get("label", ()):
        key, eq, value = selector.partition("=")
        if key not in container.labels or (eq and container.labels[key] != value):
            return False
    return True


def _event_matches(filters: Mapping[str, Sequence[str]], event: Mapping[str, Any]) -> bool:
    attributes = (event.get("Actor") or {}).get("Attributes") or {}
    if "type" in filters and event.get("Type") not in filters["type"]:
        return False
    if "event" in filters and event.get("Action") not in filters["event"]:
        return False
    for selector in filters.get("label", ()):
        key, _, value = selector.partition("=")
        if attributes.get(key) != value:
            return False
    return True


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, handler: type[BaseHTTPRequestHandler], engine: FakeEngine) -> None:
        self.engine = engine
        self.open: set[socket.socket] = set()  # kept-alive connections, cut when the engine goes away
        super().__init__(path, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.open.discard(request)
        super().shutdown_request(request)

    def cut(self) -> None:
        for connection in list(self.open):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # the client address of a unix socket is ''
        pass

    @property
    def engine(self) -> FakeEngine:
        return self.server.engine

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path
        if path.startswith("/v1."):
            path = "/" + path.split("/", 2)[2]
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"null") if length else None
        self.engine.requests.append(f"{method} {path}")
        for fragment, (status, message) in self.engine.refuse.items():
            if fragment in path:
                return self._json(status, {"message": message})
        parts = path.strip("/").split("/")
        if method == "GET" and path == "/version":
            return self._json(200, {"Version": ENGINE_VERSION, "ApiVersion": API_VERSION, "MinAPIVersion": "1.24"})
        if method == "GET" and path == "/containers/json":
            filters = json.loads(query.get("filters") or "{}")
            shown = [
                c.summary()
                for c in self.engine.containers
                if (query.get("all") in ("1", "true") or c.state == "running") and _matches(filters, c)
            ]
            return self._json(200, shown)
        if method == "GET" and path == "/events":
            return self._events(json.loads(query.get("filters") or "{}"))
        if len(parts) == 3 and parts[0] == "containers":
            container = self.engine.find(parts[1])
            if container is None:
                return self._json(404, {"message": f"No such container: {parts[1]}"})
            if method == "GET" and parts[2] == "json":
                return self._json(200, container.inspect())
            if method == "POST" and parts[2] == "exec":
                return self._exec_create(container, body or {})
        if len(parts) == 3 and parts[0] == "exec":
            started = self.engine._execs.get(parts[1])
            if started is None:
                return self._json(404, {"message": f"No such exec instance: {parts[1]}"})
            if method == "POST" and parts[2] == "start":
                return self._exec_start(started)
            if method == "GET" and parts[2] == "json":
                return self._json(200, {"ID": parts[1], "Running": started.running, "ExitCode": started.code})
        return self._json(404, {"message": f"page not found: {method} {path}"})

    def _json(self, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _exec_create(self, container: Container, body: Mapping[str, Any]) -> None:
        if container.state != "running":
            return self._json(409, {"message": f"container {container.id} is not running"})
        exec_id = f"exec{next(self.engine._ids)}"
        call = ExecCall(
            container.id, tuple(body.get("Cmd") or ()), body.get("User") or "", bool(body.get("Privileged")), None
        )
        self.engine._execs[exec_id] = _Exec(call, bool(body.get("AttachStdin")))
        return self._json(201, {"Id": exec_id})

    def _exec_start(self, started: _Exec) -> None:
        self.send_response(101, "UPGRADED")
        self.send_header("Content-Type", "application/vnd.docker.raw-stream")
        self.send_header("Connection", "Upgrade")
        self.send_header("Upgrade", "tcp")
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        started.running = True
        stdin = None
        if started.stdin:
            stdin = self.rfile.read()  # up to the client's shutdown of its side
        else:
            # docker-py takes the raw socket from under the HTTP response it parsed: output
            # that came with the headers would sit in that response's buffer, unseen. Docker
            # starts the process only after its headers; this engine waits until they are read.
            _until_read(self.connection)
        call = ExecCall(started.call.container, started.call.argv, started.call.user, started.call.privileged, stdin)
        self.engine.calls.append(call)
        reply = self.engine.run(call)
        try:
            for stream, data in ((2, reply.stderr), (1, reply.stdout)):
                for frame in _frames(stream, data):
                    self.connection.sendall(frame)
        except OSError:
            pass  # the client stopped reading (an output limit)
        finally:
            started.code, started.running = reply.code, False

    def _events(self, filters: Mapping[str, Sequence[str]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        try:
            for event in self.engine.events:
                if _event_matches(filters, event):
                    data = json.dumps(event).encode() + b"\n"
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
            if self.engine.end_events:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
                return
            while not self.engine._closing.is_set():  # until the client hangs up
                readable, _, _ = select.select([self.connection], [], [], 0.05)
                if readable and not self.connection.recv(1):
                    return
        except OSError:
            pass


def _until_read(sock: socket.socket, wait: float = 10.0) -> None:
    """Until the peer has read all that was sent on ``sock`` (Linux: a unix socket's
    SIOCOUTQ counts the bytes its peer has not read yet)."""
    deadline = time.monotonic() + wait
    while struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0] > 0:
        if time.monotonic() > deadline:
            return
        time.sleep(0.001)


def _frames(stream: int, data: bytes) -> Iterator[bytes]:
    for start in range(0, len(data), FRAME):
        chunk = data[start : start + FRAME]
        yield struct.pack(">BxxxI", stream, len(chunk)) + chunk


def facts_reply(uid: int = 998, version: str = "2026.3.31", style: str = "split") -> bytes:
    """What clawguard's facts script prints in a NemoClaw sandbox: its user table, the
    layout's style and the agent's package.json."""
    passwd = f"root:x:0:0:root:/root:/bin/sh\nsandbox:x:{uid}:{uid}::/sandbox:/bin/sh\n"
    group = f"root:x:0:\nsandbox:x:{uid}:\n"
    package = json.dumps({"name": "openclaw", "version": version})
    return f"{passwd}--clawguard--\n{group}--style--\n{style}\n--package--\n{package}\n".encode()
