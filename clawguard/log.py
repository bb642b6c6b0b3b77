"""structlog set-up: one event per line, logfmt, journald priorities when under systemd."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from . import redact

# syslog priorities, which journald reads from a "<N>" line prefix (sd-daemon(3)).
_PRIORITY = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}


def _journald_prefix(_logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event_dict["_prefix"] = f"<{_PRIORITY.get(event_dict.get('level', method), 6)}>"
    return event_dict


class _Renderer:
    def __init__(self, journald: bool) -> None:
        self._logfmt = structlog.processors.LogfmtRenderer(
            key_order=["level", "event", "sandbox", "container_id", "step", "outcome", "duration"],
            drop_missing=True,
            bool_as_flag=False,
        )
        self._journald = journald

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> str:
        prefix = event_dict.pop("_prefix", "")
        event_dict = {k: v for k, v in event_dict.items() if v is not None}
        line = self._logfmt(logger, method, event_dict).replace("\n", "\\n")
        return f"{prefix}{line}" if self._journald else line


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog for the CLI and the daemon. Safe to call more than once."""
    # journald sets JOURNAL_STREAM for services whose stderr it reads (systemd.exec(5)).
    journald = "JOURNAL_STREAM" in os.environ
    redact.remember_environment()  # a hook or an error that echoes $TELEGRAM_BOT_TOKEN prints ***
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
    ]
    if not journald:  # journald stamps lines itself
        processors.append(structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"))
    # A traceback becomes one escaped field of its event, and is redacted like the rest.
    processors += [structlog.processors.format_exc_info, redact.processor]
    if journald:
        processors.append(_journald_prefix)
    processors.append(_Renderer(journald))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
