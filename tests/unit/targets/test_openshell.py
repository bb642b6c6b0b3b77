"""The OpenShell 0.1.x target's own logic: what a change means, the gateway's argv limits,
and a plan refused when it needs root. The wire itself is tested against the stand-in
gateway in tests/integration/test_openshell_target.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest

from clawguard import ConfigError, build_plan, parse_config
from clawguard.targets import REGISTRY, make_target
from clawguard.targets.openshell import (
    MAX_ARG_BYTES,
    MAX_ARGS,
    Incarnation,
    OpenShellTarget,
    active_gateway,
    fit_argv,
    known_gateways,
)


@pytest.fixture(autouse=True)
def _logs_go_somewhere_open() -> None:
    """An earlier test's CLI run may have left the log on a stream pytest has closed since."""
    import io

    from clawguard import log

    log.configure("info", io.StringIO())


def _inc(id: str = "a", pod: str = "p1", main: str = "m1", phase: int = 2) -> Incarnation:
    return Incarnation(id, pod, main, phase, "SHA256:x")


def test_each_change_is_told_apart() -> None:
    first = _inc()
    assert _inc().change_from(first) is None
    assert _inc().change_from(None) is None
    assert "re-created" in str(_inc(id="b").change_from(first))
    assert "pod re-created" in str(_inc(pod="p2").change_from(first))
    assert "main process relaunched" in str(_inc(main="m2").change_from(first))
    assert "ERROR" in str(_inc(phase=3).change_from(first))


def test_a_new_id_or_pod_is_a_new_instance_a_new_main_process_is_not() -> None:
    first = _inc().instance_id
    assert len(first) == 64 and int(first, 16) >= 0
    assert _inc(id="b").instance_id != first
    assert _inc(pod="p2").instance_id != first
    assert _inc(main="m2").instance_id == first
    assert _inc(phase=3).instance_id == first


def test_argv_within_the_gateways_limits_is_sent_as_it_is() -> None:
    argv = ["sh", "-c", "echo", "x" * MAX_ARG_BYTES]
    assert fit_argv(argv, b"in") == (argv, b"in")


@pytest.mark.parametrize(
    "argv",
    [
        ["printf", "%s\\n", *[f"arg {i} 'q' \"d\" $HOME\n" for i in range(MAX_ARGS + 10)]],
        ["printf", "%s\\n", "y" * (MAX_ARG_BYTES + 1), "two words"],
        ["printf", "%s\\n", *["z" * 30000] * 10],
    ],
    ids=["too-many", "one-too-long", "too-long-in-all"],
)
def test_argv_over_the_limits_travels_on_stdin_and_runs_the_same(argv: list[str]) -> None:
    command, stdin = fit_argv(argv, b"the command's own input\n")
    sizes = [len(a.encode()) for a in command]
    assert len(command) <= MAX_ARGS and max(sizes) <= MAX_ARG_BYTES and sum(sizes) <= 256 * 1024
    # As the gateway runs it: bash -lc of the POSIX-quoted argv; with the same input after it.
    import shlex

    wrapped = shlex.join(command)
    want = subprocess.run(argv, capture_output=True, check=True).stdout
    got = subprocess.run(["bash", "-c", wrapped], input=stdin, capture_output=True, check=True).stdout
    assert got == want
    # The command's own stdin is still there, untouched, after the argv.
    cat = subprocess.run(
        ["bash", "-c", shlex.join(fit_argv(["cat", *["-u"] * (MAX_ARGS + 1)], b"input\x00bytes")[0])],
        input=fit_argv(["cat", *["-u"] * (MAX_ARGS + 1)], b"input\x00bytes")[1],
        capture_output=True,
        check=True,
    )
    assert cat.stdout == b"input\x00bytes"


def test_the_kind_is_registered_never_root_and_needs_no_docker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert REGISTRY["openshell"] is OpenShellTarget
    target = make_target("my-assistant", {"kind": "openshell"})
    assert not target.runs_as_root and target.generation == 3
    assert target.identity() == ("openshell", "(active)", "default", "my-assistant")
    assert make_target("x", {"kind": "openshell", "name": "other", "workspace": "team"}).identity() == (
        "openshell",
        "(active)",
        "team",
        "other",
    )


def test_the_active_gateway_is_read_as_the_cli_writes_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("OPENSHELL_GATEWAY", raising=False)
    assert active_gateway() is None and known_gateways() == []
    home = tmp_path / "openshell"
    (home / "gateways" / "lab").mkdir(parents=True)
    (home / "gateways" / "lab" / "metadata.json").write_text('{"gateway_endpoint": "https://127.0.0.1:1"}')
    (home / "active_gateway").write_text("lab\n")
    assert active_gateway() == "lab" and known_gateways() == ["lab"]
    monkeypatch.setenv("OPENSHELL_GATEWAY", "other")
    assert active_gateway() == "other"


def test_no_active_gateway_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from clawguard.errors import TargetError

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("OPENSHELL_GATEWAY", raising=False)
    with pytest.raises(TargetError, match="no OpenShell gateway is active"):
        make_target("my-assistant", {"kind": "openshell"}).locate()


def _config(archive: Path, extra: str = "", layout: str = "") -> str:
    return f"""\
version: 1
sandboxes:
  my-assistant:
    target:
      kind: openshell
      gateway: lab
    archive: {archive}
    user: sandbox
{layout}{extra}"""


def test_the_flat_layout_plans_as_the_sandbox_user(archive: Path) -> None:
    plan = build_plan(parse_config(_config(archive), "c.yaml").sandboxes["my-assistant"])
    assert plan.layout.style == "flat"
    assert all(e.owner in (None, "sandbox") for e in plan.entries)


def test_a_root_owned_entry_is_refused_naming_the_step(archive: Path) -> None:
    extra = (
        "    plan:\n      - {kind: file, source: SOUL.md, dest: /sandbox/.openclaw/x.md, owner: root, mode: '0444'}\n"
    )
    with pytest.raises(ConfigError) as info:
        build_plan(parse_config(_config(archive, extra), "c.yaml").sandboxes["my-assistant"])
    error = info.value
    assert "owned by root" in error.message and "never as root" in error.message
    assert error.key is not None and error.key.startswith("sandboxes.my-assistant.plan[0]")
    assert error.line == 10


def test_the_split_layout_is_refused(archive: Path) -> None:
    config = parse_config(_config(archive, layout="    layout: {style: split}\n"), "c.yaml")
    with pytest.raises(ConfigError, match="openclaw.json are root's") as info:
        build_plan(config.sandboxes["my-assistant"])
    assert info.value.key == "sandboxes.my-assistant.layout.style" and info.value.line == 9


class _Refusal(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class _Stub:
    """GetSandbox answers ``phase``; StartSandbox is counted, and raises ``start_error``."""

    def __init__(self, phase: int, start_error: grpc.RpcError | None = None) -> None:
        self.phase, self.start_error, self.starts = phase, start_error, 0

    def GetSandbox(self, request: object, timeout: float) -> object:
        from openshell._proto import openshell_pb2 as pb

        sandbox = pb.Sandbox(metadata={"id": "a", "name": "my-assistant"}, status={"phase": self.phase})
        return pb.SandboxResponse(sandbox=sandbox)

    def StartSandbox(self, request: object, timeout: float) -> object:
        self.starts += 1
        if self.start_error is not None:
            raise self.start_error
        return object()


def _target_with(stub: _Stub) -> OpenShellTarget:
    target = OpenShellTarget("my-assistant", {"gateway": "lab"})
    target._client, target._stub = object(), stub
    return target


def test_a_stopped_sandbox_is_started_once_per_backoff_step() -> None:
    from clawguard.errors import SandboxStarted, TargetError

    stub = _Stub(phase=3)  # ERROR
    target = _target_with(stub)
    with pytest.raises(SandboxStarted) as info:
        target.locate()
    assert not info.value.refused and "is ERROR: asked the gateway to start it" in str(info.value)
    with pytest.raises(TargetError, match="waiting") as again:
        target.locate()  # within the backoff: no second StartSandbox
    assert not isinstance(again.value, SandboxStarted) and stub.starts == 1


def test_each_start_request_is_told_to_on_started_whoever_located() -> None:
    """The daemon's hook hangs on the target, not on which of its locates (a round, a health
    check, a restore) happened to meet the stopped sandbox."""
    from clawguard.errors import SandboxStarted, TargetError

    stub = _Stub(phase=3)  # ERROR
    target = _target_with(stub)
    told: list[SandboxStarted] = []
    target.on_started = told.append
    for _ in range(2):
        with pytest.raises(TargetError):  # caught as any TargetError, as a health check's locate does
            target.locate()
    assert [e.outcome for e in told] == ["requested"] and stub.starts == 1  # the second is within the backoff


def test_a_refused_start_says_what_openshell_needs() -> None:
    from clawguard.errors import SandboxStarted

    stub = _Stub(phase=3, start_error=_Refusal(grpc.StatusCode.FAILED_PRECONDITION, "crashed (OOM)"))
    with pytest.raises(SandboxStarted) as info:
        _target_with(stub).locate()
    assert info.value.refused and "delete` and create" in str(info.value)


def test_start_stopped_off_leaves_it_alone() -> None:
    from clawguard.errors import SandboxStarted, TargetError

    stub = _Stub(phase=7)  # STOPPED
    target = OpenShellTarget("my-assistant", {"gateway": "lab", "start_stopped": False})
    target._client, target._stub = object(), stub
    with pytest.raises(TargetError, match="STOPPED, not READY") as info:
        target.locate()
    assert not isinstance(info.value, SandboxStarted) and stub.starts == 0


class _RecreatingStub(_Stub):
    """READY until ``crash()``; then StartSandbox is refused, and Delete + Create are recorded."""

    def __init__(self) -> None:
        super().__init__(phase=2)
        self.calls: list[tuple[str, object]] = []

    def GetSandbox(self, request: object, timeout: float) -> object:
        from openshell._proto import openshell_pb2 as pb

        sandbox = pb.Sandbox(
            metadata={"id": "a", "name": "my-assistant", "labels": {"team": "ops"}},
            spec={"template": {"image": "openclaw:2026.9.6"}},
            status={"phase": self.phase},
        )
        return pb.SandboxResponse(sandbox=sandbox)

    def crash(self) -> None:
        self.phase = 3
        self.start_error = _Refusal(grpc.StatusCode.FAILED_PRECONDITION, "main process crashed (OOM)")

    def DeleteSandbox(self, request: object, timeout: float) -> object:
        self.calls.append(("delete", request))
        return object()

    def CreateSandbox(self, request: object, timeout: float) -> object:
        self.calls.append(("create", request))
        return object()


def test_recover_recreate_makes_it_again_from_the_spec_recorded_while_it_ran(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from clawguard.errors import SandboxStarted

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    stub = _RecreatingStub()
    target = OpenShellTarget("my-assistant", {"gateway": "lab", "recover": "recreate"})
    target._client, target._stub = object(), stub
    target.locate()  # READY: the spec is recorded now
    stub.crash()
    with pytest.raises(SandboxStarted) as info:
        target.locate()
    assert info.value.outcome == "recreated"
    assert [name for name, _ in stub.calls] == ["delete", "create"]
    created = stub.calls[1][1]
    assert created.name == "my-assistant" and created.spec.template.image == "openclaw:2026.9.6"  # type: ignore[attr-defined]
    assert dict(created.labels) == {"team": "ops"}  # type: ignore[attr-defined]


def test_recover_recreate_without_a_recorded_spec_deletes_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from clawguard.errors import SandboxStarted

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    stub = _RecreatingStub()
    stub.crash()  # never seen running by this clawguard
    target = OpenShellTarget("my-assistant", {"gateway": "lab", "recover": "recreate"})
    target._client, target._stub = object(), stub
    with pytest.raises(SandboxStarted, match="no recorded spec") as info:
        target.locate()
    assert info.value.outcome == "refused" and stub.calls == []
