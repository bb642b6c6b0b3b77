"""clawguard run: the always-on daemon, in the foreground (systemd runs it)."""

from __future__ import annotations

import argparse

from .. import log
from ..config import load_config
from ..daemon import Daemon

HELP = "Run the daemon in the foreground: watch every sandbox, restore on pod restart, keep the gateway up."
EXAMPLE = "example: clawguard run --config ~/.config/clawguard/config.yaml"


def add_parser(subparsers: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("run", help=HELP, description=HELP, epilog=EXAMPLE, parents=parents)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    level = "debug" if args.verbose else ("warning" if args.quiet else "info")
    log.configure(level)
    config = load_config(args.config)
    if config.daemon.metrics.get("listen"):
        from ..metrics import enable  # prometheus_client is imported only when metrics are on

        # Before Daemon(): its workers' loggers keep the processor chain they were bound with.
        enable(config.daemon.metrics["listen"], config, level)
    return Daemon(config).run()
