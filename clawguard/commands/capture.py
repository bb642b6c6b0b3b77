"""clawguard capture: save the agent's persisted paths from the live sandbox now."""

from __future__ import annotations

import argparse
import json

from ..api import Clawguard

HELP = "Capture each sandbox's persisted paths (the agent's own state: databases, sessions, workspace) now."
EXAMPLE = "example: clawguard capture my-assistant"


def add_parser(subparsers: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("capture", help=HELP, description=HELP, epilog=EXAMPLE, parents=parents)
    parser.add_argument("sandbox", nargs="?", help="sandbox name (default: all configured)")
    parser.add_argument("--json", action="store_true", help="print the outcomes as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    failed = False
    rows = []
    for name, outcome in Clawguard.load(args.config).capture(args.sandbox):
        capture = outcome.capture
        # "skipped" because the pod was never restored is a refusal the user must act on.
        failed = failed or (outcome.outcome == "skipped" and outcome.reason != "nothing to persist")
        rows.append(
            {
                "sandbox": name,
                "outcome": outcome.outcome,
                "reason": outcome.reason or None,
                "capture": capture.summary() if capture else None,
            }
        )
        if args.json:
            continue
        if capture is not None:
            verb = "captured" if outcome.outcome == "saved" else "unchanged since"
            print(
                f"{name}: {verb} generation {capture.generation}: {capture.files} files, "
                f"{capture.size} bytes, {len(capture.tops)} persisted paths"
            )
        else:
            print(f"{name}: not captured: {outcome.reason}")
    if args.json:
        print(json.dumps(rows, indent=2))
    return 1 if failed else 0
