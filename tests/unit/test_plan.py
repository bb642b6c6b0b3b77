from __future__ import annotations

import os
from pathlib import Path

import pytest

from clawguard import ArchiveError, ConfigError, InputError, build_plan, parse_config

from .conftest import basic_config


def _build(archive: Path, extra: str = ""):  # type: ignore[no-untyped-def]
    return build_plan(parse_config(basic_config(archive, extra), "c.yaml").sandboxes["my-assistant"])


def test_default_order_puts_exec_approvals_and_telegram_first(archive: Path) -> None:
    kinds = [s.step.kind for s in _build(archive).steps]
    assert kinds[:3] == ["exec_approvals", "chown", "config"]
    assert kinds[-1] == "soul"
    assert kinds.count("tree") == 4  # credentials + three skills


def test_explicit_plan_replaces_conventions(archive: Path) -> None:
    plan = _build(
        archive,
        "    plan:\n"
        "      - {kind: soul}\n"
        "      - {kind: symlink, path: /sandbox/.openclaw/x, target: /sandbox/.openclaw-data/x}\n",
    )
    assert [s.step.kind for s in plan.steps] == ["soul", "symlink"]
    assert plan.steps[1].step.origin.line == 11


def test_missing_archive(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError) as info:
        _build(tmp_path / "nope")
    assert info.value.key == "sandboxes.my-assistant.archive"


def test_unknown_archive_entry(archive: Path) -> None:
    (archive / "soul.md").write_text("typo")
    with pytest.raises(ArchiveError, match=r"unexpected soul.md"):
        _build(archive)


def test_escaping_symlink_in_skill(archive: Path) -> None:
    (archive / "skills" / "proxmox" / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(ArchiveError, match="points outside skills/proxmox/"):
        _build(archive)


def test_relative_symlink_inside_skill_is_kept(archive: Path) -> None:
    (archive / "skills" / "proxmox" / "run.sh").symlink_to("scripts/list-vms.sh")
    plan = _build(archive)
    links = [e for e in plan.entries if e.path.endswith("/run.sh")]
    assert links[0].kind == "symlink" and links[0].link == "scripts/list-vms.sh"


def test_symlinked_source_file_outside_archive(archive: Path, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("x")
    (archive / "SOUL.md").unlink()
    (archive / "SOUL.md").symlink_to(tmp_path / "secret")
    with pytest.raises(ArchiveError, match="SOUL.md: is a symlink pointing outside the archive"):
        _build(archive)


def test_control_characters_in_names(archive: Path) -> None:
    (archive / "skills" / "proxmox" / "bad\nname").write_text("x")
    with pytest.raises(ArchiveError, match="control characters"):
        _build(archive)


def test_non_utf8_names(archive: Path) -> None:
    os.mkdir(os.path.join(os.fsencode(archive / "skills"), b"caf\xe9"))
    with pytest.raises(ArchiveError, match="UTF-8"):
        _build(archive)


def test_dest_outside_root_is_refused(archive: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _build(archive, "    plan:\n      - {kind: file, source: SOUL.md, dest: /etc/SOUL.md}\n")
    assert "outside the sandbox root /sandbox" in str(info.value)
    assert info.value.key == "sandboxes.my-assistant.plan[0]"
    assert info.value.line == 10


def test_dotdot_dest_is_refused(archive: Path) -> None:
    with pytest.raises(ConfigError, match="'..'"):
        _build(archive, "    plan:\n      - {kind: file, source: SOUL.md, dest: /sandbox/../etc/x}\n")


def test_duplicate_destinations(archive: Path) -> None:
    with pytest.raises(InputError, match="also written by step 'SOUL.md'"):
        _build(
            archive,
            "    plan:\n      - {kind: soul}\n"
            "      - {kind: file, source: SOUL.md, dest: /sandbox/.openclaw-data/workspace/SOUL.md}\n",
        )


def test_archive_size_limit(archive: Path) -> None:
    with pytest.raises(ArchiveError, match="over limits.max_archive_bytes"):
        _build(archive, "    limits: {max_archive_bytes: 100}\n")


def test_bad_exec_approvals(archive: Path) -> None:
    (archive / "exec-approvals.json").write_text('{"version": 1, "defaults": {"security": "yolo"}}')
    with pytest.raises(ArchiveError, match="defaults.security must be one of"):
        _build(archive)


def test_bad_openclaw_json(archive: Path) -> None:
    (archive / "openclaw.json").write_text("{nope")
    with pytest.raises(ArchiveError, match="openclaw.json: not valid JSON"):
        _build(archive)
