"""clawguard doctor: check every known trap, one line each, with its fix."""

from __future__ import annotations

import argparse
import json
import sys

from ..doctor import FAIL, PASS, Check, diagnose
from ..redact import redact_text
from .output import paint

HELP = (
    "Check the config, then each sandbox through its own target (its archive, the Docker daemon its target "
    "uses, if any, the sandbox, the plan, exec-approvals, the telegram directory, the gateway), and the "
    "systemd service; print each problem with its fix."
)
EXAMPLE = "example: clawguard doctor my-assistant    (exit 1 when any check fails)"

_MARK = {PASS: ("✓", "green"), FAIL: ("✗", "red")}


def add_parser(subparsers: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("doctor", help=HELP, description=HELP, epilog=EXAMPLE, parents=parents)
    parser.add_argument("sandbox", nargs="?", help="sandbox name (default: all configured)")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    checks: list[Check] = []
    for check in diagnose(args.config, args.sandbox):
        checks.append(check)
        if not args.json:
            _print(check, quiet=args.quiet)
    failed = [c for c in checks if c.outcome == FAIL]
    if args.json:
        print(json.dumps([{**c.to_dict(), "detail": redact_text(c.detail)} for c in checks], indent=2))
    elif not args.quiet:
        verdict = f"{len(failed)} problem(s) found" if failed else "no problems found"
        print(paint(verdict, "red" if failed else "green"))
    return 1 if failed else 0


def _print(check: Check, *, quiet: bool) -> None:
    if quiet and check.outcome != FAIL:
        return
    mark, colour = _MARK.get(check.outcome, ("-", "dim"))
    where = f"{check.sandbox}: " if check.sandbox else ""
    print(f"{paint(mark, colour)} {where}{check.name}: {redact_text(check.detail)}", flush=True)
    if check.fix and check.outcome == FAIL:
        print(f"    fix: {check.fix}", file=sys.stdout, flush=True)
