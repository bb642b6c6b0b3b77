"""The shell clawguard runs inside pods lives in checked files, clawguard/data/sh.

Each file starts with a comment (its arguments and output, and shellcheck's directives) that
is not sent; a line ``. ./OTHER.sh`` stands for OTHER.sh's text (targets.base.shell_script).
These tests keep the files and the constants the package sends from drifting apart: every
file is used, every constant is exactly what its files say, put together as documented.
scripts/test.sh runs shellcheck on the files themselves.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest

from clawguard import gateway, sandboxfs
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
