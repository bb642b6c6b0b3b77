from __future__ import annotations

import json
from pathlib import Path

import pytest

from clawguard.cli import main
from clawguard.persist import set_persist_state
from clawguard.state import StateStore

from ..chroot_sandbox import ChrootTarget, make_sandbox_root
from ..conftest import basic_config


def test_capture_refuses_an_unrestored_pod_then_captures(
    archive: Path, tmp_path: Path, write_config, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    target = ChrootTarget(make_sandbox_root(tmp_path / "root"))
    monkeypatch.setattr("clawguard.context.make_target", lambda _name, _values: target)
    (target.root / "sandbox/.openclaw-data/workspace/MEMORY.md").write_text("tea\n")
    config = str(write_config(basic_config(archive)))

    assert main(["-c", config, "capture"]) == 1
    assert "not captured: this pod has not been restored yet" in capsys.readouterr().out

    set_persist_state(StateStore(), "my-assistant", live_pod=target.instance.id)
    assert main(["-c", config, "capture"]) == 0
    assert "my-assistant: captured generation 1: 1 files" in capsys.readouterr().out
    assert main(["-c", config, "capture", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["outcome"] == "unchanged" and rows[0]["capture"]["generation"] == 1
