"""The cost of finding the live pod, with other containers in the cluster.

For each count of other containers (kubelet-labelled system pods, not
sandboxes): clawguard's ``K3sTarget.locate()`` (by kubelet labels, the default;
and by the marker file in ``/proc/mounts``), and the seed's ``find /run/k3s``,
first with only the image's files in the other containers, then again with
many files in each one's rootfs. The counts go up bare, then down populated.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clawguard import parse_config
from clawguard.targets import Target, make_target
from testbed import Testbed

from .baseline import time_seed_find
from .cluster import Fillers
from .stats import summary


def _target(bed: Testbed, sandbox: str, locate: str) -> Target:
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "archive"
        archive.mkdir()
        text = f"""version: 1
sandboxes:
  {sandbox}:
    target: {{kind: k3s, cluster: {bed.cluster_name}, locate: {locate}}}
    archive: {archive}
"""
        config = parse_config(text, Path(tmp) / "config.yaml")
        return make_target(sandbox, config.sandboxes[sandbox].target)


def _timed(fn: Callable[[], object], reps: int) -> list[float]:
    fn()  # warm: a first call opens the Docker connection
    samples = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def measure(
    bed: Testbed,
    *,
    sandbox: str,
    levels: tuple[int, ...],
    files: int,
    reps: int,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    labels, marker = _target(bed, sandbox, "labels"), _target(bed, sandbox, "marker")
    expected = bed.container_id(sandbox)
    fillers = Fillers(bed)
    rows: list[dict[str, Any]] = []

    def row(others: int, populated: bool) -> None:
        assert labels.locate().id == expected and marker.locate().id == expected
        entry: dict[str, Any] = {
            "others": others,
            "files_per_other": files if populated else 0,
            "entries_under_run_k3s": fillers.files_under_run_k3s(),
            "clawguard_locate_s": summary(_timed(labels.locate, reps)),
            "clawguard_locate_marker_s": summary(_timed(marker.locate, reps)),
            "seed_find_s": summary(_timed(lambda: time_seed_find(bed.cluster_name), reps)),
        }
        rows.append(entry)
        progress(
            f"locate, {others} other containers, {entry['files_per_other']} extra files each "
            f"({entry['entries_under_run_k3s']} entries under /run/k3s): "
            f"clawguard {entry['clawguard_locate_s']['median'] * 1000:.1f} ms, "
            f"seed find {entry['seed_find_s']['median'] * 1000:.1f} ms"
        )

    try:
        for count in levels:
            fillers.grow_to(count)
            row(count, False)
        fillers.populate(files)
        for count in reversed(levels):
            fillers.shrink_to(count)
            row(count, True)
    finally:
        fillers.shrink_to(0)
    rows.sort(key=lambda r: (r["files_per_other"] > 0, r["others"]))
    return {"files_per_other_container": files, "reps": reps, "levels": rows}
