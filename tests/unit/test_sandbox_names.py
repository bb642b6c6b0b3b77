"""Every name Linux allows survives restore, verification and capture, in a busybox chroot.

The archive's own names are checked on the host (UTF-8, no control characters), but
may still hold backslashes, quotes, spaces, leading dashes and 255 bytes; the agent's
persisted files may be named anything at all. A name GNU coreutils escapes (a
backslash: ``memory/notes\\2024.md``) used to make the inspector's reply unparseable,
an error nothing caught, every daemon round.
"""

from __future__ import annotations

import os
from pathlib import Path

from clawguard import build_plan, parse_config
from clawguard.converge import converge
from clawguard.persist import CaptureStore, capture, live_pod, read_members, set_persist_state
from clawguard.restore import CHANGED, OK, PERSISTED, run_plan
from clawguard.state import StateStore
from clawguard.targets.base import Instance

from ..names import ARCHIVE_NAMES
from .chroot_sandbox import ChrootTarget, chown, context, make_sandbox_root, needs_root, owner, pod_of
from .conftest import basic_config
from .test_sandboxfs import HOSTILE

MEMORY = "sandbox/.openclaw-data/workspace/memory"


def _config(archive: Path) -> str:
    return basic_config(archive, "    gateway: {enabled: false}\n")


def test_archive_names_are_restored_verified_and_found_again(archive: Path, tmp_path: Path) -> None:
    skill = archive / "skills" / "names"
    (skill / "back\\slash dir").mkdir(parents=True)
    for name in ARCHIVE_NAMES:
        (skill / name).write_text(f"content of {name}\n")
        (skill / "back\\slash dir" / name).write_text("inside\n")
    root = make_sandbox_root(tmp_path / "root")
    sandbox = parse_config(_config(archive), "c.yaml").sandboxes["my-assistant"]
    pod = pod_of(ChrootTarget(root), sandbox)
    plan = build_plan(sandbox, pod.facts)

    first = run_plan(plan, pod)

    assert first.ok, first.to_dict()
    assert {s.outcome for s in first.steps} == {CHANGED}
    restored = root / "sandbox/.openclaw-data/skills/names"
    for name in ARCHIVE_NAMES:
        assert (restored / name).read_text() == f"content of {name}\n"
        assert (restored / "back\\slash dir" / name).read_text() == "inside\n"
    assert not (root / "pwned").exists()
    again = run_plan(plan, pod)
    assert {s.outcome for s in again.steps} == {OK}, again.to_dict()
    # Drift under such a name is found and repaired like any other.
    (restored / "notes\\2024.md").write_text("edited by hand\n")
    (restored / "stray\\file").write_text("not in the archive\n")
    repaired = run_plan(plan, pod)
    names = next(s for s in repaired.steps if s.name == "skills/names")
    assert names.outcome == CHANGED, repaired.to_dict()
    assert any("notes\\2024.md: content differs" in change for change in names.changes)
    assert (restored / "notes\\2024.md").read_text() == "content of notes\\2024.md\n"
    assert not (restored / "stray\\file").exists()


def _agent_writes_hostile_names(root: Path) -> dict[str, bytes]:
    """The agent's memory/ with a file, a directory and a symlink per hostile name."""
    memory = root / MEMORY
    memory.mkdir()
    written: dict[str, bytes] = {}
    for number, name in enumerate(HOSTILE):
        (memory / name).write_bytes(f"memory {number}\n".encode())
        written[f"/{MEMORY}/{name}"] = f"memory {number}\n".encode()
    (memory / "dir\nwith\\newline").mkdir()
    (memory / "dir\nwith\\newline" / HOSTILE[1]).write_bytes(b"deep")
    written[f"/{MEMORY}/dir\nwith\\newline/{HOSTILE[1]}"] = b"deep"
    (memory / "link\tto\\weird").symlink_to(HOSTILE[2])
    (memory / HOSTILE[0]).chmod(0o600)
    for path in [memory, *memory.rglob("*")]:
        chown(path, 998, 998)
    return written


@needs_root("capture's tar -c writes the owners the kernel reports: virtual ones never reach the capture")
def test_persisted_names_survive_capture_restore_and_verification(archive: Path, tmp_path: Path) -> None:
    sandbox = parse_config(_config(archive), "c.yaml").sandboxes["my-assistant"]
    old = ChrootTarget(make_sandbox_root(tmp_path / "old"))
    assert converge(context(sandbox, old)).ok
    written = _agent_writes_hostile_names(old.root)
    pod = pod_of(old, sandbox)
    plan = build_plan(sandbox, pod.facts)

    taken = capture(context(sandbox, old), plan.persist, pod, reason="test")

    assert taken.outcome == "saved" and taken.capture is not None
    members = {m.entry.path: m for m in read_members(taken.capture.read(), plan.persist, "/sandbox")}
    for path, data in written.items():
        assert members[path].entry.data() == data, path

    new = ChrootTarget(make_sandbox_root(tmp_path / "new"))  # the pod restarted: wiped, new ID
    new.instance = Instance("1" * 64, "new pod")
    result = converge(context(sandbox, new))

    assert result.ok, result.report.to_dict()
    step = result.report.steps[-1]
    assert (step.name, step.outcome) == (PERSISTED, CHANGED)
    memory = new.root / MEMORY
    for path, data in written.items():
        assert (new.root / path.lstrip("/")).read_bytes() == data, path
    assert os.readlink(memory / "link\tto\\weird") == HOSTILE[2]
    assert (memory / HOSTILE[0]).stat().st_mode & 0o777 == 0o600
    assert all(owner(p)[0] == 998 for p in memory.rglob("*"))
    assert live_pod(StateStore(), sandbox.name) == "1" * 64

    # Verified: the same capture written again finds every path as it is.
    new_pod = pod_of(new, sandbox)
    again = run_plan(build_plan(sandbox, new_pod.facts), new_pod, persisted=taken.capture)
    assert {s.outcome for s in again.steps} == {OK}, again.to_dict()
    # And the new pod's own capture holds the same names and contents.
    set_persist_state(StateStore(), sandbox.name, live_pod=new.instance.id)
    second = capture(context(sandbox, new), plan.persist, new_pod, reason="test")
    latest = CaptureStore(StateStore(), sandbox.name, 5).latest()
    assert latest is not None and second.outcome in ("saved", "unchanged")
    recaptured = {m.entry.path: m for m in read_members(latest.read(), plan.persist, "/sandbox")}
    assert set(recaptured) == set(members)
    for path, member in members.items():
        assert recaptured[path].entry.kind == member.entry.kind
        if member.entry.kind == "file":
            assert recaptured[path].entry.data() == member.entry.data()
