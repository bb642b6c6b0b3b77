"""Generation 3 OpenShell (0.1.x): a sandbox reached only through the gateway's gRPC API.

OpenShell 0.1.x runs sandboxes through one compute driver (docker, podman,
kubernetes or vm) and exposes them only through its authenticated gateway API.
This target talks to that API with NVIDIA's own SDK (PyPI ``openshell``): the SDK
builds the channel (TLS/mTLS and credentials, as ``SandboxClient.from_active_cluster``
reads them from ``~/.config/openshell/``), and its generated stub serves the calls
the SDK does not wrap (``WatchSandbox``, ``ExecSandboxInteractive``, streamed
``ExecSandbox``). It needs no container engine: ``DOCKER_HOST`` means nothing to it.

Identity. A sandbox is named by ``name`` and ``workspace``. What changed tells what
to do, so the three are kept apart:

* a new ``metadata.id``: deleted and created again, everything is gone;
* a new ``status.agent_pod``: the container or pod was re-created (on Kubernetes
  ``/sandbox`` survives on its volume, the rest does not);
* a new ``status.main_process_instance_id``: the main process was relaunched, the
  files stay, the agent's gateway may be gone.

The instance ID is a digest of the first two: either change is a new pod and gets a
full, verified restore (which reads first and rewrites only what differs). A new
main process keeps the instance and wakes the daemon, which checks the gateway.

Exec. The gateway joins argv with POSIX quoting and runs ``bash -c`` of it (``-lc``
unless ``no_login_shell``, which clawguard sets: a login shell would run the agent's
own ``~/.profile`` first) **as the sandbox user, under the sandbox's policy, never as root** (``runs_as_root`` is
False: the plan refuses steps that need root before anything is written). Its
limits are kept here: at most 1024 arguments, 32 KiB each, 256 KiB in all (a
longer argv travels on stdin, in front of the command's own input), requests of at
most 4 MiB (larger input goes through ``ExecSandboxInteractive`` in chunks).
Nothing secret is put in argv: the gateway logs the first 120 characters of every
command, and clawguard's secrets travel in tar streams on stdin.

Exec names the sandbox, not the pod, so a pod replaced between the locate and a
command would receive it: each command first checks that the sandbox is still the
located instance (one ``GetSandbox``), and raises SandboxGone otherwise.

Keeping it running. A sandbox in ERROR, STOPPED or COMPLETED (a container, Docker
daemon or host restart leaves it in ERROR) is started again with ``StartSandbox``
when ``start_stopped`` is on, with backoff; where OpenShell refuses (a crash or OOM
death needs delete and create) the locate says so and the daemon keeps reporting it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import grpc
import structlog

from ..errors import SandboxGone, SandboxStarted, TargetError
from ..schema import Bool, Field, Int, Str
from .base import (
    _PID_LINE,
    _SAY_PID,
    Discovery,
    ExecResult,
    Found,
    Instance,
    OutputTooLarge,
    Sink,
    Target,
    _without_pid,
)

log = structlog.get_logger("clawguard.targets.openshell")

# The gateway's own limits (OpenShell's exec validation, reference "Generation 3").
MAX_ARGS = 1024
MAX_ARG_BYTES = 32 * 1024
MAX_ARGV_BYTES = 256 * 1024
MAX_REQUEST_BYTES = 4 * 1024 * 1024
# Input above this goes through ExecSandboxInteractive: a unary request must stay under
# MAX_REQUEST_BYTES with its argv and framing.
UNARY_STDIN_BYTES = 1024 * 1024
STDIN_CHUNK = 1024 * 1024
# While a watched sandbox is gone, how often the gateway is asked whether it exists again.
WAIT_FOR_CREATE = 0.25
STDERR_KEPT = 64 * 1024
# Where a non-login shell finds commands; npm's global bin (/usr/local/bin) holds openclaw.
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# SandboxPhase (openshell.v1).
PHASES = {
    0: "UNSPECIFIED",
    1: "PROVISIONING",
    2: "READY",
    3: "ERROR",
    4: "DELETING",
    5: "UNKNOWN",
    6: "STOPPING",
    7: "STOPPED",
    8: "STARTING",
    9: "COMPLETED",
}
READY = 2
STARTABLE = {3, 7, 9}  # ERROR, STOPPED, COMPLETED
_NAME = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_GATEWAY = r"[A-Za-z0-9][A-Za-z0-9_.-]*"

# Reads the real command's argv from stdin, in front of its input: a first line with the
# script's length in bytes, then the script (``set -- ARGS; exec "$@"``, every argument
# quoted by shlex), then the command's own stdin, untouched. dd with bs=1 never reads
# past the script.
_ARGV_ON_STDIN = 'IFS= read -r n || exit 3; script=$(dd bs=1 count="$n" 2>/dev/null) || exit 3; eval "$script"'


@dataclass(frozen=True)
class Incarnation:
    """What the gateway says the sandbox is now."""

    id: str  # metadata.id
    agent_pod: str
    main_process: str  # main_process_instance_id
    phase: int
    host_key_fingerprint: str

    @property
    def instance_id(self) -> str:
        return hashlib.sha256(f"{self.id}\0{self.agent_pod}".encode()).hexdigest()

    def change_from(self, before: Incarnation | None) -> str | None:
        """What a change from ``before`` means, or None when nothing that matters changed."""
        if before is None:
            return None
        if self.id != before.id:
            return "re-created (new sandbox id: everything is gone)"
        if self.agent_pod != before.agent_pod:
            return "pod re-created (new agent_pod: /sandbox may survive, the rest is new)"
        if self.main_process != before.main_process:
            return "main process relaunched (files stay; the gateway may be gone)"
        if self.phase != before.phase:
            return f"phase {PHASES.get(self.phase, self.phase)}"
        return None


def _sdk() -> Any:
    """The OpenShell SDK, imported when first needed: only this target uses it."""
    try:
        import openshell
        from openshell._proto import datamodel_pb2, openshell_pb2, openshell_pb2_grpc
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise TargetError(f"the OpenShell SDK (PyPI openshell) is not installed: {exc}") from None
    return openshell, datamodel_pb2, openshell_pb2, openshell_pb2_grpc


def config_home() -> Path:
    """Where the OpenShell CLI keeps its gateways (the SDK reads the same place)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "openshell"


def active_gateway() -> str | None:
    """The gateway the OpenShell CLI would use: $OPENSHELL_GATEWAY, else active_gateway."""
    named = os.environ.get("OPENSHELL_GATEWAY", "").strip()
    if named:
        return named
    with contextlib.suppress(OSError):
        return (config_home() / "active_gateway").read_text().strip() or None
    return None


def known_gateways() -> list[str]:
    """Every gateway the OpenShell CLI has registered on this machine."""
    root = config_home() / "gateways"
    with contextlib.suppress(OSError):
        return sorted(p.name for p in root.iterdir() if (p / "metadata.json").is_file())
    return []


def _code(exc: grpc.RpcError) -> grpc.StatusCode | None:
    code = getattr(exc, "code", None)
    return code() if callable(code) else None


def _details(exc: grpc.RpcError) -> str:
    details = getattr(exc, "details", None)
    text = details() if callable(details) else str(exc)
    return str(text or _code(exc) or "no details")[:300]


def fit_argv(argv: Sequence[str], stdin: bytes | None) -> tuple[list[str], bytes | None]:
    """``argv`` and ``stdin`` as the gateway accepts them: unchanged when within its limits,
    else a short command that reads the quoted argv from stdin, in front of the input."""
    sizes = [len(arg.encode()) for arg in argv]
    if len(argv) <= MAX_ARGS and max(sizes, default=0) <= MAX_ARG_BYTES and sum(sizes) <= MAX_ARGV_BYTES:
        return list(argv), stdin
    script = ("set -- " + " ".join(shlex.quote(arg) for arg in argv) + '\nexec "$@"\n').encode()
    return ["sh", "-c", _ARGV_ON_STDIN], b"%d\n" % len(script) + script + (stdin or b"")


class OpenShellTarget(Target):
    kind = "openshell"
    generation = 3
    runs_as_root = False
    params = {
        "gateway": Field(
            Str(pattern=_GATEWAY, hint="an OpenShell gateway name"),
            "The OpenShell gateway, as the OpenShell CLI registered it under ~/.config/openshell/gateways/. "
            "Default: the active one ($OPENSHELL_GATEWAY, else ~/.config/openshell/active_gateway).",
            example="openshell",
        ),
        "workspace": Field(
            Str(pattern=_NAME, hint="an OpenShell workspace name"), "The sandbox's workspace.", "default"
        ),
        "name": Field(
            Str(pattern=_NAME, hint="an OpenShell sandbox name"),
            "The sandbox's name in OpenShell. Default: the config's name for the sandbox.",
            example="my-assistant",
        ),
        "start_stopped": Field(
            Bool(),
            "Start the sandbox again with StartSandbox when the gateway reports it ERROR, STOPPED or "
            "COMPLETED (what a container, Docker daemon or host restart leaves), with backoff.",
            True,
        ),
        "recover": Field(
            Str(choices=("start", "recreate")),
            "What to do with a sandbox OpenShell refuses to start (a crash or OOM death needs delete and create). "
            "start: keep asking and report it; recreate: delete it and create it again from the spec recorded "
            "while it ran, then restore it like any re-created sandbox. recreate deletes the sandbox's own "
            "files: whatever neither the archive nor the last capture holds is lost (docs/targets.md).",
            "start",
        ),
        "timeout": Field(Int(minimum=1, maximum=3600), "Seconds allowed for one command.", 120),
        "call_timeout": Field(Int(minimum=1, maximum=600), "Seconds allowed for one gateway call.", 15),
    }

    def __init__(self, sandbox: str, values: Mapping[str, Any]) -> None:
        super().__init__(sandbox, values)
        self.name: str = self.values.get("name") or sandbox
        self.workspace: str = self.values["workspace"]
        self._client: Any = None
        self._stub: Any = None
        self._gateway_name: str | None = self.values.get("gateway")
        self._lock = threading.Lock()
        self._seen: Incarnation | None = None
        self._start_backoff = 1.0
        self._next_start = 0.0
        self._recorded_for: str | None = None

    # ------------------------------------------------------------- plumbing

    @property
    def _call_timeout(self) -> float:
        return float(self.values["call_timeout"])

    @property
    def gateway_name(self) -> str:
        name = self._gateway_name or active_gateway()
        if not name:
            raise TargetError(
                "no OpenShell gateway is active (no $OPENSHELL_GATEWAY, no "
                f"{config_home() / 'active_gateway'}): set target.gateway, or run `openshell gateway select`"
            )
        return name

    def identity(self) -> tuple[object, ...]:
        return ("openshell", self._gateway_name or "(active)", self.workspace, self.name)

    def _connect(self) -> tuple[Any, Any]:
        with self._lock:
            if self._stub is None:
                openshell, _, _, grpc_stubs = _sdk()
                gateway = self.gateway_name
                try:
                    client = openshell.SandboxClient.from_active_cluster(cluster=gateway, timeout=self._call_timeout)
                except Exception as exc:  # the SDK's SandboxError, OSError for unreadable key files
                    raise TargetError(f"OpenShell gateway {gateway}: {exc}") from None
                # The SDK's own channel (its TLS and credentials); the generated stub for the
                # calls the SDK does not wrap, as the SDK's WorkspaceClient does.
                self._client, self._stub = client, grpc_stubs.OpenShellStub(client._channel)
            return self._client, self._stub

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                with contextlib.suppress(Exception):
                    self._client.close()
            self._client = self._stub = None

    def _scope(self) -> Any:
        _, datamodel, _, _ = _sdk()
        return datamodel.WorkspaceSelector(workspace=self.workspace)

    def _where(self) -> str:
        return f"sandbox {self.name} in workspace {self.workspace} on OpenShell gateway {self.gateway_name}"

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except grpc.RpcError as exc:
            code = _code(exc)
            if code == grpc.StatusCode.NOT_FOUND:
                raise TargetError(f"{self._where()}: not found (deleted, or not yours)") from None
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                self.close()  # a new channel next time: the gateway may have restarted
                raise TargetError(f"OpenShell gateway {self.gateway_name} is unreachable: {_details(exc)}") from None
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                raise TargetError(
                    f"OpenShell gateway {self.gateway_name} refused clawguard's credentials ({what}): {_details(exc)}"
                ) from None
            raise TargetError(f"OpenShell gateway {self.gateway_name}: {what} failed: {_details(exc)}") from None

    def incarnation(self) -> Incarnation:
        """What the gateway says the sandbox is now. Raises TargetError."""
        return _incarnation(self._get())

    def _get(self) -> Any:
        _, stub = self._connect()
        _, _, pb, _ = _sdk()
        request = pb.GetSandboxRequest(workspace_scope=self._scope(), name=self.name)
        return self._call("GetSandbox", partial(stub.GetSandbox, request, timeout=self._call_timeout)).sandbox

    # ------------------------------------------------------------- recover: recreate

    @property
    def _spec_file(self) -> Path:
        from ..state import StateStore  # the sandbox's own state directory (0700)

        return StateStore().sandbox_dir(self.sandbox) / "openshell-create.binpb"

    def _record(self, sandbox: Any) -> None:
        """Keep what CreateSandbox needs to make this sandbox again, as it runs now."""
        _, _, pb, _ = _sdk()
        request = pb.CreateSandboxRequest(
            workspace_scope=self._scope(),
            name=self.name,
            spec=sandbox.spec,
            labels=dict(sandbox.metadata.labels),
            annotations=dict(sandbox.metadata.annotations),
        )
        try:
            path = self._spec_file
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(request.SerializeToString())
            tmp.replace(path)
        except OSError as exc:
            log.warning("openshell.spec_not_recorded", sandbox=self.sandbox, error=str(exc))
            return
        self._recorded_for = sandbox.metadata.id
        log.info("openshell.spec_recorded", sandbox=self.sandbox, sandbox_id=sandbox.metadata.id[:8])

    def _recreate(self, why: str) -> NoReturn:
        """Delete the sandbox OpenShell will not start, and create it again from its recorded spec."""
        _, stub = self._connect()
        _, _, pb, _ = _sdk()
        try:
            request = pb.CreateSandboxRequest.FromString(self._spec_file.read_bytes())
        except (OSError, ValueError) as exc:
            raise SandboxStarted(
                f"{why}: recover: recreate has no recorded spec to create it from ({exc}); it is recorded while "
                "the sandbox runs",
                outcome="refused",
            ) from None
        request.request_id = str(uuid.uuid4())
        delete = pb.DeleteSandboxRequest(
            workspace_scope=self._scope(), name=self.name, allow_missing=True, request_id=str(uuid.uuid4())
        )
        self._call("DeleteSandbox", partial(stub.DeleteSandbox, delete, timeout=self._call_timeout))
        deadline = time.monotonic() + float(self.values["timeout"])
        while True:  # DeleteSandbox may answer before the name is free again
            try:
                stub.CreateSandbox(request, timeout=self._call_timeout)
                break
            except grpc.RpcError as exc:
                if _code(exc) != grpc.StatusCode.ALREADY_EXISTS or time.monotonic() > deadline:
                    raise SandboxStarted(f"{why}: CreateSandbox failed: {_details(exc)}", outcome="refused") from None
                time.sleep(0.5)
        log.warning("openshell.recreated", sandbox=self.sandbox, reason=why)
        raise SandboxStarted(
            f"{why}: deleted and created again from its recorded spec (recover: recreate)", outcome="recreated"
        )

    # --------------------------------------------------------------- locate

    def locate(self) -> Instance:
        sandbox_message = self._get()
        now = _incarnation(sandbox_message)
        change = now.change_from(self._seen)
        if change:
            log.info("openshell.changed", sandbox=self.sandbox, change=change, phase=PHASES.get(now.phase))
        self._seen = now
        if now.phase != READY:
            phase = PHASES.get(now.phase, str(now.phase))
            if now.phase in STARTABLE and self.values["start_stopped"]:
                try:
                    self._start(f"{self._where()} is {phase}")
                except SandboxStarted as event:
                    raise self.started(event) from None
            raise TargetError(f"{self._where()} is {phase}, not READY")
        self._start_backoff = 1.0
        if self.values["recover"] == "recreate" and self._recorded_for != now.id:
            self._record(sandbox_message)
        short = now.id[:8]
        where = f"{self._where()} (id {short}, pod {now.agent_pod[:12] or '?'})"
        return Instance(now.instance_id, where)

    def _start(self, why: str) -> NoReturn:
        """Ask the gateway to start the sandbox, at most once per backoff step. Raises
        SandboxStarted when it asked (refused or not), TargetError while it waits."""
        if time.monotonic() < self._next_start:
            raise TargetError(f"{why}: started again; waiting (next try in {self._next_start - time.monotonic():.0f}s)")
        _, stub = self._connect()
        _, _, pb, _ = _sdk()
        request = pb.StartSandboxRequest(workspace_scope=self._scope(), name=self.name, request_id=str(uuid.uuid4()))
        self._next_start = time.monotonic() + self._start_backoff
        self._start_backoff = min(self._start_backoff * 2, 180.0)
        try:
            stub.StartSandbox(request, timeout=self._call_timeout)
        except grpc.RpcError as exc:
            log.warning("openshell.start_refused", sandbox=self.sandbox, error=_details(exc))
            if _code(exc) == grpc.StatusCode.FAILED_PRECONDITION:
                if self.values["recover"] == "recreate":
                    self._recreate(f"{why}; OpenShell refuses to start it ({_details(exc)})")
                raise SandboxStarted(
                    f"{why}: OpenShell refuses to start it ({_details(exc)}); a crash or OOM death needs "
                    "`openshell sandbox delete` and create (or recover: recreate)",
                    outcome="refused",
                ) from None
            raise SandboxStarted(f"{why}: StartSandbox failed: {_details(exc)}", outcome="refused") from None
        log.info("openshell.start_requested", sandbox=self.sandbox)
        raise SandboxStarted(f"{why}: asked the gateway to start it (StartSandbox)")

    def host_key_fingerprint(self, instance: Instance) -> str | None:
        """The fingerprint the gateway publishes for the sandbox, read now (stable per sandbox id,
        new when it is re-created): only for the located instance."""
        now = self.incarnation()
        return now.host_key_fingerprint if now.instance_id == instance.id else None

    @classmethod
    def discover(cls, into: Discovery) -> None:
        """Every READY sandbox of every gateway the OpenShell CLI registered on this machine."""
        gateways = known_gateways()
        active = active_gateway()
        for gateway in gateways:
            probe = cls("discovery", {"gateway": gateway})
            try:
                sandboxes = probe._list()
            except TargetError as exc:
                into.notes.append(f"OpenShell gateway {gateway}: skipped: {exc}")
                continue
            finally:
                probe.close()
            for name, workspace, phase in sandboxes:
                if phase != READY:
                    into.notes.append(f"{name} ({cls.kind}, gateway {gateway}): {PHASES.get(phase, phase)}, skipped")
                    continue
                keys: dict[str, Any] = {"kind": cls.kind}
                if gateway != active:
                    keys["gateway"] = gateway
                if workspace != "default":
                    keys["workspace"] = workspace
                target = cls(name, keys)
                found = partial(
                    Found, name, cls.kind, keys, gateway, generation=cls.generation, keys_if_renamed={"name": name}
                )
                into.add(target, found)
                target.close()

    def _list(self) -> list[tuple[str, str, int]]:
        _, stub = self._connect()
        _, datamodel, pb, _ = _sdk()
        found: list[tuple[str, str, int]] = []
        token = ""
        while True:
            request = pb.ListSandboxesRequest(
                workspace_scope=datamodel.WorkspaceSelector(all_workspaces={}), page_size=1000, page_token=token
            )
            page = self._call("ListSandboxes", partial(stub.ListSandboxes, request, timeout=self._call_timeout))
            for sandbox in page.sandboxes:
                found.append((sandbox.metadata.name, sandbox.metadata.workspace or "default", sandbox.status.phase))
            token = page.next_page_token
            if not token:
                return found

    # ----------------------------------------------------------------- exec

    def _same(self, instance: Instance) -> None:
        now = self.incarnation()
        if now.instance_id != instance.id:
            raise SandboxGone(f"{self._where()} was replaced (the located pod {instance.short_id} is gone)")
        if now.phase != READY:
            raise SandboxGone(f"{self._where()} is {PHASES.get(now.phase, now.phase)}, not READY")

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
        # ``user`` cannot be chosen: the gateway runs every command as the sandbox user.
        self._same(instance)
        command, data = fit_argv(argv, stdin)
        _, stub = self._connect()
        _, _, pb, _ = _sdk()
        start = pb.ExecSandboxRequest(
            workspace_scope=self._scope(),
            sandbox=self.name,
            command=command,
            # bash -c, not -lc: a login shell would first run the sandbox user's ~/.profile,
            # which is the agent's to write, before each of clawguard's commands.
            no_login_shell=True,
            environment={"PATH": SANDBOX_PATH},
            execution_timeout={"seconds": int(self.values["timeout"])},
            request_id=str(uuid.uuid4()),
        )
        deadline = float(self.values["timeout"]) + 30
        if data is not None and len(data) > UNARY_STDIN_BYTES:
            events = stub.ExecSandboxInteractive(_frames(pb, start, data), timeout=deadline)
        else:
            if data is not None:
                start.stdin = data
            events = stub.ExecSandbox(start, timeout=deadline)
        try:
            return _collect(events, out, limit)
        except grpc.RpcError as exc:
            code = _code(exc)
            if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                raise SandboxGone(f"{self._where()}: {_details(exc)}") from None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TargetError(f"a command in {self._where()} did not finish in {deadline:.0f}s") from None
            if code == grpc.StatusCode.UNAVAILABLE:
                self.close()
            raise TargetError(f"OpenShell gateway {self.gateway_name}: a command failed: {_details(exc)}") from None
        finally:
            cancel = getattr(events, "cancel", None)
            if callable(cancel):
                cancel()

    def exec_limited(
        self, instance: Instance, argv: Sequence[str], out: Sink, *, limit: int, user: str | None = None
    ) -> ExecResult:
        """As Target.exec_limited, without assuming the runtime makes each exec a session
        leader: the command gets a session of its own (setsid), and the kill runs as the
        sandbox user, who owns it."""
        wrapped = ["setsid", "sh", "-c", _SAY_PID, "sh", *argv]
        try:
            result = self.exec(instance, wrapped, None, out=out, limit=limit)
        except OutputTooLarge as exc:
            said = _PID_LINE.match(exc.stderr)
            pid = said.group(1) if said else b""
            if pid and int(pid) > 1:
                with contextlib.suppress(TargetError):
                    self.exec(instance, ["sh", "-c", 'kill -9 "-$1" 2>/dev/null; true', "sh", pid.decode()])
            raise OutputTooLarge(str(exc), _without_pid(exc.stderr)) from None
        return ExecResult(result.code, result.stdout, _without_pid(result.stderr))

    # ---------------------------------------------------------------- watch

    def watch(self, wake: Callable[[str], None], stop: threading.Event) -> None:
        """WatchSandbox: the first message is a full snapshot, then one per status change.
        Every change of identity, pod, main process or phase wakes the daemon, also across
        streams: the stream ends when the sandbox is deleted, and while it is gone the
        gateway is asked every WAIT_FOR_CREATE seconds until it exists again (a re-created
        sandbox is noticed as soon as it is there, not at the daemon's backoff). A failure
        raises, and the daemon backs off and calls again."""
        last: Incarnation | None = self._seen
        while not stop.is_set():
            try:
                last = self._follow(wake, stop, last)
            except grpc.RpcError as exc:
                if stop.is_set() or _code(exc) == grpc.StatusCode.CANCELLED:
                    return
                if _code(exc) != grpc.StatusCode.NOT_FOUND:
                    if _code(exc) == grpc.StatusCode.UNAVAILABLE:
                        self.close()
                    wake("OpenShell: the watch broke")  # whatever happened meanwhile is looked at now
                    raise TargetError(f"WatchSandbox on gateway {self.gateway_name} failed: {_details(exc)}") from None
            if stop.is_set():
                return
            wake("OpenShell: the sandbox is gone (deleted)")
            while not stop.wait(WAIT_FOR_CREATE):
                try:
                    self.incarnation()
                    break
                except TargetError as exc:
                    if "not found" not in str(exc):
                        raise

    def _follow(
        self, wake: Callable[[str], None], stop: threading.Event, last: Incarnation | None
    ) -> Incarnation | None:
        """One WatchSandbox stream, until it ends (the sandbox was deleted); the last snapshot."""
        _, stub = self._connect()
        _, _, pb, _ = _sdk()
        request = pb.WatchSandboxRequest(workspace_scope=self._scope(), sandbox=self.name, follow_status=True)
        stream = stub.WatchSandbox(request)
        done = threading.Event()

        def cancel_on_stop() -> None:
            while not done.is_set():
                if stop.wait(0.5):
                    stream.cancel()
                    return

        threading.Thread(target=cancel_on_stop, name=f"openshell-watch-{self.sandbox}", daemon=True).start()
        try:
            for event in stream:
                if not event.HasField("sandbox"):
                    continue
                now = _incarnation(event.sandbox)
                change = now.change_from(last)
                last = now
                if change:
                    wake(f"OpenShell: {change}")
            return last
        finally:
            done.set()


def _incarnation(sandbox: Any) -> Incarnation:
    return Incarnation(
        id=sandbox.metadata.id,
        agent_pod=sandbox.status.agent_pod,
        main_process=sandbox.status.main_process_instance_id,
        phase=int(sandbox.status.phase),
        host_key_fingerprint=sandbox.host_key_fingerprint,
    )


def _frames(pb: Any, start: Any, data: bytes) -> Iterator[Any]:
    """ExecSandboxInteractive's input: the start frame, the input in chunks, then the
    half-close (the end of this iterator), which is EOF on the command's stdin."""
    yield pb.ExecSandboxInput(start=start)
    for at in range(0, len(data), STDIN_CHUNK):
        yield pb.ExecSandboxInput(stdin=data[at : at + STDIN_CHUNK])


def _collect(events: Any, out: Sink | None, limit: int | None) -> ExecResult:
    stdout: list[bytes] = []
    stderr = bytearray()
    size = 0
    code: int | None = None
    for event in events:
        kind = event.WhichOneof("payload")
        if kind == "stdout":
            chunk = event.stdout.data
            size += len(chunk)
            if limit is not None and size > limit:
                raise OutputTooLarge(f"the output passed {limit} bytes", bytes(stderr))
            if out is not None:
                out.write(chunk)
            else:
                stdout.append(chunk)
        elif kind == "stderr":
            stderr += event.stderr.data
            del stderr[:-STDERR_KEPT]
        elif kind == "exit":
            code = int(event.exit.exit_code)
    if code is None:
        raise TargetError("the OpenShell gateway ended a command's stream without its exit status")
    return ExecResult(code, b"".join(stdout), bytes(stderr))
