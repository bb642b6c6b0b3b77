from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from clawguard.state import Busy, StateStore, state_dir, write_json


def test_state_lives_under_xdg_state_home(tmp_path: Path) -> None:
    assert state_dir() == tmp_path / "state" / "clawguard"


def test_update_merges_and_is_atomic(tmp_path: Path) -> None:
    store = StateStore()
    store.update("a", container_id="x" * 64)
    store.update("a", status="ok")
    state = store.load("a")
    assert state["container_id"] == "x" * 64 and state["status"] == "ok" and state["sandbox"] == "a"
    leftovers = [p.name for p in (state_dir() / "a").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_write_json_never_leaves_half_a_file(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    write_json(path, {"v": 1})
    with pytest.raises(TypeError):
        write_json(path, {"v": object()})
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


def test_lock_is_exclusive() -> None:
    store = StateStore()
    holding = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with store.lock("a"):
            holding.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    holding.wait(5)
    started = time.monotonic()
    with pytest.raises(Busy, match="another clawguard is restoring it"), store.lock("a", timeout=0.3):
        pass
    assert time.monotonic() - started >= 0.3
    release.set()
    thread.join()
    with store.lock("a", timeout=1):
        pass
