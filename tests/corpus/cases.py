"""Reading the corpus's case files (format in README.md) and setting a case up on disk.

Shared by tests/unit/test_corpus.py (a chroot sandbox) and
tests/integration/test_corpus_on_testbed.py (the real testbed pod).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import yaml

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parent
EXAMPLE_ARCHIVE = REPO / "restore-archive"

# The CLI arguments of each command a case may name. restore skips the gateway: a
# refused restore never gets that far, and one wrongly let through must not hang on ssh.
COMMANDS = {
    "restore": ["restore", "--no-gateway"],
    "check": ["check"],
    "plan": ["plan"],
    "capture": ["capture"],
}
_CASE_KEYS = {"description", "command", "config", "config_encoding", "archive", "expect"}
_ARCHIVE_KEYS = {"delete", "files", "symlinks", "sparse", "modes"}
_EXPECT_KEYS = {"exit", "stderr", "stdout", "absent", "reaches_sandbox"}


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    command: str
    config: str
    config_encoding: str
    archive: dict[str, Any]
    exit: int
    stderr: list[str] = field(default_factory=list)
    stdout: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    reaches_sandbox: bool = False


def load_case(path: Path) -> Case:
    """Read one case file; a malformed case fails loudly instead of testing nothing."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path.name}: a case is a mapping"
    assert set(data) <= _CASE_KEYS, f"{path.name}: unknown keys {set(data) - _CASE_KEYS}"
    assert set(data.get("archive") or {}) <= _ARCHIVE_KEYS, f"{path.name}: unknown archive keys"
    expect = data["expect"]
    assert set(expect) <= _EXPECT_KEYS, f"{path.name}: unknown expect keys {set(expect) - _EXPECT_KEYS}"
    assert data["command"] in COMMANDS, f"{path.name}: command must be one of {', '.join(COMMANDS)}"
    assert data["description"].strip(), f"{path.name}: describe the case"
    case = Case(
        name=path.stem,
        description=data["description"],
        command=data["command"],
        config=data["config"],
        config_encoding=data.get("config_encoding", "utf-8"),
        archive=data.get("archive") or {},
        exit=expect["exit"],
        stderr=list(expect.get("stderr", [])),
        stdout=list(expect.get("stdout", [])),
        absent=list(expect.get("absent", [])),
        reaches_sandbox=bool(expect.get("reaches_sandbox", False)),
    )
    assert case.stderr or case.stdout, f"{path.name}: expect at least one message substring"
    return case


def all_cases() -> list[Case]:
    return [load_case(path) for path in sorted(CORPUS.glob("[0-9]*.yaml"))]


def case_named(name: str) -> Case:
    return load_case(CORPUS / f"{name}.yaml")


def _name(text: str) -> bytes:
    """Archive paths are percent-decoded, so a case can name a non-UTF-8 or control-character file."""
    return unquote_to_bytes(text)


def _content(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def prepare_archive(case: Case, tmp_path: Path) -> Path:
    """A private copy of restore-archive/ with the case's changes applied."""
    archive = tmp_path / "archive"
    shutil.copytree(EXAMPLE_ARCHIVE, archive, symlinks=True)
    base = os.fsencode(archive)
    changes = case.archive

    def at(rel: str) -> bytes:
        path = os.path.join(base, _name(rel))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    for rel in changes.get("delete", []):
        path = os.path.join(base, _name(rel))
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    for rel, content in (changes.get("files") or {}).items():
        with open(at(rel), "wb") as handle:
            handle.write(_content(content))
    for rel, link in (changes.get("symlinks") or {}).items():
        os.symlink(os.fsencode(link), at(rel))
    for rel, size in (changes.get("sparse") or {}).items():
        with open(at(rel), "wb") as handle:
            handle.truncate(int(size))  # a hole: the size is real, the disk blocks are not
    for rel, mode in (changes.get("modes") or {}).items():
        os.chmod(os.path.join(base, _name(rel)), int(str(mode), 8))
    return archive


def write_case_config(case: Case, tmp_path: Path, archive: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_bytes(case.config.replace("{archive}", str(archive)).encode(case.config_encoding))
    return path


def set_up(case: Case, tmp_path: Path) -> tuple[Path, Path]:
    """The case's archive and config in ``tmp_path``: (config, archive)."""
    archive = prepare_archive(case, tmp_path)
    return write_case_config(case, tmp_path, archive), archive


def assert_messages(case: Case, out: str, err: str, config: Path, archive: Path) -> None:
    """Every expected substring is there ({config} and {archive} expanded), no forbidden one is."""

    def expand(text: str) -> str:
        return text.replace("{config}", str(config)).replace("{archive}", str(archive))

    for text in case.stderr:
        assert expand(text) in err, f"{case.name}: stderr lacks {expand(text)!r}:\n{err}"
    for text in case.stdout:
        assert expand(text) in out, f"{case.name}: stdout lacks {expand(text)!r}:\n{out}"
    for text in case.absent:
        assert text not in out + err, f"{case.name}: {text!r} must never be shown"
