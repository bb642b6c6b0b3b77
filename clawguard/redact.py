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
from collections import OrderedDict
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


class Secrets:
    """The secrets seen so far, masked verbatim in every later line.

    Bounded: the ``limit`` most recently seen are kept (a credential rotated a thousand
    times does not grow the daemon for ever). Matched by one compiled alternation,
    longest first, so a log line costs one regex pass however many there are.
    """

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def remember(self, *secrets: str) -> None:
        fresh = [s for s in secrets if isinstance(s, str) and len(s.strip()) >= MIN_SECRET]
        if not fresh:
            return
        with self._lock:
            changed = False
            for secret in fresh:
                if secret in self._seen:
                    self._seen.move_to_end(secret)
                else:
                    self._seen[secret] = None
                    changed = True
            while len(self._seen) > self.limit:
                self._seen.popitem(last=False)
                changed = True
            if changed:
                ordered = sorted(self._seen, key=len, reverse=True)  # longest first: no partial masks
                self._pattern = re.compile("|".join(re.escape(secret) for secret in ordered))

    def mask(self, text: str) -> str:
        pattern = self._pattern
        return pattern.sub(MASK, text) if pattern is not None else text

    def __len__(self) -> int:
        return len(self._seen)


SECRETS = Secrets()


def remember(*secrets: str) -> None:
    """Mask these exact strings in every later log line and message."""
    SECRETS.remember(*secrets)


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
    text = SECRETS.mask(text)
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
