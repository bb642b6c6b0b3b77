from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import pytest

from clawguard import TargetError, build_plan, parse_config
from clawguard.agent.probe import FACTS_AND_INSPECT_SCRIPT, FACTS_SCRIPT
from clawguard.commands import output
from clawguard.converge import converge
from clawguard.entries import Inspection
from clawguard.persist import CaptureStore
from clawguard.sandboxfs import APPLY_SCRIPT, INSPECT_SCRIPT, PreRead
from clawguard.targets.base import ExecResult, Instance

from .chroot_sandbox import ChrootTarget, context, make_sandbox_root
from .conftest import basic_config


class CountingTarget(ChrootTarget):
    """A chroot that counts its locates and refuses to exec into any pod but its own."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.locates = 0

    def locate(self) -> Instance:
        self.locates += 1
        return super().locate()

    def exec(
        self, instance: Instance, argv: Sequence[str], stdin: bytes | None = None, *, user: str | None = None
    ) -> ExecResult:
        if instance.id != self.instance.id:
            raise TargetError(f"container {instance.short_id} not found")
        return super().exec(instance, argv, stdin, user=user)


@pytest.fixture
def parts(archive: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    config = parse_config(basic_config(archive, "    gateway: {enabled: false}\n"), "c.yaml")
    target = CountingTarget(make_sandbox_root(tmp_path / "root"))
    return context(config.sandboxes["my-assistant"], target), target


def test_the_pod_the_caller_located_is_not_located_again(parts) -> None:  # type: ignore[no-untyped-def]
    ctx, target = parts
    result = converge(ctx, located=target.instance)
    assert result.ok and result.container_id == target.instance.id
    assert target.locates == 1  # only the check, at the end, that it is still the same pod


def test_a_located_pod_that_is_gone_is_located_afresh(parts) -> None:  # type: ignore[no-untyped-def]
    ctx, target = parts
    gone = Instance("7" * 64, "chroot")
    result = converge(ctx, located=gone)
    assert result.ok and result.container_id == target.instance.id
    assert target.locates == 2  # the pod that is there now, and the check at the end


def _scripts(target: CountingTarget) -> list[str]:
    """What each exec ran: the script's name, or the command."""
    names = {
        FACTS_AND_INSPECT_SCRIPT: "facts+inspect",
        FACTS_SCRIPT: "facts",
        INSPECT_SCRIPT: "inspect",
        APPLY_SCRIPT: "apply",
    }
    return [names.get(argv[2], argv[2][:20]) if argv[:2] == ["sh", "-c"] else " ".join(argv) for argv in target.calls]


def test_a_new_pod_is_read_whole_in_one_exec_and_written_in_one_more(parts) -> None:  # type: ignore[no-untyped-def]
    ctx, target = parts
    result = converge(ctx)
    assert result.ok and result.report.changed == len(result.report.steps)
    # The facts and the restore's first read together (the plan guessed from the config
    # alone asks what the plan for this pod asks); then the agent's validator, and the write:
    # root's part (in directories only root may write), then the sandbox user's, which reads back.
    assert _scripts(target)[0] == "facts+inspect" and "inspect" not in _scripts(target)
    assert _scripts(target)[-2:] == ["apply", "apply"] and len(target.calls) == 4
    assert result.report.read_with_facts  # the summary line says so rather than "read 0.00s"
    summary = io.StringIO()
    output.summary_line(result.report, summary)
    assert "(read with the pod's facts, write and read back " in summary.getvalue()
    # The daemon's way: the plan made for the last pod guesses the next one's read.
    target.calls.clear()
    target.instance = Instance("5" * 64, "chroot")
    again = converge(ctx, plan=result.plan, facts=result.plan.facts if result.plan else None)
    assert again.ok and again.report.changed == 0
    assert _scripts(target) == ["facts+inspect"]  # nothing to write: one exec in all


def test_a_guess_that_misses_costs_one_more_read_and_nothing_else(parts, archive: Path) -> None:  # type: ignore[no-untyped-def]
    ctx, target = parts
    flat = parse_config(
        basic_config(archive, "    gateway: {enabled: false}\n    layout: {style: flat}\n"), "c.yaml"
    ).sandboxes["my-assistant"]
    wrong = build_plan(flat)  # another layout: other paths than this pod's
    result = converge(ctx, plan=wrong)
    assert result.ok and result.report.changed == len(result.report.steps)
    assert _scripts(target)[:2] == ["facts+inspect", "inspect"]
    assert not result.report.read_with_facts
    assert (target.root / "sandbox/.openclaw-data/workspace/SOUL.md").exists()


def test_a_pre_read_is_given_out_once_and_only_for_the_same_arguments() -> None:
    inspection = Inspection()
    preread = PreRead(["P:/a"], inspection)
    assert preread.take(["P:/b"]) is None
    assert preread.take(["P:/a"]) is inspection
    assert preread.take(["P:/a"]) is None  # after a write, an old read must not stand for a new one


def test_the_capture_to_write_back_is_chosen_once_per_pod(parts, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Choosing it reads and checksums every capture it looks at: the first look (which
    guesses the paths to read) and the restore share the one choice."""
    ctx, _target = parts
    chosen: list[int] = []

    def latest_good(self: CaptureStore) -> None:
        chosen.append(1)

    monkeypatch.setattr(CaptureStore, "latest_good", latest_good)
    assert converge(ctx).ok
    assert len(chosen) == 1
