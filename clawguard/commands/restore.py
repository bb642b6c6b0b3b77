"""clawguard restore: the daemon's recovery, once, by hand."""

from __future__ import annotations

import argparse
import json
from functools import partial

from ..agent import SandboxFacts
from ..config import SandboxConfig, load_config
from ..converge import converge, open_pod
from ..errors import TargetError
from ..plan import build_plan
from ..restore import StepReport, resolve_owners
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
    sandboxes = config.select(args.sandbox)
    for sandbox in sandboxes:
        build_plan(sandbox).log_warnings()
    facts = {sandbox.name: check_pod(sandbox) for sandbox in sandboxes} if len(sandboxes) > 1 else {}
    results = []
    for sandbox in sandboxes:
        progress = None if args.json else partial(_progress, verbose=args.verbose)
        result = converge(
            sandbox,
            facts=facts.get(sandbox.name),
            dry_run=args.dry_run,
            with_gateway=not args.no_gateway,
            progress=progress,
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


def check_pod(sandbox: SandboxConfig) -> SandboxFacts | None:
    """Plan for the sandbox's pod and resolve its users (reads only), so that an unknown uid
    or a layout the pod cannot take in the second sandbox stops the command before the
    first one is written."""
    target = make_target(sandbox.name, sandbox.target)
    try:
        pod = open_pod(sandbox, target, target.locate())
    except TargetError:
        return None  # unreachable now: its own restore reports that, and writes nothing
    resolve_owners(build_plan(sandbox, pod.facts), pod.facts.users)
    return pod.facts


def _progress(index: int, total: int, step: StepReport, *, verbose: bool) -> None:
    output.step_line(index, total, step, verbose=verbose)
