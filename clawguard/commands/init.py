"""clawguard init: find the OpenShell sandboxes on this machine and write a starter config.

Each target kind finds its own (``clawguard.targets.discover``): generation 1 pods in
every running ``openshell-cluster-<gateway>``, generation 2 containers labelled
``openshell.ai/managed-by=openshell``, generation 3 (OpenShell 0.1.x) READY sandboxes
of every gateway the OpenShell CLI registered, through the gateway API; each one
located exactly as the daemon will locate it. ``clawguard.starter`` writes the config and an empty archive per sandbox.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from .. import starter
from ..api import discover
from ..config import default_path
from ..targets import Found
from . import output

HELP = "Find the OpenShell sandboxes on this machine (every generation) and write a starter config and archives."
EXAMPLE = "example: clawguard init --print"


def add_parser(subparsers: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("init", help=HELP, description=HELP, epilog=EXAMPLE, parents=parents)
    parser.add_argument(
        "--archive",
        metavar="DIR",
        help="where the archives go, one directory per sandbox (default: archives/ next to the config)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing config")
    parser.add_argument(
        "--print", dest="print_only", action="store_true", help="print the config instead of writing anything"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    path = Path(args.config).expanduser() if args.config else default_path()
    path = path.absolute()
    if path.exists() and not args.force and not args.print_only:
        output.error(f"{path} exists; use --force to replace it, or --print to see what init would write")
        return 2
    archives = (Path(args.archive).expanduser() if args.archive else path.parent / "archives").absolute()
    # With --print the config goes to stdout, so the findings go to stderr.
    report: TextIO = sys.stderr if args.print_only else sys.stdout
    discovery = discover()
    entries = starter.config_keys(discovery.found, discovery.notes)
    _report(entries, discovery.notes, report)
    if not entries:
        output.error(
            "no running OpenShell sandbox found (no openshell-cluster-* pod, no Docker sandbox, no READY sandbox "
            "on an OpenShell 0.1.x gateway)" + (f"; {discovery.docker_down}" if discovery.docker_down else "")
        )
        return 1
    if args.print_only:
        text = starter.render(entries, archives)
        starter.check(text, path)
        print(text, end="")
        return 0
    for line in starter.write(path, archives, entries):
        print(line, file=report)
    print(f"wrote {path}\n\nnext:", file=report)
    print("  put your files in each archive (see its README.md)", file=report)
    print(f"  clawguard --config {path} check", file=report)
    print(f"  clawguard --config {path} restore", file=report)
    return 0


def _report(entries: list[tuple[str, Found]], notes: list[str], out: TextIO) -> None:
    print(f"found {len(entries)} sandbox{'es' if len(entries) != 1 else ''}:", file=out)
    width = max((len(key) for key, _ in entries), default=0)
    for key, item in entries:
        print(
            f"  {key:<{width}}  generation {item.generation} ({item.kind})  {item.instance.where}  "
            f"{item.instance.short_id}",
            file=out,
        )
    for note in notes:
        print(f"  note: {note}", file=out)
