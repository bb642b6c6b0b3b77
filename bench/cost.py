"""What one restore costs in CPU, wherever it runs.

A restore is work in several places: the clawguard process, the Docker engine
(``dockerd`` and its ``containerd``: every ``docker exec``), and the cluster
container's cgroup, which holds the cluster's containerd and shims, every ``ctr``
a command starts, and the pods themselves (the inspect and apply scripts, ``tar``,
``sha256sum``). On a machine with few cores, N sandboxes restored at once cannot
finish before N x this cost / cores, whatever the concurrency.

The restore runs in-process (``clawguard.converge`` without the gateway: lock,
locate, read the pod's facts, inspect, apply, verify), right after a pod restart,
with no daemon.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clawguard import parse_config
from clawguard.converge import converge
from testbed import Testbed

from .archive import ReferenceArchive
from .cluster import cgroup_cpu_seconds
from .daemon import CLK_TCK
from .stats import summary


def _host_pids(name: str) -> list[int]:
    """PIDs of the host's own ``name`` processes (not the cluster container's containerd)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() != name:
                        continue
                with open(f"/proc/{entry}/cgroup") as f:
                    if "/docker/" in f.read():
                        continue
            except OSError:
                continue
            found.append(int(entry))
    return found


def _process_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime


def snapshot(bed: Testbed, engine: list[int]) -> dict[str, float]:
    return {
        "clawguard": _self_cpu(),
        "cluster_container": cgroup_cpu_seconds(bed) or 0.0,
        "docker_engine": sum(_process_cpu(pid) for pid in engine),
    }


def measure(
    bed: Testbed,
    archive: ReferenceArchive,
    *,
    sandbox: str,
    iterations: int,
    workdir: Path,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    text = f"""version: 1
sandboxes:
  {sandbox}:
    target: {{kind: k3s, cluster: {bed.cluster_name}}}
    archive: {archive.root}
    user: sandbox
"""
    config = parse_config(text, workdir / "cost.yaml").sandboxes[sandbox]
    engine = _host_pids("dockerd") + _host_pids("containerd")
    wall: list[float] = []
    parts: dict[str, list[float]] = {"clawguard": [], "cluster_container": [], "docker_engine": []}
    for i in range(iterations):
        bed.restart(sandbox)
        time.sleep(1.0)  # the new pod's own start-up (host key) is not the restore's
        before, started = snapshot(bed, engine), time.perf_counter()
        report = converge(config, with_gateway=False, state_root=workdir / f"cost-state-{i}").report
        elapsed, after = time.perf_counter() - started, snapshot(bed, engine)
        if not report.ok:
            raise RuntimeError(f"restore failed: {report.failed_step}")
        wall.append(elapsed)
        for key in parts:
            parts[key].append(after[key] - before[key])
        total = sum(after[k] - before[k] for k in parts)
        progress(f"restore cost {i + 1}/{iterations}: {elapsed:.2f}s wall, {total:.2f} CPU-s")
    totals = [sum(parts[k][i] for k in parts) for i in range(len(wall))]
    cores = os.cpu_count() or 1
    return {
        "method": "clawguard's converge in-process after a pod restart, no daemon, no gateway",
        "wall_s": summary(wall),
        "cpu_s": summary(totals),
        "cpu_s_by_place": {k: summary(v) for k, v in parts.items()},
        "cores": cores,
        "cpu_bound_floor_for_20_s": 20 * statistics.median(totals) / cores if totals else None,
    }
