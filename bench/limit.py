"""The limit: what no method that talks to the cluster through Docker can beat.

* one ``docker exec`` round trip into the cluster container (``true``), through
  the Engine API as clawguard does it, and through the ``docker`` CLI as the
  seed does it;
* one ``ctr task exec`` round trip into the pod (``true``): the floor of every
  command clawguard runs *inside* the sandbox;
* one tar stream of the reference archive's bytes (same paths, modes, owners)
  into the pod's rootfs: one exec with ``tar -x`` from stdin, straight into the
  rootfs path from the cluster container (the limit), and through ``ctr task
  exec`` inside the pod (the floor of clawguard's safe write path).

Each timing starts from a wiped destination (not timed), like a restore after a
pod restart.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Callable

from testbed import Testbed, TestbedError, rootfs_path

from .archive import CONFIG_DIR, DATA_DIR, ReferenceArchive
from .cluster import CTR, cgroup_cpu_seconds
from .cost import host_pids, process_cpu
from .stats import summary


def _timed(fn: Callable[[], object], reps: int) -> list[float]:
    samples = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def _check(result: tuple[int, bytes, bytes], what: str) -> None:
    if result[0] != 0:
        raise TestbedError(f"{what} failed ({result[0]}): {result[2].decode(errors='replace').strip()[-300:]}")


def measure(bed: Testbed, archive: ReferenceArchive, *, sandbox: str, uid: int, reps: int) -> dict[str, object]:
    cid = bed.container_id(sandbox)
    if cid is None:
        raise TestbedError(f"no sandbox {sandbox}")
    root = rootfs_path(cid)
    cluster = bed.cluster_name

    def ctr_exec(argv: list[str], stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
        return bed.cluster_exec(
            [*CTR, "tasks", "exec", "--exec-id", f"bench-{secrets.token_hex(4)}", cid, *argv], stdin
        )

    api = _timed(lambda: _check(bed.cluster_exec(["true"]), "docker exec true"), reps)
    cli = _timed(lambda: subprocess.run(["docker", "exec", cluster, "true"], check=True), reps)
    engine = host_pids("dockerd") + host_pids("containerd")
    cpu0 = (cgroup_cpu_seconds(bed) or 0.0) + sum(process_cpu(pid) for pid in engine)
    in_pod = _timed(lambda: _check(ctr_exec(["true"]), "ctr task exec true"), reps)
    cpu1 = (cgroup_cpu_seconds(bed) or 0.0) + sum(process_cpu(pid) for pid in engine)

    stream = archive.tar_stream(uid)
    tops = sorted(
        {f"{DATA_DIR}/skills", f"{DATA_DIR}/credentials"}
        | {f.dest for f in archive.files if "/skills/" not in f.dest and "/credentials/" not in f.dest}
        | {link.dest for link in archive.links}
    )
    # The image has the marker file (openclaw.json) in its lower layer: keep the path, replace the file.
    wipe = [path for path in tops if path != f"{CONFIG_DIR}/openclaw.json"]

    def wiped(prefix: str) -> None:
        _check(bed.cluster_exec(["rm", "-rf", *[prefix + p for p in wipe]]), "wiping the destination")

    rootfs_samples, in_pod_samples = [], []
    for _ in range(reps):
        wiped(root)
        started = time.perf_counter()
        _check(bed.cluster_exec(["tar", "-x", "-f", "-", "-C", root], stream), "tar into the rootfs")
        rootfs_samples.append(time.perf_counter() - started)
        wiped(root)
        started = time.perf_counter()
        _check(ctr_exec(["tar", "-x", "-f", "-", "-C", "/"], stream), "tar inside the pod")
        in_pod_samples.append(time.perf_counter() - started)
    return {
        "docker_exec_api_s": summary(api),
        "docker_exec_cli_s": summary(cli),
        "ctr_task_exec_s": summary(in_pod),
        # CPU of one `ctr task exec true`: the cluster container's cgroup and the host's dockerd/containerd.
        "ctr_task_exec_cpu_s": (cpu1 - cpu0) / reps,
        "tar_bytes": len(stream),
        "tar_stream_rootfs_s": summary(rootfs_samples),
        "tar_stream_in_pod_s": summary(in_pod_samples),
    }
