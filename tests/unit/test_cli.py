from __future__ import annotations

from pathlib import Path

import pytest

from clawguard.cli import main

from .conftest import basic_config


def test_check_ok(archive: Path, write_config, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    assert main(["--config", str(write_config(basic_config(archive))), "check"]) == 0
    assert "my-assistant: ok: 10 steps" in capsys.readouterr().out


def test_options_after_the_command(archive: Path, write_config) -> None:  # type: ignore[no-untyped-def]
    assert main(["check", "-c", str(write_config(basic_config(archive))), "-q"]) == 0


def test_unknown_key_exits_2(archive: Path, write_config, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    path = write_config(basic_config(archive, "    tool_policy: {}\n"))
    for command in (["check"], ["plan"], ["restore"], ["restore", "--dry-run"]):
        assert main(["-c", str(path), *command]) == 2
        err = capsys.readouterr().err
        assert f"{path}:9: sandboxes.my-assistant.tool_policy: unknown key 'tool_policy'" in err


def test_archive_error_exits_2(archive: Path, write_config, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    (archive / "skills" / "evil").symlink_to("/etc")
    assert main(["-c", str(write_config(basic_config(archive))), "check"]) == 2
    assert "skills/evil" in capsys.readouterr().err


def test_unknown_sandbox_exits_2(archive: Path, write_config, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    assert main(["-c", str(write_config(basic_config(archive))), "plan", "nope"]) == 2
    assert "no sandbox named 'nope'" in capsys.readouterr().err


def test_plan_json(archive: Path, write_config, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    import json

    assert main(["-c", str(write_config(basic_config(archive))), "plan", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["my-assistant"][0]["kind"] == "exec_approvals"


def test_unreachable_docker_exits_1(archive: Path, write_config, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    body = basic_config(archive).replace(
        "      cluster:", "      docker_host: unix:///nonexistent.sock\n      cluster:"
    )
    assert main(["-c", str(write_config(body)), "restore"]) == 1
    assert "Docker is not reachable" in capsys.readouterr().err


def test_check_prints_why_readable_credentials_need_fixing(
    archive: Path, write_config, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    secret = archive / "credentials" / "proxmox.env"
    secret.chmod(0o644)
    config = str(write_config(basic_config(archive)))
    assert main(["-c", config, "check"]) == 0  # a warning, not a refusal
    captured = capsys.readouterr()
    assert f"my-assistant: warning: {secret} is readable by other users on the host (mode 0644)" in captured.out
    assert f"chmod 600 {secret}" in captured.out
    assert "event=archive.credentials_readable" in captured.err
    assert main(["-c", config, "check", "-q"]) == 0
    assert capsys.readouterr().out == ""


def test_every_command_has_help_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    from clawguard.cli import COMMANDS

    for module in COMMANDS:
        name = module.__name__.rsplit(".", 1)[-1].replace("_", "-")
        with pytest.raises(SystemExit) as done:
            main([name, "--help"])
        assert done.value.code == 0
        assert "example" in capsys.readouterr().out.lower(), name
