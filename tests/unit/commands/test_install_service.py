from __future__ import annotations

from pathlib import Path

import pytest

from clawguard.cli import main

from ..conftest import REPO


def test_writes_the_unit_with_the_real_executable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(tmp_path / "c.yaml"), "install-service"]) == 0
    unit = tmp_path / "config-home" / "systemd" / "user" / "clawguard.service"
    text = unit.read_text()
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    binary = exec_start.split("=", 1)[1].split()[0]
    assert Path(binary).is_absolute() and Path(binary).name in ("clawguard", "pytest", "__main__.py")
    assert exec_start.endswith(f"run --config {tmp_path}/c.yaml")
    for directive in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "StartLimitIntervalSec=0"):
        assert directive in text
    out = capsys.readouterr().out
    assert "systemctl --user enable --now clawguard" in out and "loginctl enable-linger" in out


def test_refuses_to_overwrite_a_different_unit(tmp_path: Path) -> None:
    unit = tmp_path / "config-home" / "systemd" / "user" / "clawguard.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\nExecStart=/bin/true\n")
    assert main(["install-service"]) == 2
    assert unit.read_text() == "[Service]\nExecStart=/bin/true\n"
    assert main(["install-service", "--force"]) == 0


def test_packaged_unit_is_the_repository_unit() -> None:
    packaged = REPO / "clawguard" / "data" / "clawguard.service"
    # One unit file: the wheel's is a link to systemd/'s (git stores the link, not a copy).
    assert packaged.is_symlink()
    assert packaged.resolve() == (REPO / "systemd" / "clawguard.service").resolve()
