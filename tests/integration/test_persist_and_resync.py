"""The agent's state survives a pod restart, and archive
edits reach the live sandbox, read back from inside the pod."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import FIGURES_DIR, REPO, SANDBOX, clawguard, clawguard_env, sandbox_exec, wait_for, write_config
from .test_daemon import DaemonProcess, _status

pytestmark = pytest.mark.integration
DATA = "/sandbox/.openclaw-data"
OFFSET = f"{DATA}/telegram/update-offset-default.json"
MEMORY = f"{DATA}/workspace/MEMORY.md"
SOUL = f"{DATA}/workspace/SOUL.md"


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    copy = tmp_path / "archive"
    shutil.copytree(REPO / "restore-archive", copy, symlinks=True)
    return copy


@pytest.fixture
def daemon(testbed: object, tmp_path: Path, archive: Path) -> Iterator[DaemonProcess]:
    bin_dir = tmp_path / "bin"
    testbed.install_openshell(bin_dir)  # type: ignore[attr-defined]
    config = write_config(tmp_path, archive=archive)
    config.write_text(
        config.read_text().replace(
            "version: 1\n",
            "version: 1\ndaemon: {poll_interval: 5, health_interval: 5, verify_interval: 300, persist_interval: 2}\n",
        )
    )
    env = clawguard_env(PATH=f"{bin_dir}:{clawguard_env()['PATH']}")
    process = DaemonProcess(config, env, tmp_path / "daemon.log")
    yield process
    assert process.stop() == 0, "\n".join(process.lines()[-30:])
    assert "Traceback" not in process.log.read_text()


def _healthy(tmp_path: Path) -> bool:
    return bool((_status(tmp_path).get("gateway") or {}).get("healthy"))


def _offset(testbed: object) -> int:
    return int(json.loads(sandbox_exec(testbed, SANDBOX, ["cat", OFFSET]))["offset"])


def test_offset_and_memory_survive_a_pod_restart(testbed: object, daemon: DaemonProcess, tmp_path: Path) -> None:
    wait_for("first convergence", lambda: _healthy(tmp_path), timeout=120)
    old_id = testbed.container_id(SANDBOX)  # type: ignore[attr-defined]
    # The stand-in gateway writes the offset every second and a line to MEMORY.md at start.
    wait_for("a capture of the running agent", lambda: (_status(tmp_path).get("persist") or {}).get("last_capture_at"))
    start_line = next(
        line for line in sandbox_exec(testbed, SANDBOX, ["cat", MEMORY]).splitlines() if "gateway started" in line
    )
    # Let the agent and the captures run for a while: two more captures of a moving offset.
    first = (_status(tmp_path).get("persist") or {}).get("last_capture_generation") or 0
    wait_for(
        "two more captures",
        lambda: ((_status(tmp_path).get("persist") or {}).get("last_capture_generation") or 0) >= first + 2,
        timeout=60,
    )

    last_offset = _offset(testbed)  # the last value the old pod wrote, read just before the restart
    testbed.restart(SANDBOX)  # type: ignore[attr-defined]
    new_id = testbed.container_id(SANDBOX)  # type: ignore[attr-defined]
    assert new_id != old_id
    wait_for(
        "restore of the new pod",
        lambda: _status(tmp_path).get("container_id") == new_id and _healthy(tmp_path),
        timeout=120,
    )

    # From inside the new pod: both are back, owned by the sandbox user.
    owners = sandbox_exec(testbed, SANDBOX, ["stat", "-c", "%U %a %n", OFFSET, MEMORY]).splitlines()
    assert [line.split()[0] for line in owners] == ["sandbox", "sandbox"], owners
    assert start_line in sandbox_exec(testbed, SANDBOX, ["cat", MEMORY])  # the old pod's memory
    gateway_log = sandbox_exec(testbed, SANDBOX, ["cat", "/tmp/gateway.log"])
    resumed = re.search(r"resuming from stored update offset (\d+)", gateway_log)
    assert resumed, gateway_log
    restored_offset = int(resumed.group(1))
    # The data-loss window: offsets the old pod wrote after the last capture (one per second).
    lost = last_offset - restored_offset
    assert 0 <= lost <= 2 + 2, f"lost {lost} offsets with persist_interval 2 s"
    status = _status(tmp_path)
    steps = [s["name"] for s in status["last_restore"]["steps"]]  # type: ignore[index]
    assert steps[-1] == "persisted state"
    figures = {"persist_interval_s": 2, "offsets_lost": lost, "rpo_s_approx": lost}
    print("data-loss window after a pod restart:", json.dumps(figures))
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    (FIGURES_DIR / "persist-rpo.json").write_text(json.dumps(figures))
    done = clawguard(
        "--config",
        str(tmp_path / "config.yaml"),
        "capture",
        SANDBOX,
    )
    assert done.returncode == 0 and "generation" in done.stdout, done.stdout + done.stderr


def test_archive_edits_reach_the_live_pod_and_restart_the_gateway_once(
    testbed: object, daemon: DaemonProcess, tmp_path: Path, archive: Path
) -> None:
    wait_for("first convergence", lambda: _healthy(tmp_path), timeout=120)
    starts = sandbox_exec(testbed, SANDBOX, ["cat", MEMORY]).count("gateway started")
    text = f"# SOUL\nYou are terse. Edited on the host at {time.time():.0f}.\n"
    edited_at = time.monotonic()
    (archive / "SOUL.md").write_text(text)
    took = wait_for("the new SOUL.md inside the pod", lambda: sandbox_exec(testbed, SANDBOX, ["cat", SOUL]) == text)
    wait_for(
        "the gateway restarted on the new SOUL.md",
        lambda: (
            sandbox_exec(testbed, SANDBOX, ["cat", MEMORY]).count("gateway started") > starts and _healthy(tmp_path)
        ),
        timeout=60,
    )
    healthy_after = time.monotonic() - edited_at
    # The re-sync is over (its restore and the gateway's health are recorded): one restart, not two.
    wait_for(
        "the re-sync recorded",
        lambda: (
            (_status(tmp_path).get("last_restore") or {}).get("reason") == "archive changed"
            and any("event=gateway.health" in line and 'reason="archive changed"' in line for line in daemon.lines())
        ),
    )
    assert sandbox_exec(testbed, SANDBOX, ["cat", MEMORY]).count("gateway started") == starts + 1  # exactly once
    gateway = testbed.gateway_status(SANDBOX)  # type: ignore[attr-defined]
    import hashlib

    assert gateway is not None and gateway["soul_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    print(f"SOUL.md edit: in the pod after {took:.2f}s, gateway healthy on it after {healthy_after:.2f}s")

    before = sandbox_exec(testbed, SANDBOX, ["cat", "/sandbox/.openclaw/openclaw.json"])
    (archive / "openclaw.json").write_text('{"gateway": {"port": 18789,,}}\n')
    wait_for("the invalid edit to be reported", lambda: any("event=archive.invalid" in line for line in daemon.lines()))
    report = next(line for line in daemon.lines() if "event=archive.invalid" in line)
    assert "openclaw.json" in report and "level=error" in report
    # archive.invalid is the re-sync's decision not to apply: nothing is written after it.
    assert sandbox_exec(testbed, SANDBOX, ["cat", "/sandbox/.openclaw/openclaw.json"]) == before
    assert _healthy(tmp_path)
