"""The façade: one object builds every dependency once and does what the CLI does."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

import clawguard
from clawguard import Clawguard, InputError, log, parse_config
from clawguard.state import StateStore

from .chroot_sandbox import ChrootTarget, make_sandbox_root, snapshot
from .conftest import basic_config

MEMORY = "sandbox/.openclaw-data/workspace/MEMORY.md"


@pytest.fixture(autouse=True)
def _quiet_log() -> None:
    log.configure("warning", io.StringIO())  # not a stream an earlier test's capture has closed


def _guard(archive: Path, tmp_path: Path, target: ChrootTarget, extra: str = "") -> Clawguard:
    config = parse_config(basic_config(archive, "    gateway: {enabled: false}\n" + extra), tmp_path / "c.yaml")
    return Clawguard(config, store=StateStore(tmp_path / "own-state"), targets={"my-assistant": target})


def test_the_package_exports_the_facade_not_the_lockless_engine() -> None:
    assert "Clawguard" in clawguard.__all__
    # restore/run_plan take no lock and start no gateway: not the public way to restore.
    assert "run_plan" not in clawguard.__all__ and "restore" not in clawguard.__all__
    assert clawguard.restore.__name__ == "clawguard.restore"  # the module, no longer shadowed by a function


def test_each_sandbox_context_is_built_once_with_the_given_target(archive: Path, tmp_path: Path) -> None:
    target = ChrootTarget(tmp_path / "unused")
    guard = _guard(archive, tmp_path, target)
    ctx = guard.context("my-assistant")
    assert ctx is guard.context("my-assistant")
    assert ctx.target is target and ctx.store.root == tmp_path / "own-state"
    assert (
        ctx.gateway.sandbox == "my-assistant"
        and ctx.gateway.known_hosts.parent == tmp_path / "own-state" / "my-assistant"
    )


def test_restore_capture_and_status_through_the_facade(archive: Path, tmp_path: Path) -> None:
    target = ChrootTarget(make_sandbox_root(tmp_path / "root"))
    guard = _guard(archive, tmp_path, target)

    (restored,) = guard.restore()
    assert restored.ok and restored.report.changed == len(restored.report.steps)
    assert (target.root / "sandbox/.openclaw-data/workspace/SOUL.md").read_text() == (archive / "SOUL.md").read_text()

    (target.root / MEMORY).write_text("the user likes tea\n")
    ((name, taken),) = guard.capture("my-assistant")
    assert name == "my-assistant" and taken.outcome == "saved"

    row = guard.status()["sandboxes"][0]
    assert row["sandbox"] == "my-assistant" and row["last_restore"]["outcome"] == "ok"
    assert taken.capture is not None and row["persist"]["last_capture_generation"] == taken.capture.generation
    assert guard.status()["daemon"]["running"] is False
    # Everything went to the store the façade was given.
    assert (tmp_path / "own-state" / "my-assistant" / "state.json").is_file()
    assert not (tmp_path / "state").exists()  # not $XDG_STATE_HOME


def test_a_bad_archive_stops_every_action_before_the_sandbox_is_touched(archive: Path, tmp_path: Path) -> None:
    target = ChrootTarget(make_sandbox_root(tmp_path / "root"))
    (archive / "openclaw.json").write_text("{not json")
    guard = _guard(archive, tmp_path, target)
    before = snapshot(target.root)
    for action in (guard.restore, guard.capture, guard.check, guard.plan):
        with pytest.raises(InputError, match="openclaw.json"):
            action("my-assistant")
    assert snapshot(target.root) == before
    assert target.calls == []


def test_check_and_plan_read_the_pod_and_write_nothing(archive: Path, tmp_path: Path) -> None:
    target = ChrootTarget(make_sandbox_root(tmp_path / "root"))
    guard = _guard(archive, tmp_path, target)
    before = snapshot(target.root)
    (checked,) = guard.check("my-assistant")
    assert checked.pod is not None and checked.plan.steps
    ((plan, pod, _where),) = guard.plan("my-assistant")
    assert pod is not None and [p.step.name for p in plan.steps] == [p.step.name for p in checked.plan.steps]
    (offline,) = guard.check("my-assistant", offline=True)
    assert offline.pod is None and offline.where == "not read (--offline)"
    assert snapshot(target.root) == before
