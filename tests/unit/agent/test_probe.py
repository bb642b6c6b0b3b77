from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from clawguard.agent import Version, probe
from clawguard.agent.probe import package_version

from ..chroot_sandbox import ChrootTarget, make_sandbox_root

PACKAGE = "usr/local/lib/node_modules/openclaw"
# Exits non-zero whatever it is asked: the probe must not need to run it.
REFUSES = "#!/bin/sh\necho 'node: not in this chroot' >&2\nexit 127\n"


def _npm_install(root: Path, package: dict[str, object], bin_file: str = "openclaw.mjs") -> None:
    """The agent as `npm install -g` lays it out: bin/openclaw -> the package's bin file."""
    (root / "bin" / "openclaw").unlink()
    where = root / PACKAGE / bin_file
    where.parent.mkdir(parents=True, exist_ok=True)
    where.write_text(REFUSES)
    where.chmod(0o755)
    (root / PACKAGE / "package.json").write_text(json.dumps(package))
    (root / "bin" / "openclaw").symlink_to(os.path.relpath(where, root / "bin"))


def _probe(target: ChrootTarget):  # type: ignore[no-untyped-def]
    return probe(
        target,
        target.instance,
        user="sandbox",
        split_dirs=("/sandbox/.openclaw", "/sandbox/.openclaw-data"),
        command="openclaw",
    )[0]


def test_the_version_comes_from_the_package_json_in_the_same_exec(tmp_path: Path) -> None:
    root = make_sandbox_root(tmp_path / "root")
    _npm_install(root, {"name": "openclaw", "version": "2026.9.6", "bin": {"openclaw": "openclaw.mjs"}})
    target = ChrootTarget(root)
    facts = _probe(target)
    assert facts.version == Version(2026, 9, 6) and facts.style == "split"
    assert facts.users.resolve("sandbox").uid == 998
    assert len(target.calls) == 1  # users, layout and version: one exec, and no Node start


def test_a_bin_file_below_the_package_root_is_found_too(tmp_path: Path) -> None:
    root = make_sandbox_root(tmp_path / "root")
    _npm_install(root, {"name": "openclaw", "version": "2026.4.24-beta.2"}, bin_file="dist/cli/entry.js")
    assert _probe(ChrootTarget(root)).version == Version(2026, 4, 24)


def test_without_an_openclaw_package_the_agent_is_asked(tmp_path: Path) -> None:
    root = make_sandbox_root(tmp_path / "root", agent="2026.6.10", npm=False)  # a script in /bin: no package
    target = ChrootTarget(root)
    assert _probe(target).version == Version(2026, 6, 10)
    assert target.calls[1][-2:] == ["openclaw", "--version"] and len(target.calls) == 2
    # Another package's manifest above the command is not the agent's.
    other = make_sandbox_root(tmp_path / "other")
    _npm_install(other, {"name": "left-pad", "version": "2026.1.1"})
    target = ChrootTarget(other)
    facts = _probe(target)
    assert facts.version is None and "failed (127): node: not in this chroot" in facts.version_text
    assert target.calls[1][-2:] == ["openclaw", "--version"]


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ('{"name": "openclaw", "version": "2026.9.6"}', "2026.9.6"),
        ('{"name": "openclaw"}', None),
        ('{"name": "openclaw", "version": 7}', None),
        ('{"name": "clawhub", "version": "2026.9.6"}', None),
        ('["openclaw"]', None),
        ("", None),
        ("{not json", None),
    ],
)
def test_package_version(text: str, version: str | None) -> None:
    assert package_version(text) == version
