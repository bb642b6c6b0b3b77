"""``python -m bench``: the whole benchmark, one command (docs/performance.md).

    python -m bench                   # full run: 10 iterations, 10 min idle windows (~70 min)
    python -m bench --smoke           # one iteration of everything, in about 7 minutes (CI)
    python -m bench --update-docs     # also refresh docs/performance-results.* and docs/performance.md
    python -m bench --phases openshell --iterations 3   # OpenShell 0.1.x beside the docker target only

It starts its own testbed (``openshell-cluster-bench``), so it never disturbs the
default one, and removes it at the end unless ``--keep-testbed``. Run it on a
quiet machine: the figures are ratios measured side by side in the same run,
but a busy neighbour still widens the p95.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clawguard import log
from testbed import LATEST_AGENT, Testbed

from . import agent, baseline, clawguard_figures, cost, limit, locate, openshell, report
from .archive import build
from .cluster import PodClock
from .daemon import Daemon, write_config

REPO = Path(__file__).resolve().parents[1]
SANDBOX = "bench-assistant"
UID = 998
# daemon.max_parallel before it followed the CPUs: the scale phase runs it once more for comparison.
FORMER_MAX_PARALLEL = 8
PHASES = ("limit", "baseline", "clawguard", "cost", "locate", "scale", "agent", "openshell")
# Phases that need no k3s testbed: with only these, none is started.
WITHOUT_CLUSTER = {"openshell"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="one iteration of everything, short idle window (CI)")
    p.add_argument("--iterations", type=int, help="pod restarts per method (default 10; smoke 1)")
    p.add_argument("--idle-seconds", type=float, help="idle window (default 600; smoke 15)")
    p.add_argument("--scale", type=int, help="sandboxes for the scale figure (default 20; smoke 3)")
    p.add_argument("--scale-iterations", type=int, help="cluster restarts per scale count (default 3; smoke 1)")
    p.add_argument(
        "--agent-iterations",
        type=int,
        help="real-agent pod restarts under the daemon, and cold starts alone (default 3; smoke 1)",
    )
    p.add_argument("--agent", default=LATEST_AGENT, help="the real OpenClaw version (default %(default)s)")
    p.add_argument("--locate-levels", help="other containers, comma-separated (default 1,10,50; smoke 1,3)")
    p.add_argument("--locate-files", type=int, help="files in each other container (default 2000; smoke 200)")
    p.add_argument("--phases", default=",".join(PHASES), help="subset to run (default: all): " + ",".join(PHASES))
    p.add_argument("--gateway", default="bench", help="testbed gateway name (default %(default)s)")
    p.add_argument("--out", type=Path, help="where results.json and results.md go (default: a new temp dir)")
    p.add_argument("--update-docs", action="store_true", help="write docs/performance-results.* from this run")
    p.add_argument("--keep-testbed", action="store_true", help="leave the bench testbed running")
    return p


class _Progress:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f}s] {message}", file=sys.stderr, flush=True)


def _git() -> str:
    def run(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    commit = run("rev-parse", "--short", "HEAD") or "unknown"
    dirty = len([line for line in run("status", "--porcelain").splitlines() if line])
    return f"{commit}" + (f" + {dirty} uncommitted files" if dirty else "")


def _load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def _empty_results(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    return {
        "meta": {
            "mode": mode,
            "iterations": args.iterations,
            "idle_seconds": args.idle_seconds,
            "cpus": os.cpu_count(),
            "load_before": _load(),
            "git": _git(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
        },
        "archive": {},
        "limit": {},
        "baseline": {},
        "clawguard": {"restarts": {}, "idle": {}},
        "cost": {},
        "locate": {},
        "scale": [],
        "agent": {},
        "openshell": {},
        "errors": [],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    mode = "smoke" if args.smoke else "full"
    args.iterations = args.iterations or (1 if args.smoke else 10)
    args.idle_seconds = args.idle_seconds if args.idle_seconds is not None else (15.0 if args.smoke else 600.0)
    scale = args.scale or (3 if args.smoke else 20)
    scale_iterations = args.scale_iterations or (1 if args.smoke else 3)
    agent_iterations = args.agent_iterations or (1 if args.smoke else 3)
    levels = tuple(int(x) for x in (args.locate_levels or ("1,3" if args.smoke else "1,10,50")).split(","))
    files = args.locate_files or (200 if args.smoke else 2000)
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    unknown = phases - set(PHASES)
    if unknown:
        raise SystemExit(f"unknown phases: {', '.join(sorted(unknown))}")
    progress = _Progress()
    results = _empty_results(args, mode)
    began = time.monotonic()

    bed = Testbed(gateway=args.gateway)
    needs_cluster = bool(phases - WITHOUT_CLUSTER)
    if needs_cluster:
        progress(f"testbed {bed.cluster_name}: up")
        bed.up()
        if bed.container_id(SANDBOX) is None:
            bed.add_sandbox(SANDBOX, uid=UID)
    results["meta"]["cluster"] = bed.cluster_name if needs_cluster else "none (no phase needs it)"
    workdir = Path(tempfile.mkdtemp(prefix="clawguard-bench-"))
    bin_dir = workdir / "bin"
    Testbed.install_openshell(bin_dir)
    archive = build(workdir / "reference-archive")
    results["archive"] = archive.describe()
    progress(f"reference archive: {results['archive']}; work dir {workdir}")
    clock = PodClock(bed)

    def limit_phase() -> None:
        results["limit"] = limit.measure(bed, archive, sandbox=SANDBOX, uid=UID, reps=max(3, args.iterations))

    def baseline_phase() -> None:
        results["baseline"] = baseline.run(
            bed,
            clock,
            archive,
            sandbox=SANDBOX,
            uid=UID,
            iterations=args.iterations,
            workdir=workdir,
            bin_dir=bin_dir,
            progress=progress,
        ).to_dict()

    def clawguard_phase() -> None:
        config = write_config(workdir / "config.yaml", archive, [SANDBOX], bed.cluster_name, bed.gateway)
        daemon = Daemon(config, workdir, bin_dir)
        try:
            clawguard_figures.wait_converged(daemon, bed, [SANDBOX], timeout=180)
            restarts = clawguard_figures.pod_restarts(
                bed, clock, daemon, sandbox=SANDBOX, iterations=args.iterations, progress=progress
            )
            results["clawguard"]["restarts"] = restarts.to_dict()
            results["clawguard"]["idle"] = clawguard_figures.idle(
                bed, daemon, seconds=args.idle_seconds, progress=progress
            )
        finally:
            results["clawguard"]["daemon_exit"] = daemon.stop()
            if "Traceback" in daemon.log.read_text():
                results["errors"].append(f"the daemon logged a traceback: see {daemon.log}")

    def cost_phase() -> None:
        results["cost"] = cost.measure(
            bed, archive, sandbox=SANDBOX, iterations=args.iterations, workdir=workdir, progress=progress
        )

    def locate_phase() -> None:
        results["locate"] = locate.measure(
            bed, sandbox=SANDBOX, levels=levels, files=files, reps=max(3, 2 * args.iterations), progress=progress
        )

    def scale_phase() -> None:
        results["scale"] = clawguard_figures.scale(
            bed,
            clock,
            archive,
            sandbox=SANDBOX,
            uid=UID,
            counts=(1, scale),
            iterations=scale_iterations,
            workdir=workdir,
            bin_dir=bin_dir,
            progress=progress,
            compare_parallel=None if args.smoke else FORMER_MAX_PARALLEL,
        )

    def agent_phase() -> None:
        results["agent"] = agent.measure(
            bed,
            clock,
            iterations=agent_iterations,
            cold_iterations=agent_iterations,
            workdir=workdir,
            bin_dir=bin_dir,
            progress=progress,
            agent=args.agent,
        )
        results["errors"] += results["agent"].pop("errors")

    def openshell_phase() -> None:
        results["openshell"] = openshell.measure(
            gateway_name=args.gateway,
            iterations=args.iterations,
            idle_seconds=args.idle_seconds,
            workdir=workdir,
            bin_dir=bin_dir,
            progress=progress,
            agent=args.agent,
            keep=args.keep_testbed,
        )
        results["errors"] += results["openshell"].pop("errors")

    steps: list[tuple[str, str, Callable[[], None]]] = [
        ("limit", "exec round trips and one tar stream", limit_phase),
        ("baseline", "the seed's watchdog and per-file restore script", baseline_phase),
        ("clawguard", "the daemon, default settings: pod restarts, then the idle window", clawguard_phase),
        ("cost", "CPU of one restore, wherever it runs", cost_phase),
        ("locate", f"one locate with {', '.join(map(str, levels))} other containers", locate_phase),
        ("scale", f"1 and {scale} sandboxes after a cluster container restart", scale_phase),
        ("agent", f"the real OpenClaw {args.agent}: under the daemon, and its cold start alone", agent_phase),
        (
            "openshell",
            f"OpenShell 0.1.x (gateway API) beside the docker target, real OpenClaw {args.agent}",
            openshell_phase,
        ),
    ]
    try:
        for name, what, phase in steps:
            if name not in phases:
                continue
            progress(f"{name}: {what}")
            try:
                phase()
            except Exception as exc:  # one failed phase must not lose the others' figures
                results["errors"].append(f"{name}: {exc!r}")
                progress(f"{name} failed: {exc!r}\n{traceback.format_exc()}")
            if name == "baseline":
                _fresh_cluster(bed, progress)
            if args.out:
                args.out.mkdir(parents=True, exist_ok=True)
                (args.out / "results-partial.json").write_text(json.dumps(results, indent=2))
    finally:
        if needs_cluster and not args.keep_testbed:
            progress(f"testbed {bed.cluster_name}: down")
            with contextlib.suppress(Exception):
                bed.down()
    results["meta"].update(
        finished=datetime.now(UTC).isoformat(timespec="seconds"),
        wall_s=round(time.monotonic() - began, 1),
        load_after=_load(),
        workdir=str(workdir),
    )
    results["ratios"] = report.ratios(results)
    results["goals"] = report.goals(results, results["ratios"])
    return results


def _fresh_cluster(bed: Testbed, progress: Callable[[str], None]) -> None:
    """Restart the cluster container after the baseline, so the next phases get a clean one.

    On this testbed (Docker 20.10, cgroup v1, /sys/fs/cgroup bind-mounted because
    --privileged fails here), every ``docker cp`` into the cluster container leaks
    one copy of each cgroup mount into its mount namespace: the seed's 400 copies per
    restore leave tens of thousands, and every runc exec inside the cluster then spends
    seconds parsing /proc/self/mountinfo. A real OpenShell cluster runs privileged
    without that bind mount; a restart gives the container a fresh mount namespace.
    """
    code, out, _ = bed.cluster_exec(["sh", "-c", "wc -l < /proc/self/mountinfo"])
    mounts = int(out.decode().strip() or 0) if code == 0 else 0
    if mounts < 500:
        return
    progress(f"cluster container: {mounts} mounts leaked by docker cp; restarting it for a clean mount namespace")
    bed.stop_cluster(timeout=5)
    bed.start_cluster()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    log.configure("warning")
    results = run(args)
    text = report.render_text(results)
    sys.stdout.write(text)
    out = args.out or Path(results["meta"]["workdir"])
    json_path, md_path = report.write(results, out)
    (out / "output.txt").write_text(text)
    print(f"\nresults: {json_path}, {md_path}, {out / 'output.txt'}")
    if args.update_docs:
        for path in report.update_docs(results, text, REPO / "docs"):
            print(f"updated {path.relative_to(REPO)}")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
