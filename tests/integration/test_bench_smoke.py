"""CI's smoke run of the benchmark, so that ``python -m bench`` cannot rot.

One iteration of everything on the bench's own testbed, the real OpenClaw gateway
included (its install is shared with the real-agent tests' cache), and the OpenShell
0.1.x target on the stand-in gateway beside the docker target. It asserts that
the run completes and writes well-formed results with every figure, ratio and goal,
and never a timing: speed goals live in the bench's ratios, measured side by side in
one run, because machines are shared and noisy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import REPO, require_docker

pytestmark = pytest.mark.integration

SUMMARIES = [
    ("limit", "docker_exec_api_s"),
    ("limit", "docker_exec_cli_s"),
    ("limit", "ctr_task_exec_s"),
    ("limit", "tar_stream_rootfs_s"),
    ("limit", "tar_stream_in_pod_s"),
    ("baseline", "find_poll_s"),
    ("baseline", "detection_s"),
    ("baseline", "restore_s"),
    ("baseline", "gateway_healthy_s"),
    ("clawguard", "restarts", "detection_s"),
    ("clawguard", "restarts", "restore_s"),
    ("clawguard", "restarts", "gateway_healthy_s"),
    ("clawguard", "restarts", "gateway_start_s"),
    ("clawguard", "restarts", "gateway_start_command_s"),
    ("clawguard", "restarts", "gateway_start_to_healthy_s"),
    ("clawguard", "restarts", "restore_read_s"),
    ("clawguard", "restarts", "restore_write_s"),
    ("cost", "wall_s"),
    ("cost", "cpu_s"),
    ("cost", "cpu_s_by_place", "clawguard"),
    ("cost", "cpu_s_by_place", "cluster_container"),
    ("cost", "cpu_s_by_place", "docker_engine"),
    ("cost", "exec_wall_s"),
    ("agent", "cold_start", "live_s"),
    ("agent", "cli_approvals_get_alone_s"),
    ("agent", "daemon", "live_s"),
    ("agent", "daemon", "gateway_start_s"),
    ("agent", "daemon", "start_to_live_s"),
    ("agent", "daemon", "approvals_step_s"),
    *(
        ("openshell", "targets", target, figure)
        for target in ("openshell", "openshell_recreated", "docker")
        for figure in ("detection_s", "restore_s", "cpu_s", "gateway_start_s", "start_to_live_s", "live_s")
    ),
    ("openshell", "targets", "openshell", "detection_after_ready_s"),
    ("openshell", "targets", "openshell", "provisioning_s"),
    ("openshell", "targets", "openshell", "cpu_s_by_place", "gateway_server"),
    ("openshell", "targets", "openshell", "cpu_s_by_place", "clawguard"),
    ("openshell", "targets", "docker", "cpu_s_by_place", "clawguard"),
    ("openshell", "limit", "openshell", "exec_round_trip_s"),
    ("openshell", "limit", "openshell", "tar_stream_s"),
    ("openshell", "limit", "openshell", "get_sandbox_s"),
    ("openshell", "limit", "docker", "exec_round_trip_s"),
    ("openshell", "limit", "docker", "tar_stream_s"),
]
LOCATE = ("clawguard_locate_s", "clawguard_locate_marker_s", "seed_find_s")
SCALE = (
    "all_restored_s",
    "all_healthy_s",
    "pod_start_spread_s",
    "restored_after_last_pod_s",
    "per_sandbox_restored_s",
    "testbed_start_cluster_s",
    "daemon_cpu_s",
    "daemon_rss_peak_mb",
)
# The newest goals first, plainly named, then the earlier ones; the scale goal is named by its count.
GOALS = (
    "restore vs one tar stream",
    "CPU per restore",
    "3 sandboxes",
    "gateway start",
    "Detection p95",
    "Detection ≥ 10x",
    "Restore ≥ 10x",
    "Idle CPU",
    "Idle RSS",
    "Locate cost",
    "real agent back live",
    "2 real agents",
    "OpenShell 0.1.x target: Detection p95",
    "OpenShell 0.1.x target: restore vs one tar stream",
    "OpenShell 0.1.x target: CPU per restore",
    "OpenShell 0.1.x target: gateway start",
    "OpenShell 0.1.x target: Idle CPU",
    "OpenShell 0.1.x target: Idle RSS",
)


def _at(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        data = data[key]
    return data


def _is_summary(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and value.get("n", 0) >= 1
        and all(isinstance(value.get(k), float) for k in ("median", "p95", "min", "max"))
    )


def test_the_bench_smoke_run_writes_every_figure(tmp_path: Path) -> None:
    require_docker()
    done = subprocess.run(
        # A testbed of its own: never the one a full `python -m bench` run may be using.
        [sys.executable, "-m", "bench", "--smoke", "--scale", "3", "--gateway", "bench-smoke", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-5000:]}"
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["errors"] == []

    for path in SUMMARIES:
        assert _is_summary(_at(results, path)), f"{'.'.join(path)}: {_at(results, path)}"
    assert results["baseline"]["detection_model_s"]["p95"] > 0
    assert isinstance(results["limit"]["ctr_task_exec_cpu_s"], float)
    assert results["cost"]["execs_in_pod"]["median"] >= 1 and results["cost"]["exec_commands_last_restore"]
    assert results["baseline"]["restore_docker_commands"] > 2 * results["archive"]["files"]
    assert results["baseline"]["end_state"]["skill_files"] == results["baseline"]["end_state"]["skill_files_expected"]
    assert results["baseline"]["failures"] == []
    assert results["clawguard"]["restarts"]["failures"] == []
    assert results["clawguard"]["daemon_exit"] == 0
    assert sum(results["clawguard"]["restarts"]["gateway_start_reasons"].values()) >= 1
    assert results["agent"]["daemon"]["failures"] == [] and results["agent"]["daemon"]["exit"] == 0
    for target in ("openshell", "openshell_recreated", "docker"):
        assert results["openshell"]["targets"][target]["failures"] == [], target
    assert results["openshell"]["daemon_exit"] == {"openshell": 0, "docker": 0}
    for daemon in ("openshell", "docker"):
        assert isinstance(results["openshell"]["idle"][daemon]["cpu_percent_of_one_core"], float)

    idle = results["clawguard"]["idle"]
    assert isinstance(idle["cpu_percent_of_one_core"], float)
    assert idle["rss_mb"]["max"] > 0

    levels = results["locate"]["levels"]
    assert {row["files_per_other"] > 0 for row in levels} == {False, True}
    assert len({row["others"] for row in levels}) >= 2
    for row in levels:
        for key in LOCATE:
            assert _is_summary(row[key]), f"locate {row['others']}: {key}"

    scale = results["scale"]
    assert sorted(row["sandboxes"] for row in scale)[0] == 1 and len(scale) == 2
    for row in scale:
        for key in SCALE:
            assert _is_summary(row[key]), f"scale {row['sandboxes']}: {key}"
        assert row["daemon_rss_hwm_mb"] > 0
        # Default settings: as many restores at once as the daemon's CPUs, read from its own log.
        assert row["max_parallel"] == "auto" and row["restores_at_once"] == max(2, len(os.sched_getaffinity(0)))

    assert results["ratios"] and all(isinstance(v, float) for v in results["ratios"].values()), results["ratios"]
    assert [g["goal"][: len(name)] for g, name in zip(results["goals"], GOALS, strict=False)] == list(GOALS)
    assert len(results["goals"]) == len(GOALS)
    assert all(isinstance(g["met"], bool) and g["margin"] for g in results["goals"]), results["goals"]

    table = (tmp_path / "results.md").read_text()
    assert "| Figure (median / p95) |" in table and "| Goal | Measured | Verdict |" in table
    assert "Real OpenClaw" in table and "peak during the 3-sandbox run" in table
    assert "| openshell: pod replaced | openshell: re-created | docker: re-created |" in table
    output = (tmp_path / "output.txt").read_text()
    assert "GOALS" in output and "REAL AGENT" in output and "OPENSHELL 0.1.x" in output
