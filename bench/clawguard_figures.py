"""clawguard's own figures, from the real daemon on the testbed.

* Pod restarts: detection (``sandbox.detected`` minus the new pod's
  creation), restore (``restore.done`` minus ``sandbox.detected``) and
  time to a healthy gateway (``gateway.health outcome=healthy`` minus the pod's
  start).
* Idle: CPU (utime + stime of the daemon and its waited-for children, from
  ``/proc``) and RSS over a window with default settings.
* Scale: N sandboxes restored after a cluster container restart.
"""

from __future__ import annotations

import contextlib
import random
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed import Testbed, TestbedError

from .archive import ReferenceArchive
from .cluster import PodClock, cgroup_cpu_seconds
from .daemon import Daemon, Event, write_config
from .stats import summary

Progress = Callable[[str], None]
MB = 1024 * 1024


@dataclass
class RestartFigures:
    detection_s: list[float] = field(default_factory=list)
    restore_s: list[float] = field(default_factory=list)
    restore_engine_s: list[float] = field(default_factory=list)
    # The engine's phases as restore.done reports them: one read exec, one write-and-read-back exec.
    restore_read_s: list[float] = field(default_factory=list)
    restore_write_s: list[float] = field(default_factory=list)
    before_first_step_s: list[float] = field(default_factory=list)
    detected_to_facts_s: list[float] = field(default_factory=list)
    facts_to_restore_start_s: list[float] = field(default_factory=list)
    restore_start_to_done_s: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    slowest_step: list[str] = field(default_factory=list)
    hiccups: Counter[str] = field(default_factory=Counter)
    task_created_s: list[float] = field(default_factory=list)
    gateway_start_s: list[float] = field(default_factory=list)
    restored_to_gateway_start_s: list[float] = field(default_factory=list)
    gateway_start_command_s: list[float] = field(default_factory=list)
    gateway_start_to_healthy_s: list[float] = field(default_factory=list)
    gateway_start_reasons: Counter[str] = field(default_factory=Counter)
    gateway_healthy_s: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "detection_s": summary(self.detection_s),
            "restore_s": summary(self.restore_s),
            "restore_engine_s": summary(self.restore_engine_s),
            "restore_read_s": summary(self.restore_read_s),
            "restore_write_s": summary(self.restore_write_s),
            "restore_before_first_step_s": summary(self.before_first_step_s),
            "detected_to_facts_s": summary(self.detected_to_facts_s),
            "facts_to_restore_start_s": summary(self.facts_to_restore_start_s),
            "restore_start_to_done_s": summary(self.restore_start_to_done_s),
            "restore_steps": max(self.steps, default=0),
            "slowest_steps": self.slowest_step,
            "warnings_during_restarts": dict(sorted(self.hiccups.items())),
            "testbed_task_created_after_container_s": summary(self.task_created_s),
            "gateway_start_s": summary(self.gateway_start_s),
            "restored_to_gateway_start_s": summary(self.restored_to_gateway_start_s),
            "gateway_start_command_s": summary(self.gateway_start_command_s),
            "gateway_start_to_healthy_s": summary(self.gateway_start_to_healthy_s),
            "gateway_start_reasons": dict(sorted(self.gateway_start_reasons.items())),
            "gateway_healthy_s": summary(self.gateway_healthy_s),
            "failures": self.failures,
        }


def wait_converged(daemon: Daemon, bed: Testbed, names: list[str], timeout: float) -> None:
    """Every sandbox restored and its gateway healthy, on its current pod."""
    for name in names:
        cid = bed.container_id(name)
        if cid is None:
            raise TestbedError(f"no sandbox {name}")
        daemon.wait("gateway.health", sandbox=name, container_id=cid[:12], outcome="healthy", timeout=timeout)


def noticed(daemon: Daemon, sandbox: str, short: str, before: float) -> Event | None:
    """The detection that led to the restore: the last ``sandbox.detected`` (or ``.verify``)
    of this container before ``before``. An earlier one can exist when a restore was
    interrupted right after a detection (``restore.interrupted``, counted separately)."""
    found = [
        e
        for e in daemon.refresh()
        if e.name in ("sandbox.detected", "sandbox.verify")
        and e.fields.get("sandbox") == sandbox
        and e.fields.get("container_id") == short
        and e.ts <= before
    ]
    return found[-1] if found else None


def pod_restarts(
    bed: Testbed, clock: PodClock, daemon: Daemon, *, sandbox: str, iterations: int, progress: Progress
) -> RestartFigures:
    figures = RestartFigures()
    rng = random.Random()
    for i in range(iterations):
        time.sleep(rng.uniform(1.0, 3.0))
        before = time.time()
        new_id = bed.restart(sandbox)
        started = clock.wait(new_id)
        task = clock.task_created(new_id)
        if task is not None:
            figures.task_created_s.append(task - started)
        short = new_id[:12]
        healthy = daemon.wait("gateway.health", sandbox=sandbox, container_id=short, outcome="healthy", timeout=180)
        begun = daemon.find("restore.start", sandbox=sandbox, container_id=short)
        done = daemon.find("restore.done", sandbox=sandbox, container_id=short)
        seen = None if begun is None else noticed(daemon, sandbox, short, begun.ts)
        if seen is None or done is None or begun is None:
            figures.failures.append(f"iteration {i + 1}: no detection or restore event for {short}")
            continue
        if done.fields.get("outcome") != "ok":
            figures.failures.append(f"iteration {i + 1}: restore.done outcome={done.fields.get('outcome')}")
        figures.detection_s.append(seen.ts - started)
        figures.restore_s.append(done.ts - seen.ts)
        figures.restore_engine_s.append(float(done.fields.get("duration", "nan")))
        if "read" in done.fields and "write" in done.fields:
            figures.restore_read_s.append(float(done.fields["read"]))
            figures.restore_write_s.append(float(done.fields["write"]))
        figures.before_first_step_s.append(begun.ts - seen.ts)
        figures.restore_start_to_done_s.append(done.ts - begun.ts)
        facts = daemon.find("sandbox.facts", sandbox=sandbox, container_id=short)
        if facts is not None:  # the pod's facts (users, layout, the agent's version), read once per pod
            figures.detected_to_facts_s.append(facts.ts - seen.ts)
            figures.facts_to_restore_start_s.append(begun.ts - facts.ts)
        # The gateway: `gateway.start` is logged as the start command is issued, `gateway.waiting` once it returned.
        start = daemon.find("gateway.start", sandbox=sandbox, container_id=short)
        waiting = daemon.find("gateway.waiting", sandbox=sandbox, container_id=short)
        if start is None or waiting is None:
            figures.failures.append(f"iteration {i + 1}: no gateway.start or gateway.waiting event for {short}")
        else:
            figures.gateway_start_s.append(start.ts - started)
            figures.restored_to_gateway_start_s.append(start.ts - done.ts)
            figures.gateway_start_command_s.append(waiting.ts - start.ts)
            figures.gateway_start_to_healthy_s.append(healthy.ts - start.ts)
            figures.gateway_start_reasons[start.fields.get("reason", "")] += 1
        steps = [
            e
            for e in daemon.events
            if e.name == "restore.step" and e.fields.get("container_id") == short and e.fields.get("sandbox") == sandbox
        ]
        figures.steps.append(len(steps))
        figures.hiccups.update(
            e.name
            for e in daemon.events
            if before <= e.ts <= healthy.ts and e.fields.get("level") in ("warning", "error")
        )
        # A step of the shared batch has no time of its own (batched=True): only the others count.
        own = [e for e in steps if str(e.fields.get("batched")).lower() != "true"]
        if own:
            slow = max(own, key=lambda e: float(e.fields.get("duration", 0)))
            figures.slowest_step.append(f"{slow.fields.get('step')} {float(slow.fields.get('duration', 0)):.3f}s")
        figures.gateway_healthy_s.append(healthy.ts - started)
        progress(
            f"clawguard {i + 1}/{iterations}: detection {seen.ts - started:.3f}s, "
            f"restore {done.ts - seen.ts:.3f}s, gateway start issued "
            f"{'n/a' if start is None else f'{start.ts - started:.3f}s'}, gateway healthy {healthy.ts - started:.3f}s"
        )
    return figures


def idle(bed: Testbed, daemon: Daemon, *, seconds: float, progress: Progress) -> dict[str, Any]:
    """CPU and RSS of the daemon over ``seconds`` with nothing to do but its routine."""
    time.sleep(5.0)  # let the last restore's follow-ups (hooks, state writes) finish
    progress(f"idle window: {seconds:.0f}s")
    after = time.time()
    cpu0, cgroup0, t0 = daemon.cpu_seconds(), cgroup_cpu_seconds(bed), time.monotonic()
    rss: list[int] = []
    threads: list[int] = []
    while time.monotonic() - t0 < seconds:
        rss.append(daemon.rss_bytes()[0])
        threads.append(daemon.threads())
        time.sleep(min(1.0, max(0.0, seconds - (time.monotonic() - t0))))
    cpu1, cgroup1, t1 = daemon.cpu_seconds(), cgroup_cpu_seconds(bed), time.monotonic()
    window = t1 - t0
    events = Counter(e.name for e in daemon.refresh() if e.ts >= after)
    cluster = None if cgroup0 is None or cgroup1 is None else (cgroup1 - cgroup0) / window * 100
    return {
        "window_s": round(window, 1),
        "settings": "defaults: poll 30 s, health 60 s, persist 60 s, verify 300 s",
        "cpu_percent_of_one_core": (cpu1 - cpu0) / window * 100,
        "cpu_seconds": round(cpu1 - cpu0, 3),
        "rss_mb": {"median": statistics.median(rss) / MB, "max": max(rss) / MB},
        "peak_rss_mb_whole_run": daemon.rss_bytes()[1] / MB,
        "threads": max(threads),
        "cluster_container_cpu_percent": cluster,
        "events_in_window": dict(sorted(events.items())),
    }


def scale(
    bed: Testbed,
    clock: PodClock,
    archive: ReferenceArchive,
    *,
    sandbox: str,
    uid: int,
    counts: tuple[int, ...],
    iterations: int,
    workdir: Path,
    bin_dir: Path,
    progress: Progress,
    compare_parallel: int | None = None,
) -> list[dict[str, Any]]:
    """For each count: that many sandboxes, the cluster container stopped and started,
    time until every sandbox is restored (and its gateway healthy). With default
    settings (``daemon.max_parallel: auto``); with ``compare_parallel``, the largest count
    once more with that many restores at once."""
    results = []
    extra: list[str] = []
    runs = [(count, "auto") for count in counts]
    if compare_parallel is not None:
        runs.append((counts[-1], str(compare_parallel)))
    try:
        for count, parallel in runs:
            names = [sandbox] + [f"bench-scale-{i:02d}" for i in range(1, count)]
            for name in names[1:]:
                if bed.container_id(name) is None:
                    bed.add_sandbox(name, uid=uid)
                    extra.append(name)
            settings = "" if parallel == "auto" else f"{{max_parallel: {parallel}}}"
            config = write_config(
                workdir / f"scale-{count}-{parallel}.yaml", archive, names, bed.cluster_name, bed.gateway, settings
            )
            daemon = Daemon(config, workdir, bin_dir, name=f"daemon-scale-{count}-{parallel}")
            rows: list[dict[str, float]] = []
            try:
                wait_converged(daemon, bed, names, timeout=120 + 30 * count)
                started = daemon.find("daemon.start")
                at_once = int(started.fields.get("restores_at_once", 0)) if started else 0
                for i in range(iterations):
                    rows.append(_cluster_restart(bed, clock, daemon, names))
                    progress(
                        f"scale {count} sandboxes (max_parallel {parallel}: {at_once}) {i + 1}/{iterations}: "
                        "all restored "
                        f"{rows[-1]['all_restored_s']:.2f}s after the first pod started "
                        f"(pods started over {rows[-1]['pod_start_spread_s']:.2f}s), "
                        f"all gateways healthy {rows[-1]['all_healthy_s']:.2f}s"
                    )
                hwm = daemon.rss_bytes()[1] / MB
            finally:
                daemon.stop()
            results.append(
                {
                    "sandboxes": count,
                    "max_parallel": parallel,
                    "restores_at_once": at_once,
                    **{
                        key: summary([row[key] for row in rows], _unit(key))
                        for key in (rows[0] if rows else {})
                        if all(key in row for row in rows)
                    },
                    "daemon_rss_hwm_mb": hwm,
                }
            )
    finally:
        for name in extra:
            bed.remove_sandbox(name)
    return results


def _unit(key: str) -> str:
    return "count" if key.startswith("failed") else "MB" if key.endswith("_mb") else "s"


class _RssSampler:
    """The daemon's largest VmRSS, sampled every 0.2 s on a thread while the ``with`` block runs."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, self.daemon.rss_bytes()[0])
            if self._stop.wait(0.2):
                return

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _cluster_restart(bed: Testbed, clock: PodClock, daemon: Daemon, names: list[str]) -> dict[str, float]:
    time.sleep(2.0)  # the last convergence records its result (a final locate) before the cluster goes
    with _RssSampler(daemon) as rss:
        cpu0, cluster0 = daemon.cpu_seconds(), cgroup_cpu_seconds(bed)
        figures = _restart_and_wait(bed, clock, daemon, names)
        cpu1 = daemon.cpu_seconds()
    # The cluster container's cgroup is a new one after its restart: its usage counts from the start.
    cluster1 = cgroup_cpu_seconds(bed)
    figures.update(daemon_cpu_s=cpu1 - cpu0, daemon_rss_peak_mb=rss.peak / MB)
    if cluster0 is not None and cluster1 is not None:
        figures["cluster_container_cpu_s"] = cluster1
    return figures


@dataclass
class Recovery:
    """One cluster container restart, every sandbox's new pod followed until its gateway is live
    (wall-clock times, by sandbox)."""

    stopped: float  # the stop was asked
    began: float  # the start was asked
    recovered: float  # the testbed re-created every pod
    pods: dict[str, str]  # the new container IDs
    pod_start: dict[str, float]
    restored: dict[str, float]
    healthy: dict[str, float]

    @property
    def first(self) -> float:
        return min(self.pod_start.values())

    @property
    def last(self) -> float:
        return max(self.pod_start.values())


def restart_cluster(bed: Testbed, clock: PodClock, daemon: Daemon, names: list[str]) -> Recovery:
    """Stop and start the cluster container (every pod re-created at once), then wait until the
    daemon restored each one and saw its gateway healthy."""
    stopped = time.time()
    bed.stop_cluster()
    began = time.time()
    bed.start_cluster()  # starts the container, then recover(): every pod re-created (at once), new container IDs
    recovered = time.time()
    pods = bed.sandboxes()
    replaced = {name: pods.get(name, "") for name in names}
    created = clock.created(replaced.values())
    pod_start = {name: created[replaced[name]] for name in names}
    restored, healthy = {}, {}
    for name in names:
        short = replaced[name][:12]
        restored[name] = daemon.wait("restore.done", sandbox=name, container_id=short, timeout=900).ts
        healthy[name] = daemon.wait(
            "gateway.health", sandbox=name, container_id=short, outcome="healthy", timeout=900
        ).ts
    return Recovery(stopped, began, recovered, replaced, pod_start, restored, healthy)


def _restart_and_wait(bed: Testbed, clock: PodClock, daemon: Daemon, names: list[str]) -> dict[str, float]:
    run = restart_cluster(bed, clock, daemon, names)
    restored, healthy, pod_start = run.restored, run.healthy, run.pod_start
    first, last, began, recovered = run.first, run.last, run.began, run.recovered
    unreachable = sum(
        1 for e in daemon.events if e.name == "sandbox.unreachable" and run.stopped <= e.ts <= max(restored.values())
    )
    return {
        "all_restored_s": max(restored.values()) - first,
        "all_healthy_s": max(healthy.values()) - first,
        "pod_start_spread_s": last - first,
        "restored_after_last_pod_s": max(restored.values()) - last,
        "per_sandbox_restored_s": statistics.median(restored[n] - pod_start[n] for n in names),
        "from_cluster_start_s": max(restored.values()) - began,
        "testbed_start_cluster_s": recovered - began,
        "failed_locates_per_sandbox": unreachable / len(names),
    }
