"""clawguard plan: print the ordered plan that restore would run."""

from __future__ import annotations

import argparse
import json

from ..api import Clawguard
from ..entries import Entry

HELP = "Print the ordered plan that restore would run, step by step."
EXAMPLE = "example: clawguard plan my-assistant"


def add_parser(subparsers: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("plan", help=HELP, description=HELP, epilog=EXAMPLE, parents=parents)
    parser.add_argument("sandbox", nargs="?", help="sandbox name (default: all configured)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.set_defaults(run=run)


def _describe(entry: Entry) -> dict[str, object]:
    data: dict[str, object] = {"path": entry.path, "kind": entry.kind}
    if entry.mode is not None:
        data["mode"] = f"{entry.mode:04o}"
    if entry.owner is not None:
        data["owner"] = entry.owner
    if entry.link:
        data["link"] = entry.link
    for flag in ("recursive_owner", "exact", "if_present"):
        if getattr(entry, flag):
            data[flag] = True
    return data


def run(args: argparse.Namespace) -> int:
    live = Clawguard.load(args.config).plan(args.sandbox)
    plans = [plan for plan, _, _ in live]
    if args.json:
        print(
            json.dumps(
                {
                    p.sandbox.name: [
                        {
                            "step": s.step.name,
                            "kind": s.step.kind,
                            "from": s.step.origin.key,
                            "entries": [_describe(e) for e in s.entries],
                            "agent": [state.label for state in s.agent_states],
                        }
                        for s in p.steps
                    ]
                    for p in plans
                },
                indent=2,
            )
        )
        return 0
    for plan, _, where in live:
        print(f"{plan.sandbox.name}: {len(plan.steps)} steps from {plan.sandbox.archive} ({where})")
        for index, planned in enumerate(plan.steps, 1):
            print(f"  {index:>2}. {planned.step.kind:<15} {planned.step.name}  ({planned.step.origin.key})")
            if args.verbose:
                for entry in planned.entries:
                    d = _describe(entry)
                    extra = " ".join(f"{k}={v}" for k, v in d.items() if k not in ("path", "kind"))
                    print(f"        {entry.kind:<7} {entry.path} {extra}")
                for state in planned.agent_states:
                    print(f"        agent   {state.label}")
    return 0
