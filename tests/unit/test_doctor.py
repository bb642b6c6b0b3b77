from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from clawguard import doctor
from clawguard.doctor import FAIL, PASS, SKIP, Check, diagnose

from .chroot_sandbox import ChrootTarget, context, make_sandbox_root
from .conftest import basic_config

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chroot and chown need root")


class Host:
    """systemctl and loginctl answers, as a lingering user with the unit enabled would get them."""

    def __init__(self, **answers: tuple[int, str]) -> None:
        self.answers = {
            "is-enabled": (0, "enabled"),
            "WatchdogUSec": (0, "1min"),
            "Linger": (0, "yes"),
            **answers,
        }

    def __call__(self, argv: Sequence[str]) -> tuple[int, str]:
        for key, answer in self.answers.items():
            if key in argv:
                return answer
        return 1, "unexpected"


@pytest.fixture
def docker_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(_runner: object) -> Iterator[Check]:
        yield Check("docker", PASS, "reachable (test)")

    monkeypatch.setattr(doctor, "_docker", fake)


def _unit(tmp_path: Path) -> None:
    unit = tmp_path / "config-home" / "systemd" / "user" / "clawguard.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\nWatchdogSec=60s\n")


@needs_root
def test_a_wiped_pod_shows_each_trap_with_its_fix(archive: Path, tmp_path: Path, write_config, docker_ok: None) -> None:  # type: ignore[no-untyped-def]
    _unit(tmp_path)
    config = write_config(basic_config(archive, "    gateway: {enabled: false}\n"))
    root = make_sandbox_root(tmp_path / "root")
    os.chown(root / "sandbox/.openclaw-data/telegram", 0, 0)  # as a fresh NemoClaw pod has it (#975)
    checks = {
        c.name: c
        for c in diagnose(
            config,
            targets={"my-assistant": ChrootTarget(root)},
            runner=Host(Linger=(1, "Failed to get user: User root is not logged in or lingering")),
        )
    }
    assert checks["sandbox"].outcome == PASS and checks["user"].detail == "sandbox is uid 998, gid 998"
    assert checks["agent"].outcome == PASS and checks["agent"].detail.startswith("OpenClaw 2026.3.31, split layout")
    assert checks["plan"].outcome == FAIL and "drifted" in checks["plan"].detail
    assert checks["exec-approvals"].outcome == FAIL and "allowlist miss" in checks["exec-approvals"].detail
    assert checks["exec-approvals"].fix.startswith("put exec-approvals.json in the archive")
    assert checks["telegram directory"].outcome == FAIL and "owned by uid 0" in checks["telegram directory"].detail
    assert checks["telegram directory"].fix == "clawguard restore my-assistant (its telegram step chowns it)"
    assert checks["gateway"].outcome == SKIP
    assert checks["service"].outcome == PASS and checks["watchdog"].outcome == PASS
    assert checks["lingering"].outcome == FAIL and "lingering is off" in checks["lingering"].detail
    assert checks["lingering"].fix.startswith("sudo loginctl enable-linger")


@needs_root
def test_after_a_restore_the_sandbox_lines_pass(archive: Path, tmp_path: Path, write_config, docker_ok: None) -> None:  # type: ignore[no-untyped-def]
    from clawguard import load_config
    from clawguard.converge import converge

    _unit(tmp_path)
    config = write_config(basic_config(archive, "    gateway: {enabled: false}\n"))
    target = ChrootTarget(make_sandbox_root(tmp_path / "root"))
    assert converge(context(load_config(config).sandboxes["my-assistant"], target)).ok
    checks = list(diagnose(config, targets={"my-assistant": target}, runner=Host()))
    assert [c.name for c in checks if c.outcome == FAIL] == []
    assert [c.name for c in checks] == [
        "docker",
        "config",
        "archive",
        "sandbox",
        "agent",
        "user",
        "plan",
        "exec-approvals",
        "telegram directory",
        "gateway",
        "service",
        "watchdog",
        "lingering",
    ]  # the order the issue asks for


def test_without_docker_the_sandbox_checks_are_skipped_not_failed(
    archive: Path, tmp_path: Path, write_config, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    def unreachable(_runner: object) -> Iterator[Check]:
        yield Check("docker", FAIL, "Docker is not reachable: permission denied", "add yourself to the docker group")

    monkeypatch.setattr(doctor, "_docker", unreachable)
    config = write_config(basic_config(archive))
    checks = list(diagnose(config, runner=Host(**{"is-enabled": (1, "disabled")})))
    outcome = {c.name: c.outcome for c in checks}
    assert outcome["docker"] == FAIL and outcome["archive"] == PASS
    assert outcome["sandbox"] == SKIP and outcome["gateway"] == SKIP
    assert outcome["service"] == FAIL  # no unit file in this test's config home


def test_a_broken_config_is_one_line_with_its_location(tmp_path: Path, write_config, docker_ok: None) -> None:  # type: ignore[no-untyped-def]
    config = write_config("version: 1\nsandboxes:\n  x:\n    target: {kind: k3s}\n    archiv: /x\n")
    checks = list(diagnose(config, runner=Host()))
    bad = next(c for c in checks if c.name == "config")
    assert bad.outcome == FAIL and ":5:" in bad.detail and "archiv" in bad.detail


def test_cli_exit_status_and_json(tmp_path: Path, write_config, docker_ok: None, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    from clawguard.cli import main

    monkeypatch.setenv("NO_COLOR", "1")
    config = write_config("version: 1\nsandboxes:\n  x:\n    target: {kind: k3s}\n    archiv: /x\n")
    assert main(["-c", str(config), "doctor"]) == 1
    out = capsys.readouterr().out
    assert "✗ config:" in out and "    fix: " in out and "\033[" not in out
    assert main(["-c", str(config), "doctor", "--json"]) == 1
    assert {c["name"] for c in json.loads(capsys.readouterr().out)} >= {"docker", "config", "service"}


@needs_root
def test_an_agent_that_cannot_tell_its_version_is_a_failed_line(
    archive: Path, tmp_path: Path, write_config, docker_ok: None
) -> None:  # type: ignore[no-untyped-def]
    import io

    from clawguard import log

    log.configure("error", io.StringIO())
    config = write_config(basic_config(archive, "    gateway: {enabled: false}\n"))
    target = ChrootTarget(make_sandbox_root(tmp_path / "root", agent=None))
    checks = {c.name: c for c in diagnose(config, targets={"my-assistant": target}, runner=Host())}
    assert checks["agent"].outcome == FAIL and "cannot tell which OpenClaw" in checks["agent"].detail
    assert "agent.version" in checks["agent"].fix
    assert checks["user"].outcome == PASS  # the rest still runs, on the seed's assumptions
