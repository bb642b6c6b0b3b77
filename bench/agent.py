"""The real OpenClaw gateway: pod replaced -> ``/health`` live under the daemon, next to
the gateway's own cold start, measured alone in the same run; per OpenClaw version
(``--agent 2026.6.10,2026.9.6``); and several real agents after a cluster restart.

* **Cold start alone**, twice over. In a bare fresh pod of the real agent (no restore, no
  daemon), as older runs measured it; and in a fresh pod of a second sandbox holding the same
  content as the daemon's (:class:`_Twin`: a one-shot ``clawguard restore --no-gateway``
  from a copy of the daemon's state, then no clawguard at all), taken in turn with each
  replacement under the daemon so that a load changing during the run weighs on both
  alike: the goal's "its cold start alone" (a configured agent with its state starts
  slower than a bare one, and that is the agent's). Each time the gateway is started by
  hand the way NemoClaw does (``nohup openclaw gateway run &`` as the sandbox user, as
  ``Testbed.start_gateway``), timed from the start command until ``/health`` answers live
  (polled from inside the pod with ``curl``: every 0.5 s until it answers at all, then
  every 0.1 s, :func:`_poll_live`). One call of the agent's CLI is timed alone in the bare
  pod (``openclaw approvals get``: what each Node.js start of the CLI costs).
* **Under the daemon**: one sandbox of the same agent with clawguard's example archive
  (``restore-archive/``, as ``scripts/demo.sh`` uses it), the daemon with default
  settings and the ``openshell`` stand-in on its PATH. Once it has restored the first pod
  and its gateway is live, the agent's state is captured once (``clawguard capture``:
  what the daemon's interval capture, every 60 s, holds for any pod that ran a minute),
  then the pod is replaced. Two figures end at ``/health`` live: seen from inside the
  pod exactly as the cold start is (:func:`_poll_live`, from the moment the daemon's
  start command returned), and the daemon's own ``gateway.health outcome=healthy`` (its
  watch over ssh through the OpenShell proxy, probing from inside the pod). Both start at
  "pod replaced" (the new pod container's creation) and are split into detection,
  restore, restore.done -> ``gateway.start`` (the start command issued), the start
  command itself (-> ``gateway.waiting``), and start -> live; the agent's CLI calls the
  daemon made before the start are counted from its ``agent.cli`` events.
* **Several real agents** (:func:`many`): N sandboxes of the latest agent (5; 2 when
  ``--agent-iterations`` is 1, as in ``--smoke``), one daemon; once every gateway is live,
  a marker of its own is written in each agent's workspace and their state captured;
  then the cluster container is stopped and started (every pod re-created at once, as
  after a node reboot). The figure is the first re-created pod -> every gateway live
  (the daemon's ``gateway.health``), next to the same with one sandbox alone; then each
  gateway is asked ``/health`` and each workspace must hold its own marker.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from testbed import LATEST_AGENT, Testbed, TestbedError

from .clawguard_figures import noticed, restart_cluster, wait_converged
from .cluster import PodClock
from .daemon import Daemon, Event, write_config
from .stats import summary

Progress = Callable[[str], None]
REPO = Path(__file__).resolve().parents[1]
DAEMON_SANDBOX = "bench-agent"
COLD_SANDBOX = "bench-agent-cold"
MANY_PREFIX = "bench-agents-"
LIVE = {"ok": True, "status": "live"}
TIMEOUT = 300.0
#: Real agents after a cluster restart (``--agent-iterations 1``, as in ``--smoke``: SMOKE_MANY).
MANY, SMOKE_MANY = 5, 2
#: The marker each agent of :func:`many` gets in its workspace, to tell its state from the others'.
MARKER = "/sandbox/.openclaw/workspace/BENCH-MARKER.md"


def _poll_live(bed: Testbed, name: str, began: float) -> tuple[float, float]:
    """Poll ``/health`` from inside the pod as ``Testbed.start_gateway`` does (every 0.5 s until
    anything answers), then every 0.1 s until it is live. Returns (first answer, live) as
    ``time.time()``."""
    first: float | None = None
    status: dict[str, Any] | None = None
    while first is None:
        status = _status(bed, name)
        if status is not None:
            first = time.time()
            break
        if time.time() - began > TIMEOUT:
            raise TestbedError(f"nothing answered on /health in {name} within {TIMEOUT:.0f}s")
        time.sleep(0.5)
    while status != LIVE:
        if time.time() - began > TIMEOUT:
            raise TestbedError(f"the gateway in {name} answered {status} but was not live within {TIMEOUT:.0f}s")
        time.sleep(0.1)
        status = _status(bed, name)
    return first, time.time()


def _status(bed: Testbed, name: str) -> dict[str, Any] | None:
    """``/health`` from inside the pod; an exec that fails on a busy machine is no answer yet."""
    try:
        return bed.gateway_status(name)
    except TestbedError:
        return None


# What the gateway was started with and what it logged, from inside the pod: its log, then for
# each of its processes the command line, user, cwd, environment, limits, nice and cgroup.
_EVIDENCE = r"""
echo "== now $(date +%s.%N) load $(cat /proc/loadavg)"
echo "== /tmp/gateway.log"; cat /tmp/gateway.log 2>&1 | head -n 200
for pid in $(pgrep -f 'openclaw|node' 2>/dev/null); do
  echo "== pid $pid: $(tr '\0' ' ' < /proc/$pid/cmdline)"
  echo "-- started (ticks since boot): $(cut -d' ' -f22 /proc/$pid/stat) ppid $(cut -d' ' -f4 /proc/$pid/stat)"
  echo "-- cwd $(readlink /proc/$pid/cwd)"
  grep -E '^(Uid|Gid|Groups|Cpus_allowed_list|voluntary|nonvol)' /proc/$pid/status
  set -- $(sed 's/.*) //' /proc/$pid/stat)
  echo "-- nice ${17} utime ${12} stime ${13}"
  echo "-- environ"; tr '\0' '\n' < /proc/$pid/environ | sort
  echo "-- limits"; grep -E 'open files|processes|stack|address' /proc/$pid/limits
  echo "-- cgroup $(cat /proc/$pid/cgroup | tr '\n' ' ')"
done
echo "== ticks/s $(getconf CLK_TCK) uptime $(cut -d' ' -f1 /proc/uptime)"
ps -eo pid,ppid,user,etimes,time,args 2>&1 | head -n 60
"""


def _evidence(bed: Testbed, name: str, workdir: Path, label: str) -> None:
    """Keep what the gateway in ``name`` was started with and logged (:data:`_EVIDENCE`) as
    ``workdir/evidence-<label>.txt``: the by-hand and the daemon's start, side by side."""
    try:
        _, out, err = bed.exec_in_sandbox(name, ["sh", "-c", _EVIDENCE], "sandbox", timeout=60)
        (workdir / f"evidence-{label}.txt").write_bytes(out + err)
    except TestbedError as exc:
        (workdir / f"evidence-{label}.txt").write_text(f"no evidence: {exc}\n")


# The CPU time (s) every process in the pod has used, its children's included.
_POD_CPU = (
    "cat /proc/[0-9]*/stat 2>/dev/null | sed 's/.*) //' | "
    'awk -v hz="$(getconf CLK_TCK)" \'{t += $12 + $13 + $14 + $15} END {printf "%.2f", t / hz}\''
)
#: A pod is quiet when its processes used less than this much CPU over QUIET_WINDOW s.
QUIET_CPU, QUIET_WINDOW, QUIET_MAX = 0.1, 1.0, 30.0


def _pod_cpu(bed: Testbed, name: str) -> float | None:
    try:
        code, out, _ = bed.exec_in_sandbox(name, ["sh", "-c", _POD_CPU], "root", timeout=30)
    except TestbedError:
        return None
    try:
        return float(out.decode().strip()) if code == 0 else None
    except ValueError:
        return None


def _quiet(bed: Testbed, name: str) -> float:
    """Wait until the gateway in pod ``name`` is done with what it does after it went live (2026.9.6:
    ~5 CPU-s in the 8 s after /health is live: its plugins, channels, health monitor), so that it
    does not take the CPU of the other side's cold start: each cold start, by hand or under the
    daemon, is then taken with the other sandbox's gateway idle. Returns the seconds waited."""
    began = time.monotonic()
    last = _pod_cpu(bed, name)
    while last is not None and time.monotonic() - began < QUIET_MAX:
        time.sleep(QUIET_WINDOW)
        now = _pod_cpu(bed, name)
        if now is None or now - last < QUIET_CPU:
            break
        last = now
    return time.monotonic() - began


def _start_by_hand(bed: Testbed, name: str) -> tuple[float, float, float]:
    """Start the gateway as ``Testbed.start_gateway`` does (NemoClaw's ``nohup openclaw gateway
    run &`` as the sandbox user, HOME=/sandbox) and poll it as :func:`_poll_live` does. Returns
    (started, first answer, live) as ``time.time()``."""
    start = "cd /sandbox && HOME=/sandbox nohup openclaw gateway run > /tmp/gateway.log 2>&1 < /dev/null &"
    began = time.time()
    code, _, err = bed.exec_in_sandbox(name, ["sh", "-c", start], "sandbox")
    if code != 0:
        raise TestbedError(f"starting the gateway in {name!r} failed: {err.decode(errors='replace').strip()}")
    first, live = _poll_live(bed, name, began)
    return began, first, live


def _cold_start(bed: Testbed, agent: str) -> dict[str, float]:
    """One cold start of the gateway, alone, in a fresh pod: start command -> first answer -> live."""
    bed.remove_sandbox(COLD_SANDBOX)
    bed.add_sandbox(COLD_SANDBOX, agent=agent)
    try:
        # What one call of the agent's CLI costs (a restore that must ask it makes some: config
        # validate, approvals get, set), before the gateway runs, as in a restore.
        started = time.monotonic()
        code, _, _err = bed.agent_cli(COLD_SANDBOX, ["approvals", "get", "--json"])
        cli = time.monotonic() - started
        began, first, live = _start_by_hand(bed, COLD_SANDBOX)
        figures = {"first_answer_s": first - began, "live_s": live - began}
        if code == 0:
            figures["cli_approvals_get_s"] = cli
        return figures
    finally:
        bed.remove_sandbox(COLD_SANDBOX)


def _clawguard(config: Path, daemon: Daemon, bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A one-shot ``clawguard`` command on the daemon's state."""
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "XDG_STATE_HOME": str(daemon.log.with_name(f"{daemon.log.stem}-state")),  # the daemon's own
    }
    return subprocess.run(
        [sys.executable, "-m", "clawguard", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT,
        check=False,
    )


def _capture(config: Path, daemon: Daemon, bin_dir: Path) -> None:
    """Capture every sandbox's state once, as the daemon's interval capture would a minute after a restore."""
    for attempt in range(3):  # a locate that finds no running task on a busy machine is tried again
        done = _clawguard(config, daemon, bin_dir, "capture")
        if done.returncode == 0:
            return
        time.sleep(2.0 * (attempt + 1))
    raise TestbedError(f"clawguard capture failed ({done.returncode}): {(done.stderr or done.stdout)[-500:]}")


def _archive(workdir: Path) -> Path:
    archive = workdir / "agent-archive"
    if not archive.exists():
        shutil.copytree(REPO / "restore-archive", archive)
    return archive


def _events(daemon: Daemon, name: str, sandbox: str, short: str) -> list[Event]:
    """``name``'s events about pod ``short`` (``agent.cli`` names the pod alone)."""
    return [
        e
        for e in daemon.events
        if e.name == name and e.fields.get("sandbox", sandbox) == sandbox and e.fields.get("container_id") == short
    ]


def measure(
    bed: Testbed,
    clock: PodClock,
    *,
    iterations: int,
    cold_iterations: int,
    workdir: Path,
    bin_dir: Path,
    progress: Progress,
    agent: str = LATEST_AGENT,
) -> dict[str, Any]:
    """Every version in ``agent`` (comma-separated): its cold start alone and pod replacements
    under the daemon; then :func:`many` with the latest of them. The top level holds the
    latest version's figures (``versions``: each one's)."""
    versions = [v.strip() for v in agent.split(",") if v.strip()] or [LATEST_AGENT]
    progress(f"real agent: OpenClaw {', '.join(versions)} (installs cached after the first build)")
    bed.build_agents(versions)
    errors: list[str] = []
    figures = []
    for version in versions:
        one = one_version(
            bed,
            clock,
            iterations=iterations,
            cold_iterations=cold_iterations,
            workdir=workdir,
            bin_dir=bin_dir,
            progress=progress,
            agent=version,
        )
        errors += one.pop("errors")
        figures.append(one)
    latest = LATEST_AGENT if LATEST_AGENT in versions else versions[-1]
    primary = next(f for f in figures if f["agent"] == latest)
    count = MANY if iterations > 1 else SMOKE_MANY
    if os.environ.get("BENCH_AGENT_MANY") == "0":  # one agent's figures only (a diagnosis run)
        return {**primary, "versions": figures, "many": {"skipped": "BENCH_AGENT_MANY=0"}, "errors": errors}
    try:
        crowd = many(bed, clock, count=count, agent=latest, workdir=workdir, bin_dir=bin_dir, progress=progress)
    except Exception as exc:  # the single-agent figures stand on their own
        crowd = {"error": repr(exc)}
    errors += crowd.pop("errors", [])
    if "error" in crowd:
        errors.append(f"{count} real agents: {crowd['error']}")
    return {**primary, "versions": figures, "many": crowd, "errors": errors}


def one_version(
    bed: Testbed,
    clock: PodClock,
    *,
    iterations: int,
    cold_iterations: int,
    workdir: Path,
    bin_dir: Path,
    progress: Progress,
    agent: str,
) -> dict[str, Any]:
    cold: list[dict[str, float]] = []
    for i in range(cold_iterations):
        cold.append(_cold_start(bed, agent))
        progress(
            f"OpenClaw {agent}, cold start alone {i + 1}/{cold_iterations}: first answer "
            f"{cold[-1]['first_answer_s']:.2f}s, /health live {cold[-1]['live_s']:.2f}s after the start command"
        )

    archive = _archive(workdir)
    bed.remove_sandbox(DAEMON_SANDBOX)
    bed.add_sandbox(DAEMON_SANDBOX, agent=agent)
    tag = agent.replace(".", "-")
    config = write_config(workdir / f"agent-{tag}.yaml", archive, [DAEMON_SANDBOX], bed.cluster_name, bed.gateway)
    began = time.time()
    daemon = Daemon(config, workdir, bin_dir, name=f"daemon-agent-{tag}")
    rows: list[dict[str, float]] = []
    reasons: Counter[str] = Counter()
    failures: list[str] = []
    cli_calls: list[str] = []
    restored_cold: list[dict[str, float]] = []
    quiet_before_cold: list[float] = []  # waited for the daemon's gateway to go idle
    quiet_before_daemon: list[float] = []  # waited for the twin's gateway to go idle
    first_live = None
    rng = random.Random()
    try:
        pod = bed.container_id(DAEMON_SANDBOX) or ""
        first = daemon.wait(
            "gateway.health", sandbox=DAEMON_SANDBOX, container_id=pod[:12], outcome="healthy", timeout=TIMEOUT
        )
        first_live = first.ts - began
        progress(f"OpenClaw {agent} under the daemon: first pod live {first_live:.1f}s after its start")
        try:
            _capture(config, daemon, bin_dir)
        except TestbedError as exc:  # measured all the same: a new pod without the agent's state
            failures.append(str(exc))
        twin = _Twin(bed, workdir, archive, daemon, bin_dir, tag, agent)
        for i in range(iterations):
            # The same agent with the same content, started by hand, in turn with each replacement:
            # a load that changes during the run weighs on both alike.
            quiet_before_cold.append(_quiet(bed, DAEMON_SANDBOX))
            restored_cold.append(twin.cold_start())
            _evidence(bed, COLD_SANDBOX, workdir, f"{tag}-byhand-{i + 1}")
            progress(
                f"OpenClaw {agent}, cold start alone of the restored agent {i + 1}/{iterations}: /health live "
                f"{restored_cold[-1]['live_s']:.2f}s after the start command"
            )
            time.sleep(rng.uniform(1.0, 3.0))
            quiet_before_daemon.append(_quiet(bed, COLD_SANDBOX))
            new_id = bed.restart(DAEMON_SANDBOX)
            created = clock.wait(new_id)
            short = new_id[:12]
            waiting = daemon.wait("gateway.waiting", sandbox=DAEMON_SANDBOX, container_id=short, timeout=TIMEOUT)
            _, seen_live = _poll_live(bed, DAEMON_SANDBOX, waiting.ts)
            _evidence(bed, DAEMON_SANDBOX, workdir, f"{tag}-daemon-{i + 1}")
            healthy = daemon.wait(
                "gateway.health", sandbox=DAEMON_SANDBOX, container_id=short, outcome="healthy", timeout=TIMEOUT
            )
            done, start, begun, facts = (
                daemon.find(name, sandbox=DAEMON_SANDBOX, container_id=short)
                for name in ("restore.done", "gateway.start", "restore.start", "sandbox.facts")
            )
            approvals = [
                float(e.fields.get("duration", 0))
                for e in _events(daemon, "restore.step", DAEMON_SANDBOX, short)
                if e.fields.get("kind") == "exec_approvals"
            ]
            seen = None if begun is None else noticed(daemon, DAEMON_SANDBOX, short, begun.ts)
            if seen is None or done is None or start is None or facts is None or begun is None:
                failures.append(
                    f"iteration {i + 1}: missing events for {short}: "
                    + ", ".join(
                        name
                        for name, e in (
                            ("sandbox.detected", seen),
                            ("restore.done", done),
                            ("gateway.start", start),
                            ("sandbox.facts", facts),
                        )
                        if e is None
                    )
                )
                continue
            # The agent's CLI, asked before the gateway start: each one a Node.js start.
            calls = [e for e in _events(daemon, "agent.cli", DAEMON_SANDBOX, short) if e.ts <= start.ts]
            cli_calls += [e.fields.get("command", "?") for e in calls]
            reasons[start.fields.get("reason", "")] += 1
            rows.append(
                {
                    "live_s": healthy.ts - created,
                    "observed_live_s": seen_live - created,
                    "detection_s": seen.ts - created,
                    "restore_s": done.ts - seen.ts,
                    "detected_to_facts_s": facts.ts - seen.ts,
                    "facts_to_restore_start_s": begun.ts - facts.ts,
                    "restore_start_to_done_s": done.ts - begun.ts,
                    "approvals_step_s": sum(approvals),
                    "cli_calls_before_start": float(len(calls)),
                    "cli_before_start_s": sum(float(e.fields.get("duration", 0)) for e in calls),
                    "restored_to_start_s": start.ts - done.ts,
                    "gateway_start_s": start.ts - created,
                    "start_command_s": waiting.ts - start.ts,
                    "start_to_live_s": healthy.ts - start.ts,
                    "start_to_observed_live_s": seen_live - start.ts,
                    "daemon_notice_after_live_s": healthy.ts - seen_live,
                }
            )
            progress(
                f"OpenClaw {agent} under the daemon {i + 1}/{iterations}: pod replaced -> /health live "
                f"{rows[-1]['observed_live_s']:.2f}s (the daemon saw it at {rows[-1]['live_s']:.2f}s; gateway start "
                f"issued at {rows[-1]['gateway_start_s']:.2f}s after {len(calls)} CLI calls, start -> live "
                f"{rows[-1]['start_to_observed_live_s']:.2f}s)"
            )
    finally:
        daemon_exit = daemon.stop()
        bed.remove_sandbox(DAEMON_SANDBOX)
        bed.remove_sandbox(COLD_SANDBOX)
    errors = []
    if "Traceback" in daemon.log.read_text():
        errors.append(f"the real-agent daemon logged a traceback: see {daemon.log}")
    keys = rows[0].keys() if rows else ()
    got = [c["cli_approvals_get_s"] for c in cold if "cli_approvals_get_s" in c]
    return {
        "agent": agent,
        "archive": "restore-archive/ (clawguard's example archive)",
        "cold_start": {key: summary([c[key] for c in cold]) for key in ("first_answer_s", "live_s")},
        "cli_approvals_get_alone_s": summary(got),
        "restored_cold_start": {key: summary([c[key] for c in restored_cold]) for key in ("first_answer_s", "live_s")},
        "daemon": {
            **{key: summary([row[key] for row in rows], _unit(key)) for key in keys},
            "cli_calls": dict(Counter(cli_calls)),
            "first_pod_live_after_daemon_start_s": first_live,
            "quiet_wait_before_daemon_s": summary(quiet_before_daemon),
            "quiet_wait_before_cold_s": summary(quiet_before_cold),
            "gateway_start_reasons": dict(reasons),
            "failures": failures,
            "exit": daemon_exit,
        },
        "errors": errors,
    }


def _unit(key: str) -> str:
    return "count" if key.startswith("cli_calls") else "s"


class _Twin:
    """A second sandbox of the same agent with the same content as the daemon's: each new pod
    of it restored by a one-shot ``clawguard restore --no-gateway`` from a copy of the daemon's
    state (the archive, and the capture of the daemon's pod), then its gateway started by hand
    as in :func:`_cold_start`: the agent's own cold start, with no clawguard running for it."""

    def __init__(
        self, bed: Testbed, workdir: Path, archive: Path, daemon: Daemon, bin_dir: Path, tag: str, agent: str
    ) -> None:
        self.bed, self.bin_dir = bed, bin_dir
        self.state = workdir / f"twin-{tag}-state"
        shutil.rmtree(self.state, ignore_errors=True)
        shutil.copytree(daemon.log.with_name(f"{daemon.log.stem}-state"), self.state)
        # The daemon's sandbox, in another pod: its captures and verdicts are this one's.
        self.config = workdir / f"twin-{tag}.yaml"
        self.config.write_text(
            f"version: 1\nsandboxes:\n  {DAEMON_SANDBOX}:\n    target: {{kind: k3s, cluster: {bed.cluster_name}, "
            f"pod: {COLD_SANDBOX}}}\n    archive: {archive}\n    user: sandbox\n    gateway: {{enabled: false}}\n"
        )
        bed.remove_sandbox(COLD_SANDBOX)
        bed.add_sandbox(COLD_SANDBOX, agent=agent)
        self.fresh = True

    def cold_start(self) -> dict[str, float]:
        if not self.fresh:
            self.bed.restart(COLD_SANDBOX)
        self.fresh = False
        env = {**os.environ, "PATH": f"{self.bin_dir}:{os.environ.get('PATH', '')}", "XDG_STATE_HOME": str(self.state)}
        done = subprocess.run(
            [sys.executable, "-m", "clawguard", "--config", str(self.config), "restore", "--no-gateway"],
            capture_output=True,
            text=True,
            env=env,
            timeout=TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise TestbedError(f"clawguard restore failed ({done.returncode}): {(done.stderr or done.stdout)[-500:]}")
        began, first, live = _start_by_hand(self.bed, COLD_SANDBOX)
        return {"first_answer_s": first - began, "live_s": live - began}


def _mark(bed: Testbed, name: str) -> str:
    """Write a marker of ``name``'s own into its agent's workspace, as the agent would; return it."""
    token = f"{name} {secrets.token_hex(8)}\n"
    code, _, err = bed.exec_in_sandbox(name, ["sh", "-c", 'printf %s "$1" > "$2"', "sh", token, MARKER], user="sandbox")
    if code != 0:
        raise TestbedError(f"writing {MARKER} in {name} failed: {err.decode(errors='replace')[-300:]}")
    return token


def _marker(bed: Testbed, name: str) -> str | None:
    code, out, _ = bed.exec_in_sandbox(name, ["cat", MARKER], user="sandbox")
    return out.decode(errors="replace") if code == 0 else None


def _restart_cluster(bed: Testbed, clock: PodClock, daemon: Daemon, names: list[str]) -> dict[str, Any]:
    """Stop and start the cluster container (every pod re-created at once); wait until every
    gateway is live under the daemon."""
    time.sleep(2.0)  # the last convergence records its result before the cluster goes
    run = restart_cluster(bed, clock, daemon, names)
    restored, healthy, pod_start, replaced = run.restored, run.healthy, run.pod_start, run.pods
    first, last = min(pod_start.values()), max(pod_start.values())
    return {
        "all_live_s": max(healthy.values()) - first,
        "all_restored_s": max(restored.values()) - first,
        "pod_start_spread_s": last - first,
        "live_after_last_pod_s": max(healthy.values()) - last,
        "per_sandbox_live_s": statistics.median(healthy[n] - pod_start[n] for n in names),
        "pods": replaced,
    }


def many(
    bed: Testbed,
    clock: PodClock,
    *,
    count: int,
    agent: str,
    workdir: Path,
    bin_dir: Path,
    progress: Progress,
    sizes: Iterable[int] | None = None,
) -> dict[str, Any]:
    """One sandbox alone, then ``count``, each running the real OpenClaw ``agent`` under one
    daemon; a cluster restart each; every gateway live again, each with its own state."""
    archive = _archive(workdir)
    names_all = [f"{MANY_PREFIX}{i}" for i in range(1, count + 1)]
    runs: dict[str, Any] = {}
    errors: list[str] = []
    try:
        for size in sizes or (1, count):
            names = names_all[:size]
            for name in names:
                if bed.container_id(name) is None:
                    bed.add_sandbox(name, agent=agent)
            config = write_config(workdir / f"agents-{size}.yaml", archive, names, bed.cluster_name, bed.gateway)
            # One state directory for every size: the agents' captures and the verdicts their
            # agent gave stay across the daemons, as they do across a daemon's restarts.
            daemon = Daemon(config, workdir, bin_dir, name="daemon-agents")
            try:
                wait_converged(daemon, bed, names, timeout=TIMEOUT + 60 * size)
                marks = {name: _mark(bed, name) for name in names}
                _capture(config, daemon, bin_dir)
                figures = _restart_cluster(bed, clock, daemon, names)
                # Every gateway answers live, and every workspace holds its own marker back.
                live = {name: _status(bed, name) == LIVE for name in names}
                own = {name: _marker(bed, name) == marks[name] for name in names}
            finally:
                daemon.stop()
            log = daemon.log.read_text()
            daemon.log.with_name(f"daemon-agents-{size}.log").write_text(log)  # the next one writes over it
            if "Traceback" in log:
                errors.append(f"the {size}-agent daemon logged a traceback: see {daemon.log}")
            runs[str(size)] = {
                **{k: v for k, v in figures.items() if k != "pods"},
                "sandboxes": size,
                "all_live_now": all(live.values()),
                "each_own_state": all(own.values()),
                "not_live": [n for n, ok in live.items() if not ok],
                "not_own_state": [n for n, ok in own.items() if not ok],
            }
            progress(
                f"{size} real agent(s) (OpenClaw {agent}) after a cluster restart: first pod -> all live "
                f"{figures['all_live_s']:.2f}s (pods re-created over {figures['pod_start_spread_s']:.2f}s); "
                f"all live now: {all(live.values())}, each its own state: {all(own.values())}"
            )
    finally:
        for name in names_all:
            bed.remove_sandbox(name)
    return {"agent": agent, "count": count, "runs": runs, "errors": errors}
