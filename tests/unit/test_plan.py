from __future__ import annotations

import os
import shutil
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
    assert info.value.key == "sandboxes.my-assistant.plan[0].dest"
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


def test_non_utf8_names_are_shown_escaped_once(archive: Path) -> None:
    os.mkdir(os.path.join(os.fsencode(archive / "skills" / "proxmox"), b"caf\xe9"))
    with pytest.raises(ArchiveError) as info:
        _build(archive)
    assert "'skills/proxmox/caf\\xe9'" in str(info.value)  # one backslash: not a repr of a repr


def test_top_level_names_are_checked_before_they_reach_a_message(archive: Path) -> None:
    # A terminal escape in a script name must never be printed raw (it would be part of the step label).
    (archive / "scripts" / "x\x1b[2J.sh").write_text("#!/bin/sh\n")
    with pytest.raises(ArchiveError) as info:
        _build(archive)
    assert "\x1b" not in str(info.value)
    assert "'scripts/x\\x1b[2J.sh': names must be UTF-8 without control characters" in str(info.value)


def test_symlinked_skills_folder_outside_the_archive(archive: Path) -> None:
    shutil.rmtree(archive / "skills")
    (archive / "skills").symlink_to("/etc")
    with pytest.raises(ArchiveError, match=r"skills: is a symlink pointing outside the archive"):
        _build(archive)


def test_symlinked_skill_inside_the_archive_is_still_refused(archive: Path) -> None:
    (archive / "skills" / "copy").symlink_to("proxmox")
    with pytest.raises(ArchiveError, match=r"skills/copy: is a symlink; a skill must be a real directory"):
        _build(archive)


def test_explicit_tree_source_that_is_a_symlink(archive: Path) -> None:
    (archive / "ops").symlink_to("skills/proxmox")
    with pytest.raises(ArchiveError) as info:
        _build(archive, "    plan:\n      - {kind: tree, source: ops, dest: /sandbox/ops}\n")
    assert "ops: is a symlink; a tree must be a real directory in the archive" in str(info.value)


def test_archive_problem_of_an_explicit_step_names_the_config_line(archive: Path) -> None:
    with pytest.raises(ArchiveError) as info:
        _build(archive, "    plan:\n      - kind: file\n        source: scripts/nope.sh\n        dest: /sandbox/x\n")
    assert info.value.file == "c.yaml"
    assert info.value.key == "sandboxes.my-assistant.plan[0].source"
    assert info.value.line == 11
    assert f"scripts/nope.sh: no such file in the archive (archive: {archive})" in str(info.value)


def test_missing_archive_names_the_config_line(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError) as info:
        _build(tmp_path / "nope")
    assert (info.value.file, info.value.line) == ("c.yaml", 7)
    assert f"{tmp_path / 'nope'} is not a directory" in str(info.value)


def test_layout_dir_outside_the_root_names_the_layout_key(archive: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _build(archive, "    layout: {data_dir: /var/lib/openclaw-data}\n")
    assert info.value.key == "sandboxes.my-assistant.layout.data_dir"
    assert info.value.line == 9
    assert "/var/lib/openclaw-data is outside the sandbox root /sandbox" in str(info.value)


def test_moving_the_root_moves_the_defaults_below_it(archive: Path) -> None:
    plan = _build(archive, "    layout:\n      root: /data\n")
    assert (plan.layout.config_dir, plan.layout.data_dir) == ("/data/.openclaw", "/data/.openclaw-data")
    assert all(entry.path.startswith("/data/") for entry in plan.entries)


def test_a_directory_left_outside_a_moved_root_names_its_key(archive: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _build(archive, "    layout:\n      root: /data\n      workspace: /sandbox/ws\n")
    assert info.value.key == "sandboxes.my-assistant.layout.workspace"
    assert info.value.line == 11
    assert "/sandbox/ws is outside the sandbox root /data" in str(info.value)


def test_root_slash_is_refused(archive: Path) -> None:
    with pytest.raises(ConfigError, match="must be a directory below /"):
        _build(archive, "    layout: {root: /}\n")


def test_size_limit_is_checked_before_any_file_is_read(archive: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clawguard.entries import Entry

    def no_reading(self: Entry) -> bytes:
        raise AssertionError(f"{self.source} was read before the size limit was checked")

    monkeypatch.setattr(Entry, "data", no_reading)
    with open(archive / "skills" / "proxmox" / "disk.img", "wb") as handle:
        handle.truncate(300 << 20)  # sparse: a real size, no disk blocks
    with pytest.raises(ArchiveError) as info:
        _build(archive)
    assert info.value.key == "sandboxes.my-assistant.limits.max_archive_bytes"
    assert f"the largest file is {archive}/skills/proxmox/disk.img (314572800 bytes)" in str(info.value)


def test_a_collision_names_the_parameter_that_caused_it(archive: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _build(
            archive,
            "    plan:\n"
            "      - {kind: file, source: SOUL.md, dest: /sandbox/a}\n"
            "      - kind: file\n"
            "        source: SOUL.md\n"
            "        dest: /sandbox/b\n"
            "        links: [/sandbox/a]\n",
        )
    assert info.value.key == "sandboxes.my-assistant.plan[1].links[0]"
    assert info.value.line == 14


def test_credentials_readable_by_others_are_a_warning(archive: Path) -> None:
    import io

    from structlog.testing import capture_logs

    from clawguard import log

    # capture_logs keeps the level filter: an earlier test's CLI run may have left "error".
    log.configure("info", io.StringIO())

    secret = archive / "credentials" / "proxmox.env"
    secret.chmod(0o644)
    with capture_logs() as logs:
        plan = _build(archive)
    assert logs == []  # a plan is built often: whoever adopts it says its warnings, once
    with capture_logs() as logs:
        plan.log_warnings()
    assert len(plan.warnings) == 1
    assert f"{secret} is readable by other users on the host (mode 0644)" in plan.warnings[0]
    assert f"chmod 600 {secret}" in plan.warnings[0]
    assert f"chmod -R go-rwx {archive / 'credentials'}" in plan.warnings[0]
    events = [e for e in logs if e["event"] == "archive.credentials_readable"]
    assert events == [
        {
            "event": "archive.credentials_readable",
            "log_level": "warning",
            "sandbox": "my-assistant",
            "file": str(secret),
            "mode": "0644",
            "reason": "readable by other users on the host",
            "fix": f"chmod 600 {secret} (or all of them: chmod -R go-rwx {archive / 'credentials'})",
        }
    ]


def test_private_credentials_give_no_warning(archive: Path) -> None:
    (archive / "credentials" / "proxmox.env").chmod(0o600)
    assert _build(archive).warnings == []


def test_credentials_behind_a_private_directory_give_no_warning(archive: Path) -> None:
    (archive / "credentials" / "proxmox.env").chmod(0o644)
    (archive / "credentials").chmod(0o700)  # nobody else can reach the file
    assert _build(archive).warnings == []


def test_a_private_file_step_warns_about_its_readable_source(archive: Path) -> None:
    (archive / "scripts" / "proxmox.sh").chmod(0o755)
    plan = _build(
        archive, "    plan:\n      - {kind: file, source: scripts/proxmox.sh, dest: /sandbox/p, mode: '0700'}\n"
    )
    assert len(plan.warnings) == 1
    assert "(mode 0755); the sandbox gets it as 0700" in plan.warnings[0]
    assert "chmod -R" not in plan.warnings[0]  # one file: no tree to fix
