from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from clawguard import ConfigError, build_plan, parse_config
from clawguard.restore import CHANGED, FAILED, OK, WOULD_CHANGE, run_plan
from clawguard.sandboxfs import APPLY_SCRIPT
from clawguard.targets.base import ExecResult, Instance, Sink

from .chroot_sandbox import ChrootTarget, chown, make_sandbox_root, needs_root, owner, pod_of, snapshot
from .conftest import basic_config


@pytest.fixture
def sandbox_root(tmp_path: Path) -> Path:
    return make_sandbox_root(tmp_path / "root")


def _sandbox(archive: Path, extra: str = ""):  # type: ignore[no-untyped-def]
    return parse_config(basic_config(archive, extra), "c.yaml").sandboxes["my-assistant"]


def _run(archive: Path, target: ChrootTarget, extra: str = "", **kwargs):  # type: ignore[no-untyped-def]
    sandbox = _sandbox(archive, extra)
    pod = pod_of(target, sandbox)
    return run_plan(build_plan(sandbox, pod.facts), pod, **kwargs)


def _restore(archive: Path, root: Path, extra: str = "", **kwargs):  # type: ignore[no-untyped-def]
    return _run(archive, ChrootTarget(root), extra, **kwargs)


def test_restore_then_nothing_to_do(archive: Path, sandbox_root: Path) -> None:
    first = _restore(archive, sandbox_root)
    assert first.ok, first.to_dict()
    # A fresh sandbox: every step had something to do.
    assert [s.outcome for s in first.steps] == [CHANGED] * len(first.steps)
    second = _restore(archive, sandbox_root)
    assert second.ok
    assert [s.outcome for s in second.steps] == [OK] * len(second.steps)
    assert second.changed == 0


def test_restored_files_have_the_declared_shape(archive: Path, sandbox_root: Path) -> None:
    report = _restore(archive, sandbox_root)
    assert report.ok
    sandbox = sandbox_root / "sandbox"
    data, conf = sandbox / ".openclaw-data", sandbox / ".openclaw"

    def shape(path: Path) -> tuple[int, int, int]:
        return path.lstat().st_mode & 0o7777, *owner(path)

    assert (data / "exec-approvals.json").read_bytes() == (archive / "exec-approvals.json").read_bytes()
    assert os.readlink(conf / "exec-approvals.json") == "/sandbox/.openclaw-data/exec-approvals.json"
    assert shape(data / "exec-approvals.json") == (0o600, 998, 998)  # as the agent itself keeps it
    assert shape(data / "telegram")[1:] == (998, 998)
    assert shape(conf / "openclaw.json") == (0o444, 0, 0)
    assert (conf / "openclaw.json").read_bytes() == (archive / "openclaw.json").read_bytes()
    assert shape(data / "credentials") == (0o700, 998, 998)
    assert shape(data / "credentials" / "proxmox.env") == (0o600, 998, 998)
    assert shape(data / "proxmox.sh") == (0o755, 998, 998)
    assert os.readlink(conf / "proxmox.sh") == "/sandbox/.openclaw-data/proxmox.sh"
    assert shape(data / "skills" / "proxmox" / "scripts" / "list-vms.sh") == (0o755, 998, 998)
    assert shape(data / "skills" / "proxmox" / "SKILL.md") == (0o644, 998, 998)
    assert (data / "workspace" / "SOUL.md").read_bytes() == (archive / "SOUL.md").read_bytes()


def test_dry_run_writes_nothing(archive: Path, sandbox_root: Path) -> None:
    before = snapshot(sandbox_root)
    report = _restore(archive, sandbox_root, dry_run=True)
    assert snapshot(sandbox_root) == before
    assert report.ok
    assert {s.outcome for s in report.steps} <= {OK, WOULD_CHANGE}
    telegram = next(s for s in report.steps if s.name == "telegram")
    assert telegram.outcome == WOULD_CHANGE
    assert any("owner 0:0, want 998:998" in c for c in telegram.changes)


def test_unknown_user_is_a_config_error_and_writes_nothing(archive: Path, sandbox_root: Path) -> None:
    before = snapshot(sandbox_root)
    config = parse_config(basic_config(archive).replace("user: sandbox", "user: nobody-here"), "c.yaml")
    sandbox = config.sandboxes["my-assistant"]
    pod = pod_of(ChrootTarget(sandbox_root), sandbox)
    with pytest.raises(ConfigError) as info:
        run_plan(build_plan(sandbox, pod.facts), pod)
    assert info.value.key == "sandboxes.my-assistant.user"
    assert info.value.line == 8
    assert "'nobody-here' does not exist" in str(info.value)
    assert snapshot(sandbox_root) == before


def test_other_uid(archive: Path, tmp_path: Path) -> None:
    root = make_sandbox_root(tmp_path / "root", uid=1234)
    assert _restore(archive, root).ok
    assert owner(root / "sandbox/.openclaw-data/telegram")[0] == 1234
    assert owner(root / "sandbox/.openclaw-data/workspace/SOUL.md")[1] == 1234


def test_drift_is_repaired_and_only_that(archive: Path, sandbox_root: Path) -> None:
    assert _restore(archive, sandbox_root).ok
    data = sandbox_root / "sandbox/.openclaw-data"
    (data / "skills/proxmox/SKILL.md").unlink()
    (data / "skills/proxmox/stray.txt").write_text("left behind")
    chown(data / "telegram", 0, 0)
    (data / "telegram" / "update-offset-default.json").write_text("{}")
    chown(data / "telegram" / "update-offset-default.json", 0, 0)
    report = _restore(archive, sandbox_root)
    assert report.ok
    changed = {s.name for s in report.steps if s.outcome == CHANGED}
    assert changed == {"skills/proxmox", "telegram"}
    assert not (data / "skills/proxmox/stray.txt").exists()
    assert (data / "skills/proxmox/SKILL.md").exists()
    assert owner(data / "telegram" / "update-offset-default.json")[0] == 998


def test_wrong_type_is_replaced(archive: Path, sandbox_root: Path) -> None:
    # The `openshell sandbox upload` bug: a directory where a file should be.
    data = sandbox_root / "sandbox/.openclaw-data"
    (data / "proxmox.sh").mkdir()
    (data / "proxmox.sh" / "proxmox.sh").write_text("#!/bin/sh\n")
    assert _restore(archive, sandbox_root).ok
    assert (data / "proxmox.sh").is_file()


def test_symlinked_parent_is_refused(archive: Path, sandbox_root: Path, tmp_path: Path) -> None:
    # The agent owns .openclaw-data: it could swap a directory for a link elsewhere.
    data = sandbox_root / "sandbox/.openclaw-data"
    (data / "skills").rmdir()
    (sandbox_root / "etc" / "victim").mkdir()
    (data / "skills").symlink_to("/etc/victim")
    report = _restore(archive, sandbox_root)
    assert not report.ok
    failed = [s for s in report.steps if s.outcome == FAILED]
    assert {s.name for s in failed} == {"skills/proxmox", "skills/vmware-esxi", "skills/nemoclaw-status"}
    assert all("undeclared symlink" in (s.error or "") for s in failed)
    assert list((sandbox_root / "etc" / "victim").iterdir()) == []


def test_a_symlink_inside_a_tree_is_replaced_never_written_through(archive: Path, sandbox_root: Path) -> None:
    # Below a tree the walk describes every path; a symlinked subdirectory is not walked,
    # so what the plan wants below it is missing, and the write removes the link first.
    skill = sandbox_root / "sandbox/.openclaw-data/skills/proxmox"
    skill.mkdir()
    (sandbox_root / "etc" / "victim").mkdir()
    (skill / "scripts").symlink_to("/etc/victim")
    report = _restore(archive, sandbox_root)
    assert report.ok, report.to_dict()
    assert list((sandbox_root / "etc" / "victim").iterdir()) == []
    assert (skill / "scripts").is_dir() and not (skill / "scripts").is_symlink()
    assert (skill / "scripts" / "list-vms.sh").read_bytes() == (
        archive / "skills/proxmox/scripts/list-vms.sh"
    ).read_bytes()


def test_real_file_exec_approvals_layout(archive: Path, sandbox_root: Path) -> None:
    report = _restore(archive, sandbox_root, "    layout:\n      exec_approvals: file\n")
    assert report.ok
    path = sandbox_root / "sandbox/.openclaw/exec-approvals.json"
    assert path.is_file() and not path.is_symlink()
    assert not (sandbox_root / "sandbox/.openclaw-data/exec-approvals.json").exists()


def test_config_hash_kept_consistent_when_present(archive: Path, sandbox_root: Path) -> None:
    hash_file = sandbox_root / "sandbox/.openclaw/.config-hash"
    hash_file.write_text("0" * 64 + "  /sandbox/.openclaw/openclaw.json\n")
    assert _restore(archive, sandbox_root).ok
    digest = hashlib.sha256((archive / "openclaw.json").read_bytes()).hexdigest()
    assert hash_file.read_text() == f"{digest}  /sandbox/.openclaw/openclaw.json\n"
    assert hash_file.stat().st_mode & 0o777 == 0o444


def test_config_hash_not_created_when_absent(archive: Path, sandbox_root: Path) -> None:
    assert _restore(archive, sandbox_root).ok
    assert not (sandbox_root / "sandbox/.openclaw/.config-hash").exists()


def test_a_restore_is_one_read_then_one_write_as_root_and_one_as_the_agent(archive: Path, sandbox_root: Path) -> None:
    target = ChrootTarget(sandbox_root)
    sandbox = _sandbox(archive)
    pod = pod_of(target, sandbox)  # the pod's facts are read once per pod, not per restore
    target.calls.clear()
    target.users.clear()
    report = run_plan(build_plan(sandbox, pod.facts), pod)
    assert report.ok and report.changed == len(report.steps)
    # Every path read in one exec, with the content of the one file whose hash differs but
    # whose meaning may not (openclaw.json, compared as JSON); the agent's own validator on
    # the openclaw.json about to be written; then what only root may write, as root, in one
    # exec; and what the agent may write itself, as the agent, in one more that reads every
    # step back (the agent's files are never written by root).
    assert len(target.calls) == 4
    assert "C:/sandbox/.openclaw/openclaw.json" in target.calls[0]
    assert target.calls[1][-4:] == ["openclaw", "config", "validate", "--json"]
    assert target.calls[2][2] == APPLY_SCRIPT and target.calls[2][4] == "root" and target.users[2] is None
    assert target.calls[3][2] == APPLY_SCRIPT and target.calls[3][4] == "agent" and target.users[3] == "998:998"
    assert "--inspect" in target.calls[3] and "--inspect" not in target.calls[2]
    target.calls.clear()
    assert run_plan(build_plan(sandbox, pod.facts), pod).changed == 0
    assert len(target.calls) == 1  # nothing to do: one read, whatever the number of files


def test_a_userland_without_od_reads_the_judged_file_in_one_more_exec(archive: Path, sandbox_root: Path) -> None:
    (sandbox_root / "bin" / "od").unlink()
    target = ChrootTarget(sandbox_root)
    sandbox = _sandbox(archive)
    pod = pod_of(target, sandbox)
    target.calls.clear()
    assert run_plan(build_plan(sandbox, pod.facts), pod).ok
    assert "tar -c" in target.calls[1][2] and target.calls[1][4:] == ["/sandbox/.openclaw/openclaw.json"]
    assert len(target.calls) == 5  # the read, the content, the validator, root's write, the agent's


def test_a_restore_reports_what_it_measured_per_phase_not_an_even_split(
    archive: Path, sandbox_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each step's duration was the batch's time divided evenly among the steps."""
    from clawguard.commands import output

    report = _restore(archive, sandbox_root)
    assert set(report.phases) == {"read", "write", "agent"} and all(t >= 0 for t in report.phases.values())
    assert report.phases["read"] + report.phases["write"] <= report.duration
    # The file steps share one exec: none claims a time of its own.
    assert all(s.batched and s.duration == 0.0 for s in report.steps)
    output.step_line(1, len(report.steps), report.steps[0])
    output.summary_line(report)
    lines = capsys.readouterr().out.splitlines()
    step = next(line for line in lines if line.startswith("[ 1/"))
    summary = next(line for line in lines if ": verified: " in line)
    assert step.endswith("  batch")
    assert f"(read {report.phases['read']:.2f}s, write and read back {report.phases['write']:.2f}s" in summary


class _FailingWrites(ChrootTarget):
    def exec(self, instance, argv, stdin=None, *, user=None):  # type: ignore[no-untyped-def]
        if "--inspect" in argv and any(a.endswith("/SOUL.md") for a in argv):
            from clawguard.targets.base import ExecResult

            return ExecResult(4, b"", b"tar: write error: No space left on device")
        return super().exec(instance, argv, stdin, user=user)


def test_a_failed_write_fails_only_its_step(archive: Path, sandbox_root: Path) -> None:
    target = _FailingWrites(sandbox_root)
    report = _run(archive, target)
    assert not report.ok
    assert report.failed_step == "SOUL.md"
    failed = report.steps[-1]
    assert failed.outcome == FAILED and "No space left on device" in (failed.error or "")
    assert all(s.outcome == CHANGED for s in report.steps[:-1])


# --------------------------------------------------------------------------------------------
# The agent is not trusted. What it owns is written as the agent; root writes only in
# directories nobody else may write, checked right before it acts.


def _apply_calls(target: ChrootTarget) -> list[tuple[str, str | None, list[str]]]:
    """(role, user, arguments) of each write exec."""
    return [
        (argv[4], user, argv[5:])
        for argv, user in zip(target.calls, target.users, strict=True)
        if len(argv) > 4 and argv[2] == APPLY_SCRIPT
    ]


def test_root_writes_only_what_the_agent_cannot(archive: Path, sandbox_root: Path) -> None:
    target = ChrootTarget(sandbox_root)
    report = _run(archive, target)
    assert report.ok
    (root_role, root_user, root_args), (agent_role, agent_user, agent_args) = _apply_calls(target)
    assert (root_role, root_user, agent_role, agent_user) == ("root", None, "agent", "998:998")
    paths = [a for a in root_args if a.startswith("/")]
    # openclaw.json and the links beside it in root's own directory; the telegram directory,
    # root's until now, given to the agent by entering it; nothing of the agent's.
    assert set(paths) == {
        "/sandbox/.openclaw",
        "/sandbox/.openclaw/openclaw.json",
        "/sandbox/.openclaw/exec-approvals.json",
        "/sandbox/.openclaw/esxi-soap.py",
        "/sandbox/.openclaw/proxmox.sh",
        "/sandbox/.openclaw-data",
        "/sandbox/.openclaw-data/telegram",
    }
    assert "/sandbox/.openclaw-data/skills/proxmox/SKILL.md" in agent_args
    assert not any(a.startswith("/sandbox/.openclaw/") for a in agent_args[: agent_args.index("--inspect")])


def _victim(root: Path) -> Path:
    """Root's bait outside /sandbox, named like what a restore writes."""
    victim = root / "etc" / "victim"
    for sub in ("", "proxmox", "proxmox/scripts", "nemoclaw-status", "vmware-esxi"):
        (victim / sub).mkdir(exist_ok=True)
        for name in ("openclaw.json", "SKILL.md", "list-vms.sh", "extra.txt", "proxmox.sh"):
            (victim / sub / name).write_text(f"bait {sub}/{name}")
            (victim / sub / name).chmod(0o640)
        (victim / sub).chmod(0o750)
    return victim


class _Swapping(ChrootTarget):
    """The agent's move between the read and each write: right before root's exec it renames
    /sandbox/.openclaw (its parent /sandbox is the agent's) and puts a link to the victim in its
    place; right before its own exec, the same with its skills directory."""

    def exec(
        self,
        instance: Instance,
        argv: Sequence[str],
        stdin: bytes | None = None,
        *,
        user: str | None = None,
        out: Sink | None = None,
        limit: int | None = None,
    ) -> ExecResult:
        if len(argv) > 4 and argv[2] == APPLY_SCRIPT:
            swapped = "sandbox/.openclaw" if argv[4] == "root" else "sandbox/.openclaw-data/skills"
            path = self.root / swapped
            if not path.is_symlink():
                path.rename(path.with_name(path.name + ".real"))
                path.symlink_to("/etc/victim")
        return super().exec(instance, argv, stdin, user=user, out=out, limit=limit)


@needs_root("the agent's exec follows the swap, and only the kernel's permission check stops it there")
def test_a_directory_swapped_between_the_read_and_the_write_is_never_written_through(
    archive: Path, sandbox_root: Path
) -> None:
    victim = _victim(sandbox_root)
    before = snapshot(victim)
    target = _Swapping(sandbox_root)
    report = _run(archive, target)
    assert snapshot(victim) == before  # nothing outside /sandbox changed: owners, modes, contents
    assert not report.ok
    failed = {s.name: s.error or "" for s in report.steps if s.outcome == FAILED}
    assert (
        "refused: /sandbox/.openclaw is not where it was read (a symlink or swapped path?)" in failed["openclaw.json"]
    )
    assert {"skills/proxmox", "skills/vmware-esxi", "skills/nemoclaw-status"} <= set(failed)
    # What neither swap reaches is written all the same.
    assert (sandbox_root / "sandbox/.openclaw-data/workspace/SOUL.md").read_bytes() == (
        archive / "SOUL.md"
    ).read_bytes()


class _NeverRoot(ChrootTarget):
    """A target whose every command runs as the sandbox user (OpenShell 0.1.x's gateway API)."""

    runs_as_root = False

    def exec(
        self,
        instance: Instance,
        argv: Sequence[str],
        stdin: bytes | None = None,
        *,
        user: str | None = None,
        out: Sink | None = None,
        limit: int | None = None,
    ) -> ExecResult:
        return super().exec(instance, argv, stdin, user="998:998", out=out, limit=limit)


def test_a_target_that_is_never_root_is_never_sent_roots_work(archive: Path, sandbox_root: Path) -> None:
    target = _NeverRoot(sandbox_root)
    report = _run(archive, target)
    assert [role for role, _, _ in _apply_calls(target)] == ["agent"]  # never a root batch
    outcomes = {s.name: s.outcome for s in report.steps}
    errors = {s.name: s.error or "" for s in report.steps if s.outcome == FAILED}
    assert set(errors) == {"exec-approvals", "telegram", "openclaw.json", "scripts/esxi-soap.py", "scripts/proxmox.sh"}
    assert "/sandbox/.openclaw/openclaw.json need root" in errors["openclaw.json"]
    assert "runs every command as the sandbox user" in errors["telegram"]
    assert all(outcomes[name] == CHANGED for name in ("credentials", "skills/proxmox", "SOUL.md"))


def test_an_entry_another_user_must_own_in_the_agents_directory_is_refused(archive: Path, sandbox_root: Path) -> None:
    extra = "    plan:\n      - {kind: file, source: SOUL.md, dest: /sandbox/.openclaw-data/roots.md, owner: root}\n"
    target = ChrootTarget(sandbox_root)
    report = _run(archive, target, extra)
    assert [s.outcome for s in report.steps] == [FAILED]
    assert report.steps[0].error == (
        "refused: /sandbox/.openclaw-data/roots.md: to be owned by 0:0 in /sandbox/.openclaw-data, a directory the "
        "sandbox user can write: it cannot be written there safely"
    )
    assert _apply_calls(target) == [] and not (sandbox_root / "sandbox/.openclaw-data/roots.md").exists()


def test_a_root_owned_file_in_the_agents_directory_is_replaced_by_the_agents_own(
    archive: Path, sandbox_root: Path
) -> None:
    assert _restore(archive, sandbox_root).ok
    soul = sandbox_root / "sandbox/.openclaw-data/workspace/SOUL.md"
    chown(soul, 0, 0)
    target = ChrootTarget(sandbox_root)
    report = _run(archive, target)
    assert report.ok and [s.name for s in report.steps if s.outcome == CHANGED] == ["SOUL.md"]
    assert owner(soul) == (998, 998)
    assert [role for role, _, _ in _apply_calls(target)] == ["agent"]


def test_a_new_directory_in_roots_directory_is_made_and_filled_by_root_then_given(
    archive: Path, sandbox_root: Path
) -> None:
    """A tree for the agent inside root's own directory: root makes it (no one else can), fills
    it while it is still root's alone, and gives it away last, deepest first."""
    shutil.copytree(archive / "skills" / "proxmox", archive / "tool")
    extra = "    plan:\n      - {kind: tree, source: tool, dest: /sandbox/.openclaw/tool}\n"
    report = _run(archive, ChrootTarget(sandbox_root), extra)
    assert report.ok, report.to_dict()
    tool = sandbox_root / "sandbox/.openclaw/tool"
    for path in (tool, tool / "SKILL.md", tool / "scripts", tool / "scripts/list-vms.sh"):
        assert owner(path) == (998, 998), path
    assert _restore(archive, sandbox_root, extra).changed == 0
