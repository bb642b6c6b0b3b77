"""clawguard restore: replay the plan once, by hand."""

from __future__ import annotations

import argparse
import json
from functools import partial

from ..config import load_config
from ..plan import build_plan
from ..restore import StepReport, run_plan
from ..targets import make_target
from . import output

HELP = "Restore a sandbox once: check, apply and verify every step."
EXAMPLE = "example: clawguard restore my-assistant --dry-run"


def add_parser(subparsers: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("restore", help=HELP, description=HELP, epilog=EXAMPLE, parents=parents)
    parser.add_argument("sandbox", nargs="?", help="sandbox name (default: all configured)")
    parser.add_argument("--dry-run", action="store_true", help="show what would change, write nothing")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    # Validate every selected plan before touching any sandbox.
    plans = [build_plan(sandbox) for sandbox in config.select(args.sandbox)]
    reports = []
    for plan in plans:
        target = make_target(plan.sandbox.name, plan.sandbox.target)
        instance = target.locate()
        progress = None if args.json else partial(_progress, verbose=args.verbose)
        report = run_plan(plan, target, instance, dry_run=args.dry_run, progress=progress)
        reports.append(report)
        if not args.json:
            output.summary_line(report)
    if args.json:
        print(json.dumps([r.to_dict() for r in reports], indent=2))
    return 0 if all(r.ok for r in reports) else 1


def _progress(index: int, total: int, step: StepReport, *, verbose: bool) -> None:
    output.step_line(index, total, step, verbose=verbose)
