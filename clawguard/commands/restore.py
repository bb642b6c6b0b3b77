"""clawguard restore: the daemon's recovery, once, by hand."""

from __future__ import annotations

import argparse
import json
from functools import partial

from ..api import Clawguard
from ..converge import Convergence
from ..restore import StepReport
from . import output

HELP = "Restore a sandbox once: check, apply and verify every step, then start the gateway and check its health."
EXAMPLE = "example: clawguard restore my-assistant --dry-run"


def add_parser(subparsers: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("restore", help=HELP, description=HELP, epilog=EXAMPLE, parents=parents)
    parser.add_argument("sandbox", nargs="?", help="sandbox name (default: all configured)")
    parser.add_argument("--dry-run", action="store_true", help="show what would change, write nothing")
    parser.add_argument("--no-gateway", action="store_true", help="do not start or check the gateway")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    def show(result: Convergence) -> None:
        if not args.json:
            output.summary_line(result.report)
            if result.gateway is not None or result.gateway_error:
                print(result.status_line())

    results = Clawguard.load(args.config).restore(
        args.sandbox,
        dry_run=args.dry_run,
        gateway=not args.no_gateway,
        progress=None if args.json else partial(_progress, verbose=args.verbose),
        on_each=show,
    )
    if args.json:
        print(
            json.dumps(
                [
                    {
                        **r.report.to_dict(),
                        "gateway": r.gateway.to_dict() if r.gateway else None,
                        "gateway_error": r.gateway_error,
                    }
                    for r in results
                ],
                indent=2,
            )
        )
    return 0 if all(r.ok for r in results) else 1


def _progress(index: int, total: int, step: StepReport, *, verbose: bool) -> None:
    output.step_line(index, total, step, verbose=verbose)
