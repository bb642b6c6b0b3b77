"""OpenShell generation 2 (each sandbox a plain Docker container) found, located and restored
next to generation 1 (a k3s pod), on the real testbed, with one plan and one archive.

One k3s sandbox and two plain-Docker sandboxes: one named the way OpenShell's Docker
driver names them (the name changes with every recreation, so the config selects it
by its labels), one with a fixed container name (selected by name).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from clawguard import TargetError, load_config
from clawguard.targets import make_target
from clawguard.targets.docker import DockerTarget, nemoclaw_labels
from testbed import DockerSandboxes, Testbed

from .conftest import FIGURES_DIR, REPO, SANDBOX, clawguard, clawguard_env, sandbox_exec, sandbox_snapshot, wait_for
from .test_daemon import DaemonProcess
from .test_testbed_agents import seen_host_key

pytestmark = pytest.mark.integration

LABELLED = "gen2-labels"  # container openshell-gen2-labels-<sandbox id>, renamed by every recreation
NAMED = "gen2-named"
NAMED_CONTAINER = "clawguard-gen2-named"
ALL = (SANDBOX, LABELLED, NAMED)
ARCHIVE = REPO / "restore-archive"
DATA = "/sandbox/.openclaw-data"
CONF = "/sandbox/.openclaw"
# (inside the sandbox, in the archive): read back as the agent, after a restore.
RESTORED = [
    (f"{CONF}/exec-approvals.json", "exec-approvals.json"),
    (f"{CONF}/openclaw.json", "openclaw.json"),
    (f"{CONF}/workspace/SOUL.md", "SOUL.md"),
    (f"{CONF}/proxmox.sh", "scripts/proxmox.sh"),
    (f"{DATA}/skills/proxmox/scripts/list-vms.sh", "skills/proxmox/scripts/list-vms.sh"),
    (f"{DATA}/credentials/proxmox.env", "credentials/proxmox.env"),
]


@pytest.fixture(scope="module")
def gen2(testbed: Testbed) -> Iterator[DockerSandboxes]:
    sandboxes = DockerSandboxes(testbed.client)
    for name in (LABELLED, NAMED):
        sandboxes.remove(name)  # left over by an interrupted run
    sandboxes.add(LABELLED)
    sandboxes.add(NAMED, container_name=NAMED_CONTAINER)
    yield sandboxes
    for name in (LABELLED, NAMED):
        sandboxes.remove(name)


def _bed(testbed: Testbed, gen2: DockerSandboxes, name: str) -> Any:
    """Whoever runs commands in sandbox ``name``: the cluster (k3s) or Docker."""
    return testbed if name == SANDBOX else gen2


def _current_id(testbed: Testbed, gen2: DockerSandboxes, name: str) -> str | None:
    return _bed(testbed, gen2, name).container_id(name)  # type: ignore[no-any-return]


def write_config(tmp_path: Path, archive: Path = ARCHIVE, daemon: str = "") -> Path:
    """The three sandboxes; only their target: differs."""
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""version: 1
{daemon}sandboxes:
  {SANDBOX}:
    target: {{kind: k3s, cluster: openshell-cluster-nemoclaw}}
    archive: {archive}
  {LABELLED}:
    target:
      kind: docker
      labels: {{openshell.ai/managed-by: openshell, openshell.ai/sandbox-name: {LABELLED}}}
    archive: {archive}
  {NAMED}:
    target: {{kind: docker, container: {NAMED_CONTAINER}}}
    archive: {archive}
"""
    )
    return path


def _env(tmp_path: Path) -> dict[str, str]:
    """The openshell stand-in on PATH (clawguard_env gives the test its own state directory)."""
    bin_dir = tmp_path / "bin"
    Testbed.install_openshell(bin_dir)
    return clawguard_env(PATH=f"{bin_dir}:{os.environ['PATH']}")


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        stat = path.lstat()
        digest.update(f"{path.relative_to(root)} {stat.st_mode:o}\n".encode())
        if path.is_file() and not path.is_symlink():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _recreate_all(testbed: Testbed) -> dict[str, str]:
    """Replace the three sandboxes at once (each on its own Docker connection); name -> new ID."""
    jobs = {
        SANDBOX: lambda: Testbed().restart(SANDBOX),
        LABELLED: lambda: DockerSandboxes().recreate(LABELLED),
        NAMED: lambda: DockerSandboxes().recreate(NAMED),
    }
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


def _assert_restored_from_inside(testbed: Testbed, gen2: DockerSandboxes, name: str) -> None:
    bed = _bed(testbed, gen2, name)
    for inside, host in RESTORED:
        assert sandbox_exec(bed, name, ["cat", inside], user="sandbox") == (ARCHIVE / host).read_text(), (name, inside)
    assert sandbox_exec(bed, name, ["stat", "-c", "%U %a", f"{DATA}/telegram"]).split() == ["sandbox", "755"]
    assert sandbox_exec(bed, name, ["readlink", f"{CONF}/exec-approvals.json"]).strip() == f"{DATA}/exec-approvals.json"


# ---------------------------------------------------------------- the testbed


def test_recreate_is_a_new_container_and_hand_placed_files_are_gone(gen2: DockerSandboxes, tmp_path: Path) -> None:
    openshell = Testbed.install_openshell(tmp_path / "bin")
    for name in (LABELLED, NAMED):
        sandbox_exec(gen2, name, ["sh", "-c", f"echo by hand > {DATA}/placed-by-hand"], user="sandbox")
        # Like OpenShell's endpoint, the sandbox keeps its host key in memory only: ask sshd for it.
        old_key = seen_host_key(openshell, name, tmp_path / f"{name}.known_hosts.1")
        old_id, old_name = gen2.container_id(name), gen2.container_name(name)
        new_id = gen2.recreate(name)
        assert new_id != old_id and len(new_id) == 64
        assert seen_host_key(openshell, name, tmp_path / f"{name}.known_hosts.2") != old_key
        code, _, _ = gen2.exec_in_sandbox(name, ["test", "-e", f"{DATA}/placed-by-hand"])
        assert code == 1, f"{name}: a file written by hand survived the recreation"
        if name == LABELLED:
            assert gen2.container_name(name) != old_name and gen2.container_name(name).startswith(f"openshell-{name}-")
        else:
            assert gen2.container_name(name) == old_name == NAMED_CONTAINER


def test_locate_by_labels_and_by_name_and_refuse_to_guess(gen2: DockerSandboxes, tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    for name in (LABELLED, NAMED):
        target = make_target(name, config.sandboxes[name].target)
        instance = target.locate()
        assert instance.id == gen2.container_id(name)
        result = target.exec(instance, ["sh", "-c", "id -u; cat /etc/hostname"])
        assert result.code == 0 and result.stdout.decode().split() == ["0", name]
    # The managed-by label alone matches both Docker sandboxes.
    broad = DockerTarget(
        LABELLED, {**config.sandboxes[LABELLED].target, "labels": {"openshell.ai/managed-by": "openshell"}}
    )
    with pytest.raises(TargetError, match="running containers match labels openshell.ai/managed-by=openshell"):
        broad.locate()


# -------------------------------------------------------- one archive, both kinds


def test_the_same_archive_restores_a_sandbox_of_each_kind(
    testbed: Testbed, gen2: DockerSandboxes, tmp_path: Path
) -> None:
    before = _tree_digest(ARCHIVE)
    _recreate_all(testbed)
    config = write_config(tmp_path)
    env = clawguard_env()
    done = clawguard("--config", str(config), "restore", "--no-gateway", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ALL:
        assert f"{name} (" in done.stdout
    assert done.stdout.count(": verified: 10 steps (10 changed)") == 3, done.stdout
    for name in ALL:
        _assert_restored_from_inside(testbed, gen2, name)
    # Seen from inside, the three sandboxes are now identical, file by file.
    snapshots = {name: sandbox_snapshot(_bed(testbed, gen2, name), name) for name in ALL}
    assert snapshots[LABELLED] == snapshots[SANDBOX] == snapshots[NAMED]
    again = clawguard("--config", str(config), "restore", "--no-gateway", "--json", env=env)
    assert again.returncode == 0, again.stderr
    assert [report["changed"] for report in json.loads(again.stdout)] == [0, 0, 0]
    assert _tree_digest(ARCHIVE) == before, "the archive must not change"


# ----------------------------------------------------- one daemon, three sandboxes


def _rows(config: Path, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    done = clawguard("--config", str(config), "status", "--json", env=env)
    assert done.returncode == 0, done.stderr
    return {row["sandbox"]: row for row in json.loads(done.stdout)["sandboxes"]}


def _converged(config: Path, env: dict[str, str], ids: dict[str, str | None]) -> bool:
    rows = _rows(config, env)
    return all(
        rows[name].get("container_id") == ids[name]
        and (rows[name].get("gateway") or {}).get("healthy")
        and (rows[name].get("last_restore") or {}).get("outcome") == "ok"
        for name in ALL
    )


def test_one_daemon_restores_three_sandboxes_recreated_at_once(
    testbed: Testbed, gen2: DockerSandboxes, tmp_path: Path
) -> None:
    env = _env(tmp_path)
    config = write_config(tmp_path, daemon="daemon: {poll_interval: 5, health_interval: 5}\n")
    daemon = DaemonProcess(config, env, tmp_path / "daemon.log")
    try:
        first = {name: _current_id(testbed, gen2, name) for name in ALL}
        wait_for("the first convergence of all three", lambda: _converged(config, env, first), timeout=120, every=0.5)

        recreated_at = time.time()
        new = _recreate_all(testbed)
        recreated_in = time.time() - recreated_at
        assert all(new[name] != first[name] for name in ALL)
        wait_for("all three restored", lambda: _converged(config, env, dict(new)), timeout=120, every=0.2)

        figures: dict[str, Any] = {"recreate_all_s": round(recreated_in, 3)}
        for name in ALL:
            detected = daemon.event_time("sandbox.detected", recreated_at, sandbox=name)
            restored = daemon.event_time("restore.done", recreated_at, sandbox=name, outcome="ok")
            healthy = daemon.event_time("gateway.health", recreated_at, sandbox=name, outcome="healthy")
            assert detected and restored and healthy, name
            figures[name] = {
                "detected_s": round(detected - recreated_at, 3),
                "restored_s": round(restored - recreated_at, 3),
                "gateway_healthy_s": round(healthy - recreated_at, 3),
            }
        figures["all_healthy_s"] = max(figures[name]["gateway_healthy_s"] for name in ALL)
        print("three sandboxes recreated at once:", json.dumps(figures))
        FIGURES_DIR.mkdir(parents=True, exist_ok=True)
        (FIGURES_DIR / "docker-target-timings.json").write_text(json.dumps(figures, indent=2))

        for name in ALL:
            _assert_restored_from_inside(testbed, gen2, name)
            gateway = _bed(testbed, gen2, name).gateway_status(name)
            assert gateway is not None and gateway["exec"] == "allowed", (name, gateway)
        rows = _rows(config, env)
        assert sorted(rows) == sorted(ALL)
        for name in ALL:
            assert rows[name]["container_id"] == new[name]
            assert rows[name]["last_restore"]["reason"] == "pod replaced"
    finally:
        code = daemon.stop()
    assert code == 0, "\n".join(daemon.lines()[-30:])
    assert "Traceback" not in daemon.log.read_text()


# ----------------------------------------------------------------------- init


def test_init_finds_all_three_and_its_config_restores_them(
    testbed: Testbed, gen2: DockerSandboxes, tmp_path: Path
) -> None:
    env = _env(tmp_path)
    config = tmp_path / "init" / "config.yaml"
    archives = tmp_path / "init" / "archives"
    done = clawguard("--config", str(config), "init", "--archive", str(archives), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    print(done.stdout)
    loaded = load_config(config)
    # Other OpenShell clusters on this machine (another test bed, a real NemoClaw) may hold a
    # sandbox of the same name: init gives each its own key. Ours is the one in our cluster.
    ours = {
        key: sandbox
        for key, sandbox in loaded.sandboxes.items()
        if sandbox.target["kind"] == "k3s"
        and sandbox.target["cluster"] == "openshell-cluster-nemoclaw"
        and (sandbox.target["pod"] or key) == SANDBOX
    }
    assert len(ours) == 1, loaded.sandboxes
    [k3s_key] = ours
    keys = {SANDBOX: k3s_key, LABELLED: LABELLED, NAMED: NAMED}
    for name in (LABELLED, NAMED):
        assert loaded.sandboxes[name].target["kind"] == "docker"
        assert loaded.sandboxes[name].target["labels"] == nemoclaw_labels(name)
    for name in ALL:
        assert loaded.sandboxes[keys[name]].archive == archives / keys[name]

    checked = clawguard("--config", str(config), "check", env=env)
    assert checked.returncode == 0, checked.stderr
    for name in ALL:  # only ours: init also found whatever else runs on this machine
        restored = clawguard("--config", str(config), "restore", keys[name], env=env)
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert f"{keys[name]} (" in restored.stdout and ": verified: " in restored.stdout
        assert f"{keys[name]}: restored" in restored.stdout and "gateway healthy" in restored.stdout
        bed = _bed(testbed, gen2, name)
        assert sandbox_exec(bed, name, ["stat", "-c", "%U", f"{DATA}/telegram"]).strip() == "sandbox"

    again = clawguard("--config", str(config), "init", env=env)
    assert again.returncode == 2 and "exists; use --force" in again.stderr
