"""Outcome hooks: run the user's commands after a restore, a failure or a drift repair.

A hook is an argument list (no shell), gets the outcome in environment variables,
runs in the background with a timeout, and can never block or fail a restore.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Mapping
from typing import Any

import structlog

from .schema import Field, Int, ListOf, Record, Str
from .state import StateStore

log = structlog.get_logger("clawguard.hooks")

EVENTS = ("on_restored", "on_failed", "on_drift", "on_started")


_EXAMPLES = {
    "on_restored": '[notify-send, "sandbox restored"]',
    "on_failed": "[/home/me/bin/page-me, clawguard]",
    "on_drift": "[logger, -t, clawguard, drift]",
    "on_started": "[logger, -t, clawguard, sandbox started]",
    "timeout": "30",
}
_DOCS = {
    "on_restored": "Argument list run after a restore that changed something.",
    "on_failed": "Argument list run after a restore or gateway start failed.",
    "on_drift": "Argument list run after a verify pass repaired drift.",
    "on_started": "Argument list run when clawguard asked the platform to start a sandbox it found stopped "
    "(OpenShell 0.1.x: ERROR, STOPPED or COMPLETED); CLAWGUARD_OUTCOME is requested, refused or recreated.",
    "timeout": "Seconds a hook may run before it is killed.",
}


def _schema(inherit: bool) -> Record:
    """Global hooks default to none; a sandbox's default to the global ones (None)."""
    fields = {
        event: Field(ListOf(Str()), _DOCS[event], None if inherit else [], example=_EXAMPLES[event]) for event in EVENTS
    }
    fields["timeout"] = Field(
        Int(minimum=1, maximum=3600), _DOCS["timeout"], None if inherit else 30, example=_EXAMPLES["timeout"]
    )
    return Record(fields)


HOOKS_SCHEMA = _schema(inherit=False)
SANDBOX_HOOKS_SCHEMA = _schema(inherit=True)


def merged(global_hooks: Mapping[str, Any], sandbox_hooks: Mapping[str, Any]) -> dict[str, Any]:
    """A sandbox's own setting replaces the global one; unset ones inherit it."""
    return {key: global_hooks[key] if sandbox_hooks.get(key) is None else sandbox_hooks[key] for key in global_hooks}


def fire(
    hooks: Mapping[str, Any],
    event: str,
    env: Mapping[str, str],
    sandbox: str,
    store: StateStore | None = None,
    wait: bool = False,
) -> threading.Thread | None:
    """Start the hook for ``event`` in a background thread, if one is configured."""
    argv = list(hooks.get(event) or [])
    if not argv:
        return None
    thread = threading.Thread(
        target=_run,
        args=(argv, event, dict(env), int(hooks.get("timeout", 30)), sandbox, store or StateStore()),
        daemon=True,
    )
    thread.start()
    if wait:
        thread.join()
    return thread


def _run(argv: list[str], event: str, env: dict[str, str], timeout: int, sandbox: str, store: StateStore) -> None:
    started = time.monotonic()
    try:
        done = subprocess.run(
            argv, env={**os.environ, **env}, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
        )
        code: int | str = done.returncode
        detail = done.stderr.decode(errors="replace").strip()[-300:]
    except subprocess.TimeoutExpired:
        code, detail = "timeout", f"killed after {timeout}s"
    except OSError as exc:
        code, detail = "error", str(exc)
    duration = round(time.monotonic() - started, 3)
    failed = code != 0
    log.log(
        40 if failed else 20,
        "hook.done",
        sandbox=sandbox,
        hook=event,
        outcome="failed" if failed else "ok",
        exit_code=code,
        duration=duration,
        error=detail if failed else None,
    )
    record = {"event": event, "exit_code": code, "at": time.time(), "duration": duration}
    with contextlib.suppress(OSError):  # status is informative; a hook's result must never break anything
        store.update_when_free(sandbox, timeout=60, last_hook=record)
