"""The unprivileged sandbox (userns_sandbox.py) is the engine's test bed without root: here it
is run even as root, so that CI, which runs as root, exercises it too; and compared, as root,
with the real chroot it stands in for."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clawguard import build_plan, parse_config
from clawguard.restore import CHANGED, OK, run_plan

from .chroot_sandbox import ChrootTarget, make_sandbox_root, owner, pod_of, snapshot
from .conftest import basic_config

DATA = "sandbox/.openclaw-data"


def _restore(archive: Path, target: ChrootTarget):  # type: ignore[no-untyped-def]
    sandbox = parse_config(basic_config(archive), "c.yaml").sandboxes["my-assistant"]
    pod = pod_of(target, sandbox)
    return run_plan(build_plan(sandbox, pod.facts), pod)


def _sh(target: ChrootTarget, script: str, user: str | None = None) -> tuple[int, str]:
    done = target.exec(target.instance, ["sh", "-c", script], user=user)
    return done.code, (done.stdout + done.stderr).decode()


def test_a_restore_in_the_unprivileged_sandbox_gives_the_agent_its_files(archive: Path, tmp_path: Path) -> None:
    target = ChrootTarget(make_sandbox_root(tmp_path / "root", unprivileged=True))
    first = _restore(archive, target)
    assert first.ok and {s.outcome for s in first.steps} == {CHANGED}, first.to_dict()
    root = target.root
    # Written by the agent's own tar, or given by root's chown: the agent's, as the scripts see it too.
    assert owner(root / DATA / "workspace/SOUL.md") == (998, 998)
    assert owner(root / DATA / "telegram") == (998, 998)
    assert owner(root / "sandbox/.openclaw/openclaw.json") == (0, 0)
    code, out = _sh(target, f"stat -c %u:%g /{DATA}/workspace/SOUL.md /sandbox/.openclaw/openclaw.json")
    assert (code, out) == (0, "998:998\n0:0\n")
    second = _restore(archive, target)
    assert second.ok and {s.outcome for s in second.steps} == {OK}, second.to_dict()


def test_the_sandbox_user_is_who_the_exec_says_and_can_give_nothing_away(tmp_path: Path) -> None:
    target = ChrootTarget(make_sandbox_root(tmp_path / "root", unprivileged=True))
    workspace = target.root / DATA / "workspace"
    assert _sh(target, "id -u; id -g", user="998:998") == (0, "998\n998\n")
    assert _sh(target, "id -u") == (0, "0\n")
    # As the kernel would have it: the agent cannot give its files to root, nor take root's.
    code, out = _sh(target, f"chown 0:0 /{DATA}/workspace", user="998:998")
    assert code != 0 and "Operation not permitted" in out and owner(workspace) == (998, 998)
    code, out = _sh(target, "chown 998:998 /sandbox/.openclaw/openclaw.json", user="998:998")
    assert code != 0 and owner(target.root / "sandbox/.openclaw/openclaw.json") == (0, 0)
    # Root can; what the agent makes is its own, what root makes root's, even in an inode the
    # agent's file had before it was removed.
    assert _sh(target, f"chown -h 0:0 /{DATA}/workspace")[0] == 0 and owner(workspace) == (0, 0)
    assert _sh(target, f"mkdir /{DATA}/agents/new", user="998:998")[0] == 0
    assert owner(target.root / DATA / "agents/new") == (998, 998)
    assert _sh(target, f"rmdir /{DATA}/agents/new && mkdir /{DATA}/agents/new")[0] == 0
    assert owner(target.root / DATA / "agents/new") == (0, 0)


@pytest.mark.skipif(os.geteuid() != 0, reason="compared with the real chroot, which needs root")
def test_the_unprivileged_sandbox_ends_where_the_real_chroot_does(archive: Path, tmp_path: Path) -> None:
    """The same restore on both: every path with the same mode, owner and content."""
    ends = []
    for unprivileged in (False, True):
        target = ChrootTarget(make_sandbox_root(tmp_path / f"root-{unprivileged}", unprivileged=unprivileged))
        assert _restore(archive, target).ok
        end = snapshot(target.root)
        end.pop("dev/null")  # a character device in one, the host's mounted over a plain file in the other
        ends.append(end)
    real, unprivileged_end = ends
    assert unprivileged_end == real
    assert real[f"{DATA}/workspace/SOUL.md"][1:3] == (998, 998)
