"""Restores on the k3s target, against the real-containerd OpenShell testbed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clawguard import TargetError, load_config
from clawguard.targets import make_target

from .conftest import OTHER, OTHER_UID, SANDBOX, clawguard, sandbox_exec, sandbox_snapshot, write_config

pytestmark = pytest.mark.integration
DATA = "/sandbox/.openclaw-data"
CONF = "/sandbox/.openclaw"


def _stat(bed: object, path: str) -> str:
    """'<octal mode> <uid>:<gid> <type>' of a path, from inside the sandbox, as root."""
    return sandbox_exec(bed, SANDBOX, ["stat", "-c", "%a %u:%g %F", path]).strip()


def test_pod_restart_wipes_writes(testbed: object) -> None:
    sandbox_exec(testbed, SANDBOX, ["sh", "-c", f"echo x > {DATA}/wiped-by-restart"])
    old = testbed.container_id(SANDBOX)  # type: ignore[attr-defined]
    new = testbed.restart(SANDBOX)  # type: ignore[attr-defined]
    assert new != old and len(new) == 64
    code, _, _ = testbed.exec_in_sandbox(SANDBOX, ["test", "-e", f"{DATA}/wiped-by-restart"])  # type: ignore[attr-defined]
    assert code == 1


def test_locate_finds_the_live_pod_and_its_overlay(testbed: object, tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    sandbox = config.sandboxes[SANDBOX]
    instance = make_target(SANDBOX, sandbox.target).locate()
    assert instance.id == testbed.container_id(SANDBOX)  # type: ignore[attr-defined]
    mounts = testbed.client.containers.get("openshell-cluster-nemoclaw").exec_run(["cat", "/proc/mounts"])  # type: ignore[attr-defined]
    rootfs = f"/run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io/{instance.id}/rootfs"
    assert any(line.split()[1:3] == [rootfs, "overlay"] for line in mounts.output.decode().splitlines())


def test_marker_locate_refuses_to_guess_between_two_sandboxes(testbed: object, tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    values = dict(config.sandboxes[SANDBOX].target, locate="marker")
    with pytest.raises(TargetError, match="running containers match") as refused:
        make_target(SANDBOX, values).locate()
    # Every sandbox pod in the cluster matches (other tests may have left theirs): both of ours are named.
    for name in (SANDBOX, OTHER):
        assert testbed.container_id(name)[:12] in str(refused.value)  # type: ignore[attr-defined]


def test_restore_after_restart_is_correct_from_inside(testbed: object, tmp_path: Path) -> None:
    testbed.restart(SANDBOX)  # type: ignore[attr-defined]
    config = write_config(tmp_path)
    done = clawguard("--config", str(config), "restore", SANDBOX, "--no-gateway")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[ 1/10] exec-approvals" in done.stdout
    assert "my-assistant (" in done.stdout and ": verified: 10 steps (10 changed)" in done.stdout

    archive = Path(__file__).resolve().parents[2] / "restore-archive"
    # Content, as the agent (the sandbox user) reads it.
    for inside, host in [
        (f"{CONF}/exec-approvals.json", "exec-approvals.json"),  # through the symlink
        (f"{CONF}/openclaw.json", "openclaw.json"),
        (f"{CONF}/workspace/SOUL.md", "SOUL.md"),  # through NemoClaw's workspace symlink
        (f"{CONF}/proxmox.sh", "scripts/proxmox.sh"),
        (f"{DATA}/skills/proxmox/scripts/list-vms.sh", "skills/proxmox/scripts/list-vms.sh"),
        (f"{DATA}/credentials/proxmox.env", "credentials/proxmox.env"),
    ]:
        assert sandbox_exec(testbed, SANDBOX, ["cat", inside], user="sandbox") == (archive / host).read_text()

    assert _stat(testbed, f"{CONF}/openclaw.json") == "444 0:0 regular file"
    assert _stat(testbed, f"{DATA}/exec-approvals.json") == "600 998:998 regular file"  # as the agent keeps it
    assert (
        sandbox_exec(testbed, SANDBOX, ["readlink", f"{CONF}/exec-approvals.json"]).strip()
        == f"{DATA}/exec-approvals.json"
    )
    assert _stat(testbed, f"{DATA}/telegram") == "755 998:998 directory"
    assert _stat(testbed, f"{DATA}/credentials") == "700 998:998 directory"
    assert _stat(testbed, f"{DATA}/credentials/proxmox.env") == "600 998:998 regular file"
    assert _stat(testbed, f"{DATA}/proxmox.sh") == "755 998:998 regular file"
    assert sandbox_exec(testbed, SANDBOX, ["readlink", f"{CONF}/proxmox.sh"]).strip() == f"{DATA}/proxmox.sh"
    assert _stat(testbed, f"{DATA}/skills/proxmox/SKILL.md") == "644 998:998 regular file"
    # The agent can now write its telegram offset (the EACCES bug is gone) and run its script.
    sandbox_exec(
        testbed, SANDBOX, ["sh", "-c", f"echo 42 > {DATA}/telegram/update-offset-default.json"], user="sandbox"
    )
    assert _stat(testbed, f"{DATA}/workspace/SOUL.md") == "644 998:998 regular file"

    again = clawguard("--config", str(config), "restore", SANDBOX, "--no-gateway", "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)[0]
    assert report["changed"] == 0
    assert {s["outcome"] for s in report["steps"]} == {"ok"}


def test_dry_run_on_a_fresh_pod_writes_nothing(testbed: object, tmp_path: Path) -> None:
    testbed.restart(SANDBOX)  # type: ignore[attr-defined]
    before = sandbox_snapshot(testbed, SANDBOX)
    done = clawguard("--config", str(write_config(tmp_path)), "restore", SANDBOX, "--dry-run", "--no-gateway")
    assert done.returncode == 0, done.stderr
    assert "would-change" in done.stdout
    assert "owner 0:0, want 998:998" in done.stdout  # the telegram directory
    assert sandbox_snapshot(testbed, SANDBOX) == before


def test_unknown_key_exits_2_and_writes_nothing(testbed: object, tmp_path: Path) -> None:
    testbed.restart(SANDBOX)  # type: ignore[attr-defined]
    before = sandbox_snapshot(testbed, SANDBOX)
    config = write_config(tmp_path, extra="    tool_policy:\n      allow: all\n")
    done = clawguard("--config", str(config), "restore")
    assert done.returncode == 2
    assert f"{config}:9: sandboxes.my-assistant.tool_policy: unknown key 'tool_policy'" in done.stderr
    assert sandbox_snapshot(testbed, SANDBOX) == before


def test_unknown_user_exits_2_and_writes_nothing(testbed: object, tmp_path: Path) -> None:
    testbed.restart(SANDBOX)  # type: ignore[attr-defined]
    before = sandbox_snapshot(testbed, SANDBOX)
    config = write_config(
        tmp_path, extra="    plan:\n      - {kind: chown, path: /sandbox/.openclaw-data/telegram, owner: 4321}\n"
    )
    done = clawguard("--config", str(config), "restore", SANDBOX, "--no-gateway")
    assert done.returncode == 2
    assert "plan[0].owner: uid 4321 does not exist in the sandbox's /etc/passwd" in done.stderr
    assert sandbox_snapshot(testbed, SANDBOX) == before


def test_another_uid_is_resolved_from_the_sandbox(testbed: object, tmp_path: Path) -> None:
    testbed.restart(OTHER)  # type: ignore[attr-defined]
    done = clawguard("--config", str(write_config(tmp_path)), "restore", OTHER, "--no-gateway")
    assert done.returncode == 0, done.stdout + done.stderr
    out = sandbox_exec(testbed, OTHER, ["stat", "-c", "%u:%g", f"{DATA}/telegram", f"{DATA}/workspace/SOUL.md"])
    assert out.split() == [f"{OTHER_UID}:{OTHER_UID}"] * 2


def test_agent_symlink_cannot_redirect_writes(testbed: object, tmp_path: Path) -> None:
    testbed.restart(SANDBOX)  # type: ignore[attr-defined]
    # The agent owns .openclaw-data and swaps its skills directory for a link to /etc.
    sandbox_exec(testbed, SANDBOX, ["sh", "-c", f"rm -rf {DATA}/skills && ln -s /etc {DATA}/skills"], user="sandbox")
    etc_before = sandbox_exec(testbed, SANDBOX, ["ls", "-la", "/etc/"])
    done = clawguard("--config", str(write_config(tmp_path)), "restore", SANDBOX, "--no-gateway")
    assert done.returncode == 1
    assert "refusing to write through an undeclared symlink" in done.stdout
    assert sandbox_exec(testbed, SANDBOX, ["ls", "-la", "/etc/"]) == etc_before
    # Everything that does not go through the link was still restored.
    assert _stat(testbed, f"{DATA}/telegram") == "755 998:998 directory"


def test_drift_inside_a_live_pod_is_repaired(testbed: object, tmp_path: Path) -> None:
    config = str(write_config(tmp_path))
    testbed.restart(SANDBOX)  # type: ignore[attr-defined]
    assert clawguard("--config", config, "restore", SANDBOX, "--no-gateway").returncode == 0
    sandbox_exec(testbed, SANDBOX, ["rm", "-rf", f"{DATA}/skills/vmware-esxi"])
    sandbox_exec(testbed, SANDBOX, ["chown", "0:0", f"{DATA}/telegram"])
    done = clawguard("--config", config, "restore", SANDBOX, "--no-gateway", "--json")
    steps = {s["name"]: s["outcome"] for s in json.loads(done.stdout)[0]["steps"]}
    assert steps["skills/vmware-esxi"] == "changed" and steps["telegram"] == "changed"
    assert sum(o == "changed" for o in steps.values()) == 2
    assert _stat(testbed, f"{DATA}/skills/vmware-esxi/SKILL.md") == "644 998:998 regular file"
