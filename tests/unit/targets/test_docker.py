"""The docker target (OpenShell generation 2): its config, and the real target code and
docker-py client against a fake Docker Engine on a unix socket (tests/unit/fake_engine.py)."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clawguard import SandboxGone, TargetError
from clawguard.cli import main
from clawguard.config import parse_config
from clawguard.errors import ConfigError
from clawguard.targets import Instance, make_target
from clawguard.targets._docker import STDERR_KEPT
from clawguard.targets.base import ExecResult, OutputTooLarge
from clawguard.targets.docker import DockerTarget

from ..fake_engine import ExecCall, FakeEngine, Reply

CID = "c" * 64
OTHER = "d" * 64
NEMOCLAW = {"openshell.ai/managed-by": "openshell", "openshell.ai/sandbox-name": "my-assistant"}


def _config(target: str) -> str:
    return f"version: 1\nsandboxes:\n  my-assistant:\n    target:\n      kind: docker\n{target}    archive: /x\n"


# ------------------------------------------------------------------ config


def test_container_or_labels_each_alone_is_valid() -> None:
    by_name = parse_config(_config("      container: my-sandbox\n")).sandboxes["my-assistant"].target
    assert by_name["container"] == "my-sandbox" and by_name["labels"] is None
    by_labels = (
        parse_config(
            _config(
                "      labels:\n        openshell.ai/managed-by: openshell\n        openshell.ai/sandbox-name: my-assistant\n"
            )
        )
        .sandboxes["my-assistant"]
        .target
    )
    assert by_labels["labels"] == NEMOCLAW and by_labels["container"] is None
    assert by_labels["privileged"] is False and by_labels["timeout"] == 120


def test_neither_container_nor_labels_names_the_target_and_its_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_config(""), "c.yaml")
    assert str(caught.value).startswith("c.yaml:4: sandboxes.my-assistant.target: give the sandbox's container")


@pytest.mark.parametrize(
    ("target", "key", "line"),
    [
        ("      container: a\n      labels: {x: y}\n", "labels", 7),
        ("      labels: {x: y}\n      container: a\n", "container", 7),
    ],
)
def test_both_are_refused_whatever_the_order(target: str, key: str, line: int) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_config(target), "c.yaml")
    assert (
        str(caught.value) == f"c.yaml:{line}: sandboxes.my-assistant.target.{key}: give container or labels, not both"
    )


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("      labels: {}\n", "target.labels: name at least one label"),
        ("      labels: {'has space': x}\n", "'has space' is not valid: a Docker label key"),
        ("      labels: {x: 1}\n", "target.labels.x: expected a string, got int"),
        ("      container: 'bad/name'\n", "target.container: 'bad/name' is not valid: a Docker container name"),
        ("      cluster: openshell-cluster-nemoclaw\n", "unknown key 'cluster'"),
    ],
)
def test_bad_selectors_are_config_errors(target: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(_config(target), "c.yaml")


def test_check_reports_a_missing_selector_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(_config("").replace("/x", str(tmp_path)))
    assert main(["--config", str(config), "check"]) == 2
    assert f"{config}:4: sandboxes.my-assistant.target: give the sandbox's container" in capsys.readouterr().err


def test_values_built_in_code_are_checked_too() -> None:
    with pytest.raises(ConfigError, match="not both"):
        DockerTarget("x", {"container": "a", "labels": {"k": "v"}})
    with pytest.raises(ConfigError, match="give the sandbox's container"):
        DockerTarget("x", {"container": None, "labels": {}})


# ------------------------------------------------------------------ a fake Docker Engine

OTHER_SANDBOX = {"openshell.ai/managed-by": "openshell", "openshell.ai/sandbox-name": "someone-else"}


@pytest.fixture
def engine() -> Iterator[FakeEngine]:
    with FakeEngine() as fake:
        yield fake


def _by_labels(engine: FakeEngine | str, **extra: Any) -> DockerTarget:
    values = (
        parse_config(
            _config(
                "      labels:\n        openshell.ai/managed-by: openshell\n        openshell.ai/sandbox-name: my-assistant\n"
            )
        )
        .sandboxes["my-assistant"]
        .target
    )
    host = engine if isinstance(engine, str) else engine.url
    target = make_target("my-assistant", {**values, "docker_host": host, **extra})
    assert isinstance(target, DockerTarget)
    return target


def _by_name(engine: FakeEngine | str, name: str = "my-sandbox") -> DockerTarget:
    values = parse_config(_config(f"      container: {name}\n")).sandboxes["my-assistant"].target
    host = engine if isinstance(engine, str) else engine.url
    target = make_target("my-assistant", {**values, "docker_host": host})
    assert isinstance(target, DockerTarget)
    return target


def _nowhere(tmp_path: Path) -> str:
    return f"unix://{tmp_path}/no-docker.sock"


# ------------------------------------------------------------------ locate


def test_locate_by_name_or_id_gives_the_full_container_id(engine: FakeEngine) -> None:
    engine.add(OTHER, "someone-else")
    engine.add(CID, "my-sandbox")
    assert _by_name(engine).locate() == Instance(CID, "container my-sandbox")
    assert _by_name(engine, CID[:12]).locate() == Instance(CID, f"container {CID[:12]}")


def test_locate_by_name_missing_or_stopped(engine: FakeEngine) -> None:
    with pytest.raises(TargetError, match="sandbox container my-sandbox not found"):
        _by_name(engine).locate()
    container = engine.add(CID, "my-sandbox", "exited")
    with pytest.raises(TargetError, match="sandbox container my-sandbox is exited, not running"):
        _by_name(engine).locate()
    for state in ("paused", "restarting"):
        container.state = state
        with pytest.raises(TargetError, match=f"sandbox container my-sandbox is {state}, not running"):
            _by_name(engine).locate()


def test_locate_by_labels_picks_the_one_running_container_of_this_sandbox(engine: FakeEngine) -> None:
    engine.add(OTHER, "openshell-my-assistant-old", "exited", NEMOCLAW)
    engine.add("e" * 64, "openshell-someone-else", labels=OTHER_SANDBOX)
    engine.add("f" * 64, "unlabelled")
    engine.add(CID, "openshell-my-assistant-new", labels={**NEMOCLAW, "extra": "label"})
    assert _by_labels(engine).locate() == Instance(CID, "container openshell-my-assistant-new")


def test_locate_by_labels_names_what_it_found_when_it_cannot_choose(engine: FakeEngine) -> None:
    engine.add("e" * 64, "openshell-someone-else", labels=OTHER_SANDBOX)
    with pytest.raises(TargetError) as caught:
        _by_labels(engine).locate()
    assert str(caught.value) == (
        "no running sandbox container with labels "
        "openshell.ai/managed-by=openshell,openshell.ai/sandbox-name=my-assistant"
    )
    engine.add(OTHER, "openshell-my-assistant-old", "exited", NEMOCLAW)
    with pytest.raises(
        TargetError,
        match=r"no running sandbox container with labels .*; not running: openshell-my-assistant-old \(exited\)$",
    ):
        _by_labels(engine).locate()
    engine.containers[-1].state = "running"
    engine.add(CID, "supervisor-a", labels=NEMOCLAW)
    with pytest.raises(TargetError) as caught:
        _by_labels(engine).locate()
    assert str(caught.value).startswith("2 running containers match labels ")
    assert f"openshell-my-assistant-old ({OTHER[:12]})" in str(caught.value)
    assert f"supervisor-a ({CID[:12]})" in str(caught.value)
    assert str(caught.value).endswith("add a label that tells them apart, or name the container")


def test_locate_when_docker_refuses_to_list(engine: FakeEngine) -> None:
    engine.refuse["/containers/json"] = (500, "daemon is shutting down")
    with pytest.raises(TargetError, match="^Docker refused to list containers: daemon is shutting down$"):
        _by_labels(engine).locate()


def test_locate_without_docker(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="^Docker is not reachable: "):
        _by_labels(_nowhere(tmp_path)).locate()


def test_locate_after_docker_went_away(engine: FakeEngine) -> None:
    engine.add(CID, "my-sandbox")
    target = _by_name(engine)
    assert target.locate().id == CID
    engine.close()
    with pytest.raises(TargetError, match="^Docker is not reachable: "):
        target.locate()


# ------------------------------------------------------------------ exec


def _echo(call: ExecCall) -> Reply:
    """A command that says where it ran and as whom, and gives back its stdin."""
    said = f"{call.container[:12]} {call.user} privileged={call.privileged} {' '.join(call.argv)}\n"
    return Reply(3, said.encode() + (call.stdin or b""), b"a warning\n")


def test_exec_runs_as_root_in_the_located_container_itself(engine: FakeEngine) -> None:
    engine.add(OTHER, "someone-else")
    engine.add(CID, "openshell-my-assistant", labels=NEMOCLAW)
    engine.run = _echo
    target = _by_labels(engine)
    instance = target.locate()
    result = target.exec(instance, ["tar", "-x"], b"data")
    assert result == ExecResult(3, f"{CID[:12]} 0:0 privileged=False tar -x\ndata".encode(), b"a warning\n")
    assert engine.calls[-1].stdin == b"data"
    assert target.exec(instance, ["id"], user="998:998").stdout == f"{CID[:12]} 998:998 privileged=False id\n".encode()
    assert engine.calls[-1].stdin is None  # no stdin asked for: none attached
    privileged = _by_labels(engine, privileged=True)
    assert privileged.exec(instance, ["true"]).stdout == f"{CID[:12]} 0:0 privileged=True true\n".encode()


def test_exec_output_in_many_frames_whole_or_streamed(engine: FakeEngine) -> None:
    engine.add(CID, "my-sandbox")
    printed = bytes(range(256)) * 1000  # 256 kB: several frames
    stderr = b"e" * (STDERR_KEPT + 10) + b"the end\n"
    engine.run = lambda call: Reply(0, printed, stderr)
    target = _by_name(engine)
    instance = target.locate()
    result = target.exec(instance, ["cat", "big"])
    assert result.stdout == printed
    assert len(result.stderr) == STDERR_KEPT and result.stderr.endswith(b"the end\n")  # only its last bytes
    sink = io.BytesIO()
    streamed = target.exec(instance, ["cat", "big"], out=sink, limit=len(printed))
    assert sink.getvalue() == printed and streamed.stdout == b"" and streamed.code == 0


def test_exec_limited_stops_and_kills_a_command_that_prints_too_much(engine: FakeEngine) -> None:
    engine.add(CID, "my-sandbox")

    def chatty(call: ExecCall) -> Reply:
        if call.argv[:2] == ("sh", "-c") and call.argv[-1] == "yes":
            return Reply(0, b"y\n" * 100_000, b"clawguard-pid 4242\nstill going\n")
        return Reply(0)

    engine.run = chatty
    target = _by_name(engine)
    with pytest.raises(OutputTooLarge) as caught:
        target.exec_limited(target.locate(), ["yes"], io.BytesIO(), limit=1000)
    assert caught.value.stderr == b"still going\n"
    kill = engine.calls[-1]
    assert kill.container == CID and kill.argv[-1] == "4242" and "kill -9" in kill.argv[2]


def test_exec_in_a_container_that_was_removed_or_stopped_is_sandbox_gone(engine: FakeEngine) -> None:
    container = engine.add(CID, "my-sandbox")
    target = _by_name(engine)
    instance = target.locate()
    container.state = "exited"
    with pytest.raises(SandboxGone, match=f"^sandbox container {CID[:12]} is not running \\(container {CID} is not"):
        target.exec(instance, ["true"])
    engine.containers.clear()
    with pytest.raises(SandboxGone, match=f"^sandbox container {CID[:12]} is gone \\(removed or recreated\\)$"):
        target.exec(instance, ["true"])


def test_exec_docker_refuses_or_is_gone_is_a_target_error(engine: FakeEngine) -> None:
    engine.add(CID, "my-sandbox")
    target = _by_name(engine)
    instance = target.locate()
    engine.refuse["/exec"] = (500, "OCI runtime exec failed")
    with pytest.raises(TargetError) as caught:
        target.exec(instance, ["true"])
    assert not isinstance(caught.value, SandboxGone)
    assert str(caught.value) == f"Docker refused a command in {CID[:12]}: OCI runtime exec failed"
    engine.close()
    with pytest.raises(TargetError, match="^Docker is not reachable: ") as caught:
        target.exec(instance, ["true"])
    assert not isinstance(caught.value, SandboxGone)


def test_exec_that_does_not_finish_in_time_names_the_container(engine: FakeEngine) -> None:
    engine.add(CID, "my-sandbox")
    release = threading.Event()
    engine.run = lambda call: Reply(0, b"late") if release.wait(10) else Reply(1)
    target = make_target("my-assistant", {**_by_name(engine).values, "timeout": 1})
    try:
        with pytest.raises(TargetError, match=f"^a command in sandbox container {CID[:12]} did not finish: "):
            target.exec(Instance(CID, "x"), ["sleep", "infinity"])
    finally:
        release.set()


# ------------------------------------------------------------------ watch


def _event(action: str, name: str, cid: str = CID, labels: dict[str, str] | None = None, **more: str) -> dict[str, Any]:
    attributes = {"name": name, **(NEMOCLAW if labels is None else labels), **more}
    return {"Type": "container", "Action": action, "Actor": {"ID": cid, "Attributes": attributes}}


def test_watch_by_labels_wakes_for_this_sandbox_only(engine: FakeEngine) -> None:
    engine.events = [
        _event("die", "old"),
        _event("start", "openshell-someone-else", OTHER, OTHER_SANDBOX),
        _event("exec_start: sh", "new"),
        {"Type": "network", "Action": "connect", "Actor": {"ID": "n", "Attributes": NEMOCLAW}},
        _event("destroy", "old"),
        _event("create", "new"),
        _event("start", "new"),
    ]
    reasons: list[str] = []
    _by_labels(engine).watch(reasons.append, threading.Event())  # returns when the stream ends
    assert reasons == ["container die", "container destroy", "container create", "container start"]


def test_watch_by_name_follows_renames_both_ways(engine: FakeEngine) -> None:
    engine.events = [
        _event("start", "someone-else", OTHER),
        _event("rename", "moved-away", oldName="/my-sandbox"),
        _event("rename", "my-sandbox", OTHER, oldName="/tmp-name"),
        _event("destroy", "my-sandbox", labels={}),
    ]
    reasons: list[str] = []
    _by_name(engine).watch(reasons.append, threading.Event())
    assert reasons == ["container rename", "container rename", "container destroy"]


def test_watch_returns_soon_after_stop(engine: FakeEngine) -> None:
    engine.end_events = False  # the stream stays open, as Docker's does
    stop = threading.Event()
    watcher = threading.Thread(target=_by_labels(engine).watch, args=(lambda _reason: None, stop))
    watcher.start()
    time.sleep(0.3)
    assert watcher.is_alive()
    stop.set()
    watcher.join(3)
    assert not watcher.is_alive()


def test_watch_without_docker_raises_for_the_daemon_to_back_off(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="^Docker is not reachable: "):
        _by_labels(_nowhere(tmp_path)).watch(lambda _reason: None, threading.Event())


def test_watch_ends_when_docker_ends_the_stream(engine: FakeEngine) -> None:
    """Docker restarted: the stream is cut, and watch returns for the daemon to run it again."""
    engine.end_events = False
    engine.events = [_event("start", "new")]
    reasons: list[str] = []
    watcher = threading.Thread(target=_by_labels(engine).watch, args=(reasons.append, threading.Event()))
    watcher.start()
    time.sleep(0.3)
    engine.close()
    watcher.join(3)
    assert not watcher.is_alive() and reasons == ["container start"]


def test_watch_that_docker_refuses_raises_with_its_answer(engine: FakeEngine) -> None:
    engine.refuse["/events"] = (403, "events are not allowed through this proxy")
    with pytest.raises(TargetError, match="events are not allowed through this proxy"):
        _by_labels(engine).watch(lambda _reason: None, threading.Event())
