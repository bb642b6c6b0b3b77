"""clawguard run: the always-on daemon, in the foreground (systemd runs it)."""

from __future__ import annotations

import argparse

from .. import log
from ..api import Clawguard

HELP = "Run the daemon in the foreground: watch every sandbox, restore on pod restart, keep the gateway up."
EXAMPLE = "example: clawguard run --config ~/.config/clawguard/config.yaml"


def add_parser(subparsers: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("run", help=HELP, description=HELP, epilog=EXAMPLE, parents=parents)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    level = "debug" if args.verbose else ("warning" if args.quiet else "info")
    log.configure(level)
    return int(Clawguard.load(args.config).daemon(log_level=level).run())
