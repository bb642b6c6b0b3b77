"""Every name Linux allows survives restore, verification, capture and a new pod, on both
userlands the test bed runs: the stand-in (busybox tools, dash) and the real agent's Debian
(GNU coreutils, GNU tar, dash).

GNU coreutils escapes a name holding a backslash or a newline in sha256sum's output; the
inspector used to raise on it, an error nothing caught, at every daemon round. The
archive's names may hold backslashes, quotes, spaces and leading dashes; the agent's own
persisted files may be named anything: newlines, tabs, bytes that are not UTF-8, 255
bytes.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from clawguard import Clawguard, parse_config
from clawguard.config import Config
from clawguard.converge import Convergence, open_pod
from clawguard.persist import CaptureOutcome, CaptureStore
from clawguard.plan import build_plan
from clawguard.restore import CHANGED, PERSISTED, run_plan
from clawguard.state import StateStore
from clawguard.targets import make_target
from testbed import Testbed

from ..names import ARCHIVE_NAMES
from .conftest import REPO, fresh_sandbox

pytestmark = pytest.mark.integration

# Names the agent may give its own files: any bytes but "/" and NUL.
AGENT_NAMES = [
    b"notes\\2024.md",
    b"new\nline",
    b"ends with newline\n",
    b"\nstarts with newline",
    b"tab\there",
    b"carriage\rreturn",
    b"\\",
    b"-leading-dash",
    b" spaces  around ",
    b"quotes ' and \"",
    b"$(touch pwned) `touch pwned`; *?[a]",
    "caf\u00e9 \u2603".encode(),
    b"latin1-\xe9-\xff\xfe",
    b"\x1b[31mred\x1b[0m",
    b"x" * 255,
    b"\xc3" * 255,
]

# Arguments: a directory, then names as printf %b escapes. Makes a file per name (its
# content: the escaped name), a directory holding the first ones, and a symlink to each
# of those, as whoever runs it.
AGENT_WRITES = r"""
dir=$1; shift
mkdir -p "$dir" && cd "$dir" || exit 1
i=0
for escaped do
  name=$(printf '%b.' "$escaped"); name=${name%.}
  printf '%s' "$escaped" > "$name" || exit 1
  i=$((i + 1))
  if [ "$i" -le 4 ]; then
    mkdir -p "d $name" && printf 'deep' > "d $name/$name" && ln -s "$name" "l $name" || exit 1
  fi
done
"""


def _escaped(name: bytes) -> str:
    return "".join(chr(b) if b < 128 and chr(b).isalnum() else f"\\0{b:03o}" for b in name)


@pytest.fixture(params=["standin", "2026.9.6"], ids=["busybox", "gnu"])
def pod_name(request: pytest.FixtureRequest, testbed: Testbed) -> Iterator[str]:
    yield from fresh_sandbox(
        testbed, "io-names-" + ("bb" if request.param == "standin" else "gnu"), agent=request.param
    )


def _config(tmp_path: Path, name: str) -> Config:
    archive = tmp_path / "archive"
    shutil.copytree(REPO / "restore-archive", archive)
    skill = archive / "skills" / "names"
    (skill / "back\\slash dir").mkdir(parents=True)
    for name_ in ARCHIVE_NAMES:
        (skill / name_).write_text(f"content of {name_}\n")
        (skill / "back\\slash dir" / name_).write_text("inside\n")
    text = f"""version: 1
sandboxes:
  {name}:
    target: {{kind: k3s, cluster: openshell-cluster-nemoclaw}}
    archive: {archive}
    user: sandbox
    gateway: {{enabled: false}}
"""
    return parse_config(text, tmp_path / "config.yaml")


def _tree(testbed: Testbed, name: str, path: str) -> dict[str, tuple[str, bytes]]:
    """Everything below ``path`` in the pod, read back as a tar stream: kind and content or
    link target, by name."""
    code, out, err = testbed.exec_in_sandbox(name, ["tar", "-c", "-f", "-", "-C", path, "."])
    assert code == 0, err
    found: dict[str, tuple[str, bytes]] = {}
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        for info in tar:
            key = info.name.removeprefix("./")
            if info.isfile():
                handle = tar.extractfile(info)
                found[key] = ("file", handle.read() if handle else b"")
            elif info.issym():
                found[key] = ("symlink", os.fsencode(info.linkname))
            elif info.isdir() and key not in (".", ""):
                found[key] = ("dir", b"")
    return found


def test_every_name_survives_restore_verification_capture_and_a_new_pod(
    testbed: Testbed, pod_name: str, tmp_path: Path
) -> None:
    config = _config(tmp_path, pod_name)
    sandbox = config.sandboxes[pod_name]
    store = StateStore(tmp_path / "state")
    guard = Clawguard(config, store=store)

    def converge() -> Convergence:
        return guard.restore(pod_name)[0]

    def capture() -> CaptureOutcome:
        return guard.capture(pod_name)[0][1]

    first = converge()
    assert first.ok, first.report.to_dict()
    names_step = next(s for s in first.report.steps if s.name == "skills/names")
    assert names_step.outcome == CHANGED
    again = converge()
    assert again.ok and again.report.changed == 0, again.report.to_dict()
    assert first.plan is not None
    skills = _tree(testbed, pod_name, first.plan.layout.data_dir + "/skills/names")
    for name_ in ARCHIVE_NAMES:
        assert skills[name_] == ("file", f"content of {name_}\n".encode()), name_
        assert skills[f"back\\slash dir/{name_}"] == ("file", b"inside\n")

    # The agent writes its memory, as the sandbox user.
    plan = first.plan
    assert plan is not None
    memory = f"{plan.layout.workspace}/memory"  # persisted by every default set (the real agent's: the workspace)
    escaped = [_escaped(n) for n in AGENT_NAMES]
    code, _, err = testbed.exec_in_sandbox(pod_name, ["sh", "-c", AGENT_WRITES, "sh", memory, *escaped], user="sandbox")
    assert code == 0, err
    written = _tree(testbed, pod_name, memory)
    assert len(written) == len(AGENT_NAMES) + 3 * 4
    for name_, text in zip(AGENT_NAMES, escaped, strict=True):
        assert written[os.fsdecode(name_)] == ("file", text.encode())

    taken = capture()
    assert taken.outcome == "saved", taken
    # A drift check of the live pod reads every name back and finds nothing to do.
    assert converge().report.changed == 0

    new_id = testbed.restart(pod_name)  # wiped: a new pod
    restored = converge()
    assert restored.ok and restored.container_id == new_id, restored.report.to_dict()
    persisted = next(s for s in restored.report.steps if s.name == PERSISTED)
    assert persisted.outcome == CHANGED
    assert _tree(testbed, pod_name, memory) == written
    code, out, _ = testbed.exec_in_sandbox(pod_name, ["sh", "-c", f"find '{memory}' ! -user sandbox | wc -l"])
    assert out.decode().strip() == "0"
    code, _, _ = testbed.exec_in_sandbox(pod_name, ["sh", "-c", "test -e /pwned || test -e /tmp/pwned"])
    assert code != 0, "a command hidden in a name ran in the pod"

    # Verified: the capture checked against the new pod finds every path as it is.
    target = make_target(sandbox.name, sandbox.target)
    pod = open_pod(sandbox, target, target.locate())
    latest = CaptureStore(store, sandbox.name, 5).latest()
    check = run_plan(build_plan(sandbox, pod.facts), pod, persisted=latest, dry_run=True)
    drift = [change for step in check.steps for change in step.changes]
    # The real agent's CLI, run by the restore, writes its own database after it is restored.
    assert [c for c in drift if not c.endswith("/state/openclaw.sqlite: content differs")] == [], drift
    # And the new pod's own capture holds the same names.
    assert capture().outcome in ("saved", "unchanged")
