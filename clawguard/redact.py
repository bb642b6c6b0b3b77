"""Keep secrets out of logs and error messages."""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

MASK = "***"

_SECRET_KEY = re.compile(r"(?i)(token|secret|passw|api[_-]?key|authorization|credential|cookie)")
_PATTERNS = [
    # userinfo in URLs: https://user:pass@host
    (re.compile(r"(?i)([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@"), rf"\1{MASK}@"),
    # Authorization headers
    (re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {MASK}"),
    # query parameters and env assignments whose name says secret
    (
        re.compile(r"(?i)\b([A-Z0-9_.-]*(?:token|secret|passw(?:or)?d|api[_-]?key|auth)[A-Z0-9_.-]*)=([^&\s'\"]+)"),
        rf"\1={MASK}",
    ),
    # Telegram bot tokens in API paths: /bot123456:ABC.../
    (re.compile(r"\bbot\d{6,}:[A-Za-z0-9_-]{20,}"), f"bot{MASK}"),
]


def redact_text(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_value(key: str, value: Any) -> Any:
    if _SECRET_KEY.search(key) and value not in (None, "", [], {}):
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, list):
        return [redact_value("", v) for v in value]
    if isinstance(value, dict):
        return {k: redact_value(str(k), v) for k, v in value.items()}
    return value


def processor(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the last step before rendering."""
    for key in list(event_dict):
        event_dict[key] = redact_value(key, event_dict[key]) if key != "event" else redact_text(str(event_dict[key]))
    return event_dict
