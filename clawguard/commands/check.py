"""clawguard check: validate the config and the archives, and have the agent accept them."""

from __future__ import annotations

import argparse

from ..config import load_config
from ..converge import plan_live
from ..plan import build_plan
from ..restore import preflight_objections

HELP = (
    "Validate the config and every archive; where the sandbox is reachable, plan for its pod and have "
    "its agent validate openclaw.json (`openclaw config validate`). Writes nothing."
)
EXAMPLE = "example: clawguard check --config ~/.config/clawguard/config.yaml"


def add_parser(subparsers: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("check", help=HELP, description=HELP, epilog=EXAMPLE, parents=parents)
    parser.add_argument("sandbox", nargs="?", help="sandbox name (default: all configured)")
    parser.add_argument("--offline", action="store_true", help="do not read the sandbox: the config and archive only")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    sandboxes = config.select(args.sandbox)
    for sandbox in sandboxes:  # every archive first: a bad one fails before any sandbox is read
        build_plan(sandbox).log_warnings()
    for sandbox in sandboxes:
        if args.offline:
            plan, pod, where = build_plan(sandbox), None, "not read (--offline)"
        else:
            plan, pod, where = plan_live(sandbox)
        accepted = ""
        if pod is not None:
            for planned in plan.steps:
                rejected = preflight_objections(planned, pod)
                if rejected:
                    raise rejected[0]
                if planned.preflights:
                    accepted = f"; {planned.step.name} accepted by the agent"
        if not args.quiet:
            print(
                f"{sandbox.name}: ok: {len(plan.steps)} steps, {len(plan.entries)} paths, archive {sandbox.archive}; "
                f"{where}{accepted}"
            )
            for warning in plan.warnings:
                print(f"{sandbox.name}: warning: {warning}")
    return 0
