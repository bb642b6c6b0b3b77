"""clawguard check: validate the config and the archives, and have the agent accept them."""

from __future__ import annotations

import argparse

from ..api import Clawguard

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
    for checked in Clawguard.load(args.config).check(args.sandbox, offline=args.offline):
        if args.quiet:
            continue
        plan = checked.plan
        accepted = "".join(f"; {step} accepted by the agent" for step in checked.accepted)
        print(
            f"{plan.sandbox.name}: ok: {len(plan.steps)} steps, {len(plan.entries)} paths, "
            f"archive {plan.sandbox.archive}; {checked.where}{accepted}"
        )
        for warning in plan.warnings:
            print(f"{plan.sandbox.name}: warning: {warning}")
    return 0
