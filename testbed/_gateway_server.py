"""The OpenShell 0.1.x gateway stand-in: a gRPC server built from the SDK's own generated code.

It serves ``openshell.v1.OpenShell`` (``openshell._proto.openshell_pb2_grpc``) with mTLS on
127.0.0.1, so the real SDK (``openshell.SandboxClient.from_active_cluster``) and the generated
``OpenShellStub`` drive it over the real wire protocol. It follows the facts collected in
``shared/reference/openshell.md`` ("Generation 3"), and is as strict as they are:

* every sandbox request names the sandbox by name in a workspace (``workspace_scope``; empty =
  ``default``); a missing sandbox and one in another workspace both answer ``NOT_FOUND``;
* ``ExecSandbox`` joins argv with POSIX single-quote escaping (``shlex.join``) and runs
  ``bash -lc <string>`` (``bash -c`` with ``no_login_shell``) as the sandbox user, never root,
  in ``/sandbox`` by default; at most 1024 arguments of 32 KiB, 256 KiB joined, environment
  values of 32 KiB (else ``INVALID_ARGUMENT``); a sandbox that is not READY answers
  ``FAILED_PRECONDITION``; ``execution_timeout`` kills the command's process tree and answers
  exit code 124; requests are capped at 4 MiB (gRPC's ``RESOURCE_EXHAUSTED``); the first 120
  characters of every joined command go to ``exec.log`` in the gateway's directory;
* ``ExecSandboxInteractive``: a ``start`` frame (the same rules), then ``stdin`` frames; the
  client's half-close is EOF on the command's stdin;
* ``WatchSandbox``: a full snapshot first, then one per status change; the stream ends when
  the sandbox is deleted; events carry cursors, and a cursor this server process did not hand
  out (another server run, or too old) answers ``OUT_OF_RANGE``;
* ``CreateSandbox`` (answers PROVISIONING at once and provisions in the background),
  ``DeleteSandbox`` (answers ACCEPTED, the sandbox is DELETING until it is gone),
  ``StartSandbox``/``StopSandbox`` (idempotent, asynchronous: STARTING/STOPPING first),
  ``GetSandbox``, ``ListSandboxes`` (paged: 100 by default, at most 1000) and ``Health``.
  Everything else is UNIMPLEMENTED (the generated servicer's default).

Sandboxes are Docker containers running the test bed's real-agent image (or the busybox
stand-in, which has bash) like :class:`testbed.DockerSandboxes` makes them, but with labels of
their own (``testbed.openshell-v1.*``, never ``openshell.ai/*``, so clawguard's Docker target
does not see them), and ``/sandbox`` on a named volume per sandbox id (Docker fills a new volume
from the image's ``/sandbox``). The sandbox's "main process" is ``sleep infinity`` launched as
the sandbox user with ``docker exec -d``; its environment carries
``OPENSHELL_MAIN_PROCESS_INSTANCE=<main_process_instance_id>``.

Lifecycle (docs, failure-and-recovery): a container killed by a signal (``docker kill``, a
Docker-daemon or host restart) leaves the sandbox in ERROR, and StartSandbox starts the same
container again; a main process that exits by itself with a non-zero code, or an OOM kill, is
a crash: ERROR, and StartSandbox answers FAILED_PRECONDITION (delete and create). A main process
that exits 0 makes the sandbox COMPLETED. At the next gateway start, sandboxes whose containers
died of a signal are started again. The server notices container and main-process changes it did
not cause by polling Docker every 0.2 s.

Test controls that only the stand-in has go through a small extra service on the same mTLS port
(``/testbed.openshell_standin.v1.Control/Call``: a JSON request in, the serialized ``Sandbox``
out): ``replace_pod`` and ``restart_main`` (and ``records``, JSON out). See
:mod:`testbed.openshell_gateway` for the manager class, the CLI and what is not modeled.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import queue
import re
import secrets
import shlex
import signal
import socket
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import docker
import docker.errors
import grpc  # type: ignore[import-untyped, unused-ignore]
from openshell._proto import datamodel_pb2, openshell_pb2, openshell_pb2_grpc

from clawguard.targets._docker import ExecTimeout, exec_in

from . import _agent_image, _agents
from . import _images as images
from ._docker_sandbox import DockerSandboxes
from ._gateway_tls import ensure_tls
from ._images import ROLE_LABEL
from ._spec import SandboxSpec
from ._testbed import TestbedError

log = logging.getLogger("openshell-standin")

#: grpc has no type stubs here: its objects are Any.
Context = Any

VERSION = "0.1.5-testbed"

# Docker labels of the stand-in's containers and volumes (not OpenShell's: 0.1.x labels are unconfirmed).
LABEL_PREFIX = "testbed.openshell-v1"
LABEL_GATEWAY = f"{LABEL_PREFIX}.gateway"
LABEL_HOME = f"{LABEL_PREFIX}.home"
LABEL_SANDBOX_ID = f"{LABEL_PREFIX}.sandbox-id"
LABEL_SANDBOX_NAME = f"{LABEL_PREFIX}.sandbox-name"
LABEL_WORKSPACE = f"{LABEL_PREFIX}.workspace"
ROLE = "openshell-v1-sandbox"

# Sandbox (metadata) labels a client may set at creation to choose what runs in it.
AGENT_LABEL = "testbed.openshell-v1/agent"
UID_LABEL = "testbed.openshell-v1/sandbox-uid"
#: The image repository the stand-in reports (and accepts) in ``spec.template.image``: ``openclaw:<agent>``.
IMAGE_REPO = "openclaw"
DEFAULT_AGENT = "2026.9.6"
DEFAULT_WORKSPACE = "default"

MAX_EXEC_ARGS = 1024
MAX_EXEC_ARG_BYTES = 32 * 1024
MAX_EXEC_COMMAND_BYTES = 256 * 1024
MAX_EXEC_ENV_VALUE_BYTES = 32 * 1024
MAX_REQUEST_BYTES = 4 * 1024 * 1024
LOGGED_COMMAND_CHARS = 120
TIMEOUT_EXIT_CODE = 124
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
POLL_INTERVAL = 0.2
WATCH_HISTORY = 256
SANDBOX_DIR = "/sandbox"
MAIN_MARKER_ENV = "OPENSHELL_MAIN_PROCESS_INSTANCE"
CONTROL_SERVICE = "testbed.openshell_standin.v1.Control"
CONTROL_METHOD = f"/{CONTROL_SERVICE}/Call"

PROVISIONING = openshell_pb2.SANDBOX_PHASE_PROVISIONING
READY = openshell_pb2.SANDBOX_PHASE_READY
ERROR = openshell_pb2.SANDBOX_PHASE_ERROR
DELETING = openshell_pb2.SANDBOX_PHASE_DELETING
STOPPING = openshell_pb2.SANDBOX_PHASE_STOPPING
STOPPED = openshell_pb2.SANDBOX_PHASE_STOPPED
STARTING = openshell_pb2.SANDBOX_PHASE_STARTING
COMPLETED = openshell_pb2.SANDBOX_PHASE_COMPLETED
TERMINAL = frozenset({ERROR, COMPLETED})

# Deaths: "signal" (the container was killed: Start brings it back), "crash" (the main process
# or the container's init exited by itself with a non-zero code, or OOM: Start is refused),
# "provision" (the stand-in could not make the container: Start tries again).
SIGNAL_DEATH, CRASH_DEATH, PROVISION_FAILURE = "signal", "crash", "provision"
SIGNAL_EXIT_CODES = frozenset({128 + signal.SIGKILL, 128 + signal.SIGTERM})

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CURSOR_RE = re.compile(r"^([0-9a-f]{12})-([0-9]+)$")

# Inside the container: wait (up to 10 s) until sandbox-init's sshd listens and it wrote its ready
# file (after a restart the old file is still there until sshd listens again), then say whether
# bash is there.
_READY_SCRIPT = f"""\
i=0
while [ "$i" -lt 400 ]; do
  if [ -s {images.SSH_READY} ] && grep -q " 0100007F:{images.SSH_PORT:04X} 00000000:0000 0A " /proc/net/tcp; then
    if [ -x /bin/bash ]; then echo ready; else echo no-bash; fi
    exit 0
  fi
  i=$((i + 1))
  sleep 0.025
done
echo timeout
"""
# Signal ($1) every process whose environment holds the line $2 (run as the sandbox user: root in
# the container may not read another user's /proc/PID/environ without CAP_SYS_PTRACE).
_SIGNAL_MARKED = """\
sig=$1 mark=$2
for p in /proc/[0-9]*; do
  { tr '\\0' '\\n' <"$p/environ" | grep -qxF "$mark"; } 2>/dev/null && kill "-$sig" "${p#/proc/}" 2>/dev/null
done
true
"""
# Stop, then kill, process $1 and all its descendants.
_KILL_TREE = """\
root=$1
kill -STOP "$root" 2>/dev/null
found=" $root "
more=1
while [ "$more" = 1 ]; do
  more=0
  for f in /proc/[0-9]*/stat; do
    { read -r line <"$f"; } 2>/dev/null || continue
    pid=${line%% *}
    rest=${line##*) }
    set -- $rest
    case "$found" in *" $pid "*) continue ;; esac
    case "$found" in *" $2 "*) found="$found$pid " && kill -STOP "$pid" 2>/dev/null && more=1 ;; esac
  done
done
kill -KILL $found 2>/dev/null
true
"""
# An exec's first line on stderr is its PID (then it becomes bash): what a timeout kills.
_ANNOUNCE_PID = 'printf "%s\\n" "$$" >&2; exec "$@"'


def _abort(context: Context, code: Any, message: str) -> NoReturn:
    context.abort(code, message)
    raise RuntimeError("context.abort returned")  # pragma: no cover


def phase_name(phase: int) -> str:
    """``READY`` for SANDBOX_PHASE_READY."""
    return str(openshell_pb2.SandboxPhase.Name(phase)).removeprefix("SANDBOX_PHASE_")


def home_key(home: Path) -> str:
    """A short key of a gateway home, in every label (two homes may use one gateway name)."""
    return hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:12]


def host_key_fingerprint(sandbox_id: str) -> str:
    """``SHA256:<base64>`` like OpenSSH's: stable per sandbox id, new on re-create."""
    digest = hashlib.sha256(f"openshell-standin-host-key:{sandbox_id}".encode()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def check_name(name: str, what: str = "gateway") -> str:
    if not _NAME_RE.match(name):
        raise TestbedError(f"invalid {what} name {name!r} (use a DNS-1123 label)")
    return name


class GatewayPaths:
    """Where gateway ``name`` of ``home`` (= ``$XDG_CONFIG_HOME``) keeps its files."""

    def __init__(self, home: Path, name: str) -> None:
        self.home = home
        self.name = check_name(name)
        self.config = home / "openshell"
        self.active_gateway = self.config / "active_gateway"
        self.gateway_dir = self.config / "gateways" / name
        self.metadata = self.gateway_dir / "metadata.json"
        self.mtls = self.gateway_dir / "mtls"
        self.exec_log = self.gateway_dir / "exec.log"
        self.standin = self.gateway_dir / "standin"
        self.state = self.standin / "state.json"
        self.lock = self.standin / "server.lock"
        self.pid = self.standin / "server.pid"
        self.server_log = self.standin / "server.log"


def escape_log(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def unescape_log(text: str) -> str:
    out, i = [], 0
    table = {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in table:
            out.append(table[text[i + 1]])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


@dataclass
class Record:
    """One sandbox, as the gateway keeps it (persisted in ``standin/state.json``)."""

    id: str
    name: str
    workspace: str
    agent: str
    uid: int
    image: str
    volume: str
    created: float
    labels: dict[str, str] = field(default_factory=dict)
    phase: int = PROVISIONING
    container: str = ""
    main_exec: str = ""
    main_instance: str = ""
    main_started: float = 0.0
    launches: int = 0  # times the main process was launched: restart_count = launches - 1
    exit_code: int | None = None
    death: str = ""
    reason: str = ""
    message: str = ""
    resource_version: int = 1

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class _Op:
    fn: Callable[[], None]
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class StandinGateway(openshell_pb2_grpc.OpenShellServicer):
    """The servicer, its sandbox records, their Docker containers and the monitor."""

    def __init__(self, paths: GatewayPaths, client: docker.DockerClient | None = None) -> None:
        self.paths = paths
        self.home_key = home_key(paths.home)
        self.port = 0
        self._docker = client or docker.from_env(timeout=300)
        self._monitor_docker = docker.from_env(timeout=60)
        self._sandboxes = DockerSandboxes(client=self._docker)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._records: dict[str, Record] = {}
        self._boot = secrets.token_hex(6)
        self._seq = 0
        self._history: dict[str, deque[tuple[int, bytes | None]]] = {}
        self._published: dict[str, bytes] = {}
        self._busy: dict[str, int] = {}
        self._queues: dict[str, queue.Queue[_Op]] = {}
        self._stop = threading.Event()
        self._log_lock = threading.Lock()
        self._monitor: threading.Thread | None = None
        self._load()

    # ------------------------------------------------------------------ state

    def _load(self) -> None:
        if not self.paths.state.is_file():
            return
        data = json.loads(self.paths.state.read_text())
        self.port = int(data.get("port", 0))
        with self._lock:
            for item in data.get("sandboxes", []):
                rec = Record.from_json(item)
                self._records[rec.id] = rec
                self._publish(rec)

    def _persist(self) -> None:
        with self._lock:
            data = {"port": self.port, "sandboxes": [asdict(r) for r in self._records.values()]}
            tmp = self.paths.state.with_name(f".state.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1))
            tmp.replace(self.paths.state)

    def _publish(self, rec: Record) -> None:
        """Append a snapshot to the sandbox's watch history if its status changed (lock held)."""
        snapshot = self._snapshot(rec)
        status = snapshot.status.SerializeToString(deterministic=True)
        if self._published.get(rec.id) == status:
            return
        self._published[rec.id] = status
        self._seq += 1
        self._history.setdefault(rec.id, deque(maxlen=WATCH_HISTORY)).append((self._seq, snapshot.SerializeToString()))
        self._changed.notify_all()

    def _update(self, rec: Record, **changes: Any) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(rec, key, value)
            rec.resource_version += 1
            if rec.id in self._records:
                self._persist()
                self._publish(rec)

    def _snapshot(self, rec: Record) -> openshell_pb2.Sandbox:
        sandbox = openshell_pb2.Sandbox()
        meta = sandbox.metadata
        meta.id, meta.name, meta.workspace = rec.id, rec.name, rec.workspace
        meta.labels.update(rec.labels)
        meta.created_time.FromNanoseconds(int(rec.created * 1e9))
        meta.resource_version = rec.resource_version
        sandbox.spec.template.image = rec.image
        status = sandbox.status
        status.agent_pod = rec.container
        status.phase = rec.phase  # type: ignore[assignment]
        status.main_process_instance_id = rec.main_instance
        status.restart_count = max(0, rec.launches - 1)
        if rec.exit_code is not None:
            status.exit_code = rec.exit_code
        if rec.main_started:
            status.main_process_started_time.FromNanoseconds(int(rec.main_started * 1e9))
        status.conditions.add(
            type="Ready", status="True" if rec.phase == READY else "False", reason=rec.reason, message=rec.message
        )
        sandbox.host_key_fingerprint = host_key_fingerprint(rec.id)
        return sandbox

    def records(self) -> list[Record]:
        with self._lock:
            return [Record(**asdict(r)) for r in self._records.values()]

    # ------------------------------------------------------------- operations

    def _submit(self, rid: str, fn: Callable[[], None]) -> _Op:
        """Run ``fn`` on sandbox ``rid``'s own worker, after the operations before it."""
        op = _Op(fn)
        with self._lock:
            self._busy[rid] = self._busy.get(rid, 0) + 1
            work = self._queues.get(rid)
            if work is None:
                work = queue.Queue()
                self._queues[rid] = work
                threading.Thread(target=self._worker, args=(rid, work), daemon=True, name=f"sb-{rid[:8]}").start()
        work.put(op)
        return op

    def _worker(self, rid: str, work: queue.Queue[_Op]) -> None:
        while True:
            op = work.get()
            try:
                op.fn()
            except Exception as exc:
                op.error = exc
                log.exception("operation on sandbox %s failed", rid)
            with self._lock:
                self._busy[rid] -= 1
                op.done.set()
                if rid not in self._records and work.empty():
                    self._queues.pop(rid, None)
                    self._busy.pop(rid, None)
                    return

    def _busy_now(self, rid: str) -> bool:
        return self._busy.get(rid, 0) > 0

    def _get(self, rid: str) -> Record | None:
        with self._lock:
            return self._records.get(rid)

    # Docker plumbing ------------------------------------------------------

    def _labels(self, rec: Record, spec: SandboxSpec) -> dict[str, str]:
        return {
            LABEL_GATEWAY: self.paths.name,
            LABEL_HOME: self.home_key,
            LABEL_SANDBOX_ID: rec.id,
            LABEL_SANDBOX_NAME: rec.name,
            LABEL_WORKSPACE: rec.workspace,
            ROLE_LABEL: ROLE,
            **spec.labels(),
        }

    def _run_container(self, rec: Record) -> str:
        """Start a new container (pod) for ``rec`` with its ``/sandbox`` volume; return its ID."""
        spec = SandboxSpec.make(rec.uid, rec.agent)
        volumes: dict[str, dict[str, str]] = {rec.volume: {"bind": SANDBOX_DIR, "mode": "rw"}}
        if spec.standin:
            image = self._sandboxes.ensure_image(spec.uid)
            command = images.pod_command(images.SANDBOX_INIT, spec.host_key_file)
        else:
            try:
                install = _agents.build_agent(spec.agent, say=log.info)
            except (_agents.AgentBuildError, ValueError) as exc:
                raise TestbedError(f"cannot install OpenClaw {spec.agent}: {exc}") from exc
            image = self._sandboxes.ensure_agent_image(spec.uid, spec.layout)
            command = images.pod_command(_agent_image.AGENT_INIT, spec.host_key_file, tini=_agent_image.AGENT_TINI)
            volumes[str(install.usr_local)] = {"bind": _agent_image.AGENT_MOUNT, "mode": "ro"}
        labels = self._labels(rec, spec)
        try:
            self._docker.volumes.get(rec.volume)
        except docker.errors.NotFound:
            self._docker.volumes.create(
                name=rec.volume, labels={k: labels[k] for k in labels if k.startswith(LABEL_PREFIX)}
            )
        run_kwargs: dict[str, Any] = dict(
            name=f"openshell-v1-{rec.name}-{secrets.token_hex(4)}",
            command=command,
            detach=True,
            hostname=rec.name,
            labels=labels,
            network_mode="none",
            restart_policy={"Name": "no"},
            tmpfs={"/run": "rw,nosuid,nodev,exec,mode=0755"},
            volumes=volumes,
        )
        container = self._docker.containers.run(image, **run_kwargs)
        return str(container.id)

    def _wait_ready(self, cid: str) -> None:
        try:
            result = exec_in(self._docker.api, cid, ["sh", "-c", _READY_SCRIPT], None, 60, user="0:0")
        except (ExecTimeout, docker.errors.APIError) as exc:
            raise TestbedError(f"container {cid[:12]} did not come up: {exc}") from exc
        said = result.stdout.decode(errors="replace").strip()
        if said == "no-bash":
            raise TestbedError("the sandbox image has no /bin/bash (the gateway runs `bash -lc`): use a real agent")
        if said != "ready":
            logs = self._docker.containers.get(cid).logs(tail=20).decode(errors="replace")
            raise TestbedError(f"container {cid[:12]}: sandbox-init did not get ready ({said}):\n{logs}")

    def _launch_main(self, rec: Record, cid: str) -> dict[str, Any]:
        """Launch the main process (``sleep infinity`` as the sandbox user); the record's new fields."""
        instance = str(uuid.uuid4())
        api = self._docker.api
        eid = api.exec_create(
            cid,
            ["sleep", "infinity"],
            stdin=False,
            stdout=False,
            stderr=False,
            user=f"{rec.uid}:{rec.uid}",
            environment=[f"{MAIN_MARKER_ENV}={instance}"],
            workdir=SANDBOX_DIR,
        )["Id"]
        api.exec_start(eid, detach=True)
        until = time.monotonic() + 10
        while not api.exec_inspect(eid).get("Running"):
            if time.monotonic() > until:
                raise TestbedError(f"the main process of {rec.name} did not start")
            time.sleep(0.02)
        return {
            "main_exec": str(eid),
            "main_instance": instance,
            "main_started": time.time(),
            "launches": rec.launches + 1,
            "exit_code": None,
            "death": "",
        }

    def _signal_main(self, rec: Record, sig: str) -> None:
        exec_in(
            self._docker.api,
            rec.container,
            ["sh", "-c", _SIGNAL_MARKED, "sh", sig, f"{MAIN_MARKER_ENV}={rec.main_instance}"],
            None,
            30,
            user=f"{rec.uid}:{rec.uid}",
        )

    def _container_state(self, cid: str) -> dict[str, Any] | None:
        if not cid:
            return None
        try:
            state: dict[str, Any] = self._docker.api.inspect_container(cid)["State"]
        except docker.errors.NotFound:
            return None
        return state

    def _bring_up(self, rid: str, phase: int, *, new_container: bool) -> None:
        """Make the sandbox's pod run (a new container, or the old one started again), wait
        until sandbox-init is ready, launch the main process: READY. ERROR if that fails."""
        rec = self._get(rid)
        if rec is None or rec.phase != phase:
            return
        try:
            state = None if new_container else self._container_state(rec.container)
            if state is None:
                if rec.container:
                    with contextlib.suppress(docker.errors.NotFound):
                        self._docker.api.remove_container(rec.container, force=True)
                self._update(rec, container=self._run_container(rec))
            elif not state.get("Running"):
                self._docker.api.start(rec.container)
            self._wait_ready(rec.container)
            main = self._launch_main(rec, rec.container)
        except Exception as exc:
            log.exception("sandbox %s could not be brought up", rec.name)
            with self._lock:
                if rec.phase == phase:  # not if it is being stopped or deleted meanwhile
                    self._update(
                        rec, phase=ERROR, death=PROVISION_FAILURE, reason="ProvisioningFailed", message=str(exc)[:1000]
                    )
            return
        with self._lock:
            if rec.phase == phase:
                self._update(rec, phase=READY, reason="", message="", **main)
            else:
                self._update(rec, **main)

    def _stop_op(self, rid: str) -> None:
        rec = self._get(rid)
        if rec is None or rec.phase != STOPPING:
            return
        if rec.container:
            with contextlib.suppress(docker.errors.NotFound):
                self._docker.api.stop(rec.container, timeout=5)
        self._update(rec, phase=STOPPED, main_exec="", reason="Stopped", message="stopped by request")

    def _delete_op(self, rid: str) -> None:
        rec = self._get(rid)
        if rec is None:
            return
        for c in self._docker.api.containers(all=True, filters={"label": [f"{LABEL_SANDBOX_ID}={rid}"]}):
            with contextlib.suppress(docker.errors.NotFound):
                self._docker.api.remove_container(c["Id"], force=True)
        for _ in range(50):
            try:
                self._docker.api.remove_volume(rec.volume, force=True)
                break
            except docker.errors.NotFound:
                break
            except docker.errors.APIError:  # still in use for a moment
                time.sleep(0.1)
        with self._lock:
            self._records.pop(rid, None)
            self._persist()
            self._seq += 1
            self._history.setdefault(rid, deque(maxlen=WATCH_HISTORY)).append((self._seq, None))
            self._published.pop(rid, None)
            self._changed.notify_all()
        log.info("deleted sandbox %s (%s)", rec.name, rid)

    def _replace_pod_op(self, rid: str) -> None:
        rec = self._get(rid)
        if rec is None:
            raise TestbedError("the sandbox is gone")
        if rec.phase not in (READY, ERROR) or rec.death == CRASH_DEATH:
            raise TestbedError(f"cannot replace the pod of a sandbox in phase {phase_name(rec.phase)}")
        old = rec.container
        self._update(rec, phase=PROVISIONING, container="", main_exec="", reason="PodReplaced", message="pod replaced")
        if old:
            with contextlib.suppress(docker.errors.NotFound):
                self._docker.api.remove_container(old, force=True)
        self._bring_up(rid, PROVISIONING, new_container=True)
        if rec.phase != READY:
            raise TestbedError(f"the new pod did not get ready: {rec.message}")

    def _restart_main_op(self, rid: str) -> None:
        rec = self._get(rid)
        if rec is None:
            raise TestbedError("the sandbox is gone")
        if rec.phase != READY:
            raise TestbedError("the sandbox is not READY")
        self._relaunch_main(rec)

    def _relaunch_main(self, rec: Record) -> None:
        api = self._docker.api
        if rec.main_exec:
            with contextlib.suppress(docker.errors.APIError):
                self._signal_main(rec, "KILL")
                until = time.monotonic() + 10
                while api.exec_inspect(rec.main_exec).get("Running") and time.monotonic() < until:
                    time.sleep(0.02)
        self._update(rec, **self._launch_main(rec, rec.container))

    # ---------------------------------------------------------------- monitor

    def start(self) -> None:
        """Reconcile the records with Docker (this may be a restart) and start the monitor."""
        self._check_all(startup=True)
        with self._lock:
            recs = list(self._records.values())
        for rec in recs:
            rid = rec.id
            if rec.phase == DELETING:
                self._submit(rid, partial(self._delete_op, rid))
            elif rec.phase == STOPPING:
                self._submit(rid, partial(self._stop_op, rid))
            elif rec.phase in (PROVISIONING, STARTING):
                phase = rec.phase
                self._submit(rid, partial(self._bring_up, rid, phase, new_container=False))
            elif rec.phase == ERROR and rec.death == SIGNAL_DEATH:
                # Docker/Podman signal deaths are restarted at the next gateway start.
                log.info("restarting sandbox %s (its container was killed)", rec.name)
                self._update(rec, phase=STARTING, reason="GatewayRestart", message="restarted at gateway start")
                self._submit(rid, partial(self._bring_up, rid, STARTING, new_container=False))
        self._monitor = threading.Thread(target=self._monitor_loop, daemon=True, name="monitor")
        self._monitor.start()

    def shutdown(self) -> None:
        """Stop the monitor and the watch streams (they answer UNAVAILABLE); save the state."""
        self._stop.set()
        with self._lock:
            self._changed.notify_all()
        if self._monitor is not None:
            self._monitor.join(timeout=5)
        self._persist()

    def _monitor_loop(self) -> None:
        while not self._stop.wait(POLL_INTERVAL):
            try:
                self._check_all()
            except Exception:
                log.exception("monitor pass failed")

    def _check_all(self, startup: bool = False) -> None:
        """Notice container and main-process changes the gateway did not cause."""
        with self._lock:
            todo = [
                (r.id, r.container, r.main_exec)
                for r in self._records.values()
                if r.phase == READY and (startup or not self._busy_now(r.id))
            ]
        if not todo:
            return
        api = self._monitor_docker.api
        found = api.containers(
            all=True, filters={"label": [f"{LABEL_GATEWAY}={self.paths.name}", f"{LABEL_HOME}={self.home_key}"]}
        )
        states = {str(c["Id"]): str(c.get("State", "")) for c in found}
        for rid, cid, eid in todo:
            state = states.get(cid)
            if state is None:
                self._observe(
                    rid,
                    cid,
                    eid,
                    phase=ERROR,
                    death=SIGNAL_DEATH,
                    reason="PodDeleted",
                    message="the container was removed",
                )
            elif state != "running":
                self._observe_container_death(rid, cid, eid)
            else:
                try:
                    info = api.exec_inspect(eid) if eid else None
                except docker.errors.NotFound:
                    info = None
                if info is None:
                    # The container runs but its main process is unknown (it was restarted behind
                    # the gateway's back): the supervisor launches the main process again.
                    with self._lock:
                        rec = self._records.get(rid)
                        if rec is None or rec.container != cid or rec.main_exec != eid or self._busy_now(rid):
                            continue
                    self._submit(rid, partial(self._relaunch_main, rec))
                    continue
                if info.get("Running"):
                    continue
                # The main process ended. A killed container ends it too, a moment before Docker
                # reports the container as exited: look again (for up to 0.25 s) before calling it a crash.
                until = time.monotonic() + 0.25
                while True:
                    st = self._container_state(cid)
                    if st is None or not st.get("Running") or time.monotonic() > until:
                        break
                    time.sleep(0.05)
                if st is None or not st.get("Running"):
                    self._observe_container_death(rid, cid, eid)
                    continue
                code = int(info.get("ExitCode") or 0)
                if code == 0:
                    self._observe(
                        rid,
                        cid,
                        eid,
                        phase=COMPLETED,
                        exit_code=0,
                        death="",
                        reason="MainProcessExited",
                        message="the main process exited 0",
                    )
                else:
                    self._observe(
                        rid,
                        cid,
                        eid,
                        phase=ERROR,
                        exit_code=code,
                        death=CRASH_DEATH,
                        reason="MainProcessCrashed",
                        message=f"the main process exited with code {code}",
                    )

    def _observe_container_death(self, rid: str, cid: str, eid: str) -> None:
        state = self._container_state(cid)
        if state is None:
            self._observe(
                rid, cid, eid, phase=ERROR, death=SIGNAL_DEATH, reason="PodDeleted", message="the container was removed"
            )
            return
        code = int(state.get("ExitCode") or 0)
        if state.get("OOMKilled"):
            self._observe(
                rid,
                cid,
                eid,
                phase=ERROR,
                exit_code=code,
                death=CRASH_DEATH,
                reason="OOMKilled",
                message="the container was OOM-killed",
            )
        elif code in SIGNAL_EXIT_CODES:
            self._observe(
                rid,
                cid,
                eid,
                phase=ERROR,
                exit_code=code,
                death=SIGNAL_DEATH,
                reason="ContainerKilled",
                message=f"the container was killed (exit code {code})",
            )
        elif code == 0:
            self._observe(
                rid,
                cid,
                eid,
                phase=COMPLETED,
                exit_code=0,
                death="",
                reason="ContainerExited",
                message="the container exited 0",
            )
        else:
            self._observe(
                rid,
                cid,
                eid,
                phase=ERROR,
                exit_code=code,
                death=CRASH_DEATH,
                reason="ContainerCrashed",
                message=f"the container exited with code {code}",
            )

    def _observe(self, rid: str, cid: str, eid: str, **changes: Any) -> None:
        with self._lock:
            rec = self._records.get(rid)
            if rec is None or rec.phase != READY or rec.container != cid or rec.main_exec != eid or self._busy_now(rid):
                return  # something else changed it meanwhile
            changes.setdefault("main_exec", "")
            self._update(rec, **changes)
        log.info("sandbox %s: %s (%s)", rec.name, changes.get("reason"), changes.get("message"))

    # ----------------------------------------------------------------- lookup

    def _workspace(
        self, scope: datamodel_pb2.WorkspaceSelector, context: Context, *, allow_all: bool = False
    ) -> str | None:
        which = scope.WhichOneof("selection")
        if which == "all_workspaces":
            if not allow_all:
                _abort(
                    context, grpc.StatusCode.INVALID_ARGUMENT, "this request needs one workspace, not all_workspaces"
                )
            return None
        return scope.workspace or DEFAULT_WORKSPACE

    def _find(self, scope: datamodel_pb2.WorkspaceSelector, name: str, context: Context) -> Record:
        workspace = self._workspace(scope, context)
        if not name:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "sandbox name is required")
        with self._lock:
            for rec in self._records.values():
                if rec.name == name and rec.workspace == workspace:
                    return rec
        _abort(context, grpc.StatusCode.NOT_FOUND, f"sandbox {name} not found")

    def _respond(self, rec: Record) -> openshell_pb2.SandboxResponse:
        with self._lock:
            return openshell_pb2.SandboxResponse(sandbox=self._snapshot(rec))

    # ------------------------------------------------------------------- RPCs

    def Health(self, request: openshell_pb2.HealthRequest, context: Context) -> openshell_pb2.HealthResponse:
        return openshell_pb2.HealthResponse(status=openshell_pb2.SERVICE_STATUS_HEALTHY, version=VERSION)

    def CreateSandbox(
        self, request: openshell_pb2.CreateSandboxRequest, context: Context
    ) -> openshell_pb2.SandboxResponse:
        workspace = self._workspace(request.workspace_scope, context)
        assert workspace is not None
        if request.workload_template:
            _abort(context, grpc.StatusCode.UNIMPLEMENTED, "the stand-in does not model workload templates")
        name = request.name or f"sandbox-{secrets.token_hex(3)}"
        if not _NAME_RE.match(name):
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"invalid sandbox name {name!r} (a DNS-1123 label)")
        agent, uid = self._agent_and_uid(request, context)
        rid = str(uuid.uuid4())
        rec = Record(
            id=rid,
            name=name,
            workspace=workspace,
            agent=agent,
            uid=uid,
            image=f"{IMAGE_REPO}:{agent}",
            volume=f"openshell-v1-sandbox-{rid}",
            created=time.time(),
            labels=dict(request.labels),
            reason="Provisioning",
        )
        with self._lock:
            if any(r.name == name and r.workspace == workspace for r in self._records.values()):
                _abort(context, grpc.StatusCode.ALREADY_EXISTS, f"sandbox {name} already exists")
            self._records[rid] = rec
            self._persist()
            self._publish(rec)
            response = self._respond(rec)
        log.info("creating sandbox %s/%s (%s, agent %s, uid %d)", workspace, name, rid, agent, uid)
        self._submit(rid, lambda: self._bring_up(rid, PROVISIONING, new_container=True))
        return response

    def _agent_and_uid(self, request: openshell_pb2.CreateSandboxRequest, context: Context) -> tuple[str, int]:
        from_label = request.labels.get(AGENT_LABEL, "")
        from_image = ""
        image = request.spec.template.image
        if image:
            last = image.rsplit("/", 1)[-1]
            if ":" not in last:
                _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"image {image!r} has no tag naming the agent")
            from_image = last.rsplit(":", 1)[1]
        if from_label and from_image and from_label != from_image:
            _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"image {image!r} and label {AGENT_LABEL}={from_label} disagree",
            )
        agent = from_label or from_image or DEFAULT_AGENT
        try:
            _agents.check_agent(agent)
        except ValueError as exc:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if agent == _agents.STANDIN and "/bin/bash" not in images.SANDBOX_BINARIES:
            _abort(context, grpc.StatusCode.FAILED_PRECONDITION, "the stand-in image has no bash: use a real agent")
        raw_uid = request.labels.get(UID_LABEL, str(images.DEFAULT_SANDBOX_UID))
        if not raw_uid.isdigit() or not 1 <= int(raw_uid) <= 65533:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"{UID_LABEL} must be a uid in 1..65533")
        return agent, int(raw_uid)

    def GetSandbox(self, request: openshell_pb2.GetSandboxRequest, context: Context) -> openshell_pb2.SandboxResponse:
        return self._respond(self._find(request.workspace_scope, request.name, context))

    def ListSandboxes(
        self, request: openshell_pb2.ListSandboxesRequest, context: Context
    ) -> openshell_pb2.ListSandboxesResponse:
        workspace = self._workspace(request.workspace_scope, context, allow_all=True)
        if request.page_size < 0:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "page_size must not be negative")
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        selector = self._selector(request.label_selector, context)
        offset = 0
        if request.page_token:
            try:
                token = json.loads(base64.urlsafe_b64decode(request.page_token.encode()))
                offset = int(token["offset"])
                if token["scope"] != (workspace or "*") or offset < 0:
                    raise ValueError("another listing's token")
            except (ValueError, KeyError, TypeError) as exc:
                _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"invalid page_token ({exc})")
        with self._lock:
            matching = sorted(
                (r for r in self._records.values() if workspace is None or r.workspace == workspace),
                key=lambda r: (r.workspace, r.name),
            )
            matching = [r for r in matching if selector(r.labels)]
            page = matching[offset : offset + size]
            response = openshell_pb2.ListSandboxesResponse(sandboxes=[self._snapshot(r) for r in page])
        if offset + size < len(matching):
            token = {"offset": offset + size, "scope": workspace or "*"}
            response.next_page_token = base64.urlsafe_b64encode(json.dumps(token).encode()).decode()
        return response

    @staticmethod
    def _selector(text: str, context: Context) -> Callable[[dict[str, str]], bool]:
        tests: list[tuple[str, str, str]] = []  # (operator, key, value)
        for term in filter(None, (t.strip() for t in text.split(","))):
            if "!=" in term:
                key, value = term.split("!=", 1)
                tests.append(("!=", key.strip(), value.strip()))
            elif "=" in term:
                key, value = term.split("=", 1)
                tests.append(("=", key.strip().rstrip("="), value.strip().lstrip("=")))
            elif re.match(r"^[A-Za-z0-9./_-]+$", term):
                tests.append(("exists", term, ""))
            else:
                _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"unsupported label selector term {term!r}")

        def matches(labels: dict[str, str]) -> bool:
            for operator, key, value in tests:
                if operator == "exists" and key not in labels:
                    return False
                if operator == "=" and labels.get(key) != value:
                    return False
                if operator == "!=" and labels.get(key) == value:
                    return False
            return True

        return matches

    def DeleteSandbox(
        self, request: openshell_pb2.DeleteSandboxRequest, context: Context
    ) -> openshell_pb2.DeleteSandboxResponse:
        workspace = self._workspace(request.workspace_scope, context)
        with self._lock:
            rec = next((r for r in self._records.values() if r.name == request.name and r.workspace == workspace), None)
            if rec is None:
                if request.allow_missing:
                    return openshell_pb2.DeleteSandboxResponse(outcome=openshell_pb2.DELETION_OUTCOME_ALREADY_ABSENT)
                _abort(context, grpc.StatusCode.NOT_FOUND, f"sandbox {request.name} not found")
            rid = rec.id
            if rec.phase != DELETING:
                self._update(rec, phase=DELETING, reason="Deleting", message="deletion requested")
                self._submit(rid, lambda: self._delete_op(rid))
        return openshell_pb2.DeleteSandboxResponse(outcome=openshell_pb2.DELETION_OUTCOME_ACCEPTED, sandbox_id=rid)

    def StopSandbox(self, request: openshell_pb2.StopSandboxRequest, context: Context) -> openshell_pb2.SandboxResponse:
        rec = self._find(request.workspace_scope, request.name, context)
        rid = rec.id
        with self._lock:
            if rec.phase == DELETING:
                _abort(context, grpc.StatusCode.FAILED_PRECONDITION, f"sandbox {rec.name} is being deleted")
            if rec.phase in (ERROR, COMPLETED):
                self._update(rec, phase=STOPPED, main_exec="", reason="Stopped", message="stopped by request")
            elif rec.phase not in (STOPPED, STOPPING):
                self._update(rec, phase=STOPPING, reason="Stopping", message="stop requested")
                self._submit(rid, lambda: self._stop_op(rid))
            return self._respond(rec)

    def StartSandbox(
        self, request: openshell_pb2.StartSandboxRequest, context: Context
    ) -> openshell_pb2.SandboxResponse:
        rec = self._find(request.workspace_scope, request.name, context)
        rid = rec.id
        with self._lock:
            if rec.phase in (DELETING, STOPPING):
                _abort(
                    context,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"sandbox {rec.name} is {phase_name(rec.phase).lower()}",
                )
            if rec.death == CRASH_DEATH:
                _abort(
                    context,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"sandbox {rec.name} cannot be started: {rec.message or 'it crashed'}; delete and create it again",
                )
            if rec.phase in (STOPPED, ERROR, COMPLETED):
                self._update(rec, phase=STARTING, reason="Starting", message="start requested")
                self._submit(rid, lambda: self._bring_up(rid, STARTING, new_container=False))
            return self._respond(rec)

    def WatchSandbox(
        self, request: openshell_pb2.WatchSandboxRequest, context: Context
    ) -> Iterator[openshell_pb2.SandboxStreamEvent]:
        rec = self._find(request.workspace_scope, request.sandbox, context)
        rid = rec.id
        after = -1
        with self._lock:
            history = self._history.get(rid) or deque()
            if request.resume_after_cursor:
                match = _CURSOR_RE.match(request.resume_after_cursor)
                after = int(match.group(2)) if match else -1
                known = {seq for seq, _ in history}
                if match is None or match.group(1) != self._boot or after not in known:
                    _abort(
                        context,
                        grpc.StatusCode.OUT_OF_RANGE,
                        f"cursor {request.resume_after_cursor!r} is unknown or too old",
                    )
                pending = [(seq, data) for seq, data in history if seq > after]
            else:
                last_seq = history[-1][0] if history else self._seq
                pending = [(last_seq, self._snapshot(rec).SerializeToString())]
        follow = request.follow_status or request.follow_logs or request.follow_events
        last = pending[-1][0] if pending else after
        first = True
        while True:
            for seq, data in pending:
                if data is None:
                    return  # deleted
                if first or request.follow_status:
                    event = openshell_pb2.SandboxStreamEvent(cursor=f"{self._boot}-{seq}")
                    event.sandbox.ParseFromString(data)
                    yield event
                    if request.stop_on_terminal and event.sandbox.status.phase in TERMINAL:
                        return
                first = False
                last = seq
            if not follow:
                return
            with self._lock:
                while not self._stop.is_set() and context.is_active():
                    history = self._history.get(rid) or deque()
                    pending = [(seq, data) for seq, data in history if seq > last]
                    if pending:
                        break
                    self._changed.wait(timeout=1.0)
                else:
                    if self._stop.is_set():  # not a clean end: that would say "deleted"
                        _abort(context, grpc.StatusCode.UNAVAILABLE, "the gateway is shutting down")
                    return

    # ------------------------------------------------------------------- exec

    def _exec_target(self, request: openshell_pb2.ExecSandboxRequest, context: Context) -> tuple[Record, str]:
        """Check ``request`` (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION); the record and the joined command."""
        argv = list(request.command)
        bad = grpc.StatusCode.INVALID_ARGUMENT
        if not argv:
            _abort(context, bad, "command must not be empty")
        if len(argv) > MAX_EXEC_ARGS:
            _abort(context, bad, f"command has {len(argv)} arguments; at most {MAX_EXEC_ARGS} are allowed")
        for i, arg in enumerate(argv):
            if len(arg.encode()) > MAX_EXEC_ARG_BYTES:
                _abort(context, bad, f"command argument {i} is longer than {MAX_EXEC_ARG_BYTES} bytes")
            if "\0" in arg:
                _abort(context, bad, f"command argument {i} contains a NUL byte")
        command = shlex.join(argv)
        if len(command.encode()) > MAX_EXEC_COMMAND_BYTES:
            _abort(context, bad, f"the assembled command is longer than {MAX_EXEC_COMMAND_BYTES} bytes")
        for key, value in request.environment.items():
            if not _ENV_KEY_RE.match(key):
                _abort(context, bad, f"invalid environment variable name {key!r}")
            if len(value.encode()) > MAX_EXEC_ENV_VALUE_BYTES or "\0" in value:
                _abort(
                    context,
                    bad,
                    f"environment variable {key} is longer than {MAX_EXEC_ENV_VALUE_BYTES} bytes or has a NUL",
                )
        if request.workdir and not request.workdir.startswith("/"):
            _abort(context, bad, "workdir must be an absolute path")
        if request.execution_timeout.seconds < 0 or request.execution_timeout.nanos < 0:
            _abort(context, bad, "execution_timeout must not be negative")
        rec = self._find(request.workspace_scope, request.sandbox, context)
        if rec.phase != READY:
            _abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"sandbox {rec.name} is not ready ({phase_name(rec.phase)})",
            )
        if rec.uid == 0:
            _abort(context, grpc.StatusCode.INTERNAL, "refusing to exec as root")
        with self._log_lock, self.paths.exec_log.open("a", encoding="utf-8") as fh:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            fh.write(f"{stamp} {rec.workspace}/{rec.name} {escape_log(command[:LOGGED_COMMAND_CHARS])}\n")
        return rec, command

    def ExecSandbox(
        self, request: openshell_pb2.ExecSandboxRequest, context: Context
    ) -> Iterator[openshell_pb2.ExecSandboxEvent]:
        rec, command = self._exec_target(request, context)
        yield from self._exec(rec, request, command, context, None)

    def ExecSandboxInteractive(
        self, request_iterator: Iterator[openshell_pb2.ExecSandboxInput], context: Context
    ) -> Iterator[openshell_pb2.ExecSandboxEvent]:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("payload") != "start":
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "the first ExecSandboxInput must be a start frame")
        rec, command = self._exec_target(first.start, context)
        yield from self._exec(rec, first.start, command, context, request_iterator)

    def _exec(
        self,
        rec: Record,
        request: openshell_pb2.ExecSandboxRequest,
        command: str,
        context: Context,
        more_input: Iterator[openshell_pb2.ExecSandboxInput] | None,
    ) -> Iterator[openshell_pb2.ExecSandboxEvent]:
        api = self._docker.api
        cid, user = rec.container, f"{rec.uid}:{rec.uid}"
        tty = bool(request.tty)
        argv = ["/bin/sh", "-c", _ANNOUNCE_PID, "sh", "/bin/bash", "-c" if request.no_login_shell else "-lc", command]
        try:
            eid = api.exec_create(
                cid,
                argv,
                stdin=True,
                stdout=True,
                stderr=True,
                tty=tty,
                user=user,
                environment=[f"{k}={v}" for k, v in request.environment.items()] or None,
                workdir=request.workdir or SANDBOX_DIR,
            )["Id"]
            handle = api.exec_start(eid, socket=True, tty=tty)
        except docker.errors.APIError as exc:
            status = grpc.StatusCode.FAILED_PRECONDITION if exc.status_code == 409 else grpc.StatusCode.INTERNAL
            _abort(context, status, f"exec in sandbox {rec.name} failed: {exc.explanation or exc}")
        raw: Any = handle
        sock: socket.socket = getattr(raw, "_sock", raw)
        if tty and request.cols and request.rows:
            with contextlib.suppress(docker.errors.APIError):
                api.exec_resize(eid, height=request.rows, width=request.cols)
        pid: list[int] = []
        pid_seen = threading.Event()  # stdin waits for it: a TTY would echo input into the PID line
        finished = threading.Event()

        def kill() -> None:
            if pid:
                with contextlib.suppress(Exception):
                    exec_in(api, cid, ["sh", "-c", _KILL_TREE, "sh", str(pid[0])], None, 30, user=user)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

        def on_done() -> None:
            if not finished.is_set():  # the client went away before the command ended
                kill()

        context.add_callback(on_done)

        def feed() -> None:
            try:
                pid_seen.wait(10)
                if request.stdin:
                    sock.sendall(request.stdin)
                for frame in more_input or ():
                    kind = frame.WhichOneof("payload")
                    if kind == "stdin":
                        sock.sendall(frame.stdin)
                    elif kind == "resize" and tty:
                        with contextlib.suppress(docker.errors.APIError):
                            api.exec_resize(eid, height=frame.resize.rows, width=frame.resize.cols)
            except Exception:
                pass  # the command ended, or the client went away
            finally:
                with contextlib.suppress(OSError):
                    if not tty:
                        sock.shutdown(socket.SHUT_WR)  # EOF on the command's stdin
                    elif more_input is not None:
                        # A half-closed TTY exec is hung up by Docker: say EOF as a terminal does.
                        sock.sendall(b"\x04")

        threading.Thread(target=feed, daemon=True, name=f"stdin-{eid[:8]}").start()
        timeout = request.execution_timeout.seconds + request.execution_timeout.nanos / 1e9
        deadline = time.monotonic() + timeout if timeout > 0 else None
        buf = bytearray()
        head = bytearray()  # the PID line, before the command's own output on that stream
        head_done = False
        timed_out = False
        try:
            while True:
                if deadline is not None and time.monotonic() >= deadline:
                    timed_out = True
                    break
                if not context.is_active():
                    return
                sock.settimeout(POLL_INTERVAL)
                try:
                    chunk = sock.recv(1 << 16)
                except TimeoutError:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                buf.extend(chunk)
                for stream, data in self._frames(buf, tty):
                    if not head_done and (tty or stream == 2):
                        head.extend(data)
                        if b"\n" not in head:
                            continue
                        head_done = True
                        pid_seen.set()
                        line, _, data = bytes(head).partition(b"\n")
                        with contextlib.suppress(ValueError):
                            pid.append(int(line.strip()))
                        if not data:
                            continue
                    if stream == 2:
                        yield openshell_pb2.ExecSandboxEvent(stderr=openshell_pb2.ExecSandboxStderr(data=data))
                    else:
                        yield openshell_pb2.ExecSandboxEvent(stdout=openshell_pb2.ExecSandboxStdout(data=data))
            if timed_out:
                kill()
                finished.set()
                yield openshell_pb2.ExecSandboxEvent(exit=openshell_pb2.ExecSandboxExit(exit_code=TIMEOUT_EXIT_CODE))
                return
            code = self._exit_code(eid)
            finished.set()
            yield openshell_pb2.ExecSandboxEvent(exit=openshell_pb2.ExecSandboxExit(exit_code=code))
        finally:
            pid_seen.set()
            with contextlib.suppress(OSError):
                sock.close()

    @staticmethod
    def _frames(buf: bytearray, tty: bool) -> Iterator[tuple[int, bytes]]:
        """Take the complete frames of Docker's exec stream out of ``buf``: (stream, data)."""
        if tty:
            data = bytes(buf)
            del buf[:]
            yield 1, data
            return
        while len(buf) >= 8:
            size = struct.unpack(">I", buf[4:8])[0]
            if len(buf) < 8 + size:
                return
            stream = buf[0]
            data = bytes(buf[8 : 8 + size])
            del buf[: 8 + size]
            yield stream, data

    def _exit_code(self, eid: str) -> int:
        until = time.monotonic() + 10
        while True:
            info = self._docker.api.exec_inspect(eid)
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info["ExitCode"])
            if time.monotonic() > until:
                return 255
            time.sleep(0.02)

    # ---------------------------------------------------------------- control

    def control(self, request: bytes, context: Context) -> bytes:
        """The stand-in's own test controls (``replace_pod``, ``restart_main``): JSON in and out."""
        try:
            msg = json.loads(request)
            op, name = str(msg["op"]), str(msg.get("name", ""))
            workspace = str(msg.get("workspace") or DEFAULT_WORKSPACE)
        except (ValueError, KeyError, TypeError) as exc:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"bad control request: {exc}")
        scope = datamodel_pb2.WorkspaceSelector(workspace=workspace)
        if op == "records":
            return json.dumps([asdict(r) for r in self.records()]).encode()
        rec = self._find(scope, name, context)
        rid = rec.id
        if op == "replace_pod":
            ticket = self._submit(rid, lambda: self._replace_pod_op(rid))
        elif op == "restart_main":
            ticket = self._submit(rid, lambda: self._restart_main_op(rid))
        else:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"unknown control operation {op!r}")
        ticket.done.wait(timeout=600)
        if not ticket.done.is_set():
            _abort(context, grpc.StatusCode.DEADLINE_EXCEEDED, f"{op} did not finish")
        if ticket.error is not None:
            _abort(context, grpc.StatusCode.FAILED_PRECONDITION, f"{op} failed: {ticket.error}")
        with self._lock:
            return bytes(self._snapshot(rec).SerializeToString())


# -------------------------------------------------------------------- serving


def write_client_config(paths: GatewayPaths, port: int) -> None:
    """``metadata.json`` and ``active_gateway``, as the OpenShell CLI writes them."""
    metadata = {"name": paths.name, "gateway_endpoint": f"https://127.0.0.1:{port}", "auth_mode": "mtls"}
    tmp = paths.metadata.with_name(".metadata.json.tmp")
    tmp.write_text(json.dumps(metadata, indent=2) + "\n")
    tmp.replace(paths.metadata)
    paths.active_gateway.write_text(paths.name + "\n")


def serve(home: Path, name: str, port: int | None = None) -> int:
    """Run gateway ``name`` of ``home`` until SIGTERM/SIGINT; the process's exit code."""
    paths = GatewayPaths(home, name)
    paths.standin.mkdir(parents=True, exist_ok=True)
    lock = paths.lock.open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.error("gateway %s of %s is already running", name, home)
        return 1
    tls = ensure_tls(paths.gateway_dir, name)
    gateway = StandinGateway(paths)
    wanted = port or gateway.port or 0
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="rpc"),
        options=[("grpc.max_receive_message_length", MAX_REQUEST_BYTES), ("grpc.so_reuseport", 0)],
    )
    add_servicer: Any = openshell_pb2_grpc.add_OpenShellServicer_to_server
    add_servicer(gateway, server)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                CONTROL_SERVICE, {"Call": grpc.unary_unary_rpc_method_handler(gateway.control)}
            ),
        )
    )
    credentials = grpc.ssl_server_credentials(
        [(tls.server_key.read_bytes(), tls.server_cert.read_bytes())],
        root_certificates=tls.ca_cert.read_bytes(),
        require_client_auth=True,
    )
    bound = 0
    for _ in range(50):  # a port just released may need a moment
        try:
            bound = int(server.add_secure_port(f"127.0.0.1:{wanted}", credentials))
        except RuntimeError:
            bound = 0
        if bound:
            break
        time.sleep(0.2)
    if not bound:
        log.error("cannot listen on 127.0.0.1:%d", wanted)
        return 1
    gateway.port = bound
    gateway.start()
    gateway._persist()
    server.start()
    write_client_config(paths, bound)
    paths.pid.write_text(f"{os.getpid()}\n")
    log.info("OpenShell gateway stand-in %s listening on https://127.0.0.1:%d (mTLS)", name, bound)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop.wait(1.0):
        pass
    log.info("stopping")
    gateway.shutdown()
    server.stop(grace=1).wait(5)
    with contextlib.suppress(FileNotFoundError):
        paths.pid.unlink()
    lock.close()
    return 0
