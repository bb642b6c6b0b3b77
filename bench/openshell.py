"""OpenShell 0.1.x (generation 3, the gateway's gRPC API) beside the docker target (generation 2),
in the same run, with the same agent and archive.

Two sandboxes of the real OpenClaw (:data:`testbed.LATEST_AGENT`), both with clawguard's example
archive (``restore-archive/``, as ``scripts/demo.sh`` uses it):

* **openshell**: a sandbox of the stand-in OpenShell 0.1.x gateway
  (:class:`testbed.openshell_gateway.GatewayStandin`, its own home under the work dir, gateway
  named after ``--gateway``), protected by ``target: {kind: openshell, gateway: NAME}``. clawguard
  reaches it only through the gateway's API (the real SDK, mTLS), as the sandbox user; its daemon
  runs with ``DOCKER_HOST`` pointing nowhere. The sandbox is replaced with the stand-in's
  ``replace_pod`` (a new container for the same sandbox id: new ``agent_pod``, ``/sandbox`` kept),
  and deleted and created again (a new id, everything gone: the docker target's kind of re-creation).
* **docker**: a generation 2 sandbox (:class:`testbed.DockerSandboxes`, ``python -m testbed
  add-docker``), protected by ``target: {kind: docker, labels: ...}``, its gateway over the
  ``openshell`` stand-in's SSH proxy; replaced with ``recreate`` (a new container, as NemoClaw does).

Each target has its own daemon with default settings; both run for the whole phase. Once each has
restored its sandbox and captured its persisted paths (``persist_interval``: a re-created sandbox
gets that capture back, so both targets' re-created sandboxes get the same restore), the
replacements alternate (openshell pod replaced, openshell re-created, docker re-created, ...), each
after a random 1-3 s pause, so all see the same machine. For each one, from the daemon's log:

* **detection**: "pod replaced" is the new container's creation (Docker's ``Created``, the same
  clock as the log's timestamps), for both targets alike -> the ``sandbox.detected`` that led to
  the restore. For openshell also the moment the gateway reported the new pod READY (the bench's
  own ``WatchSandbox``: before READY the gateway refuses every exec, so nothing can be done
  earlier) -> ``sandbox.detected``: the goal's figure; created -> READY is the gateway's own
  provisioning. The daemon's ``since_event`` (the event that woke it -> detected) is kept too.
* **restore**: ``sandbox.detected`` -> ``restore.done``, and the engine's own ``duration``.
* **CPU per restore**, over the same window (sampled every 0.1 s on a thread): the clawguard
  daemon's utime + stime (with its waited-for children), the sandbox container's cgroup (the
  restore's commands inside it: scripts, tar, the agent's own CLI), the host's ``dockerd`` and
  ``containerd``, and for openshell the stand-in gateway server process, which does the exec work a
  real gateway would (it serves each ExecSandbox with a ``docker exec``).
* **pod replaced -> gateway live**: -> the daemon's ``gateway.health outcome=healthy`` (its own
  probe of ``/health`` from inside), split into the gateway start issued and start -> live.

Beside them, as the limit of each transport, with the same sandboxes before the daemons start:
one exec round trip (``true``) and one tar stream of the archive's bytes (``tar -x`` from stdin,
as the sandbox user): through the gateway's ``ExecSandbox`` for openshell, ``docker exec`` for
docker; and for openshell one ``GetSandbox`` (clawguard asks it before every command, as exec
names the sandbox and not its pod). After the replacements, both daemons idle side by side for
the idle window: their CPU and RSS, and the gateway server's CPU.
"""

from __future__ import annotations

import bisect
import contextlib
import glob
import io
import os
import random
import shutil
import statistics
import tarfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from clawguard.targets._docker import exec_in
from clawguard.targets.openshell import SANDBOX_PATH, Incarnation
from testbed import DEFAULT_SANDBOX_UID, LATEST_AGENT, DockerSandboxes, TestbedError, build_agent

from .clawguard_figures import noticed
from .cost import host_pids, process_cpu
from .daemon import Daemon, Event
from .stats import summary

Progress = Callable[[str], None]
REPO = Path(__file__).resolve().parents[1]
OPENSHELL_SANDBOX = "bench-agent"
TIMEOUT = 300.0
NOWHERE = "unix:///nonexistent/docker.sock"
LIMIT_DIR = "/tmp/clawguard-bench-limit"
MB = 1024 * 1024
# What is measured: the openshell sandbox's pod replaced, the same sandbox deleted and created again
# (everything gone: the same work as the docker target's re-creation), the docker sandbox re-created.
SIDES = ("openshell", "openshell_recreated", "docker")
# Which daemon serves each side.
DAEMON = {"openshell": "openshell", "openshell_recreated": "openshell", "docker": "docker"}
CPU_PLACES = {
    "openshell": ("clawguard", "gateway_server", "docker_engine", "sandbox_container"),
    "docker": ("clawguard", "docker_engine", "sandbox_container"),
}
COUNTED = {
    "clawguard": "the daemon process: utime + stime, with the children it waited for (/proc/PID/stat)",
    "gateway_server": "openshell only: the stand-in gateway server process (it serves every ExecSandbox "
    "with a docker exec, the work a real gateway does; also its own polling of Docker every 0.2 s, which "
    "its idle CPU shows)",
    "docker_engine": "the host's dockerd and containerd (every docker exec, whoever asked for it)",
    "sandbox_container": "the sandbox container's cgroup: the restore's commands inside it (scripts, tar, "
    "sha256sum, the agent's own CLI)",
}


# ------------------------------------------------------------------ helpers


@contextlib.contextmanager
def _environ(**values: str | None) -> Iterator[None]:
    """``os.environ`` changed for the duration (a Daemon copies it when it starts)."""
    old = {key: os.environ.get(key) for key in values}
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _docker_time(stamp: str) -> float:
    """Docker's ``Created`` (RFC 3339 with nanoseconds) -> epoch seconds."""
    head, _, rest = stamp.rstrip("Z").partition(".")
    digits = "".join(ch for ch in rest if ch.isdigit())
    whole = datetime.fromisoformat(head + "+00:00").timestamp()
    return whole + (int(digits) / 10 ** len(digits) if digits else 0.0)


def _container_cpu() -> dict[str, float]:
    """CPU seconds so far of every Docker container's cgroup (v1 cpuacct or v2 cpu.stat), by full ID."""
    found: dict[str, float] = {}
    for pattern in (
        "/sys/fs/cgroup/cpuacct/docker/*/cpuacct.usage",
        "/sys/fs/cgroup/cpu,cpuacct/docker/*/cpuacct.usage",
    ):
        for path in glob.glob(pattern):
            with contextlib.suppress(OSError, ValueError):
                found[Path(path).parent.name] = int(Path(path).read_text().strip()) / 1e9
        if found:
            return found
    for pattern in ("/sys/fs/cgroup/system.slice/docker-*.scope/cpu.stat", "/sys/fs/cgroup/docker/*/cpu.stat"):
        for path in glob.glob(pattern):
            cid = Path(path).parent.name.removeprefix("docker-").removesuffix(".scope")
            with contextlib.suppress(OSError, ValueError, StopIteration):
                text = Path(path).read_text()
                found[cid] = int(next(x.split()[1] for x in text.splitlines() if x.startswith("usage_usec"))) / 1e6
    return found


def _archive_tar(root: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(root.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
    return buf.getvalue()


@dataclass
class _Sample:
    ts: float
    cpu: dict[str, float]  # "<side>.clawguard", "gateway_server", "docker_engine"
    containers: dict[str, float]


class CpuSampler:
    """CPU counters of every place, every 0.1 s on a thread, so that a window between two log
    events can be read afterwards: the last sample at or before its start, the first at or
    after its end (at most 0.1 s more on each side)."""

    def __init__(self, daemons: dict[str, Daemon], gateway_pid: Callable[[], int | None]) -> None:
        """``daemons``: by the name DAEMON gives each side."""
        self.daemons = daemons
        self.gateway_pid = gateway_pid
        self.engine = host_pids("dockerd") + host_pids("containerd")
        self.samples: list[_Sample] = []
        self._times: list[float] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def read(self) -> _Sample:
        cpu: dict[str, float] = {}
        for side, daemon in self.daemons.items():
            with contextlib.suppress(OSError, ValueError):
                cpu[f"{side}.clawguard"] = daemon.cpu_seconds()
        pid = self.gateway_pid()
        cpu["gateway_server"] = process_cpu(pid) if pid else 0.0
        cpu["docker_engine"] = sum(process_cpu(p) for p in self.engine)
        return _Sample(time.time(), cpu, _container_cpu())

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            sample = self.read()
            with self._lock:
                self.samples.append(sample)
                self._times.append(sample.ts)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def window(self, daemon: str, container: str, start: float, end: float) -> dict[str, float] | None:
        """CPU seconds by place between ``start`` and ``end`` (epoch); None without samples around it."""
        with self._lock:
            at = bisect.bisect_right(self._times, start) - 1
            until = bisect.bisect_left(self._times, end)
            if at < 0 or until >= len(self.samples):
                return None
            first, last = self.samples[at], self.samples[until]
        out = {}
        for place in CPU_PLACES[daemon]:
            if place == "sandbox_container":
                # A container created after ``first`` counts from zero: its cgroup is its own.
                out[place] = last.containers.get(container, 0.0) - first.containers.get(container, 0.0)
            else:
                key = f"{daemon}.clawguard" if place == "clawguard" else place
                out[place] = last.cpu.get(key, 0.0) - first.cpu.get(key, 0.0)
        return out


class ReadyWatch:
    """The bench's own ``WatchSandbox`` on the openshell sandbox, for one replacement: when the
    gateway reported each pod (``agent_pod``) READY, as any client of the API could first know
    it. (A deletion ends the stream: a re-created sandbox needs a new one.)"""

    def __init__(self, gateway: Any, name: str) -> None:
        from openshell._proto import openshell_pb2

        from testbed.openshell_gateway import scope

        self._ready_phase = openshell_pb2.SANDBOX_PHASE_READY
        request = openshell_pb2.WatchSandboxRequest(workspace_scope=scope(), sandbox=name, follow_status=True)
        self._stream = gateway.stub().WatchSandbox(request)
        self._ready: dict[str, float] = {}
        self._changed = threading.Condition()
        self.before_ready = False  # its first message was not READY: the READY it saw is exact
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="openshell-ready-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(Exception):  # cancelled at the end, or the gateway went away
            for event in self._stream:
                if event.WhichOneof("payload") != "sandbox":
                    continue
                status = event.sandbox.status
                with self._changed:
                    if status.phase == self._ready_phase and status.agent_pod:
                        self._ready.setdefault(status.agent_pod, time.time())
                        self._changed.notify_all()
                    elif not self._started.is_set():
                        self.before_ready = True
                self._started.set()

    def wait_started(self, timeout: float = 30.0) -> None:
        """Until the first message (the snapshot) came: the watch is in place."""
        if not self._started.wait(timeout):
            raise TestbedError(f"WatchSandbox sent no snapshot in {timeout:.0f}s")

    def ready_at(self, agent_pod: str, timeout: float = 10.0) -> float | None:
        with self._changed:
            self._changed.wait_for(lambda: agent_pod in self._ready, timeout)
            return self._ready.get(agent_pod)

    def first_ready(self, timeout: float) -> tuple[str, float] | None:
        """The first pod reported READY, and when."""
        with self._changed:
            self._changed.wait_for(lambda: bool(self._ready), timeout)
            return next(iter(self._ready.items()), None)

    def close(self) -> None:
        self._stream.cancel()
        self._thread.join(5)


@dataclass
class Replaced:
    short: str  # the instance as clawguard logs it (container_id=)
    container: str  # the new Docker container's full ID
    created: float  # its Docker Created (epoch)
    call_s: float  # the replacement call's own wall time
    ready: float | None = None  # openshell: the gateway reported the new pod READY


@dataclass
class Side:
    name: str  # one of SIDES
    sandbox: str  # the config's sandbox name
    current: Callable[[], str]  # the instance clawguard logs now (short)
    replace: Callable[[], Replaced]
    daemon: Daemon | None = None
    rows: list[dict[str, float]] = field(default_factory=list)
    cpu: list[dict[str, float]] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    hiccups: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    first_live_s: float | None = None


# ------------------------------------------------------------------ limits


def _openshell_limits(gateway: Any, name: str, tar: bytes, reps: int) -> dict[str, Any]:
    """Through the gateway, as clawguard calls it (ExecSandbox, ``bash -c``, no login shell)."""
    from openshell._proto import openshell_pb2

    from testbed.openshell_gateway import scope

    stub = gateway.stub()

    def run(argv: list[str], stdin: bytes | None = None) -> None:
        request = openshell_pb2.ExecSandboxRequest(
            workspace_scope=scope(),
            sandbox=name,
            command=argv,
            no_login_shell=True,
            environment={"PATH": SANDBOX_PATH},
            request_id=str(uuid.uuid4()),
        )
        if stdin is not None:
            request.stdin = stdin
        code = None
        for event in stub.ExecSandbox(request, timeout=120):
            if event.WhichOneof("payload") == "exit":
                code = event.exit.exit_code
        if code != 0:
            raise TestbedError(f"ExecSandbox {argv[:3]} exited {code}")

    get = openshell_pb2.GetSandboxRequest(workspace_scope=scope(), name=name)
    return _time_limits(
        lambda: run(["true"]),
        lambda: run(["sh", "-c", 'rm -rf "$1" && mkdir -p "$1" && tar -x -C "$1"', "sh", LIMIT_DIR], tar),
        reps,
        {"get_sandbox_s": lambda: stub.GetSandbox(get, timeout=30)},
    )


def _docker_limits(sandboxes: DockerSandboxes, name: str, tar: bytes, reps: int) -> dict[str, Any]:
    """``docker exec`` as the sandbox user, as the docker target runs its unprivileged commands."""
    api = sandboxes.client.api
    cid = sandboxes.container_id(name) or ""
    user = f"{DEFAULT_SANDBOX_UID}:{DEFAULT_SANDBOX_UID}"

    def run(argv: list[str], stdin: bytes | None = None) -> None:
        result = exec_in(api, cid, argv, stdin, 120, user=user)
        if result.code != 0:
            raise TestbedError(f"docker exec {argv[:3]} exited {result.code}: {result.stderr[-300:]!r}")

    return _time_limits(
        lambda: run(["true"]),
        lambda: run(["sh", "-c", 'rm -rf "$1" && mkdir -p "$1" && tar -x -C "$1"', "sh", LIMIT_DIR], tar),
        reps,
    )


def _time_limits(
    round_trip: Callable[[], object],
    tar_stream: Callable[[], object],
    reps: int,
    extra: dict[str, Callable[[], object]] | None = None,
) -> dict[str, Any]:
    calls = {"exec_round_trip_s": round_trip, "tar_stream_s": tar_stream, **(extra or {})}
    times: dict[str, list[float]] = {key: [] for key in calls}
    for key, call in calls.items():
        call()  # warm: connections, the first exec's set-up
        for _ in range(reps):
            started = time.perf_counter()
            call()
            times[key].append(time.perf_counter() - started)
    return {key: summary(values) for key, values in times.items()}


# ------------------------------------------------------------------ one replacement


def _replacement(side: Side, sampler: CpuSampler, iteration: int, progress: Progress) -> None:
    assert side.daemon is not None
    daemon, sandbox = side.daemon, side.sandbox
    before = time.time()
    replaced = side.replace()
    short = replaced.short
    healthy = daemon.wait("gateway.health", sandbox=sandbox, container_id=short, outcome="healthy", timeout=TIMEOUT)
    found: dict[str, Event | None] = {
        name: daemon.find(name, sandbox=sandbox, container_id=short)
        for name in ("restore.start", "restore.done", "gateway.start", "gateway.waiting", "sandbox.facts")
    }
    begun, done = found["restore.start"], found["restore.done"]
    seen = None if begun is None else noticed(daemon, sandbox, short, begun.ts)
    missing = [name for name, event in {"sandbox.detected": seen, **found}.items() if event is None]
    if seen is None or done is None or begun is None or missing:
        side.failures.append(f"iteration {iteration}: missing events for {short}: {', '.join(missing)}")
        return
    if done.fields.get("outcome") != "ok":
        side.failures.append(f"iteration {iteration}: restore.done outcome={done.fields.get('outcome')}")
    start, waiting, facts = found["gateway.start"], found["gateway.waiting"], found["sandbox.facts"]
    assert start is not None and waiting is not None and facts is not None
    side.reasons[start.fields.get("reason", "")] += 1
    approvals = sum(
        float(e.fields.get("duration", 0))
        for e in daemon.events
        if e.name == "restore.step"
        and e.fields.get("sandbox") == sandbox
        and e.fields.get("container_id") == short
        and e.fields.get("kind") == "exec_approvals"
    )
    created = replaced.created
    row = {
        "replace_call_s": replaced.call_s,
        "detection_s": seen.ts - created,
        "restore_s": done.ts - seen.ts,
        "restore_engine_s": float(done.fields.get("duration", "nan")),
        "detected_to_facts_s": facts.ts - seen.ts,
        "facts_to_restore_start_s": begun.ts - facts.ts,
        "restore_start_to_done_s": done.ts - begun.ts,
        "approvals_step_s": approvals,
        "gateway_start_s": start.ts - created,
        "restored_to_start_s": start.ts - done.ts,
        "start_command_s": waiting.ts - start.ts,
        "start_to_live_s": healthy.ts - start.ts,
        "live_s": healthy.ts - created,
    }
    if "since_event" in seen.fields:
        with contextlib.suppress(ValueError):
            row["detection_since_event_s"] = float(seen.fields["since_event"])
    if "read" in done.fields and "write" in done.fields:
        row["restore_read_s"] = float(done.fields["read"])
        row["restore_write_s"] = float(done.fields["write"])
    if replaced.ready is not None:
        row["provisioning_s"] = replaced.ready - created
        row["detection_after_ready_s"] = seen.ts - replaced.ready
        row["live_after_ready_s"] = healthy.ts - replaced.ready
    elif DAEMON[side.name] == "openshell":
        side.failures.append(f"iteration {iteration}: the bench's own watch saw no READY for {short}")
    side.rows.append(row)
    # CPU: wait for a sample after restore.done (the sampler runs every 0.1 s).
    while sampler.samples and sampler.samples[-1].ts < done.ts:
        time.sleep(0.1)
    cpu = sampler.window(DAEMON[side.name], replaced.container, seen.ts, done.ts)
    if cpu is None:
        side.failures.append(f"iteration {iteration}: no CPU samples around the restore")
    else:
        side.cpu.append(cpu)
    side.hiccups.update(
        e.name for e in daemon.events if before <= e.ts <= healthy.ts and e.fields.get("level") in ("warning", "error")
    )
    progress(
        f"{side.name} {iteration}: detection {row['detection_s']:.3f}s"
        + (f" ({row['detection_after_ready_s']:.3f}s after READY)" if "detection_after_ready_s" in row else "")
        + f", restore {row['restore_s']:.2f}s ({sum(cpu.values()) if cpu else float('nan'):.2f} CPU-s), "
        f"pod replaced -> /health live {row['live_s']:.2f}s"
    )


def _idle(daemons: dict[str, Daemon], gateway_pid: int | None, seconds: float, progress: Progress) -> dict[str, Any]:
    """Both daemons, doing nothing but their routine, over the same window."""
    time.sleep(5.0)  # the last restore's follow-ups (hooks, state writes)
    progress(f"openshell phase: idle window {seconds:.0f}s, both daemons")
    after = time.time()
    cpu0 = {name: d.cpu_seconds() for name, d in daemons.items()}
    gw0 = process_cpu(gateway_pid) if gateway_pid else None
    t0 = time.monotonic()
    rss: dict[str, list[int]] = {name: [] for name in daemons}
    threads: dict[str, list[int]] = {name: [] for name in daemons}
    while time.monotonic() - t0 < seconds:
        for name, d in daemons.items():
            rss[name].append(d.rss_bytes()[0])
            threads[name].append(d.threads())
        time.sleep(min(1.0, max(0.0, seconds - (time.monotonic() - t0))))
    window = time.monotonic() - t0
    out: dict[str, Any] = {}
    for name, d in daemons.items():
        events = Counter(e.name for e in d.refresh() if e.ts >= after)
        out[name] = {
            "window_s": round(window, 1),
            "cpu_percent_of_one_core": (d.cpu_seconds() - cpu0[name]) / window * 100,
            "rss_mb": {"median": statistics.median(rss[name]) / MB, "max": max(rss[name]) / MB},
            "peak_rss_mb_whole_run": d.rss_bytes()[1] / MB,
            "threads": max(threads[name]),
            "events_in_window": dict(sorted(events.items())),
        }
    if gw0 is not None and gateway_pid:
        out["openshell"]["gateway_server_cpu_percent"] = (process_cpu(gateway_pid) - gw0) / window * 100
    return out


# ------------------------------------------------------------------ the phase


def _config(path: Path, sandbox: str, target: str, archive: Path) -> Path:
    path.write_text(f"version: 1\nsandboxes:\n  {sandbox}:\n    target: {target}\n    archive: {archive}\n")
    return path


def _summaries(side: Side) -> dict[str, Any]:
    keys = sorted({key for row in side.rows for key in row})
    out: dict[str, Any] = {key: summary([row[key] for row in side.rows if key in row]) for key in keys}
    out["cpu_s"] = summary([sum(c.values()) for c in side.cpu], "CPU-s")
    out["cpu_s_by_place"] = {p: summary([c[p] for c in side.cpu], "CPU-s") for p in CPU_PLACES[DAEMON[side.name]]}
    out["cpu_s_outside_sandbox"] = summary(
        [sum(v for p, v in c.items() if p != "sandbox_container") for c in side.cpu], "CPU-s"
    )
    out["gateway_start_reasons"] = dict(side.reasons)
    out["warnings_during_replacements"] = dict(sorted(side.hiccups.items()))
    out["first_live_after_daemon_start_s"] = side.first_live_s
    out["failures"] = side.failures
    return out


def measure(
    *,
    gateway_name: str,
    iterations: int,
    idle_seconds: float,
    workdir: Path,
    bin_dir: Path,
    progress: Progress,
    agent: str = LATEST_AGENT,
    keep: bool = False,
) -> dict[str, Any]:
    from testbed.openshell_gateway import GatewayStandin

    progress(f"openshell phase: real agent OpenClaw {agent} (install cached after the first build)")
    build_agent(agent, say=progress)
    archive = workdir / "openshell-archive"
    if not archive.exists():
        shutil.copytree(REPO / "restore-archive", archive)
    tar = _archive_tar(archive)

    gw = GatewayStandin(workdir / "openshell-home", gateway_name)
    sandboxes = DockerSandboxes(gateway=gateway_name)
    docker_sandbox = f"{gateway_name}-gen2-agent"
    errors: list[str] = []
    result: dict[str, Any] = {
        "agent": agent,
        "archive": "restore-archive/ (clawguard's example archive), the same for both targets",
        "iterations": iterations,
        "method": "one daemon per target, default settings, both running; once each has restored its sandbox "
        "and captured its persisted paths, the replacements alternate, 1-3 s apart",
        "replacement": {
            "openshell": "the stand-in gateway's replace_pod: a new container for the same sandbox id "
            "(new agent_pod, /sandbox kept), READY once its main process runs",
            "openshell_recreated": "DeleteSandbox, then CreateSandbox with the same name and labels: a new id, "
            "a new /sandbox volume, everything gone (the same work as the docker target's re-creation)",
            "docker": "DockerSandboxes.recreate: a new container, as NemoClaw re-creates a sandbox; "
            "/sandbox is in its writable layer, so everything is gone",
        },
        "cpu_counted": {name: {p: COUNTED[p] for p in CPU_PLACES[name]} for name in ("openshell", "docker")},
        "targets": {},
        "errors": errors,
    }
    daemons: dict[str, Daemon] = {}
    try:
        progress(f"openshell phase: stand-in gateway {gateway_name!r} up, sandbox {OPENSHELL_SANDBOX}; docker sandbox")
        gw.up()
        with contextlib.suppress(Exception):  # left by an interrupted run with --keep-testbed
            gw.delete(OPENSHELL_SANDBOX)
        started = time.monotonic()
        gw.create(OPENSHELL_SANDBOX, agent=agent)
        result["openshell_create_s"] = time.monotonic() - started
        sandboxes.remove(docker_sandbox)
        started = time.monotonic()
        sandboxes.add(docker_sandbox, agent=agent)
        result["docker_create_s"] = time.monotonic() - started

        reps = max(3, iterations)
        progress(f"openshell phase: transport limits ({reps} each): exec round trip, one tar stream")
        result["limit"] = {
            "tar_bytes": len(tar),
            "openshell": _openshell_limits(gw, OPENSHELL_SANDBOX, tar, reps),
            "docker": _docker_limits(sandboxes, docker_sandbox, tar, reps),
        }

        def openshell_current() -> str:
            s = gw.get(OPENSHELL_SANDBOX)
            return Incarnation(s.metadata.id, s.status.agent_pod, "", 0, "").instance_id[:12]

        def openshell_replaced(sandbox_id: str, pod: str, call: float, ready: float | None) -> Replaced:
            created = _docker_time(gw.docker.api.inspect_container(pod)["Created"])
            short = Incarnation(sandbox_id, pod, "", 0, "").instance_id[:12]
            return Replaced(short, pod, created, call, ready)

        def openshell_replace() -> Replaced:
            watch = ReadyWatch(gw, OPENSHELL_SANDBOX)
            try:
                watch.wait_started()
                started = time.perf_counter()
                s = gw.replace_pod(OPENSHELL_SANDBOX)
                call = time.perf_counter() - started
                return openshell_replaced(s.metadata.id, s.status.agent_pod, call, watch.ready_at(s.status.agent_pod))
            finally:
                watch.close()

        def openshell_recreate() -> Replaced:
            # GatewayStandin.recreate, with the bench's own watch started as soon as the new sandbox exists.
            labels = dict(gw.get(OPENSHELL_SANDBOX).metadata.labels)
            started = time.perf_counter()
            gw.delete(OPENSHELL_SANDBOX)
            gw.client().create(workspace="default", name=OPENSHELL_SANDBOX, labels=labels)
            watch = ReadyWatch(gw, OPENSHELL_SANDBOX)
            try:
                first = watch.first_ready(TIMEOUT)
                call = time.perf_counter() - started
                if first is None:
                    raise TestbedError(f"the re-created {OPENSHELL_SANDBOX} did not get READY in {TIMEOUT:.0f}s")
                pod, ready = first
                # The watch began before READY (its first message said otherwise) for the time to be exact.
                return openshell_replaced(
                    gw.get(OPENSHELL_SANDBOX).metadata.id, pod, call, ready if watch.before_ready else None
                )
            finally:
                watch.close()

        def docker_current() -> str:
            return (sandboxes.container_id(docker_sandbox) or "")[:12]

        def docker_replace() -> Replaced:
            started = time.perf_counter()
            cid = sandboxes.recreate(docker_sandbox)
            call = time.perf_counter() - started
            created = _docker_time(sandboxes.client.api.inspect_container(cid)["Created"])
            return Replaced(cid[:12], cid, created, call)

        labels = f"{{openshell.ai/managed-by: openshell, openshell.ai/sandbox-name: {docker_sandbox}}}"
        sides = [
            Side("openshell", OPENSHELL_SANDBOX, openshell_current, openshell_replace),
            Side("openshell_recreated", OPENSHELL_SANDBOX, openshell_current, openshell_recreate),
            Side("docker", docker_sandbox, docker_current, docker_replace),
        ]
        configs = {
            "openshell": _config(
                workdir / "openshell.yaml", OPENSHELL_SANDBOX, f"{{kind: openshell, gateway: {gateway_name}}}", archive
            ),
            "docker": _config(
                workdir / "docker-gen2.yaml", docker_sandbox, f"{{kind: docker, labels: {labels}}}", archive
            ),
        }
        began = time.time()
        for name in ("openshell", "docker"):
            # The openshell daemon finds the gateway as the OpenShell CLI would, and has no Docker at all.
            env = {"XDG_CONFIG_HOME": str(gw.home), "DOCKER_HOST": NOWHERE} if name == "openshell" else {}
            with _environ(**env):
                daemons[name] = Daemon(configs[name], workdir, bin_dir, name=f"daemon-{name}")
        for side in sides:
            side.daemon = daemons[DAEMON[side.name]]
        for side in (sides[0], sides[-1]):
            assert side.daemon is not None
            first = side.daemon.wait(
                "gateway.health", sandbox=side.sandbox, container_id=side.current(), outcome="healthy", timeout=TIMEOUT
            )
            side.first_live_s = first.ts - began
            progress(f"openshell phase: {side.name}: first restore done, /health live {side.first_live_s:.1f}s")
        # A re-created sandbox gets the last capture of its persisted paths (the agent's state, its
        # approvals among them) before the plan's steps: without one, its restore does more (the
        # agent's CLI sets the approvals again). Both daemons get theirs first (persist_interval, 60 s
        # by default), so both targets' re-created sandboxes get the same restore, as long-lived ones do.
        progress("openshell phase: waiting for each daemon's first capture of the persisted paths")
        for side in (sides[0], sides[-1]):
            assert side.daemon is not None
            side.daemon.wait("persist.captured", sandbox=side.sandbox, timeout=TIMEOUT)

        def gateway_pid() -> int | None:
            with contextlib.suppress(OSError, ValueError):
                return int(gw.paths.pid.read_text().strip())
            return None

        rng = random.Random()
        with CpuSampler(daemons, gateway_pid) as sampler:
            for i in range(1, iterations + 1):
                for side in sides:
                    time.sleep(rng.uniform(1.0, 3.0))
                    try:
                        _replacement(side, sampler, i, progress)
                    except (TimeoutError, RuntimeError, TestbedError) as exc:
                        side.failures.append(f"iteration {i}: {exc}")
                        progress(f"{side.name} {i} failed: {exc}")
        result["idle"] = _idle(daemons, gateway_pid(), idle_seconds, progress)
        for side in sides:
            result["targets"][side.name] = _summaries(side)
    finally:
        for name, daemon in daemons.items():
            code = daemon.stop()
            result["daemon_exit"] = {**result.get("daemon_exit", {}), name: code}
            if "Traceback" in daemon.log.read_text():
                errors.append(f"the {name} daemon logged a traceback: see {daemon.log}")
        if not keep:
            with contextlib.suppress(Exception):
                gw.destroy()
            with contextlib.suppress(Exception):
                sandboxes.remove(docker_sandbox)
    return result
