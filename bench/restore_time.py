"""How long one restore of restore-archive/ takes on the testbed.

    .venv/bin/python bench/restore_time.py [--runs N]

Each run restarts the sandbox pod (so the restore starts from a wiped overlay),
then times a full restore (locate, validate, inspect, apply, verify), then a
second restore with nothing to change. Prints median and p95 of each. This is a
measurement, not a test: the machine is shared and timings are noisy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from clawguard import Clawguard, log, parse_config
from clawguard.converge import converge
from clawguard.state import StateStore
from testbed import Testbed

REPO = Path(__file__).resolve().parents[1]
SANDBOX = "bench-assistant"


def _pct(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    log.configure("warning")

    bed = Testbed()
    bed.up()
    if bed.container_id(SANDBOX) is None:
        bed.add_sandbox(SANDBOX)
    with tempfile.TemporaryDirectory() as tmp:
        text = f"""version: 1
sandboxes:
  {SANDBOX}:
    target: {{kind: k3s, cluster: {bed.cluster_name}}}
    archive: {REPO / "restore-archive"}
"""
        config = parse_config(text, Path(tmp) / "config.yaml")
        ctx = Clawguard(config, store=StateStore(Path(tmp) / "state")).context(SANDBOX)
        full: list[float] = []
        noop: list[float] = []
        restart: list[float] = []
        for _ in range(args.runs):
            started = time.perf_counter()
            bed.restart(SANDBOX)
            restart.append(time.perf_counter() - started)
            started = time.perf_counter()
            report = converge(ctx, with_gateway=False).report
            full.append(time.perf_counter() - started)
            assert report.ok and report.changed == len(report.steps), report.to_dict()
            started = time.perf_counter()
            report = converge(ctx, with_gateway=False).report
            noop.append(time.perf_counter() - started)
            assert report.ok and report.changed == 0, report.to_dict()
    bed.remove_sandbox(SANDBOX)

    figures = {
        "runs": args.runs,
        "steps": len(report.steps),
        "restore_after_pod_restart_s": {"median": statistics.median(full), "p95": _pct(full, 95)},
        "restore_nothing_to_change_s": {"median": statistics.median(noop), "p95": _pct(noop, 95)},
        "testbed_pod_restart_s": {"median": statistics.median(restart), "p95": _pct(restart, 95)},
    }
    for name, value in figures.items():
        if isinstance(value, dict):
            print(f"{name:<32} median {value['median']:.3f}s  p95 {value['p95']:.3f}s")
        else:
            print(f"{name:<32} {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
