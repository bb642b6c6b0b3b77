"""A stand-in OpenShell 0.1.x gateway ("generation 3") for the test bed, and its manager.

OpenShell 0.1.x's real gateway cannot run here. :mod:`testbed._gateway_server` serves the same
gRPC API from the SDK's own generated code (``openshell._proto``), with mTLS on 127.0.0.1, as a
process of its own; its sandboxes are Docker containers running the real OpenClaw. See that
module for what it does and how strict it is.

Files, under ``home`` (it plays ``$XDG_CONFIG_HOME``)::

    openshell/active_gateway                    the gateway's name
    openshell/gateways/<name>/metadata.json     endpoint https://127.0.0.1:<port>, auth_mode mtls
    openshell/gateways/<name>/mtls/             ca.crt, tls.crt, tls.key (the client's)
    openshell/gateways/<name>/exec.log          the first 120 characters of every exec'd command
    openshell/gateways/<name>/standin/          the server's own: keys, state.json, server.log, pid

The real SDK finds the gateway through ``$XDG_CONFIG_HOME``: set it to ``home``
(:meth:`GatewayStandin.env`), or use :meth:`GatewayStandin.client`, which sets it while it
builds the client.

Python::

    gw = GatewayStandin(Path("/tmp/gw"))       # gateway "openshell"
    gw.up()                                    # start the server process (if not running)
    sandbox_id = gw.create("my-assistant")     # through CreateSandbox; waits until READY
    client = gw.client()                       # openshell.SandboxClient.from_active_cluster(...)
    client.exec("my-assistant", ["id", "-u"], workspace="default")
    gw.replace_pod("my-assistant")             # a new container, /sandbox kept
    gw.down(); gw.up()                         # a gateway outage: sandboxes keep running
    gw.destroy()                               # server, sandboxes, volumes and files gone

CLI: ``python -m testbed.openshell_gateway COMMAND --home DIR [--name NAME] ...`` or
``python -m testbed gateway COMMAND ...``; ``serve`` runs the server in the foreground, ``up``
starts it in the background; also ``down``, ``destroy``, ``status``, ``create``, ``delete``,
``recreate``, ``replace-pod``, ``restart-main``, ``fail``, ``crash``, ``exec``, ``exec-log``
and ``env``.

Not modeled (the stand-in answers UNIMPLEMENTED, or ignores the field):

* authentication other than mTLS (OIDC/bearer), users, authorization, workspace management
  (workspaces are names that scope sandboxes, nothing more); ``Health`` needs the client
  certificate too, since the TLS layer asks for it;
* the sandbox policy (Landlock, seccomp, network policy), providers, SSH sessions and
  ``ForwardTcp``, services, workload templates, sandbox logs and platform events
  (``follow_logs``/``follow_events`` stream nothing), draft policies;
* restart policies (``spec.restart_policy``): every sandbox behaves as ``never``;
* ``spec.command``, ``spec.environment``, resources: ignored; ``spec.template.image`` (or the
  ``testbed.openshell-v1/agent`` label) only chooses the agent version, ``openclaw:<version>``;
* the separate supervisor container/pod; the main process is ``sleep infinity`` (not the image's
  command), and nothing starts the OpenClaw gateway (as in NemoClaw's pods, #2042);
* watch cursors are known only to the server process that handed them out: after a gateway
  restart every old cursor is ``OUT_OF_RANGE``;
* which deaths count as crashes is this stand-in's reading of the docs: an OOM kill, or a main
  process / container init that exits non-zero by itself (not SIGKILL/SIGTERM of the container);
* a TTY exec is approximate (EOF is a ^D), and a timeout kills the command's process tree, not
  processes that left it (daemons re-parented to init);
* errors carry a message, but no ``google.rpc`` details (BadRequest, ErrorInfo).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import docker
import docker.errors
import grpc  # type: ignore[import-untyped, unused-ignore]
from docker.models.containers import Container
from openshell import SandboxClient, SandboxError
from openshell._proto import datamodel_pb2, openshell_pb2, openshell_pb2_grpc

from clawguard.targets._docker import ExecTimeout, exec_in

from ._gateway_server import (
    AGENT_LABEL,
    CONTROL_METHOD,
    DEFAULT_AGENT,
    DEFAULT_WORKSPACE,
    LABEL_GATEWAY,
    LABEL_HOME,
    LABEL_SANDBOX_NAME,
    LABEL_WORKSPACE,
    MAIN_MARKER_ENV,
    UID_LABEL,
    GatewayPaths,
    check_name,
    home_key,
    phase_name,
    serve,
    unescape_log,
)
from ._images import DEFAULT_SANDBOX_UID
from ._spec import LABEL_SANDBOX_UID
from ._testbed import TestbedError

__all__ = ["DEFAULT_AGENT", "GatewayStandin"]

log = logging.getLogger("testbed")

_REPO = Path(__file__).resolve().parents[1]
_ENV_LOCK = threading.Lock()
# Signal every process of the main process's instance (run as the sandbox user).
_SIGNAL_MAIN = """\
sig=$1 prefix=$2
for p in /proc/[0-9]*; do
  { tr '\\0' '\\n' <"$p/environ" | grep -q "^$prefix"; } 2>/dev/null && kill "-$sig" "${p#/proc/}" 2>/dev/null
done
true
"""


@contextlib.contextmanager
def _config_home(home: Path) -> Iterator[None]:
    """``$XDG_CONFIG_HOME`` = ``home`` for the duration (the SDK reads it when a client is made)."""
    with _ENV_LOCK:
        old = os.environ.get("XDG_CONFIG_HOME")
        os.environ["XDG_CONFIG_HOME"] = str(home)
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("XDG_CONFIG_HOME", None)
            else:
                os.environ["XDG_CONFIG_HOME"] = old


def scope(workspace: str = DEFAULT_WORKSPACE) -> datamodel_pb2.WorkspaceSelector:
    return datamodel_pb2.WorkspaceSelector(workspace=workspace)


class GatewayStandin:
    """One stand-in OpenShell 0.1.x gateway (``name``) whose client config lives under ``home``."""

    __test__ = False  # not a pytest test class

    def __init__(self, home: Path, name: str = "openshell") -> None:
        self.home = Path(home).resolve()
        self.name = check_name(name)
        self.paths = GatewayPaths(self.home, self.name)
        self._client: SandboxClient | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._docker: docker.DockerClient | None = None

    # -------------------------------------------------------------- process

    def env(self) -> dict[str, str]:
        """The environment the real SDK and CLI need to find this gateway."""
        return {"XDG_CONFIG_HOME": str(self.home), "OPENSHELL_GATEWAY": self.name}

    @property
    def endpoint(self) -> str:
        """``https://127.0.0.1:<port>`` from metadata.json."""
        return str(json.loads(self.paths.metadata.read_text())["gateway_endpoint"])

    def running(self) -> bool:
        """Whether the server process holds its lock."""
        if not self.paths.lock.exists():
            return False
        with self.paths.lock.open("a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
        return False

    def up(self, timeout: float = 60.0) -> None:
        """Start the server process unless it runs; return once ``Health`` answers."""
        if not self.running():
            self._drop_client()
            self.paths.standin.mkdir(parents=True, exist_ok=True)
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")])),
            }
            argv = [sys.executable, "-m", "testbed.openshell_gateway", "serve", "--home", str(self.home)]
            argv += ["--name", self.name]
            with self.paths.server_log.open("ab") as out:
                self._proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, cwd=_REPO, start_new_session=True
                )
        started = time.monotonic()
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise TestbedError(f"the gateway stand-in exited ({self._proc.returncode}):\n{self._log_tail()}")
            if self.paths.metadata.is_file() and self.paths.pid.is_file():
                try:
                    self.client().health()
                    return
                except grpc.RpcError:
                    self._drop_client()
            if time.monotonic() - started > timeout:
                raise TestbedError(f"the gateway stand-in did not answer within {timeout}s:\n{self._log_tail()}")
            time.sleep(0.1)

    def _log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.paths.server_log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def down(self, timeout: float = 30.0) -> None:
        """Stop the server process; the sandboxes keep running."""
        self._drop_client()
        pid = None
        with contextlib.suppress(OSError, ValueError):
            pid = int(self.paths.pid.read_text().strip())
        if pid is not None and self.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        started = time.monotonic()
        while self.running():
            if time.monotonic() - started > timeout:
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.5)
                break
            time.sleep(0.05)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
            self._proc = None

    def destroy(self) -> None:
        """Stop the server and remove its sandboxes (containers, volumes) and all its files."""
        self.down()
        client = self.docker
        filters = {"label": [f"{LABEL_GATEWAY}={self.name}", f"{LABEL_HOME}={home_key(self.home)}"]}
        for c in client.api.containers(all=True, filters=filters):
            with contextlib.suppress(docker.errors.NotFound):
                client.api.remove_container(c["Id"], force=True)
        for v in client.api.volumes(filters=filters).get("Volumes") or []:
            with contextlib.suppress(docker.errors.NotFound):
                client.api.remove_volume(v["Name"], force=True)
        shutil.rmtree(self.paths.gateway_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            if self.paths.active_gateway.read_text().strip() == self.name:
                self.paths.active_gateway.unlink()

    # -------------------------------------------------------------- clients

    @property
    def docker(self) -> docker.DockerClient:
        if self._docker is None:
            try:
                self._docker = docker.from_env(timeout=120)
            except docker.errors.DockerException as exc:
                raise TestbedError(f"cannot reach the Docker daemon ({exc})") from exc
        return self._docker

    def client(self, timeout: float = 60.0) -> SandboxClient:
        """``SandboxClient.from_active_cluster(cluster=name)`` with ``$XDG_CONFIG_HOME`` = home (kept until down)."""
        if self._client is None:
            with _config_home(self.home):
                self._client = SandboxClient.from_active_cluster(cluster=self.name, timeout=timeout)
        return self._client

    def stub(self) -> Any:
        """The generated ``OpenShellStub`` on the SDK client's channel (for Watch and interactive exec)."""
        make: Any = openshell_pb2_grpc.OpenShellStub
        return make(self.client()._channel)

    def _drop_client(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    def _control(self, op: str, name: str = "", workspace: str = DEFAULT_WORKSPACE) -> bytes:
        call: Any = self.client()._channel.unary_unary(CONTROL_METHOD)
        request = json.dumps({"op": op, "name": name, "workspace": workspace}).encode()
        return bytes(call(request, timeout=900))

    # ------------------------------------------------------------ sandboxes

    def get(self, name: str, workspace: str = DEFAULT_WORKSPACE) -> openshell_pb2.Sandbox:
        response = self.stub().GetSandbox(openshell_pb2.GetSandboxRequest(workspace_scope=scope(workspace), name=name))
        sandbox: openshell_pb2.Sandbox = response.sandbox
        return sandbox

    def wait_phase(
        self, name: str, phases: Sequence[int], workspace: str = DEFAULT_WORKSPACE, timeout: float = 900.0
    ) -> openshell_pb2.Sandbox:
        """Follow WatchSandbox until the sandbox is in one of ``phases``; its snapshot then."""
        request = openshell_pb2.WatchSandboxRequest(workspace_scope=scope(workspace), sandbox=name, follow_status=True)
        stream = self.stub().WatchSandbox(request, timeout=timeout)
        try:
            for event in stream:
                if event.WhichOneof("payload") != "sandbox":
                    continue
                sandbox: openshell_pb2.Sandbox = event.sandbox
                if sandbox.status.phase in phases:
                    return sandbox
                if sandbox.status.phase == openshell_pb2.SANDBOX_PHASE_ERROR:
                    raise TestbedError(f"sandbox {name} is in ERROR: {list(sandbox.status.conditions)}")
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TestbedError(
                    f"sandbox {name} did not reach {[phase_name(p) for p in phases]} in {timeout}s"
                ) from exc
            raise
        finally:
            stream.cancel()
        raise TestbedError(f"sandbox {name} was deleted while waiting")

    def create(
        self,
        name: str,
        agent: str = DEFAULT_AGENT,
        uid: int = DEFAULT_SANDBOX_UID,
        workspace: str = DEFAULT_WORKSPACE,
        timeout: float = 900.0,
    ) -> str:
        """CreateSandbox through the real SDK (agent and uid as labels); wait until READY; its id."""
        labels = {AGENT_LABEL: agent, UID_LABEL: str(uid)}
        ref = self.client().create(workspace=workspace, name=name, labels=labels)
        self.wait_phase(name, [openshell_pb2.SANDBOX_PHASE_READY], workspace, timeout)
        return ref.id

    def delete(self, name: str, workspace: str = DEFAULT_WORKSPACE, timeout: float = 120.0) -> None:
        """DeleteSandbox and wait until it is gone."""
        self.client().delete(name, workspace=workspace, allow_missing=True)
        started = time.monotonic()
        while True:
            try:
                self.get(name, workspace)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    return
                raise
            if time.monotonic() - started > timeout:
                raise TestbedError(f"sandbox {name} was not deleted within {timeout}s")
            time.sleep(0.1)

    def recreate(self, name: str, workspace: str = DEFAULT_WORKSPACE, timeout: float = 900.0) -> str:
        """Delete and create sandbox ``name`` again (same agent and uid): a new id, a new
        ``/sandbox`` volume, a new container; everything written before is gone. Its new id."""
        labels = dict(self.get(name, workspace).metadata.labels)
        self.delete(name, workspace)
        ref = self.client().create(workspace=workspace, name=name, labels=labels)
        self.wait_phase(name, [openshell_pb2.SANDBOX_PHASE_READY], workspace, timeout)
        return ref.id

    def replace_pod(self, name: str, workspace: str = DEFAULT_WORKSPACE) -> openshell_pb2.Sandbox:
        """Remove the sandbox's container and start a new one for the same id (a re-created pod):
        new agent_pod and main_process_instance_id, ``/sandbox`` kept, the rest fresh."""
        sandbox: openshell_pb2.Sandbox = openshell_pb2.Sandbox.FromString(self._control("replace_pod", name, workspace))
        return sandbox

    def restart_main(self, name: str, workspace: str = DEFAULT_WORKSPACE) -> openshell_pb2.Sandbox:
        """Kill the main process and launch it again: new main_process_instance_id, files kept."""
        sandbox: openshell_pb2.Sandbox = openshell_pb2.Sandbox.FromString(
            self._control("restart_main", name, workspace)
        )
        return sandbox

    def phase(self, name: str, workspace: str = DEFAULT_WORKSPACE) -> str:
        """The sandbox's phase without its prefix: ``READY``, ``ERROR``, ..."""
        return phase_name(self.get(name, workspace).status.phase)

    def fail(self, name: str, workspace: str = DEFAULT_WORKSPACE, wait: bool = True) -> None:
        """``docker kill`` the sandbox's container, as a Docker-daemon or host restart does: the
        gateway notices (ERROR), and StartSandbox brings it back. ``wait``: until the gateway
        reported ERROR (however briefly: a client may start it again at once)."""
        container = self.container(name, workspace)
        self._then_error(name, workspace, wait, container.kill)

    def crash(self, name: str, workspace: str = DEFAULT_WORKSPACE, wait: bool = True) -> None:
        """Make the main process die of SIGSEGV: a crash, ERROR that StartSandbox refuses."""
        container = self.container(name, workspace)
        uid = int(container.labels.get(LABEL_SANDBOX_UID, DEFAULT_SANDBOX_UID))
        argv = ["sh", "-c", _SIGNAL_MAIN, "sh", "SEGV", f"{MAIN_MARKER_ENV}="]
        self._then_error(
            name,
            workspace,
            wait,
            lambda: exec_in(self.docker.api, str(container.id), argv, None, 30, user=f"{uid}:{uid}"),
        )

    def _then_error(self, name: str, workspace: str, wait: bool, action: Any, timeout: float = 30.0) -> None:
        """Run ``action``; with ``wait``, return once WatchSandbox reported ERROR (watched from before)."""
        if not wait:
            action()
            return
        request = openshell_pb2.WatchSandboxRequest(workspace_scope=scope(workspace), sandbox=name, follow_status=True)
        stream = self.stub().WatchSandbox(request, timeout=timeout)
        try:
            events = iter(stream)
            next(events)  # the snapshot: the watch is in place
            action()
            for event in events:
                if event.sandbox.status.phase == openshell_pb2.SANDBOX_PHASE_ERROR:
                    return
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TestbedError(f"sandbox {name} did not go to ERROR within {timeout}s") from exc
            raise
        finally:
            stream.cancel()
        raise TestbedError(f"sandbox {name} was deleted before it went to ERROR")

    def exec_log(self) -> list[str]:
        """The command prefixes the gateway logged, oldest first."""
        if not self.paths.exec_log.is_file():
            return []
        out = []
        for line in self.paths.exec_log.read_text(encoding="utf-8").splitlines():
            parts = line.split(" ", 2)
            out.append(unescape_log(parts[2]) if len(parts) == 3 else "")
        return out

    def container(self, name: str, workspace: str = DEFAULT_WORKSPACE) -> Container:
        """The sandbox's current Docker container (found by its labels, not through the gateway)."""
        labels = [
            f"{LABEL_GATEWAY}={self.name}",
            f"{LABEL_HOME}={home_key(self.home)}",
            f"{LABEL_SANDBOX_NAME}={name}",
            f"{LABEL_WORKSPACE}={workspace}",
        ]
        found: list[Container] = self.docker.containers.list(all=True, filters={"label": labels})
        if not found:
            raise TestbedError(f"sandbox {workspace}/{name} of gateway {self.name} has no container")
        running = [c for c in found if c.status == "running"]
        return (running or found)[0]

    def exec_as_sandbox_user(
        self,
        name: str,
        argv: Sequence[str],
        stdin: bytes | None = None,
        workspace: str = DEFAULT_WORKSPACE,
        timeout: float | None = 300.0,
    ) -> tuple[int, bytes, bytes]:
        """Run ``argv`` in the sandbox as its sandbox user with ``docker exec`` (not through the
        gateway: nothing in exec.log); (exit code, stdout, stderr)."""
        container = self.container(name, workspace)
        uid = int(container.labels.get(LABEL_SANDBOX_UID, DEFAULT_SANDBOX_UID))
        try:
            result = exec_in(self.docker.api, str(container.id), list(argv), stdin, timeout, user=f"{uid}:{uid}")
        except (ExecTimeout, docker.errors.APIError) as exc:
            raise TestbedError(f"exec in sandbox {name} failed: {exc}") from exc
        return result.code, result.stdout, result.stderr

    def records(self) -> list[dict[str, Any]]:
        """The server's sandbox records (the stand-in's own view, for debugging)."""
        data: list[dict[str, Any]] = json.loads(self._control("records"))
        return data


# ------------------------------------------------------------------------ CLI


def _sandbox_json(sandbox: openshell_pb2.Sandbox) -> dict[str, Any]:
    status = sandbox.status
    return {
        "id": sandbox.metadata.id,
        "name": sandbox.metadata.name,
        "workspace": sandbox.metadata.workspace,
        "phase": phase_name(status.phase),
        "agent_pod": status.agent_pod,
        "main_process_instance_id": status.main_process_instance_id,
        "restart_count": status.restart_count,
        "exit_code": status.exit_code if status.HasField("exit_code") else None,
        "host_key_fingerprint": sandbox.host_key_fingerprint,
        "image": sandbox.spec.template.image,
    }


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", type=Path, required=True, help="the gateway's $XDG_CONFIG_HOME")
    common.add_argument("--name", default="openshell", help="gateway name (default %(default)s)")
    p = argparse.ArgumentParser(
        prog="python -m testbed.openshell_gateway", description="A stand-in OpenShell 0.1.x gateway (gRPC, mTLS)."
    )
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    sv = sub.add_parser("serve", parents=[common], help="run the gateway server in the foreground")
    sv.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: the last one, or a free one)")
    sub.add_parser("up", parents=[common], help="start the server in the background (idempotent)")
    sub.add_parser("down", parents=[common], help="stop the server; the sandboxes keep running")
    sub.add_parser("destroy", parents=[common], help="stop the server, remove its sandboxes, volumes and files")
    sub.add_parser("status", parents=[common], help="list the sandboxes of every workspace as JSON")
    sub.add_parser("env", parents=[common], help="print the environment the SDK needs (shell syntax)")
    sub.add_parser("exec-log", parents=[common], help="print the logged command prefixes")
    cr = sub.add_parser("create", parents=[common], help="create a sandbox and wait until READY; prints its id")
    cr.add_argument("sandbox")
    cr.add_argument("--agent", default=DEFAULT_AGENT, help="OpenClaw version or 'standin' (default %(default)s)")
    cr.add_argument("--uid", type=int, default=DEFAULT_SANDBOX_UID)
    for cmd, text in (
        ("delete", "delete a sandbox"),
        ("recreate", "delete and create a sandbox again; prints the new id"),
        ("replace-pod", "replace the sandbox's container (keeps /sandbox); prints the sandbox as JSON"),
        ("restart-main", "kill and relaunch the main process; prints the sandbox as JSON"),
        ("fail", "docker kill the container (ERROR; StartSandbox brings it back)"),
        ("crash", "crash the main process (ERROR; StartSandbox refuses)"),
    ):
        sp = sub.add_parser(cmd, parents=[common], help=text)
        sp.add_argument("sandbox")
    for sp in [cr, *(sub.choices[c] for c in ("delete", "recreate", "replace-pod", "restart-main", "fail", "crash"))]:
        sp.add_argument("--workspace", default=DEFAULT_WORKSPACE)
    ex = sub.add_parser("exec", parents=[common], help="ExecSandbox through the gateway: exec NAME -- CMD...")
    ex.add_argument("sandbox")
    ex.add_argument("--workspace", default=DEFAULT_WORKSPACE)
    ex.add_argument("argv", nargs="*", metavar="CMD", help="the command (after --)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in given:  # exec NAME [options] -- CMD...: argparse would not take options before it
        given, command = given[: given.index("--")], given[given.index("--") + 1 :]
    args = _parser().parse_args(given)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.cmd == "serve":
            return serve(args.home.resolve(), args.name, args.port)
        gw = GatewayStandin(args.home, args.name)
        if args.cmd == "up":
            gw.up()
            print(gw.endpoint)
        elif args.cmd == "down":
            gw.down()
        elif args.cmd == "destroy":
            gw.destroy()
        elif args.cmd == "env":
            for key, value in gw.env().items():
                print(f"export {key}={value}")
        elif args.cmd == "exec-log":
            for line in gw.exec_log():
                print(json.dumps(line))
        elif args.cmd == "status":
            found = gw.client().list_all_for_all_workspaces()
            out = [_sandbox_json(gw.get(ref.name, ref.workspace)) for ref in found]
            print(json.dumps(out, indent=2))
        elif args.cmd == "create":
            print(gw.create(args.sandbox, args.agent, args.uid, args.workspace))
        elif args.cmd == "delete":
            gw.delete(args.sandbox, args.workspace)
        elif args.cmd == "recreate":
            print(gw.recreate(args.sandbox, args.workspace))
        elif args.cmd == "replace-pod":
            print(json.dumps(_sandbox_json(gw.replace_pod(args.sandbox, args.workspace)), indent=2))
        elif args.cmd == "restart-main":
            print(json.dumps(_sandbox_json(gw.restart_main(args.sandbox, args.workspace)), indent=2))
        elif args.cmd == "fail":
            gw.fail(args.sandbox, args.workspace)
        elif args.cmd == "crash":
            gw.crash(args.sandbox, args.workspace)
        elif args.cmd == "exec":
            cmd = [*args.argv, *command]
            if not cmd:
                raise TestbedError("exec needs a command after --")
            result = gw.client().exec(args.sandbox, cmd, workspace=args.workspace)
            sys.stdout.write(result.stdout)
            sys.stderr.write(result.stderr)
            return result.exit_code
    except TestbedError as exc:
        print(f"testbed error: {exc}", file=sys.stderr)
        return 1
    except grpc.RpcError as exc:
        print(f"gateway error: {exc.code()}: {exc.details()}", file=sys.stderr)
        return 1
    except SandboxError as exc:
        print(f"gateway error: {exc} (is it up? python -m testbed gateway up --home {args.home})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
