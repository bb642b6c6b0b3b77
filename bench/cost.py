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
import re
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from clawguard import Clawguard, parse_config
from clawguard.converge import converge
from clawguard.state import StateStore
from clawguard.targets import _docker
from testbed import Testbed

from .archive import ReferenceArchive
from .cluster import cgroup_cpu_seconds
from .daemon import CLK_TCK
from .stats import summary


def host_pids(name: str) -> list[int]:
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


def process_cpu(pid: int) -> float:
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


_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def _script_name(script: str) -> str:
    """``module.CONSTANT`` of a script clawguard runs with ``sh -c`` (found among its loaded modules)."""
    for name, module in list(sys.modules.items()):
        if name.startswith("clawguard") and module is not None:
            for attr, value in list(vars(module).items()):
                if value == script and attr.isupper():
                    return f"{name.removeprefix('clawguard.')}.{attr}"
    return repr(script[:24])


class ExecLog:
    """Every ``docker exec`` clawguard makes in this process, with its wall time, while installed.

    clawguard's targets run every command through ``clawguard.targets._docker.exec_in``;
    this wraps it (the bench's own view: clawguard is not changed). A command inside the
    pod is a ``ctr tasks exec`` in the cluster container.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []
        self._original: Callable[..., Any] | None = None

    @staticmethod
    def label(argv: Sequence[str]) -> str:
        words = list(argv)
        if "exec" in words and "tasks" in words:  # ctr ... tasks exec --exec-id ID [--user U] CID argv...
            rest = words[words.index("exec") + 3 :]
            if rest[:1] == ["--user"]:
                rest = rest[2:]
            rest = [w for w in rest[1:] if w != "env" and not _ASSIGNMENT.match(w)]
            if rest[:2] == ["sh", "-c"] and len(rest) > 2:
                return "in the pod: sh -c " + _script_name(rest[2])
            return "in the pod: " + " ".join(w[:24] for w in rest[:2])
        if words[:1] == ["ctr"]:
            verbs = [w for w in words[1:] if not w.startswith("-") and "/" not in w and w != "k8s.io"]
            return "cluster: ctr " + " ".join(verbs[:2])
        return "cluster: " + " ".join(w[:24] for w in words[:2])

    def __enter__(self) -> ExecLog:
        self._original = original = _docker.exec_in

        def timed(api: Any, container: str, argv: Sequence[str], *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(api, container, argv, *args, **kwargs)
            finally:
                self.calls.append((self.label(argv), time.perf_counter() - started))

        _docker.exec_in = timed
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._original is not None:
            _docker.exec_in = self._original


def snapshot(bed: Testbed, engine: list[int]) -> dict[str, float]:
    return {
        "clawguard": _self_cpu(),
        "cluster_container": cgroup_cpu_seconds(bed) or 0.0,
        "docker_engine": sum(process_cpu(pid) for pid in engine),
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
    config = parse_config(text, workdir / "cost.yaml")
    engine = host_pids("dockerd") + host_pids("containerd")
    wall: list[float] = []
    parts: dict[str, list[float]] = {"clawguard": [], "cluster_container": [], "docker_engine": []}
    calls: list[list[tuple[str, float]]] = []
    for i in range(iterations):
        bed.restart(sandbox)
        time.sleep(1.0)  # the new pod's own start-up (host key) is not the restore's
        before, started = snapshot(bed, engine), time.perf_counter()
        with ExecLog() as execs:
            ctx = Clawguard(config, store=StateStore(workdir / f"cost-state-{i}")).context(sandbox)
            report = converge(ctx, with_gateway=False).report
        elapsed, after = time.perf_counter() - started, snapshot(bed, engine)
        calls.append(execs.calls)
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
        "execs": summary([len(c) for c in calls], "count"),
        "execs_in_pod": summary([sum(1 for label, _ in c if label.startswith("in the pod")) for c in calls], "count"),
        "exec_wall_s": summary([sum(t for _, t in c) for c in calls]),
        "exec_commands_last_restore": [f"{label} {t:.3f}s" for label, t in (calls[-1] if calls else [])],
    }
