"""The command line: a thin shell over the public API in ``clawguard``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__, log
from .commands import capture, check, completion, doctor, init, install_service, plan, restore, run, status
from .commands.output import error
from .errors import ClawguardError

COMMANDS = (restore, capture, check, plan, run, status, doctor, install_service, init, completion)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clawguard",
        description="Keep an OpenClaw agent's NemoClaw/OpenShell sandbox restored across pod restarts.",
    )
    parser.add_argument("--version", action="version", version=f"clawguard {__version__}")
    _add_common(parser, None)
    # The same options after the command name (clawguard restore -v), without
    # letting the sub-parser's defaults overwrite values given before it.
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common, argparse.SUPPRESS)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.add_parser(subparsers, [common])
    return parser


def _add_common(parser: argparse.ArgumentParser, default: object) -> None:
    """``default`` is None on the main parser, SUPPRESS on the sub-parsers."""
    flag_default = False if default is None else default
    parser.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        default=default,
        help="config file (default: $CLAWGUARD_CONFIG or $XDG_CONFIG_HOME/clawguard/config.yaml)",
    )
    parser.add_argument(
        "--verbose", "-v", action="store_true", default=flag_default, help="show every change and info logs"
    )
    parser.add_argument("--quiet", "-q", action="store_true", default=flag_default, help="only errors")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.root_parser = parser  # for `completion`, which describes the whole command line
    log.configure("info" if args.verbose else ("error" if args.quiet else "warning"))
    try:
        return int(args.run(args))
    except ClawguardError as exc:
        error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        error("interrupted")
        return 130


def entry_point() -> None:
    sys.exit(main())
