"""The bad-input corpus (tests/corpus/, format in its README.md), run against a real chroot sandbox.

Every case runs the real CLI in-process. The target factory is patched so that
``clawguard restore`` reaches a busybox chroot (the same scripts, a real shell),
and each case proves three things: the exit status, a message naming file, key
and line, and that the sandbox is byte-for-byte what it was (no write exec ran).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clawguard.cli import main
from clawguard.sandboxfs import APPLY_SCRIPT, PASSWD_SCRIPT
from tests.corpus.cases import COMMANDS, EXAMPLE_ARCHIVE, Case, all_cases, assert_messages, set_up

from .chroot_sandbox import ChrootTarget, make_sandbox_root, snapshot

# Every module that builds a target from the config, by module name.

CASES = all_cases()


@dataclass
class Run:
    code: int
    out: str
    err: str
    target: ChrootTarget
    before: dict[str, Any]
    after: dict[str, Any]

    def ran(self, script: str) -> list[list[str]]:
        """The execs whose script text includes ``script`` (it may be combined with another)."""
        return [call for call in self.target.calls if any(script in arg for arg in call)]

    def wrote(self) -> bool:
        return bool(self.ran(APPLY_SCRIPT))

    def read_users(self) -> bool:
        return bool(self.ran(PASSWD_SCRIPT))


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ChrootTarget]:
    """A busybox chroot standing in for the pod, wherever clawguard asks for a target."""
    target = ChrootTarget(make_sandbox_root(tmp_path / "sandbox-root"))
    # The façade builds every target, in one place.
    monkeypatch.setattr("clawguard.context.make_target", lambda _name, _values: target)
    yield target


def run_cli(
    case: Case, command: str, tmp_path: Path, target: ChrootTarget, capsys: pytest.CaptureFixture[str]
) -> tuple[Run, Path, Path]:
    config, archive = set_up(case, tmp_path)
    before = snapshot(target.root)
    code = main(["--config", str(config), *COMMANDS[command]])
    out, err = capsys.readouterr()
    return Run(code, out, err, target, before, snapshot(target.root)), config, archive


def test_the_corpus_is_big_enough_and_numbered_uniquely() -> None:
    assert len(CASES) >= 35
    numbers = [case.name.split("-", 1)[0] for case in CASES]
    assert len(numbers) == len(set(numbers)), "two cases share a number"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_corpus_case(case: Case, tmp_path: Path, sandbox: ChrootTarget, capsys: pytest.CaptureFixture[str]) -> None:
    run, config, archive = run_cli(case, case.command, tmp_path, sandbox, capsys)
    assert run.code == case.exit, f"{case.name}: exit {run.code}, want {case.exit}\n{run.err}"
    assert_messages(case, run.out, run.err, config, archive)
    if case.exit == 2:
        # One line, the error itself: no traceback, no half-finished progress output.
        assert run.err.count("clawguard: error:") == 1, run.err
        assert "Traceback" not in run.err
        assert run.out == ""
    assert not run.wrote(), f"{case.name}: a write ran in the sandbox: {run.target.calls}"
    assert run.after == run.before, f"{case.name}: the sandbox changed"
    if case.reaches_sandbox:
        # Only the sandbox knows its users: it was asked, and nothing else ran but questions
        # to its agent (`--version`: which rules apply; `config validate`): reads, no write.
        assert run.read_users(), f"{case.name}: never read the sandbox's /etc/passwd"
        others = [call for call in run.target.calls if call not in run.ran(PASSWD_SCRIPT)]
        questions = (["openclaw", "--version"], ["openclaw", "config", "validate", "--json"])
        assert all(any(call[-len(q) :] == q for q in questions) for call in others), run.target.calls
    else:
        assert run.target.calls == [], f"{case.name}: refused too late, after commands ran in the sandbox"


# Cases refused before any sandbox is reached are refused the same way by every
# command: check, plan and restore share one validation.
STATIC = [case for case in CASES if case.exit == 2 and not case.reaches_sandbox]


@pytest.mark.parametrize("command", ["check", "plan"])
@pytest.mark.parametrize("case", STATIC, ids=[case.name for case in STATIC])
def test_static_case_fails_the_same_on_every_command(
    case: Case, command: str, tmp_path: Path, sandbox: ChrootTarget, capsys: pytest.CaptureFixture[str]
) -> None:
    run, config, archive = run_cli(case, command, tmp_path, sandbox, capsys)
    assert run.code == 2, run.err
    assert_messages(case, run.out, run.err, config, archive)
    assert run.target.calls == []
    assert run.after == run.before


def test_the_harness_sees_a_write(tmp_path: Path, sandbox: ChrootTarget, capsys: pytest.CaptureFixture[str]) -> None:
    """The proof above means something: a valid config restored through the same
    harness does write, and both the snapshot and the exec log show it."""
    case = Case(
        name="valid",
        description="the example archive, unchanged",
        command="restore",
        config=textwrap.dedent(
            """\
            version: 1
            sandboxes:
              my-assistant:
                target: {kind: k3s}
                archive: {archive}
            """
        ),
        config_encoding="utf-8",
        archive={},
        exit=0,
        stdout=["verified"],
    )
    run, _config, _archive = run_cli(case, "restore", tmp_path, sandbox, capsys)
    assert run.code == 0, run.err
    assert run.wrote()
    assert run.read_users()
    assert run.after != run.before
    assert run.after["sandbox/.openclaw-data/workspace/SOUL.md"][3] == (EXAMPLE_ARCHIVE / "SOUL.md").read_bytes()


def test_an_unknown_user_in_the_second_sandbox_stops_before_the_first_is_written(
    tmp_path: Path, sandbox: ChrootTarget, capsys: pytest.CaptureFixture[str]
) -> None:
    """Users can only be resolved inside each pod: all of them are, before any restore."""
    case = Case(
        name="two-sandboxes",
        description="the first is fine, the second names a uid its pod does not have",
        command="restore",
        config=textwrap.dedent(
            """\
            version: 1
            sandboxes:
              first:
                target: {kind: k3s}
                archive: {archive}
              second:
                target: {kind: k3s}
                archive: {archive}
                user: 4242
            """
        ),
        config_encoding="utf-8",
        archive={},
        exit=2,
        stdout=[],
    )
    run, _config, _archive = run_cli(case, "restore", tmp_path, sandbox, capsys)
    assert run.code == 2, run.out + run.err
    assert "sandboxes.second.user: uid 4242 does not exist" in run.err
    assert not run.wrote() and run.after == run.before
