"""`clawguard doctor` on a broken testbed names each problem and its fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import SANDBOX, clawguard, clawguard_env, write_config

pytestmark = pytest.mark.integration


def test_doctor_names_each_trap_then_passes_after_a_restore(testbed: object, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    testbed.install_openshell(bin_dir)  # type: ignore[attr-defined]
    config = write_config(tmp_path)
    env = clawguard_env(
        PATH=f"{bin_dir}:{clawguard_env()['PATH']}",
        XDG_CONFIG_HOME=str(tmp_path / "config-home"),  # no unit installed here
        NO_COLOR="1",
    )
    # A pod just restarted: telegram root-owned, no exec-approvals, no gateway.
    testbed.restart(SANDBOX)  # type: ignore[attr-defined]
    done = clawguard("--config", str(config), "doctor", SANDBOX, env=env)
    print(done.stdout)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()

    def line(name: str) -> str:
        return next(item for item in lines if item[2:].startswith((f"{SANDBOX}: {name}:", f"{name}:")))

    assert line("docker").startswith("✓")
    assert line("sandbox").startswith("✓") and line("user").startswith("✓")
    assert line("exec-approvals").startswith("✗") and "allowlist miss" in line("exec-approvals")
    assert line("telegram directory").startswith("✗") and "owned by uid 0" in line("telegram directory")
    assert line("gateway").startswith("✗") and "down" in line("gateway")
    assert line("plan").startswith("✗") and "drifted" in line("plan")
    assert line("service").startswith("✗") and line("lingering").startswith("✗")
    fixes = [item.strip() for item in lines if item.strip().startswith("fix:")]
    assert f"fix: clawguard restore {SANDBOX} (its telegram step chowns it)" in fixes
    assert "fix: clawguard install-service" in fixes
    assert any("loginctl enable-linger" in fix for fix in fixes)

    assert clawguard("--config", str(config), "restore", SANDBOX, env=env).returncode == 0
    done = clawguard("--config", str(config), "doctor", SANDBOX, "--json", env=env)
    checks = {c["name"]: c for c in json.loads(done.stdout)}
    for name in (
        "docker",
        "config",
        "archive",
        "sandbox",
        "user",
        "plan",
        "exec-approvals",
        "telegram directory",
        "gateway",
    ):
        assert checks[name]["outcome"] == "ok", checks[name]
    assert checks["service"]["outcome"] == "failed"  # still not installed on this host: exit 1
    assert done.returncode == 1
