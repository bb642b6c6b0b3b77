"""clawguard status: what the daemon last saw and did, per sandbox."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ..api import Clawguard

HELP = "Show each sandbox's container, last restore, gateway health and last capture, as a table or JSON."
EXAMPLE = "example: clawguard status --json"


def add_parser(subparsers: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("status", help=HELP, description=HELP, epilog=EXAMPLE, parents=parents)
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=run)


def _age(at: Any) -> str:
    if not isinstance(at, int | float):
        return "-"
    seconds = max(0, int(time.time() - at))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


# The daemon's worker states (daemon.json "phases") in which it is busy with, or waiting
# for, something the user may want to see: a gateway still starting, a retry.
BUSY_PHASES = ("restoring", "gateway", "failed", "unreachable")


def _now(item: dict[str, Any], doing: str, phase: str = "") -> str:
    """What needs the user now: a config error in force, or what the daemon is doing or
    waiting for (a gateway that is still starting, a lock another clawguard holds)."""
    error = item.get("config_error") or {}
    if error.get("message"):
        text = "CONFIG ERROR: " + str(error["message"])
    elif ": waiting for " in doing or (phase in BUSY_PHASES and ": " in doing):
        text = doing.split(": ", 1)[1]
    else:
        return "-"
    return text if len(text) <= 100 else text[:99] + "…"


def run(args: argparse.Namespace) -> int:
    data = Clawguard.load(args.config).status()
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    daemon = data["daemon"]
    print(f"daemon: {'running, pid ' + str(daemon.get('pid')) if daemon['running'] else 'not running'}")
    rows = [
        ("SANDBOX", "CONTAINER", "LAST RESTORE", "CHANGED", "WHEN", "GATEWAY", "CHECKED", "CAPTURE", "LAST HOOK", "NOW")
    ]
    doing = daemon.get("workers") or {} if daemon["running"] else {}
    phases = daemon.get("phases") or {} if daemon["running"] else {}
    for item in data["sandboxes"]:
        restore = item.get("last_restore") or {}
        gateway = item.get("gateway") or {}
        hook = item.get("last_hook") or {}
        persist = item.get("persist") or {}
        capture = (
            f"#{persist['last_capture_generation']} {_age(persist.get('last_capture_at'))}"
            if persist.get("last_capture_generation")
            else "-"
        )
        hook_text = f"{hook.get('event')} exit {hook.get('exit_code')} {_age(hook.get('at'))}" if hook else "-"
        health = "-" if not gateway else ("healthy" if gateway.get("healthy") else f"down ({gateway.get('status')})")
        rows.append(
            (
                item["sandbox"],
                str(item.get("container_id", "-"))[:12],
                str(restore.get("outcome", "never"))
                + (f" at {restore['failed_step']}" if restore.get("failed_step") else "")
                + (f" ({restore['reason']})" if restore.get("reason") else ""),
                str(restore.get("changed", "-")),
                _age(restore.get("at")),
                health,
                _age(gateway.get("checked_at")),
                capture,
                hook_text,
                _now(item, str(doing.get(item["sandbox"]) or ""), str(phases.get(item["sandbox"]) or "")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0
