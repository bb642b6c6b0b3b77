"""Keep secrets out of logs and error messages.

Two nets. Patterns catch what looks like a secret wherever it appears (URL
passwords, bearer tokens, ``*_TOKEN=`` assignments, Telegram bot tokens). And
secrets clawguard has *seen* are remembered and masked verbatim wherever they
turn up later: values of secret-named environment variables and config keys,
what the patterns find in the config, and the token-like words of every file
the plan writes private (credentials). So a hook that echoes ``$TELEGRAM_BOT_TOKEN``
or a traceback quoting a credential still prints ``***``.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

MASK = "***"

_SECRET_KEY = re.compile(r"(?i)(token|secret|passw|api[_-]?key|authorization|credential|cookie)")
# Each pattern names the secret part ``secret``, so that ``harvest`` can remember it.
_PATTERNS = [
    # userinfo in URLs: https://user:pass@host
    (re.compile(r"(?i)(?P<scheme>[a-z][a-z0-9+.-]*://)[^/\s:@]+:(?P<secret>[^/\s@]+)@"), rf"\g<scheme>{MASK}@"),
    # Authorization headers
    (re.compile(r"(?i)\b(?P<kind>bearer|basic|token)\s+(?P<secret>[A-Za-z0-9._~+/=-]{8,})"), rf"\g<kind> {MASK}"),
    # query parameters and env assignments whose name says secret
    (
        re.compile(
            r"(?i)\b(?P<name>[A-Z0-9_.-]*(?:token|secret|passw(?:or)?d|api[_-]?key|auth)[A-Z0-9_.-]*)="
            r"(?P<secret>[^&\s'\"]+)"
        ),
        rf"\g<name>={MASK}",
    ),
    # Telegram bot tokens in API paths: /bot123456:ABC.../
    (re.compile(r"\bbot(?P<secret>\d{6,}:[A-Za-z0-9_-]{20,})"), f"bot{MASK}"),
]


# Shorter strings would mask ordinary words; real tokens are longer.
MIN_SECRET = 8
_WORD = re.compile(r"[A-Za-z0-9_\-:.+/=~]{16,}")
_known: set[str] = set()
_known_sorted: list[str] = []
_lock = threading.Lock()


def remember(*secrets: str) -> None:
    """Mask these exact strings in every later log line and message."""
    global _known_sorted
    fresh = {s for s in secrets if isinstance(s, str) and len(s.strip()) >= MIN_SECRET} - _known
    if fresh:
        with _lock:
            _known.update(fresh)
            _known_sorted = sorted(_known, key=len, reverse=True)  # longest first: no partial masks


def harvest(text: str) -> None:
    """Remember what the patterns would mask in ``text`` (e.g. a config value)."""
    for pattern, _ in _PATTERNS:
        for match in pattern.finditer(text):
            remember(match.group("secret"))


def remember_environment(environ: Mapping[str, str] | None = None) -> None:
    for name, value in (os.environ if environ is None else environ).items():
        if _SECRET_KEY.search(name):
            remember(value)


def remember_private_content(data: bytes) -> None:
    """A file written private (a credential): every token-like word in it is a secret."""
    remember(*_WORD.findall(data.decode("utf-8", errors="replace")))


def remember_config_values(items: Iterable[tuple[str, Any]]) -> None:
    for key, value in items:
        if isinstance(value, str):
            if _SECRET_KEY.search(key):
                remember(value)
            harvest(value)


def redact_text(text: str) -> str:
    for secret in _known_sorted:
        if secret in text:
            text = text.replace(secret, MASK)
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
