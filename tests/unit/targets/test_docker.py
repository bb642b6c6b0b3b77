"""The docker target (OpenShell generation 2) against a fake Docker API."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from clawguard import SandboxGone, TargetError
from clawguard.cli import main
from clawguard.config import parse_config
from clawguard.errors import ConfigError
from clawguard.targets import Instance, make_target
from clawguard.targets import _docker as docker_api
from clawguard.targets.base import ExecResult
from clawguard.targets.docker import DockerTarget

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


# ------------------------------------------------------------------ a fake Docker


class FakeAPI:
    def __init__(self) -> None:
        self.inspected: dict[str, Any] = {}
        self.listed: list[dict[str, Any]] = []
        self.filters: list[Any] = []
        self.exec_error: Exception | None = None
        self.stream: Iterator[dict[str, Any]] = iter(())
        self.event_filters: dict[str, Any] | None = None

    def inspect_container(self, name: str) -> dict[str, Any]:
        if name not in self.inspected:
            raise docker.errors.NotFound(f"No such container: {name}")
        return self.inspected[name]

    def containers(self, all: bool = False, filters: Any = None) -> list[dict[str, Any]]:
        self.filters.append(filters)
        return self.listed

    def exec_create(self, container: str, cmd: list[str], **kwargs: Any) -> dict[str, str]:
        if self.exec_error is not None:
            raise self.exec_error
        return {"Id": "exec"}


class FakeClient:
    def __init__(self, api: FakeAPI) -> None:
        self.api = api

    def events(self, decode: bool = False, filters: Any = None) -> Iterator[dict[str, Any]]:
        self.api.event_filters = filters
        return self.api.stream


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeAPI:
    fake = FakeAPI()
    monkeypatch.setattr(docker_api, "client", lambda base_url=None, timeout=60: FakeClient(fake))
    return fake


def _by_labels(**extra: Any) -> DockerTarget:
    values = (
        parse_config(
            _config(
                "      labels:\n        openshell.ai/managed-by: openshell\n        openshell.ai/sandbox-name: my-assistant\n"
            )
        )
        .sandboxes["my-assistant"]
        .target
    )
    target = make_target("my-assistant", {**values, **extra})
    assert isinstance(target, DockerTarget)
    return target


def _by_name(name: str = "my-sandbox") -> DockerTarget:
    values = parse_config(_config(f"      container: {name}\n")).sandboxes["my-assistant"].target
    target = make_target("my-assistant", values)
    assert isinstance(target, DockerTarget)
    return target


def _summary(cid: str, name: str, state: str = "running") -> dict[str, Any]:
    return {"Id": cid, "Names": [f"/{name}"], "State": state, "Labels": NEMOCLAW}


# ------------------------------------------------------------------ locate


def test_locate_by_name_gives_the_full_container_id(api: FakeAPI) -> None:
    api.inspected["my-sandbox"] = {"Id": CID, "State": {"Running": True, "Status": "running"}}
    instance = _by_name().locate()
    assert instance == Instance(CID, "container my-sandbox")


def test_locate_by_name_missing_or_stopped(api: FakeAPI) -> None:
    with pytest.raises(TargetError, match="sandbox container my-sandbox not found"):
        _by_name().locate()
    api.inspected["my-sandbox"] = {"Id": CID, "State": {"Running": False, "Status": "exited"}}
    with pytest.raises(TargetError, match="sandbox container my-sandbox is exited"):
        _by_name().locate()
    api.inspected["my-sandbox"] = {"Id": CID, "State": {"Running": True, "Paused": True, "Status": "paused"}}
    with pytest.raises(TargetError, match="is paused"):
        _by_name().locate()


def test_locate_by_labels_picks_the_one_running_container(api: FakeAPI) -> None:
    api.listed = [_summary(OTHER, "openshell-my-assistant-old", "exited"), _summary(CID, "openshell-my-assistant-new")]
    instance = _by_labels().locate()
    assert instance.id == CID and instance.where == "container openshell-my-assistant-new"
    assert api.filters == [{"label": ["openshell.ai/managed-by=openshell", "openshell.ai/sandbox-name=my-assistant"]}]


def test_locate_by_labels_names_what_it_found_when_it_cannot_choose(api: FakeAPI) -> None:
    api.listed = [_summary(OTHER, "openshell-my-assistant-old", "exited")]
    with pytest.raises(
        TargetError,
        match=r"no running sandbox container with labels .*not running: openshell-my-assistant-old \(exited\)",
    ):
        _by_labels().locate()
    api.listed = [_summary(CID, "sandbox-a"), _summary(OTHER, "supervisor-a")]
    with pytest.raises(TargetError) as caught:
        _by_labels().locate()
    assert "2 running containers match" in str(caught.value)
    assert f"sandbox-a ({CID[:12]})" in str(caught.value) and f"supervisor-a ({OTHER[:12]})" in str(caught.value)


def test_locate_without_docker(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(base_url: str | None = None, timeout: int = 60) -> Any:
        raise TargetError("Docker is not reachable: no socket")

    monkeypatch.setattr(docker_api, "client", unreachable)
    with pytest.raises(TargetError, match="Docker is not reachable"):
        _by_labels().locate()


# ------------------------------------------------------------------ exec


def test_exec_runs_as_root_in_the_sandbox_container_itself(api: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []

    def fake_exec(api: Any, container: str, argv: Any, stdin: Any, timeout: Any, **kwargs: Any) -> ExecResult:
        calls.append((container, list(argv), stdin, timeout, kwargs))
        return ExecResult(0, b"out", b"")

    monkeypatch.setattr(docker_api, "exec_in", fake_exec)
    result = _by_labels().exec(Instance(CID, "x"), ["tar", "-x"], b"data")
    assert result == ExecResult(0, b"out", b"")
    assert calls == [(CID, ["tar", "-x"], b"data", 120, {"user": "0:0", "privileged": False})]
    _by_labels(privileged=True).exec(Instance(CID, "x"), ["true"])
    assert calls[-1][4] == {"user": "0:0", "privileged": True}


class _Response:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code
        self.reason = "x"


@pytest.mark.parametrize(
    ("error", "raised", "message"),
    [
        (docker.errors.NotFound("No such container"), SandboxGone, "is gone"),
        (
            docker.errors.APIError("conflict", _Response(409), "container is not running"),
            SandboxGone,
            "is not running",
        ),
        (docker.errors.APIError("boom", _Response(500), "server error"), TargetError, "Docker refused"),
        (ConnectionRefusedError("refused"), TargetError, "Docker is not reachable"),
    ],
)
def test_exec_errors(api: FakeAPI, error: Exception, raised: type[Exception], message: str) -> None:
    api.exec_error = error
    with pytest.raises(raised, match=message) as caught:
        _by_labels().exec(Instance(CID, "x"), ["true"])
    if raised is TargetError:
        assert not isinstance(caught.value, SandboxGone)


# ------------------------------------------------------------------ watch


def _event(action: str, name: str, cid: str = CID, **attributes: str) -> dict[str, Any]:
    return {"Type": "container", "Action": action, "Actor": {"ID": cid, "Attributes": {"name": name, **attributes}}}


def test_watch_by_labels_filters_on_the_server(api: FakeAPI) -> None:
    api.stream = iter([_event("die", "old"), _event("destroy", "old"), _event("create", "new"), _event("start", "new")])
    reasons: list[str] = []
    _by_labels().watch(reasons.append, threading.Event())  # returns when the stream ends
    assert reasons == ["container die", "container destroy", "container create", "container start"]
    assert api.event_filters == {
        "type": "container",
        "event": ["create", "start", "die", "destroy", "rename"],
        "label": ["openshell.ai/managed-by=openshell", "openshell.ai/sandbox-name=my-assistant"],
    }


def test_watch_by_name_follows_renames_both_ways(api: FakeAPI) -> None:
    api.stream = iter(
        [
            _event("start", "someone-else", OTHER),
            _event("rename", "moved-away", oldName="/my-sandbox"),
            _event("rename", "my-sandbox", OTHER, oldName="/tmp-name"),
            _event("destroy", "my-sandbox"),
        ]
    )
    reasons: list[str] = []
    _by_name().watch(reasons.append, threading.Event())
    assert reasons == ["container rename", "container rename", "container destroy"]
    assert api.event_filters is not None and "label" not in api.event_filters


class BlockingStream:
    """Like docker-py's CancellableStream: blocks until closed from another thread."""

    def __init__(self) -> None:
        self.closed = threading.Event()

    def __iter__(self) -> BlockingStream:
        return self

    def __next__(self) -> dict[str, Any]:
        self.closed.wait(10)
        raise StopIteration

    def close(self) -> None:
        self.closed.set()


def test_watch_returns_soon_after_stop(api: FakeAPI) -> None:
    stream = BlockingStream()
    api.stream = stream
    stop = threading.Event()
    watcher = threading.Thread(target=_by_labels().watch, args=(lambda _reason: None, stop))
    watcher.start()
    time.sleep(0.2)
    assert watcher.is_alive()
    stop.set()
    watcher.join(3)
    assert not watcher.is_alive() and stream.closed.is_set()


def test_watch_without_docker_raises_for_the_daemon_to_back_off(api: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(decode: bool = False, filters: Any = None) -> Any:
        raise docker.errors.DockerException("Error while fetching server API version")

    monkeypatch.setattr(FakeClient, "events", lambda self, decode=False, filters=None: refuse())
    with pytest.raises(TargetError, match="cannot follow Docker events"):
        _by_labels().watch(lambda _reason: None, threading.Event())
