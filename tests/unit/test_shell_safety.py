"""Shell metacharacters in file names and paths are data, never code.

``$()``, backticks, ``;`` and quotes are legal in POSIX file names, so clawguard
does not refuse them: it passes every path as its own argument to constant
scripts (clawguard.sandboxfs), and runs hooks as argument lists. These tests put
such names through a real restore into a busybox chroot and prove that the files
arrive with their literal names and that no command hidden in them ran.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from clawguard import build_plan, parse_config
from clawguard.hooks import fire
from clawguard.restore import OK, run_plan
from clawguard.state import StateStore

from .chroot_sandbox import ChrootTarget, make_sandbox_root, pod_of


@pytest.fixture
def marker() -> str:
    """A file name that only an injected command would create."""
    name = f"pwned-{uuid.uuid4().hex[:12]}"
    assert not Path("/tmp", name).exists()
    return name


def hostile_names(marker: str) -> list[str]:
    # A file name cannot hold "/", so these touch the marker in the shell's working
    # directory: "/" inside the chroot.
    return [
        f"$(touch {marker}).md",
        f"`touch {marker}`.md",
        f"a; touch {marker}; b.md",
        f'it\'s "quoted" & {marker}>x|y.md',
    ]


def hostile_dest(marker: str) -> str:
    # A path may hold "/": this one would touch /tmp/<marker> if any shell parsed it.
    return f"/sandbox/.openclaw-data/$(touch /tmp/{marker}) `touch /tmp/{marker}`; touch '/tmp/{marker}' \"x\""


def config_text(archive: Path, marker: str) -> str:
    plan = [
        {"kind": "tree", "source": "skills/shell", "dest": "/sandbox/.openclaw-data/skills/shell"},
        {"kind": "file", "source": "SOUL.md", "dest": hostile_dest(marker), "mode": "0644"},
    ]
    sandbox = {"target": {"kind": "k3s"}, "archive": str(archive), "user": "sandbox", "plan": plan}
    return yaml.safe_dump({"version": 1, "sandboxes": {"my-assistant": sandbox}})


def assert_nothing_ran(root: Path, marker: str) -> None:
    planted = [path for path in root.rglob("*") if path.name == marker]
    assert planted == [], f"a command hidden in a name ran inside the sandbox: {planted}"
    assert not Path("/tmp", marker).exists(), "a command hidden in a name ran on the host"
    assert not Path(marker).exists(), "a command hidden in a name ran on the host"


def test_hostile_names_are_restored_literally_and_run_nothing(archive: Path, tmp_path: Path, marker: str) -> None:
    skill = archive / "skills" / "shell"
    skill.mkdir()
    for name in hostile_names(marker):
        (skill / name).write_text(f"content of {name}\n")
    root = make_sandbox_root(tmp_path / "root")
    target = ChrootTarget(root)
    sandbox = parse_config(config_text(archive, marker), "c.yaml").sandboxes["my-assistant"]
    pod = pod_of(target, sandbox)
    plan = build_plan(sandbox, pod.facts)

    report = run_plan(plan, pod)

    assert report.ok, report.to_dict()
    restored = root / "sandbox/.openclaw-data/skills/shell"
    for name in hostile_names(marker):
        assert (restored / name).read_text() == f"content of {name}\n"
    assert sorted(os.listdir(restored)) == sorted(hostile_names(marker))
    dest = root / hostile_dest(marker).lstrip("/")
    assert dest.read_bytes() == (archive / "SOUL.md").read_bytes()
    assert_nothing_ran(root, marker)
    # The names also survive the way back: inspecting them again finds nothing to do.
    again = run_plan(plan, pod)
    assert [step.outcome for step in again.steps] == [OK, OK]
    assert_nothing_ran(root, marker)


def test_hook_arguments_are_never_parsed_by_a_shell(tmp_path: Path, marker: str) -> None:
    literal = tmp_path / f"$(touch {marker}); `touch {marker}`"
    write_argument = "import sys; open(sys.argv[1], 'w').write('ok')"
    hooks = {"on_restored": [sys.executable, "-c", write_argument, str(literal)], "timeout": 30}

    fire(hooks, "on_restored", {}, "my-assistant", StateStore(tmp_path / "state"), wait=True)

    assert literal.read_text() == "ok"
    assert [path.name for path in tmp_path.iterdir() if marker == path.name] == []
    assert not Path("/tmp", marker).exists()
    assert not Path(marker).exists()
