"""Threads whose crash is one event in the journal, not a raw traceback on stderr.

Without replacing ``threading.excepthook`` for the whole process (a library must not
change how its host reports other threads' errors): each thread clawguard starts
catches what escapes its own body.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

log = structlog.get_logger("clawguard.threads")


def guarded(body: Callable[[], None], name: str) -> Callable[[], None]:
    """``body``, logging whatever escapes it as ``thread.crashed`` (traceback inside, redacted)."""

    def run() -> None:
        try:
            body()
        except Exception:
            log.exception("thread.crashed", thread=name)

    return run


def start(body: Callable[[], None], name: str) -> threading.Thread:
    """A started daemon thread running ``body`` under :func:`guarded`."""
    thread = threading.Thread(target=guarded(body, name), name=name, daemon=True)
    thread.start()
    return thread
