"""Bench-only helpers around the testbed's cluster container.

* ``PodClock``: when each pod container was created ("pod replaced").
* ``Fillers``: other containers in the cluster (kubelet-labelled like system
  pods, not sandboxes), with many files in their rootfs, for the locate cost.
* ``cgroup_cpu_seconds``: CPU used by everything in the cluster container's
  cgroup: containerd, shims, every ``ctr`` an exec starts, and the pods, whose
  cgroups the testbed nests inside it.
"""

from __future__ import annotations

import contextlib
import secrets
import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from testbed import CONTAINERD_SOCK, K8S_NAMESPACE, Testbed, TestbedError, rootfs_path

CTR = ["ctr", "--address", CONTAINERD_SOCK, "-n", K8S_NAMESPACE]


class PodClock:
    """When a pod container was created: its ``CreatedAt`` in containerd's metadata.

    "Pod replaced" in every figure means this moment: the new pod container
    exists. Its task (rootfs mounted, process started) follows within about
    0.1 s, and every method has to wait for that, so it counts in every
    detection alike. The timestamp comes from the same kernel clock as
    ``time.time()``, with nanoseconds.

    Two later marks cannot serve as the reference, because a locate sometimes
    sees the task RUNNING before them: containerd's ``/tasks/start`` event
    (stamped by a ``containerd publish`` process the shim starts afterwards, 100 ms
    or more late on a busy machine) and the mtime of the task bundle's
    ``init.pid`` (seen up to 0.17 s after clawguard had already found the task
    running). ``task_created()`` reports the latter, for the record.
    """

    def __init__(self, bed: Testbed) -> None:
        self.bed = bed

    def _query(self, ids: list[str]) -> dict[str, tuple[float, float | None]]:
        script = (
            'for id in "$@"; do printf "%s " "$id"; '
            'ctr --address "$SOCK" -n k8s.io containers info "$id" | grep -m1 \'"CreatedAt"\' | tr -d \'\n\'; '
            'printf " "; stat -c %y "$TASKS/$id/init.pid" 2>/dev/null || echo; done'
        )
        tasks = rootfs_path("x").removesuffix("/x/rootfs")
        code, out, err = self.bed.cluster_exec(
            ["env", f"SOCK={CONTAINERD_SOCK}", f"TASKS={tasks}", "sh", "-c", script, "sh", *ids]
        )
        if code != 0:
            raise TestbedError(f"cannot read the pods' creation times: {err.decode(errors='replace').strip()[-300:]}")
        found: dict[str, tuple[float, float | None]] = {}
        for line in out.decode().splitlines():
            words = line.split()
            if len(words) >= 3 and words[1] == '"CreatedAt":':
                created = _parse_rfc3339(words[2].strip('",'))
                task = _parse_stat_time(" ".join(words[3:6])) if len(words) >= 6 else None
                found[words[0]] = (created, task)
        missing = [cid[:12] for cid in ids if cid not in found]
        if missing:
            raise TestbedError(f"no creation time for {missing}")
        return found

    def created(self, container_ids: Iterable[str]) -> dict[str, float]:
        return {cid: times[0] for cid, times in self._query(list(container_ids)).items()}

    def task_created(self, container_id: str) -> float | None:
        return self._query([container_id])[container_id][1]

    def wait(self, container_id: str) -> float:
        return self.created([container_id])[container_id]


def _parse_rfc3339(stamp: str) -> float:
    """``2026-11-22T02:19:54.286649368Z`` -> epoch seconds."""
    whole, _, frac = stamp.rstrip("Z").partition(".")
    at = datetime.strptime(whole + "+0000", "%Y-%m-%dT%H:%M:%S%z")
    return at.timestamp() + (float(f"0.{frac}") if frac else 0.0)


def _parse_stat_time(stamp: str) -> float:
    """``2026-11-22 01:40:16.117932811 +0000`` -> epoch seconds."""
    day, clock, zone = stamp.split()
    whole, _, frac = clock.partition(".")
    at = datetime.strptime(f"{day} {whole} {zone}", "%Y-%m-%d %H:%M:%S %z")
    return at.timestamp() + (float(f"0.{frac}") if frac else 0.0)


# Arguments: image, then "id pod-uid" pairs. Starts one kubelet-labelled container
# per pair (a system pod, not a sandbox) running `sleep infinity`.
_RUN_FILLERS = r"""
image=$1; shift
while [ $# -gt 1 ]; do
  id=$1 uid=$2; shift 2
  ctr --address "$SOCK" -n k8s.io run -d --cgroup "kubepods/besteffort/pod$uid/$id" \
    --label io.kubernetes.pod.namespace=kube-system --label "io.kubernetes.pod.name=filler-${id%"${id#????????}"}" \
    --label io.kubernetes.container.name=filler --label io.kubernetes.pod.uid="$uid" \
    "$image" "$id" sleep infinity >/dev/null || exit 3
  rm -f "$TASKS/$id/rootfs/sandbox/.openclaw/openclaw.json"  # not a sandbox: no marker
done
"""

# Arguments: files per container, then rootfs paths. Writes the files in
# directories of 100.
_POPULATE = r"""
files=$1; shift
for root in "$@"; do
  i=0
  while [ $((i * 100)) -lt "$files" ]; do
    d="$root/var/lib/filler/d$i"
    mkdir -p "$d" && cd "$d" || exit 3
    left=$((files - i * 100)); [ "$left" -gt 100 ] && left=100
    seq 1 "$left" | sed 's/^/f/' | xargs touch || exit 3
    i=$((i + 1))
  done
done
"""

_DELETE = r"""
for id in "$@"; do
  ctr --address "$SOCK" -n k8s.io tasks delete -f "$id" >/dev/null 2>&1 || true
  ctr --address "$SOCK" -n k8s.io containers delete "$id" >/dev/null 2>&1 || true
done
"""


class Fillers:
    """Other containers in the cluster: what the locate must not get slower with."""

    def __init__(self, bed: Testbed) -> None:
        self.bed = bed
        self.ids: list[str] = []
        self.populated: set[str] = set()

    def _exec(self, script: str, args: list[str]) -> None:
        env = ["env", f"SOCK={CONTAINERD_SOCK}", f"TASKS={rootfs_path('x').removesuffix('/x/rootfs')}"]
        code, _, err = self.bed.cluster_exec([*env, "sh", "-c", script, "sh", *args])
        if code != 0:
            raise TestbedError(f"filler containers: {err.decode(errors='replace').strip()[-300:]}")

    def grow_to(self, count: int) -> None:
        """Start containers until there are ``count`` (with only their image's files)."""
        new = [secrets.token_hex(32) for _ in range(count - len(self.ids))]
        if not new:
            return
        image = self.bed.ensure_sandbox_image()
        for chunk in range(0, len(new), 10):
            part = new[chunk : chunk + 10]
            self._exec(_RUN_FILLERS, [image, *[x for cid in part for x in (cid, str(uuid.uuid4()))]])
            self.ids += part

    def populate(self, files: int) -> None:
        """Write ``files`` empty files into each filler's rootfs not yet populated."""
        todo = [cid for cid in self.ids if cid not in self.populated]
        for chunk in range(0, len(todo), 10):
            part = todo[chunk : chunk + 10]
            self._exec(_POPULATE, [str(files), *[rootfs_path(cid) for cid in part]])
            self.populated.update(part)

    def shrink_to(self, count: int) -> None:
        gone = self.ids[count:]
        if gone:
            self._exec(_DELETE, gone)
        self.ids = self.ids[:count]
        self.populated -= set(gone)

    def files_under_run_k3s(self) -> int:
        code, out, _ = self.bed.cluster_exec(["sh", "-c", "find /run/k3s | wc -l"])
        return int(out.decode().strip() or 0) if code == 0 else -1


def cgroup_cpu_seconds(bed: Testbed) -> float | None:
    """CPU seconds used so far by the cluster container's cgroup (v1 cpuacct or v2 cpu.stat)."""
    try:
        full_id = bed.client.containers.get(bed.cluster_name).id
    except Exception:
        return None
    candidates = [
        (Path(f"/sys/fs/cgroup/cpuacct/docker/{full_id}/cpuacct.usage"), 1e9),
        (Path(f"/sys/fs/cgroup/cpu,cpuacct/docker/{full_id}/cpuacct.usage"), 1e9),
        (Path(f"/sys/fs/cgroup/system.slice/docker-{full_id}.scope/cpu.stat"), 1e6),
        (Path(f"/sys/fs/cgroup/docker/{full_id}/cpu.stat"), 1e6),
    ]
    for path, scale in candidates:
        with contextlib.suppress(OSError, ValueError):
            text = path.read_text()
            if path.name == "cpu.stat":
                usage = next(line.split()[1] for line in text.splitlines() if line.startswith("usage_usec"))
                return int(usage) / scale
            return int(text.strip()) / scale
    return None
