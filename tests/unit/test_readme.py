"""README.md's command table says what `clawguard --help` says: the same commands, each
with every option and argument its own --help shows, and none it does not."""

from __future__ import annotations

import re

import pytest

from clawguard.cli import main

from .conftest import REPO

# Shown by every command's --help, and deliberately not in each row: -h/--help goes without
# saying; the common options are said once, under the table.
EVERY_COMMAND = {"-h", "--help"}
COMMON = {"--config", "-c", "--verbose", "-v", "--quiet", "-q"}


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, list[str]]:
    """`clawguard ARGV --help`, as its sections ("options", "positional arguments") and their lines."""
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--help"])
    assert exited.value.code == 0
    sections: dict[str, list[str]] = {}
    lines: list[str] = []
    for line in capsys.readouterr().out.splitlines():
        if re.fullmatch(r"[a-z][a-z ]*:", line):
            lines = sections.setdefault(line[:-1], [])
        elif line.strip():
            lines.append(line)
    return sections


def _commands(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The commands `clawguard --help` lists (each at four spaces, its help after it)."""
    return [m[1] for line in _help(capsys)["positional arguments"] if (m := re.match(r" {4}([a-z][\w-]*)\b", line))]


def _options(sections: dict[str, list[str]]) -> list[set[str]]:
    """Each option of a --help, as its spellings ({"--config", "-c"})."""
    found = []
    for line in sections.get("options", []):
        if m := re.match(r" {2}(-\S.*?)(?: {2}|$)", line):
            found.append({spelling.split()[0] for spelling in m[1].split(", ")})
    return found


def _positionals(sections: dict[str, list[str]]) -> list[str]:
    return [m[1] for line in sections.get("positional arguments", []) if (m := re.match(r" {2}(\S+)", line))]


def _section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("\n## Commands\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _rows() -> dict[str, tuple[str, str]]:
    """Each row of the Commands table: command name -> (its synopsis, the whole row)."""
    rows: dict[str, tuple[str, str]] = {}
    for line in _section().splitlines():
        if not line.startswith("| `clawguard "):
            continue
        cells = [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line.strip("|"))]
        synopsis = cells[0].strip("`")
        name = synopsis.split()[1]
        assert name not in rows, f"README.md: two rows for {name}"
        rows[name] = (synopsis, " ".join(cells))
    return rows


def test_the_table_lists_every_command_and_no_other(capsys: pytest.CaptureFixture[str]) -> None:
    commands = _commands(capsys)
    assert len(commands) > 5
    assert sorted(_rows()) == sorted(commands)


def test_each_row_names_every_option_and_argument_of_its_command(capsys: pytest.CaptureFixture[str]) -> None:
    for name, (synopsis, row) in _rows().items():
        sections = _help(capsys, name)
        options = _options(sections)
        shown = set().union(*options)
        for spellings in options:
            if spellings & (EVERY_COMMAND | COMMON):
                assert spellings <= EVERY_COMMAND | COMMON, f"{name}: {spellings} mixes a common option"
                continue
            assert any(re.search(rf"(?<![\w-]){re.escape(s)}(?![\w-])", row) for s in spellings), (
                f"README.md's row for {name} does not name {'/'.join(sorted(spellings))}"
            )
        for written in re.findall(r"(?<![\w-])--?[a-zA-Z][\w-]*", synopsis):
            assert written in shown, f"README.md's row for {name} names {written}, which `{name} --help` does not"
        for positional in _positionals(sections):
            if choices := re.fullmatch(r"\{(.*)\}", positional):
                for choice in choices[1].split(","):
                    assert re.search(rf"\b{choice}\b", synopsis), f"README.md's row for {name} lacks {choice}"
            else:
                assert f"[{positional.upper()}]" in synopsis, f"README.md's row for {name} lacks [{positional.upper()}]"
        if not _positionals(sections):
            assert "[SANDBOX]" not in synopsis, f"{name} takes no sandbox"


def test_the_options_every_command_takes_are_said_once(capsys: pytest.CaptureFixture[str]) -> None:
    section = _section()
    for name in _commands(capsys):
        for spellings in _options(_help(capsys, name)):
            if spellings <= COMMON:
                assert all(f"`{s}" in section for s in spellings), f"the Commands section does not name {spellings}"
