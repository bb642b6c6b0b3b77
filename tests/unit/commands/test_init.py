"""clawguard init against a fake Docker: what it finds, what it writes, what it refuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from clawguard.cli import main
from clawguard.config import load_config
from clawguard.errors import TargetError
from clawguard.plan import build_plan
from clawguard.targets import Instance
from clawguard.targets.base import ExecResult
from clawguard.targets.docker import DockerTarget
from clawguard.targets.k3s import K3sTarget, running_pods

POD_A = "a" * 64
POD_B = "b" * 64
POD_DEAD = "e" * 64
GEN2 = "c" * 64


def _pod(cid: str, pod: str, namespace: str = "openshell") -> dict[str, Any]:
    return {
        "ID": cid,
        "Labels": {
            "io.kubernetes.pod.name": pod,
            "io.kubernetes.pod.namespace": namespace,
            "io.kubernetes.container.name": "agent",
        },
    }


def _listing(*pods: dict[str, Any], running: tuple[str, ...]) -> bytes:
    infos = "".join(json.dumps(p, indent=4) + "\n" for p in pods)
    tasks = "TASK PID STATUS\n" + "".join(f"{cid} 42 RUNNING\n" for cid in running) + f"{POD_DEAD} 0 STOPPED\n"
    return f"{infos}--tasks--\n{tasks}".encode()


def _container(name: str, state: str = "running", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"Id": name.encode().hex().ljust(64, "0")[:64], "Names": [f"/{name}"], "State": state, "Labels": labels}


def _gen2(name: str, state: str = "running") -> dict[str, Any]:
    labels = {"openshell.ai/managed-by": "openshell", "openshell.ai/sandbox-name": name}
    return _container(f"openshell-{name}-1234", state, labels)


class FakeAPI:
    def __init__(self) -> None:
        self.clusters: list[dict[str, Any]] = []
        self.sandboxes: list[dict[str, Any]] = []
        self.listings: dict[str, bytes] = {}

    def containers(self, all: bool = False, filters: Any = None) -> list[dict[str, Any]]:
        if "name" in filters:
            return self.clusters
        return self.sandboxes


class FakeClient:
    def __init__(self, api: FakeAPI) -> None:
        self.api = api


@pytest.fixture(autouse=True)
def _no_openshell_gateway(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No OpenShell 0.1.x gateway registered: this machine's own must not leak in."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("OPENSHELL_GATEWAY", raising=False)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeAPI:
    api = FakeAPI()
    monkeypatch.setattr("clawguard.targets._docker.client", lambda base_url=None, timeout=60: FakeClient(api))

    def exec_in(_api: Any, container: str, argv: list[str], stdin: Any, timeout: Any, **kwargs: Any) -> ExecResult:
        return ExecResult(0, api.listings[container], b"")

    monkeypatch.setattr("clawguard.targets._docker.exec_in", exec_in)
    # The targets locate exactly as the daemon would; here they trust the listing.
    monkeypatch.setattr(
        K3sTarget, "locate", lambda self: Instance(POD_A, f"pod openshell/{self.pod} in {self.cluster}")
    )
    monkeypatch.setattr(DockerTarget, "locate", lambda self: Instance(GEN2, f"container openshell-{self.sandbox}-1234"))
    return api


def _machine(api: FakeAPI) -> None:
    """One cluster with two running pods (and a dead one), two plain-Docker sandboxes."""
    api.clusters = [_container("openshell-cluster-nemoclaw"), _container("openshell-cluster-old", "exited")]
    api.listings["openshell-cluster-nemoclaw"] = _listing(
        _pod(POD_A, "my-assistant"), _pod(POD_B, "other"), _pod(POD_DEAD, "gone"), running=(POD_A, POD_B)
    )
    api.sandboxes = [_gen2("gen2-a"), _gen2("gen2-b"), _gen2("stopped-one", "exited")]


def test_writes_a_config_that_check_accepts_and_an_empty_archive_per_sandbox(
    fake: FakeAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _machine(fake)
    config = tmp_path / "clawguard" / "config.yaml"
    assert main(["--config", str(config), "init"]) == 0
    out = capsys.readouterr().out
    assert "found 4 sandboxes:" in out
    assert "my-assistant  generation 1 (k3s)  pod openshell/my-assistant in openshell-cluster-nemoclaw" in out
    assert "gen2-a        generation 2 (docker)  container openshell-gen2-a-1234" in out
    assert "note: openshell-cluster-old: exited, skipped" in out
    assert "note: openshell-stopped-one-1234: exited, skipped" in out
    assert f"wrote {config}" in out

    loaded = load_config(config)
    assert list(loaded.sandboxes) == ["my-assistant", "other", "gen2-a", "gen2-b"]
    assert dict(loaded.sandboxes["my-assistant"].target) == {
        **{k: f.default for k, f in K3sTarget.params.items()},
        "kind": "k3s",
        "cluster": "openshell-cluster-nemoclaw",
    }
    gen2 = loaded.sandboxes["gen2-a"].target
    assert gen2["kind"] == "docker" and gen2["container"] is None
    assert gen2["labels"] == {"openshell.ai/managed-by": "openshell", "openshell.ai/sandbox-name": "gen2-a"}
    for name, sandbox in loaded.sandboxes.items():
        assert sandbox.archive == tmp_path / "clawguard" / "archives" / name
        assert sorted(p.name for p in sandbox.archive.iterdir()) == ["README.md", "credentials", "scripts", "skills"]
        assert (sandbox.archive / "credentials").stat().st_mode & 0o777 == 0o700
        assert sandbox.gateway["ssh_proxy"] == "openshell ssh-proxy --gateway-name nemoclaw --name {sandbox}"
        assert [p.step.kind for p in build_plan(sandbox).steps] == ["chown", "tree"]  # telegram, credentials/
    assert main(["--config", str(config), "check", "--offline"]) == 0  # the pods here are fakes


def test_a_cluster_of_another_gateway_gets_its_ssh_proxy(fake: FakeAPI, tmp_path: Path) -> None:
    fake.clusters = [_container("openshell-cluster-lab")]
    fake.listings["openshell-cluster-lab"] = _listing(_pod(POD_A, "bench"), running=(POD_A,))
    config = tmp_path / "config.yaml"
    assert main(["--config", str(config), "init"]) == 0
    sandbox = load_config(config).sandboxes["bench"]
    assert sandbox.target["cluster"] == "openshell-cluster-lab"
    assert sandbox.gateway["ssh_proxy"] == "openshell ssh-proxy --gateway-name lab --name {sandbox}"


def test_the_same_name_in_both_generations_gets_two_entries(fake: FakeAPI, tmp_path: Path) -> None:
    fake.clusters = [_container("openshell-cluster-nemoclaw")]
    fake.listings["openshell-cluster-nemoclaw"] = _listing(_pod(POD_A, "twin"), running=(POD_A,))
    fake.sandboxes = [_gen2("twin")]
    config = tmp_path / "config.yaml"
    assert main(["--config", str(config), "init"]) == 0
    loaded = load_config(config)
    assert loaded.sandboxes["twin"].target["kind"] == "k3s"
    second = loaded.sandboxes["twin-2"]
    assert second.target["labels"]["openshell.ai/sandbox-name"] == "twin"
    assert second.gateway["ssh_proxy"] == "openshell ssh-proxy --gateway-name nemoclaw --name twin"
    assert second.gateway["ssh_host"] == "openshell-twin"
    assert main(["--config", str(config), "check", "--offline"]) == 0  # the pods here are fakes


def test_never_overwrites_a_config_silently(fake: FakeAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _machine(fake)
    config = tmp_path / "config.yaml"
    config.write_text("# mine\n")
    assert main(["--config", str(config), "init"]) == 2
    assert f"{config} exists; use --force to replace it" in capsys.readouterr().err
    assert config.read_text() == "# mine\n"
    assert not (tmp_path / "archives").exists()

    assert main(["--config", str(config), "init", "--print"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("# Written by `clawguard init`") and "gen2-b:" in captured.out
    assert "found 4 sandboxes" in captured.err  # the findings stay off stdout
    assert config.read_text() == "# mine\n" and not (tmp_path / "archives").exists()

    assert main(["--config", str(config), "init", "--force"]) == 0
    assert "gen2-a" in load_config(config).sandboxes


def test_existing_archives_are_left_alone(fake: FakeAPI, tmp_path: Path) -> None:
    _machine(fake)
    mine = tmp_path / "archives" / "my-assistant"
    (mine / "skills" / "proxmox").mkdir(parents=True)
    (mine / "README.md").write_text("my notes\n")
    (mine / "SOUL.md").write_text("be kind\n")
    assert main(["--config", str(tmp_path / "config.yaml"), "init", "--archive", str(tmp_path / "archives")]) == 0
    assert (mine / "README.md").read_text() == "my notes\n"
    assert (mine / "SOUL.md").read_text() == "be kind\n"
    assert sorted(p.name for p in mine.iterdir()) == ["README.md", "SOUL.md", "credentials", "scripts", "skills"]


def test_nothing_found_writes_nothing(fake: FakeAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    assert main(["--config", str(config), "init"]) == 1
    assert "no running OpenShell sandbox found" in capsys.readouterr().err
    assert not config.exists()


def test_a_sandbox_the_target_cannot_locate_is_left_out(
    fake: FakeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.sandboxes = [_gen2("twice"), _gen2("twice")]

    def ambiguous(self: DockerTarget) -> Instance:
        raise TargetError("2 running containers match labels ...")

    monkeypatch.setattr(DockerTarget, "locate", ambiguous)
    assert main(["--config", str(tmp_path / "config.yaml"), "init"]) == 1
    assert "note: twice (docker): skipped: 2 running containers match" in capsys.readouterr().out


def test_without_docker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    class Down:
        def containers(self, **kwargs: Any) -> Any:
            raise docker.errors.DockerException("Error while fetching server API version")

    monkeypatch.setattr(
        "clawguard.targets._docker.client", lambda base_url=None, timeout=60: type("C", (), {"api": Down()})()
    )
    assert main(["--config", str(tmp_path / "config.yaml"), "init"]) == 1
    assert "Docker is not reachable" in capsys.readouterr().err


def test_running_pods_parsing_skips_dead_and_unlabelled_containers() -> None:
    text = _listing(
        _pod(POD_A, "my-assistant"), {"ID": POD_B, "Labels": {}}, _pod(POD_DEAD, "gone"), running=(POD_A, POD_B)
    ).decode()
    assert running_pods(text) == ["my-assistant"]
    assert running_pods("--tasks--\nTASK PID STATUS\n") == []
