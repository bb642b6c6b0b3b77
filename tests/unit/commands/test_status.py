from __future__ import annotations

import json
from pathlib import Path

import pytest

from clawguard.cli import main
from clawguard.state import StateStore

from ..conftest import basic_config


def test_table_and_json(archive: Path, write_config, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    config = str(write_config(basic_config(archive)))
    StateStore().update(
        "my-assistant",
        container_id="c" * 64,
        last_restore={"at": 0, "outcome": "failed", "failed_step": "SOUL.md", "changed": 3, "reason": "pod replaced"},
        gateway={"healthy": False, "status": "no answer", "checked_at": 0},
        last_hook={"event": "on_failed", "exit_code": 0, "at": 0},
        persist={"live_pod": "c" * 64, "last_capture_at": 0, "last_capture_generation": 7},
    )
    assert main(["-c", config, "status"]) == 0
    table = capsys.readouterr().out
    assert "daemon: not running" in table
    row = next(line for line in table.splitlines() if line.startswith("my-assistant"))
    for cell in ("cccccccccccc", "failed at SOUL.md (pod replaced)", "down (no answer)", "on_failed exit 0", "#7 "):
        assert cell in row
    assert main(["-c", config, "status", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["sandboxes"][0]["container_id"] == "c" * 64
    assert data["sandboxes"][0]["gateway"]["healthy"] is False
    assert data["daemon"]["running"] is False
