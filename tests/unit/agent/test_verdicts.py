"""`openclaw config validate` is asked once per agent version and candidate bytes: its
acceptance is kept in the sandbox's state directory (issue 21: back live within the
agent's own cold start)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from clawguard.agent.cli import VERDICTS_KEEP, VERSIONS_KEEP, AgentCLI, Verdicts
from clawguard.entries import Ids
from clawguard.targets.base import ExecResult, Instance, Target

GOOD = b'{"gateway": {"port": 18789}}\n'
OTHER = b'{"gateway": {"port": 18790}}\n'


class ValidatingTarget(Target):
    """Answers `openclaw config validate --json` as OpenClaw does: valid for a JSON object
    without the key "bad"; counts every call (each a Node.js start in a real pod)."""

    params: Mapping[str, Any] = {}

    def __init__(self) -> None:
        super().__init__("fake", {})
        self.calls: list[list[str]] = []

    def locate(self) -> Instance:
        return Instance("1" * 64, "fake")

    def exec(
        self, instance: Instance, argv: Sequence[str], stdin: bytes | None = None, *, user: str | None = None
    ) -> ExecResult:
        self.calls.append(list(argv))
        document = json.loads(stdin or b"{}")
        if "bad" in document:
            answer = {"valid": False, "issues": [{"path": "bad", "message": "Unrecognized key"}]}
            return ExecResult(1, json.dumps(answer).encode(), b"")
        return ExecResult(0, b'{"valid": true}', b"")


def _cli(target: ValidatingTarget, verdicts: Verdicts | None) -> AgentCLI:
    return AgentCLI(target, target.locate(), Ids(998, 998), "/sandbox", verdicts=verdicts)


def test_the_same_bytes_for_the_same_version_are_asked_once(tmp_path: Path) -> None:
    target = ValidatingTarget()
    path = tmp_path / "agent-verdicts.json"
    assert _cli(target, Verdicts(path, "openclaw 2026.9.6")).validate_config(GOOD) == []
    assert len(target.calls) == 1
    # A new pod of the same version, later: a new CLI and a new Verdicts read the same file.
    assert _cli(target, Verdicts(path, "openclaw 2026.9.6")).validate_config(GOOD) == []
    assert len(target.calls) == 1  # no Node.js start


def test_other_bytes_or_another_version_are_asked(tmp_path: Path) -> None:
    target = ValidatingTarget()
    path = tmp_path / "agent-verdicts.json"
    _cli(target, Verdicts(path, "openclaw 2026.9.6")).validate_config(GOOD)
    _cli(target, Verdicts(path, "openclaw 2026.9.6")).validate_config(OTHER)
    assert len(target.calls) == 2
    _cli(target, Verdicts(path, "openclaw 2026.9.7")).validate_config(GOOD)  # an upgraded image
    _cli(target, Verdicts(path, "configured: 2026.9.6")).validate_config(GOOD)  # a pin is not the probed version
    assert len(target.calls) == 4
    # Both versions' verdicts stay: a rollback to the older image asks nothing.
    _cli(target, Verdicts(path, "openclaw 2026.9.6")).validate_config(OTHER)
    assert len(target.calls) == 4


def test_a_rejection_is_asked_again(tmp_path: Path) -> None:
    target = ValidatingTarget()
    verdicts = Verdicts(tmp_path / "agent-verdicts.json", "openclaw 2026.9.6")
    bad = b'{"bad": 1}'
    assert _cli(target, verdicts).validate_config(bad) == ["bad: Unrecognized key"]
    assert _cli(target, verdicts).validate_config(bad) == ["bad: Unrecognized key"]
    assert len(target.calls) == 2
    assert not verdicts.accepted(bad)


def test_without_verdicts_every_question_is_asked() -> None:
    target = ValidatingTarget()
    for _ in range(2):
        assert _cli(target, None).validate_config(GOOD) == []
    assert len(target.calls) == 2


def test_a_damaged_or_foreign_file_only_means_asking(tmp_path: Path) -> None:
    path = tmp_path / "agent-verdicts.json"
    target = ValidatingTarget()
    for content in ("not json", '["a list"]', '{"config validate": {"openclaw 2026.9.6": "not a list"}}'):
        path.write_text(content)
        assert _cli(target, Verdicts(path, "openclaw 2026.9.6")).validate_config(GOOD) == []
    assert len(target.calls) == 3
    assert Verdicts(path, "openclaw 2026.9.6").accepted(GOOD)  # and the last answer was kept


def test_what_is_kept_stays_small(tmp_path: Path) -> None:
    path = tmp_path / "agent-verdicts.json"
    for version in range(VERSIONS_KEEP + 2):
        verdicts = Verdicts(path, f"openclaw 2026.9.{version}")
        for n in range(VERDICTS_KEEP + 3):
            verdicts.remember(b'{"n": %d}' % n)
    kept = json.loads(path.read_text())["config validate"]
    assert list(kept) == [f"openclaw 2026.9.{v}" for v in range(2, VERSIONS_KEEP + 2)]  # the newest versions
    assert all(len(digests) == VERDICTS_KEEP for digests in kept.values())
    newest = Verdicts(path, f"openclaw 2026.9.{VERSIONS_KEEP + 1}")
    assert newest.accepted(b'{"n": %d}' % (VERDICTS_KEEP + 2)) and not newest.accepted(b'{"n": 0}')
    assert path.stat().st_mode & 0o777 == 0o600  # written like the rest of the sandbox's state
