from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from clawguard.agent.probe import FACTS_SCRIPT
from clawguard.doctor import FAIL, PASS, SKIP, diagnose
from clawguard.schema import Field, HostPath
from clawguard.targets import REGISTRY
from clawguard.targets.docker import nemoclaw_labels

from .chroot_sandbox import ChrootTarget, context, make_sandbox_root
from .conftest import basic_config
from .fake_engine import ENGINE_VERSION, FakeEngine, Reply, facts_reply, no_command

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chroot and chown need root")

# Where no Docker daemon listens: DOCKER_HOST set to it must not matter to a sandbox whose
# target needs no Docker.
NOWHERE = "unix:///nonexistent/docker.sock"
CID = "c" * 64
OTHER = "d" * 64


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
def no_local_docker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local Docker is down (DOCKER_HOST names a socket that does not exist)."""
    monkeypatch.setenv("DOCKER_HOST", NOWHERE)


class ChrootKind(ChrootTarget):
    """The chroot double as a target kind of its own, built from the config like any other
    (``target: {kind: chroot, root: DIR}``): a kind that needs no Docker."""

    params: Mapping[str, Any] = {"root": Field(HostPath(), "The chroot directory.", required=True)}

    def __init__(self, sandbox: str, values: Mapping[str, Any]) -> None:
        super().__init__(Path(values["root"]))
        self.sandbox = sandbox
        self.values = dict(values)


@pytest.fixture
def chroot_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register ``kind: chroot`` for this test only (the class above has no ``kind`` in its
    body, so defining it registered nothing)."""
    monkeypatch.setattr(ChrootKind, "kind", "chroot", raising=False)
    monkeypatch.setitem(REGISTRY, "chroot", ChrootKind)


def _unit(tmp_path: Path) -> None:
    unit = tmp_path / "config-home" / "systemd" / "user" / "clawguard.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\nWatchdogSec=60s\n")


@needs_root
def test_a_wiped_pod_shows_each_trap_with_its_fix(
    archive: Path, tmp_path: Path, write_config, no_local_docker: None
) -> None:  # type: ignore[no-untyped-def]
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
def test_after_a_restore_the_sandbox_lines_pass(
    archive: Path, tmp_path: Path, write_config, no_local_docker: None
) -> None:  # type: ignore[no-untyped-def]
    from clawguard import load_config
    from clawguard.converge import converge

    _unit(tmp_path)
    config = write_config(basic_config(archive, "    gateway: {enabled: false}\n"))
    target = ChrootTarget(make_sandbox_root(tmp_path / "root"))
    assert converge(context(load_config(config).sandboxes["my-assistant"], target)).ok
    checks = list(diagnose(config, targets={"my-assistant": target}, runner=Host()))
    assert [c.name for c in checks if c.outcome == FAIL] == []
    assert [c.name for c in checks] == [
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
    ]  # the order the issue asks for; no Docker line: the chroot target needs none


def test_each_docker_target_is_checked_at_its_own_docker_host(  # type: ignore[no-untyped-def]
    archive: Path, tmp_path: Path, write_config, no_local_docker: None
) -> None:
    """Two sandboxes, each on its own Docker: one a fake Engine that holds the sandbox's
    container, one where no Docker listens; local Docker (DOCKER_HOST) is down. Doctor must
    reach the first through its docker_host, all the way into the container, and name the
    second's host in its failure."""
    dead = f"unix://{tmp_path}/no-docker-here.sock"
    with FakeEngine() as engine:
        engine.add(CID, "openshell-here-1234", labels=nemoclaw_labels("here"))
        engine.add(OTHER, "openshell-elsewhere-5678", labels=nemoclaw_labels("elsewhere"))  # not its Docker
        engine.run = lambda call: Reply(0, facts_reply(uid=998)) if FACTS_SCRIPT in call.argv else no_command(call)
        config = write_config(
            f"""\
version: 1
sandboxes:
  here:
    target: {{kind: docker, labels: {{openshell.ai/managed-by: openshell, openshell.ai/sandbox-name: here}},
              docker_host: "{engine.url}"}}
    archive: {archive}
    user: sandbox
    gateway: {{enabled: false}}
  elsewhere:
    target: {{kind: docker, container: openshell-elsewhere-5678, docker_host: "{dead}"}}
    archive: {archive}
"""
        )
        checks = list(diagnose(config, runner=Host()))
    here = {c.name: c for c in checks if c.sandbox == "here"}
    assert here["docker"].outcome == PASS
    assert here["docker"].detail.startswith(f"reachable at {engine.url}: Docker {ENGINE_VERSION}, as uid ")
    assert here["sandbox"].outcome == PASS and here["sandbox"].detail == f"{CID[:12]} (container openshell-here-1234)"
    assert here["agent"].outcome == PASS and here["agent"].detail.startswith("OpenClaw 2026.3.31, split layout")
    assert here["user"].outcome == PASS and here["user"].detail == "sandbox is uid 998, gid 998"
    # What the plan reads comes from the container itself: this engine answers it with an error.
    assert here["plan"].outcome == FAIL and "sh: not in this fake engine" in here["plan"].detail
    assert engine.calls and {(call.container, call.user) for call in engine.calls} == {(CID, "0:0")}

    elsewhere = {c.name: c for c in checks if c.sandbox == "elsewhere"}
    assert elsewhere["docker"].outcome == FAIL and elsewhere["docker"].detail.startswith(
        f"Docker at {dead} is not reachable"
    )
    assert "sandboxes.elsewhere.target.docker_host" in elsewhere["docker"].fix
    assert elsewhere["archive"].outcome == PASS and elsewhere["gateway"].outcome == SKIP
    assert elsewhere["sandbox"].outcome == SKIP and elsewhere["sandbox"].detail == f"needs Docker at {dead}"
    assert all("docker.sock" not in c.detail.replace(dead, "") for c in checks)  # neither local Docker nor NOWHERE


@needs_root
def test_with_local_docker_down_a_target_that_needs_none_is_still_checked(  # type: ignore[no-untyped-def]
    archive: Path, tmp_path: Path, write_config, no_local_docker: None, chroot_kind: None
) -> None:
    """Issue 20 and issue 19's "one door": every sandbox check locates and execs through the
    sandbox's own target, so local Docker being down stops only the sandboxes that use it."""
    _unit(tmp_path)
    root = make_sandbox_root(tmp_path / "root")
    config = write_config(
        f"""\
version: 1
sandboxes:
  chrooted:
    target: {{kind: chroot, root: {root}}}
    archive: {archive}
    gateway: {{enabled: false}}
  on-k3s:
    target: {{kind: k3s}}
    archive: {archive}
"""
    )
    checks = list(diagnose(config, runner=Host()))
    chrooted = {c.name: c for c in checks if c.sandbox == "chrooted"}
    assert "docker" not in chrooted  # this kind needs no Docker: none was asked for
    assert chrooted["sandbox"].outcome == PASS and chrooted["sandbox"].detail.endswith(f"(chroot {root})")
    assert chrooted["user"].outcome == PASS and chrooted["agent"].outcome == PASS
    assert chrooted["plan"].outcome == FAIL and "drifted" in chrooted["plan"].detail  # checked, in the chroot
    on_k3s = {c.name: c for c in checks if c.sandbox == "on-k3s"}
    assert on_k3s["docker"].outcome == FAIL and on_k3s["docker"].detail.startswith(f"Docker at {NOWHERE} ")
    assert "DOCKER_HOST" in on_k3s["docker"].fix
    assert on_k3s["sandbox"].outcome == SKIP
    assert [c.name for c in checks][-3:] == ["service", "watchdog", "lingering"]


def test_an_openshell_sandbox_needs_no_docker(archive: Path, write_config, no_local_docker: None) -> None:  # type: ignore[no-untyped-def]
    """Issue 19's one door: a kind that reaches its sandbox through the OpenShell gateway API
    asks no Docker daemon, and DOCKER_HOST pointing nowhere does not show in its lines."""
    config = write_config(
        f"""\
version: 1
sandboxes:
  my-assistant:
    target: {{kind: openshell, gateway: not-registered}}
    archive: {archive}
"""
    )
    checks = {c.name: c for c in diagnose(config, runner=Host()) if c.sandbox == "my-assistant"}
    assert "docker" not in checks
    assert checks["sandbox"].outcome == FAIL and "not-registered" in checks["sandbox"].detail  # the target's answer
    assert all("Docker" not in c.detail and "docker.sock" not in c.detail for c in checks.values())


def test_a_broken_config_is_one_line_with_its_location(tmp_path: Path, write_config, no_local_docker: None) -> None:  # type: ignore[no-untyped-def]
    config = write_config("version: 1\nsandboxes:\n  x:\n    target: {kind: k3s}\n    archiv: /x\n")
    checks = list(diagnose(config, runner=Host()))
    bad = next(c for c in checks if c.name == "config")
    assert bad.outcome == FAIL and ":5:" in bad.detail and "archiv" in bad.detail


def test_cli_exit_status_and_json(tmp_path: Path, write_config, no_local_docker: None, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    from clawguard.cli import main

    monkeypatch.setenv("NO_COLOR", "1")
    config = write_config("version: 1\nsandboxes:\n  x:\n    target: {kind: k3s}\n    archiv: /x\n")
    assert main(["-c", str(config), "doctor"]) == 1
    out = capsys.readouterr().out
    assert "✗ config:" in out and "    fix: " in out and "\033[" not in out
    assert main(["-c", str(config), "doctor", "--json"]) == 1
    assert {c["name"] for c in json.loads(capsys.readouterr().out)} >= {"config", "service"}


@needs_root
def test_an_agent_that_cannot_tell_its_version_is_a_failed_line(
    archive: Path, tmp_path: Path, write_config, no_local_docker: None
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


@needs_root
def test_an_approvals_layout_the_agent_cannot_use_is_a_failed_plan_line_with_its_place(
    archive: Path, tmp_path: Path, write_config, no_local_docker: None
) -> None:  # type: ignore[no-untyped-def]
    """Issue 20 item 6: `layout.exec_approvals: file` on OpenClaw 2026.8.1+ broke every
    approval while restores said ok; doctor names it with the file, key, line and version."""
    import io

    from clawguard import log

    log.configure("error", io.StringIO())
    config = write_config(
        basic_config(archive, "    gateway: {enabled: false}\n    layout:\n      exec_approvals: file\n")
    )
    target = ChrootTarget(make_sandbox_root(tmp_path / "root", agent="2026.9.6"))
    checks = {c.name: c for c in diagnose(config, targets={"my-assistant": target}, runner=Host())}
    assert checks["agent"].outcome == PASS and checks["agent"].detail.startswith("OpenClaw 2026.9.6")
    plan = checks["plan"]
    assert plan.outcome == FAIL
    assert plan.detail.startswith(f"{config}:11: sandboxes.my-assistant.layout.exec_approvals: exec_approvals: file: ")
    assert "OpenClaw 2026.9.6 keeps exec approvals in its SQLite database" in plan.detail
    assert "use auto or cli" in plan.detail
