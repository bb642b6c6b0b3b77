"""The OpenShell 0.1.x gateway stand-in, driven by the real SDK and the generated stub over mTLS.

One gateway process and one real-agent sandbox (OpenClaw 2026.9.6) for the whole module; the
tests run in file order and leave the sandbox READY for the next one (the last ones crash and
re-create it).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shlex
import stat
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]
import openshell
import pytest
from openshell._proto import datamodel_pb2, openshell_pb2, openshell_pb2_grpc

from testbed.openshell_gateway import GatewayStandin

from .conftest import require_docker

pytestmark = pytest.mark.integration

NAME = "assistant"
GATEWAY = "standin-test"
AGENT = "2026.9.6"
WS = datamodel_pb2.WorkspaceSelector(workspace="default")
READY = openshell_pb2.SANDBOX_PHASE_READY
ERROR = openshell_pb2.SANDBOX_PHASE_ERROR
STOPPED = openshell_pb2.SANDBOX_PHASE_STOPPED


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayStandin]:
    require_docker()
    gateway = GatewayStandin(tmp_path_factory.mktemp("openshell-home"), GATEWAY)
    try:
        gateway.up()
        gateway.create(NAME, agent=AGENT)
        yield gateway
    finally:
        gateway.destroy()


@pytest.fixture
def client(gw: GatewayStandin, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The real SDK's client, found as the SDK finds a gateway: $XDG_CONFIG_HOME and active_gateway."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(gw.home))
    monkeypatch.delenv("OPENSHELL_GATEWAY", raising=False)
    c = openshell.SandboxClient.from_active_cluster(timeout=60)
    yield c
    c.close()


@pytest.fixture
def stub(client: Any) -> Any:
    return openshell_pb2_grpc.OpenShellStub(client._channel)


def code_of(excinfo: pytest.ExceptionInfo[BaseException]) -> Any:
    return excinfo.value.code()  # type: ignore[attr-defined]


def run(stub: Any, argv: list[str], **fields: Any) -> tuple[int, bytes, bytes, list[str]]:
    """ExecSandbox through the stub: (exit code, stdout, stderr, the kinds of events in order)."""
    request = openshell_pb2.ExecSandboxRequest(workspace_scope=WS, sandbox=NAME, command=argv, **fields)
    out, err, kinds, code = b"", b"", [], -1
    for event in stub.ExecSandbox(request, timeout=120):
        kind = event.WhichOneof("payload")
        kinds.append(kind)
        if kind == "stdout":
            out += event.stdout.data
        elif kind == "stderr":
            err += event.stderr.data
        elif kind == "exit":
            code = event.exit.exit_code
    return code, out, err, kinds


def inside(gw: GatewayStandin, script: str) -> str:
    code, out, err = gw.exec_as_sandbox_user(NAME, ["sh", "-c", script])
    assert code == 0, err
    return out.decode()


class Watcher:
    """WatchSandbox in a thread: (arrival time, event) pairs in a queue."""

    def __init__(self, stub: Any, **fields: Any) -> None:
        request = openshell_pb2.WatchSandboxRequest(workspace_scope=WS, sandbox=NAME, follow_status=True, **fields)
        self.stream = stub.WatchSandbox(request, timeout=300)
        self.events: queue.Queue[tuple[float, Any]] = queue.Queue()
        self.ended = threading.Event()  # the server ended the stream
        self.failed: queue.Queue[Any] = queue.Queue()  # or it failed: the status code
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        try:
            for event in self.stream:
                self.events.put((time.monotonic(), event))
            self.ended.set()
        except grpc.RpcError as exc:
            self.failed.put(exc.code())

    def next(self, timeout: float = 30) -> tuple[float, Any]:
        return self.events.get(timeout=timeout)

    def until(self, predicate: Any, timeout: float = 30) -> tuple[float, Any]:
        deadline = time.monotonic() + timeout
        while True:
            arrived, event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            if predicate(event.sandbox):
                return arrived, event

    def close(self) -> None:
        self.stream.cancel()


def test_client_config_is_where_the_cli_writes_it(gw: GatewayStandin) -> None:
    config = gw.home / "openshell"
    assert (config / "active_gateway").read_text() == f"{GATEWAY}\n"
    metadata = json.loads((config / "gateways" / GATEWAY / "metadata.json").read_text())
    assert metadata["auth_mode"] == "mtls"
    assert metadata["name"] == GATEWAY
    assert metadata["gateway_endpoint"].startswith("https://127.0.0.1:")
    mtls = config / "gateways" / GATEWAY / "mtls"
    assert sorted(p.name for p in mtls.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]
    assert stat.S_IMODE((mtls / "tls.key").stat().st_mode) == 0o600


def test_tls_handshake_fails_without_a_client_certificate(gw: GatewayStandin, client: Any) -> None:
    endpoint = gw.endpoint.removeprefix("https://")
    ca = (gw.paths.mtls / "ca.crt").read_bytes()
    channel = grpc.secure_channel(endpoint, grpc.ssl_channel_credentials(root_certificates=ca))
    try:
        with pytest.raises(grpc.RpcError) as excinfo:
            openshell_pb2_grpc.OpenShellStub(channel).Health(openshell_pb2.HealthRequest(), timeout=10)
        assert code_of(excinfo) == grpc.StatusCode.UNAVAILABLE
    finally:
        channel.close()
    # With the client certificate (what from_active_cluster loads) it answers.
    assert client.health().status == openshell_pb2.SERVICE_STATUS_HEALTHY


def test_missing_and_other_workspace_are_both_not_found(client: Any, stub: Any) -> None:
    assert client.get(NAME, workspace="default").id
    for name, workspace in ((NAME, "elsewhere"), ("no-such-sandbox", "default")):
        with pytest.raises(grpc.RpcError) as excinfo:
            client.get(name, workspace=workspace)
        assert code_of(excinfo) == grpc.StatusCode.NOT_FOUND
        request = openshell_pb2.ExecSandboxRequest(
            workspace_scope=datamodel_pb2.WorkspaceSelector(workspace=workspace), sandbox=name, command=["true"]
        )
        with pytest.raises(grpc.RpcError) as excinfo:
            list(stub.ExecSandbox(request, timeout=30))
        assert code_of(excinfo) == grpc.StatusCode.NOT_FOUND
    assert [s.name for s in client.list_all(workspace="default")] == [NAME]
    assert client.list_all(workspace="elsewhere") == []


def test_list_is_paged(stub: Any) -> None:
    everywhere = datamodel_pb2.WorkspaceSelector(all_workspaces=datamodel_pb2.AllWorkspaces())
    page = stub.ListSandboxes(openshell_pb2.ListSandboxesRequest(workspace_scope=everywhere, page_size=5000))
    assert [s.metadata.name for s in page.sandboxes] == [NAME] and page.next_page_token == ""
    with pytest.raises(grpc.RpcError) as excinfo:
        stub.ListSandboxes(openshell_pb2.ListSandboxesRequest(workspace_scope=WS, page_token="not-a-token"))
    assert code_of(excinfo) == grpc.StatusCode.INVALID_ARGUMENT


def test_exec_runs_as_the_sandbox_user_under_bash(client: Any, stub: Any) -> None:
    result = client.exec(NAME, ["id", "-u"], workspace="default")
    assert result.exit_code == 0 and result.stdout.strip() == "998"
    # `eval` is the outer shell's builtin: it is bash, a login shell (PATH from /etc/profile) in /sandbox.
    code, out, _, _ = run(stub, ["eval", 'echo "$BASH_VERSION|$PWD|$PATH"'])
    version, cwd, path = out.decode().strip().split("|")
    assert code == 0 and version and cwd == "/sandbox"
    assert "/usr/sbin" not in path.split(":")
    _, out, _, _ = run(stub, ["printenv", "PATH"], no_login_shell=True)
    assert "/usr/sbin" in out.decode().strip().split(":")
    tricky = ["it's", 'a "quoted" word', "two  spaces", "new\nline", "$HOME", "`id`", "; rm -rf /", "", "*", "é"]
    code, out, _, _ = run(stub, ["printf", "%s\\0", *tricky])
    assert code == 0 and out.decode().split("\0")[:-1] == tricky


def test_exec_argument_limits(stub: Any) -> None:
    code, out, _, _ = run(stub, ["sh", "-c", 'echo "$#"', "sh", *["x"] * 1020])
    assert (code, out) == (0, b"1020\n")  # 1024 arguments are fine
    for argv, env in (
        (["true", *["x"] * 1024], {}),  # 1025 arguments
        (["echo", "a" * (33 * 1024)], {}),  # one argument over 32 KiB
        (["echo", *["a" * (30 * 1024)] * 9], {}),  # assembled over 256 KiB
        (["true"], {"BIG": "v" * (33 * 1024)}),  # an environment value over 32 KiB
    ):
        with pytest.raises(grpc.RpcError) as excinfo:
            run(stub, argv, environment=env)
        assert code_of(excinfo) == grpc.StatusCode.INVALID_ARGUMENT


def test_large_input_goes_through_interactive_stdin(stub: Any, gw: GatewayStandin) -> None:
    data = os.urandom(5 * 1024 * 1024)
    with pytest.raises(grpc.RpcError) as excinfo:
        run(stub, ["sha256sum"], stdin=data)
    assert code_of(excinfo) == grpc.StatusCode.RESOURCE_EXHAUSTED

    def frames() -> Iterator[Any]:
        start = openshell_pb2.ExecSandboxRequest(
            workspace_scope=WS, sandbox=NAME, command=["sh", "-c", "cat > /sandbox/blob && sha256sum < /sandbox/blob"]
        )
        yield openshell_pb2.ExecSandboxInput(start=start)
        for i in range(0, len(data), 256 * 1024):
            yield openshell_pb2.ExecSandboxInput(stdin=data[i : i + 256 * 1024])
        # returning = half-close: EOF on the command's stdin

    out, exits = b"", []
    for event in stub.ExecSandboxInteractive(frames(), timeout=120):
        if event.WhichOneof("payload") == "stdout":
            out += event.stdout.data
        elif event.WhichOneof("payload") == "exit":
            exits.append(event.exit.exit_code)
    assert exits == [0]
    assert out.split()[0].decode() == hashlib.sha256(data).hexdigest()
    assert inside(gw, "stat -c %u /sandbox/blob && rm /sandbox/blob").strip() == "998"


def test_one_exit_event_after_the_output(stub: Any) -> None:
    code, out, err, kinds = run(stub, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (code, out, err) == (3, b"out\n", b"err\n")
    assert kinds.count("exit") == 1 and kinds[-1] == "exit"


def test_timeout_kills_the_command_and_answers_124(stub: Any, gw: GatewayStandin) -> None:
    started = time.monotonic()
    code, _, _, kinds = run(stub, ["sh", "-c", "sleep 31 & sleep 32"], execution_timeout={"seconds": 1})
    assert code == 124 and kinds.count("exit") == 1
    assert time.monotonic() - started < 10
    assert inside(gw, "pgrep -f '^sleep 3[12]$' || true") == ""


def test_a_cancelled_exec_is_killed(stub: Any, gw: GatewayStandin) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        list(
            stub.ExecSandbox(
                openshell_pb2.ExecSandboxRequest(workspace_scope=WS, sandbox=NAME, command=["sleep", "33"]), timeout=1.5
            )
        )
    assert code_of(excinfo) == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.monotonic() + 5
    while inside(gw, "pgrep -f '^sleep 33$' || true") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert inside(gw, "pgrep -f '^sleep 33$' || true") == ""


def test_exec_log_keeps_only_the_first_120_characters(stub: Any, gw: GatewayStandin) -> None:
    secret = "sk-" + os.urandom(16).hex()
    argv = ["sh", "-c", "cat > /dev/null; echo " + "x" * 200]
    code, _, _, _ = run(stub, argv, stdin=secret.encode())
    assert code == 0
    assert gw.exec_log()[-1] == shlex.join(argv)[:120]
    assert len(gw.exec_log()[-1]) == 120
    assert secret not in gw.paths.exec_log.read_text()


def test_watch_reports_a_replaced_pod(stub: Any, gw: GatewayStandin) -> None:
    before = gw.get(NAME)
    inside(gw, "echo kept > /sandbox/pod-file; echo gone > /tmp/pod-file")
    watcher = Watcher(stub)
    try:
        _, first = watcher.next()
        assert first.WhichOneof("payload") == "sandbox" and first.cursor
        assert first.sandbox.metadata.id == before.metadata.id and first.sandbox.status.phase == READY
        after = gw.replace_pod(NAME)
        returned = time.monotonic()
        arrived, event = watcher.until(
            lambda s: s.status.agent_pod == after.status.agent_pod and s.status.phase == READY
        )
        assert arrived - returned < 1.0
    finally:
        watcher.close()
    assert event.sandbox.metadata.id == before.metadata.id
    assert after.metadata.id == before.metadata.id
    assert after.host_key_fingerprint == before.host_key_fingerprint
    assert after.status.agent_pod != before.status.agent_pod
    assert after.status.main_process_instance_id != before.status.main_process_instance_id
    assert inside(gw, "cat /sandbox/pod-file; cat /tmp/pod-file 2>/dev/null || echo none") == "kept\nnone\n"
    # Resuming after a cursor replays what came since; an unknown cursor is OUT_OF_RANGE.
    resumed = Watcher(stub, resume_after_cursor=first.cursor)
    try:
        _, replayed = resumed.next()
        assert replayed.cursor != first.cursor
    finally:
        resumed.close()
    request = openshell_pb2.WatchSandboxRequest(
        workspace_scope=WS, sandbox=NAME, follow_status=True, resume_after_cursor="000000000000-1"
    )
    with pytest.raises(grpc.RpcError) as excinfo:
        next(iter(stub.WatchSandbox(request, timeout=10)))
    assert code_of(excinfo) == grpc.StatusCode.OUT_OF_RANGE


def test_restart_main_keeps_files_and_the_pod(gw: GatewayStandin) -> None:
    before = gw.get(NAME)
    inside(gw, "echo still > /tmp/main-file")
    after = gw.restart_main(NAME)
    assert after.status.main_process_instance_id != before.status.main_process_instance_id
    assert after.status.agent_pod == before.status.agent_pod
    assert after.status.restart_count == before.status.restart_count + 1
    assert inside(gw, "cat /tmp/main-file") == "still\n"


def test_stopped_sandbox_refuses_exec_and_starts_again(client: Any, stub: Any, gw: GatewayStandin) -> None:
    pod = gw.get(NAME).status.agent_pod
    client.stop(NAME, workspace="default")
    assert client.wait_stopped(NAME, workspace="default", timeout_seconds=60).phase == STOPPED
    assert client.stop(NAME, workspace="default").phase == STOPPED  # idempotent
    with pytest.raises(grpc.RpcError) as excinfo:
        run(stub, ["true"])
    assert code_of(excinfo) == grpc.StatusCode.FAILED_PRECONDITION
    client.start(NAME, workspace="default")
    gw.wait_phase(NAME, [READY], timeout=60)
    assert client.start(NAME, workspace="default").phase == READY  # idempotent
    assert gw.get(NAME).status.agent_pod == pod  # Docker keeps the container across stop/start
    assert inside(gw, "cat /tmp/main-file") == "still\n"


def test_killed_container_is_error_until_started(client: Any, stub: Any, gw: GatewayStandin) -> None:
    before = gw.get(NAME)
    watcher = Watcher(stub)
    try:
        watcher.next()
        killed = time.monotonic()
        gw.fail(NAME, wait=False)
        arrived, event = watcher.until(lambda s: s.status.phase == ERROR)
        assert arrived - killed < 1.0
    finally:
        watcher.close()
    assert event.sandbox.status.exit_code == 137
    with pytest.raises(grpc.RpcError) as excinfo:
        run(stub, ["true"])
    assert code_of(excinfo) == grpc.StatusCode.FAILED_PRECONDITION
    client.start(NAME, workspace="default")
    after = gw.wait_phase(NAME, [READY], timeout=60)
    assert after.metadata.id == before.metadata.id
    assert after.status.main_process_instance_id != before.status.main_process_instance_id
    assert client.exec(NAME, ["true"], workspace="default").exit_code == 0


def test_gateway_outage_keeps_the_sandboxes(gw: GatewayStandin, stub: Any) -> None:
    before = gw.get(NAME)
    endpoint = gw.endpoint
    inside(gw, "echo outage > /tmp/outage-file")
    watcher = Watcher(stub)  # on a channel of its own, which stays open
    watcher.next()
    gw.down()
    assert not gw.running()
    # A watch is cut with an error, not ended: a clean end would mean "deleted".
    assert watcher.failed.get(timeout=10) == grpc.StatusCode.UNAVAILABLE
    assert not watcher.ended.is_set()
    time.sleep(20)
    assert gw.container(NAME).status == "running"  # the sandbox kept running without its gateway
    gw.up()
    after = gw.get(NAME)
    assert after.status.phase == READY
    assert after.metadata.id == before.metadata.id
    assert after.status.agent_pod == before.status.agent_pod
    assert after.status.main_process_instance_id == before.status.main_process_instance_id
    assert gw.endpoint == endpoint  # the same port: metadata.json stays valid
    assert gw.client().exec(NAME, ["cat", "/tmp/outage-file"], workspace="default").stdout == "outage\n"


def test_a_container_killed_while_the_gateway_was_down_is_started_at_its_start(gw: GatewayStandin) -> None:
    before = gw.get(NAME)
    gw.down()
    gw.container(NAME).kill()
    gw.up()
    after = gw.wait_phase(NAME, [READY], timeout=60)
    assert after.metadata.id == before.metadata.id
    assert after.status.agent_pod == before.status.agent_pod  # the same container, started again
    assert after.status.main_process_instance_id != before.status.main_process_instance_id
    assert after.status.restart_count == before.status.restart_count + 1
    assert inside(gw, "cat /tmp/outage-file") == "outage\n"


def test_crash_cannot_be_started(client: Any, gw: GatewayStandin) -> None:
    gw.crash(NAME)
    sandbox = gw.get(NAME)
    assert sandbox.status.phase == ERROR and sandbox.status.exit_code == 139
    with pytest.raises(grpc.RpcError) as excinfo:
        client.start(NAME, workspace="default")
    assert code_of(excinfo) == grpc.StatusCode.FAILED_PRECONDITION


def test_recreate_is_a_new_sandbox(gw: GatewayStandin, client: Any, stub: Any) -> None:
    before = gw.get(NAME)
    inside(gw, "echo old > /sandbox/recreate-file")
    watcher = Watcher(stub)
    new_id = gw.recreate(NAME)
    assert watcher.ended.wait(5), "WatchSandbox did not end when the sandbox was deleted"
    seen = []
    while not watcher.events.empty():
        seen.append(watcher.events.get()[1].sandbox)
    assert seen[-1].status.phase == openshell_pb2.SANDBOX_PHASE_DELETING
    assert {s.metadata.id for s in seen} == {before.metadata.id}
    after = gw.get(NAME)
    assert new_id == after.metadata.id != before.metadata.id
    assert after.host_key_fingerprint.startswith("SHA256:")
    assert after.host_key_fingerprint != before.host_key_fingerprint
    assert after.status.agent_pod != before.status.agent_pod
    assert inside(gw, "ls /sandbox/recreate-file 2>/dev/null || echo gone; ls -d /sandbox/.openclaw") == (
        "gone\n/sandbox/.openclaw\n"
    )
    assert client.exec(NAME, ["id", "-u"], workspace="default").stdout.strip() == "998"
