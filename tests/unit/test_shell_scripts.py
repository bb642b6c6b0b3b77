"""The shell clawguard runs inside pods lives in checked files, clawguard/data/sh.

Each file starts with a comment (its arguments and output, and shellcheck's directives) that
is not sent; a line ``. ./OTHER.sh`` stands for OTHER.sh's text (targets.base.shell_script).
These tests keep the files and the constants the package sends from drifting apart: every
file is used, every constant is exactly what its files say, put together as documented.
scripts/test.sh runs shellcheck on the files themselves.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
from importlib import resources
from pathlib import Path

import pytest

from clawguard import gateway, persist, sandboxfs
from clawguard.agent.probe import FACTS_AND_INSPECT_SCRIPT, FACTS_SCRIPT
from clawguard.targets import _cluster_events, k3s
from clawguard.targets.base import shell_script

PACKAGE = Path(sandboxfs.__file__).parent
SH = PACKAGE / "data" / "sh"
INCLUDE = re.compile(r"^\. \./([a-z0-9-]+\.sh)$", re.MULTILINE)


def files() -> list[str]:
    return sorted(path.name for path in SH.glob("*.sh"))


def raw(name: str) -> str:
    return (SH / name).read_text(encoding="utf-8")


def header(name: str) -> list[str]:
    """A file's leading comment lines: what it takes and prints, and shellcheck's directives."""
    lines = raw(name).split("\n")
    return lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))]


def body(name: str) -> str:
    """A file's text after its leading comment lines, include lines left as they are."""
    return raw(name).split("\n", len(header(name)))[-1]


def composed(name: str) -> str:
    """What the pod gets: the body, each include line replaced by the included file's text."""
    return re.sub(r"^\. \./([a-z0-9-]+\.sh)\n", lambda include: composed(include[1]), body(name), flags=re.MULTILINE)


# Each constant, and the file it is loaded from.
CONSTANTS = {
    "sandboxfs.DESCRIBE": (sandboxfs.DESCRIBE, "lib-describe.sh"),
    "sandboxfs.INSPECT_SCRIPT": (sandboxfs.INSPECT_SCRIPT, "inspect.sh"),
    "sandboxfs.APPLY_SCRIPT": (sandboxfs.APPLY_SCRIPT, "apply.sh"),
    "sandboxfs.READ_SCRIPT": (sandboxfs.READ_SCRIPT, "read.sh"),
    "sandboxfs.PASSWD_SCRIPT": (sandboxfs.PASSWD_SCRIPT, "passwd.sh"),
    "probe.FACTS_SCRIPT": (FACTS_SCRIPT, "facts.sh"),
    "probe.FACTS_AND_INSPECT_SCRIPT": (FACTS_AND_INSPECT_SCRIPT, "facts-and-inspect.sh"),
    "gateway._PROBE": (gateway._PROBE, "gateway-health.sh"),
    "gateway.STOP_SCRIPT": (gateway.STOP_SCRIPT, "gateway-stop.sh"),
    "gateway._WATCH": (gateway._WATCH, "gateway-watch.sh"),
    "persist.CAPTURE_SCRIPT": (persist.CAPTURE_SCRIPT, "capture.sh"),
    "k3s._LIST_BY_LABELS": (k3s._LIST_BY_LABELS, "k3s-list-by-labels.sh"),
    "k3s._LIST_BY_MARKER": (k3s._LIST_BY_MARKER, "k3s-list-by-marker.sh"),
    "k3s._LIST_PODS": (k3s._LIST_PODS, "k3s-list-pods.sh"),
    "_cluster_events.EVENTS_WHILE_ATTACHED": (_cluster_events.EVENTS_WHILE_ATTACHED, "events-while-attached.sh"),
}


def test_every_file_is_used_by_the_package() -> None:
    """No orphan: each file is loaded by the package's code or included by one that is."""
    loaded: set[str] = set()
    for module in PACKAGE.rglob("*.py"):
        loaded.update(re.findall(r"""shell_script\(["']([^"']+)["']\)""", module.read_text(encoding="utf-8")))
    assert loaded, "no shell_script(...) call found: the scan is broken"
    assert loaded <= set(files()), f"loaded but missing: {sorted(loaded - set(files()))}"
    used, todo = set(), list(loaded)
    while todo:
        name = todo.pop()
        if name not in used:
            used.add(name)
            todo += INCLUDE.findall(body(name))
    assert sorted(used) == files(), f"used by nothing: {sorted(set(files()) - used)}"
    assert {name for _, name in CONSTANTS.values()} == loaded  # this test's table is complete


@pytest.mark.parametrize("name", files())
def test_each_file_says_what_it_takes_and_is_checked_as_posix_sh(name: str) -> None:
    directives = [line for line in header(name) if line.startswith("# shellcheck ")]
    assert any(line.startswith("# shellcheck shell=sh") for line in directives), "shellcheck: POSIX sh"
    assert len(header(name)) > len(directives), "a comment that says its arguments and output comes first"
    assert raw(name).endswith("\n") and not raw(name).endswith("\n\n")
    includes = INCLUDE.findall(body(name))
    if includes:  # shellcheck -x finds the included files next to it
        assert any("source-path=SCRIPTDIR" in line for line in directives)
        assert all((SH / include).is_file() for include in includes)


@pytest.mark.parametrize("constant", CONSTANTS)
def test_each_constant_is_what_its_file_says(constant: str) -> None:
    text, name = CONSTANTS[constant]
    assert text == shell_script(name) == composed(name)
    assert not INCLUDE.search(text), "an include line reached the pod"
    assert not text.startswith("#"), "the file's comment header reached the pod"


def parts(name: str, *includes: str) -> str:
    """The body of ``name`` after the include lines it must start with, ``includes`` in order."""
    head = "".join(f". ./{include}\n" for include in includes)
    assert body(name).startswith(head), f"{name} does not start with {includes}"
    return body(name).removeprefix(head)


def test_the_composed_scripts_are_their_parts_in_order() -> None:
    """The parts each script is made of, as the files say (and as they were made before the
    scripts were files): a function defined, then the script that uses it."""
    path, describe, contents = (body(f"lib-{part}.sh") for part in ("path", "describe", "contents"))
    root, agent = body("lib-root.sh"), body("lib-agent.sh")
    assert describe == sandboxfs.DESCRIBE and describe.startswith("\ndescribe() {\n")
    assert path.startswith("\npath() {\n") and contents.startswith("\ncontents() {\n")
    inspect_main = parts("inspect.sh", "lib-path.sh", "lib-describe.sh", "lib-contents.sh")
    assert path + describe + contents + inspect_main == sandboxfs.INSPECT_SCRIPT
    assert sandboxfs.INSPECT_SCRIPT.count("\ndescribe() {\n") == 1  # the find -exec's shells get it as $D
    apply_main = parts("apply.sh", "lib-path.sh", "lib-root.sh", "lib-agent.sh")
    assert apply_main.endswith("\n. ./inspect.sh\n")  # the read-back, after the writes
    apply_main = apply_main.removesuffix(". ./inspect.sh\n")
    assert path + root + agent + apply_main + sandboxfs.INSPECT_SCRIPT == sandboxfs.APPLY_SCRIPT
    assert path + parts("read.sh", "lib-path.sh") == sandboxfs.READ_SCRIPT
    assert sandboxfs.PASSWD_SCRIPT == "cat /etc/passwd; echo '--clawguard--'; cat /etc/group 2>/dev/null || true\n"
    assert FACTS_SCRIPT.startswith("{\n" + sandboxfs.PASSWD_SCRIPT + "echo '--style--'\n")
    assert FACTS_AND_INSPECT_SCRIPT == FACTS_SCRIPT + "printf '\\0'\nshift 3\n" + sandboxfs.INSPECT_SCRIPT


def test_the_scripts_are_read_from_package_data() -> None:
    """importlib.resources, so an installed wheel serves them as well as a checkout."""
    for name in files():
        assert (resources.files("clawguard") / "data" / "sh" / name).read_text(encoding="utf-8") == raw(name)


# ------------------------------------------------------------------ capture.sh, run by each shell

BUSYBOX = shutil.which("busybox")
# The commands capture.sh (and the stand-in node) run besides the shell's own: busybox's, for a busybox userland.
CAPTURE_APPLETS = ("sh", "cat", "find", "grep", "mkdir", "mktemp", "rm", "sha256sum", "stat", "tar")

# A stand-in for the pod's node running persist.SNAPSHOT_JS (`node --no-warnings SCRIPT MODE
# STAGE DB...`): `check` answers "rows changed", `snapshot` copies each database to STAGE/root.
FAKE_NODE = """#!/bin/sh
shift 2
mode=$1 stage=$2; shift 2
for db do
  printf 'clawguard-db {"path": "/%s", "stat": "s", "digest": "d"}\\n' "$db" >>"$stage/dbs"
  if [ "$mode" = snapshot ]; then
    mkdir -p "$stage/root/${db%/*}" && cat "$db" >"$stage/root/$db" || exit 5
  fi
done
[ "$mode" = snapshot ]
"""


def _shells() -> list[pytest.ParameterSet]:
    dash = shutil.which("dash")
    return [
        pytest.param("dash", marks=pytest.mark.skipif(dash is None, reason="no dash")),
        pytest.param("busybox", marks=pytest.mark.skipif(BUSYBOX is None, reason="no busybox")),
    ]


def _run_capture(shell: str, tmp_path: Path, argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    """capture.sh as persist.capture sends it (``argv``: capture_argv's), under ``shell``:
    dash with the host's GNU find, stat and tar, or busybox sh with busybox's own."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TMPDIR": str(tmp_path)}
    command = ["dash", *argv[1:]]
    if shell == "busybox":
        assert BUSYBOX is not None
        bin_dir = tmp_path / "busybox-bin"
        bin_dir.mkdir(exist_ok=True)
        for applet in CAPTURE_APPLETS:
            if not (bin_dir / applet).exists():
                (bin_dir / applet).symlink_to(BUSYBOX)
        env["PATH"] = str(bin_dir)
        command = [str(bin_dir / "sh"), *argv[1:]]
    return subprocess.run(command, capture_output=True, env=env, timeout=60, check=False)


def _members(stream: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(stream), mode="r:", ignore_zeros=True) as tar:
        return [info.name.strip("/") for info in tar]


@pytest.mark.parametrize("shell", _shells())
def test_capture_script_lists_tars_and_leaves_out_what_it_is_told(shell: str, tmp_path: Path) -> None:
    """capture.sh under dash and busybox sh: the set as a tar stream (a database as its
    snapshot, its directory named, its journals never), exclusions by path and by name left
    out, any byte in a name kept; the same set again with its fingerprint known: nothing."""
    home = tmp_path / "home"
    (home / "workspace" / "memory").mkdir(parents=True)
    (home / "workspace" / "tmp").mkdir()
    (home / "state").mkdir()
    (home / "workspace" / "USER.md").write_text("Ada\n")
    (home / "workspace" / "memory" / "2026-12-06.md").write_text("tea\n")
    (home / "workspace" / "we ird\nname.md").write_text("kept\n")
    (home / "workspace" / "tmp" / "scratch").write_text("left out\n")
    (home / "workspace" / "gateway.lock").write_text("pid 42\n")
    (home / "state" / "openclaw.sqlite").write_bytes(b"SQLite format 3\x00 v1")
    (home / "state" / "openclaw.sqlite-wal").write_bytes(b"frames")
    (home / "state" / "openclaw.sqlite-shm").write_bytes(b"index")
    (home / "state" / "gateway-lifecycle.623d3fc2.lock.sqlite").write_bytes(b"")  # a process's lock, by name
    node = tmp_path / "node"
    node.write_text(FAKE_NODE)
    node.chmod(0o755)
    top = str(home)
    patterns = [f"{top}/workspace", f"{top}/state/*.sqlite", f"!{top}/workspace/tmp", "!*.lock", "!*.lock.sqlite"]
    wanted = persist.PersistSet.of(patterns)
    argv = persist.capture_argv(str(node), wanted, None)
    assert argv[:4] == ["sh", "-c", persist.CAPTURE_SCRIPT, "sh"]

    first = _run_capture(shell, tmp_path, argv)
    assert first.returncode == 0, first.stderr
    said = persist.Said.parse(first.stderr)
    assert len(said.all) == len(said.files) == 64 and not said.unchanged, first.stderr
    assert set(said.databases) == {f"{top}/state/openclaw.sqlite"}
    rel = top.lstrip("/")
    assert sorted(_members(first.stdout)) == sorted(
        [
            f"{rel}/workspace",
            f"{rel}/workspace/USER.md",
            f"{rel}/workspace/memory",
            f"{rel}/workspace/memory/2026-12-06.md",
            f"{rel}/workspace/we ird\nname.md",
            f"{rel}/state",  # the directory of a database named directly
            f"{rel}/state/openclaw.sqlite",  # its snapshot
        ]
    )
    assert not list(tmp_path.glob("clawguard.*")), "the stage is removed"

    known = persist.Manifest(pod="p", generation=1, set="s", all=said.all, files=said.files, databases={})
    again = _run_capture(shell, tmp_path, persist.capture_argv(str(node), wanted, known))
    assert again.returncode == 0, again.stderr
    assert persist.Said.parse(again.stderr).unchanged and again.stdout == b""
