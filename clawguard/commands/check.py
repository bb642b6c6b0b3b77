"""clawguard check: validate the config and the archives without touching a sandbox."""

from __future__ import annotations

import argparse

from ..config import load_config
from ..plan import build_plan

HELP = "Validate the config and every archive against the sandbox paths. Touches no sandbox."
EXAMPLE = "example: clawguard check --config ~/.config/clawguard/config.yaml"


def add_parser(subparsers: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("check", help=HELP, description=HELP, epilog=EXAMPLE, parents=parents)
    parser.add_argument("sandbox", nargs="?", help="sandbox name (default: all configured)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    for sandbox in config.select(args.sandbox):
        plan = build_plan(sandbox)
        if not args.quiet:
            print(f"{sandbox.name}: ok: {len(plan.steps)} steps, {len(plan.entries)} paths, archive {sandbox.archive}")
            for warning in plan.warnings:
                print(f"{sandbox.name}: warning: {warning}")
    return 0
