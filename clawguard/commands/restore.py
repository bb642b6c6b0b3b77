"""clawguard restore: the daemon's recovery, once, by hand."""

from __future__ import annotations

import argparse
import json
from functools import partial

from ..config import load_config
from ..converge import converge
from ..errors import TargetError
from ..plan import Plan, build_plan
from ..restore import StepReport, resolve_owners
from ..sandboxfs import SandboxCommandFailed, SandboxFS
from ..targets import make_target
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
    config = load_config(args.config)
    # Validate every selected plan before touching any sandbox.
    plans = [build_plan(sandbox) for sandbox in config.select(args.sandbox)]
    if len(plans) > 1:
        for plan in plans:
            check_owners(plan)
    results = []
    for plan in plans:
        progress = None if args.json else partial(_progress, verbose=args.verbose)
        result = converge(
            plan.sandbox, plan=plan, dry_run=args.dry_run, with_gateway=not args.no_gateway, progress=progress
        )
        results.append(result)
        if not args.json:
            output.summary_line(result.report)
            if result.gateway is not None or result.gateway_error:
                print(result.status_line())
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


def check_owners(plan: Plan) -> None:
    """Resolve the plan's users in its sandbox (a read), so that an unknown uid in the
    second sandbox stops the command before the first one is written."""
    target = make_target(plan.sandbox.name, plan.sandbox.target)
    try:
        instance = target.locate()
        users = SandboxFS(lambda argv, stdin: target.exec(instance, argv, stdin)).users()
    except (TargetError, SandboxCommandFailed):
        return  # unreachable now: its own restore reports that, and writes nothing
    resolve_owners(plan, users)


def _progress(index: int, total: int, step: StepReport, *, verbose: bool) -> None:
    output.step_line(index, total, step, verbose=verbose)
