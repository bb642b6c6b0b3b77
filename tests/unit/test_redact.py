from __future__ import annotations

import io

import structlog

from clawguard import log
from clawguard.redact import redact_text, redact_value

TOKEN = "s3cr3t-T0ken-abcdef123456"


def test_patterns() -> None:
    assert TOKEN not in redact_text(f"https://user:{TOKEN}@example.com/x")
    assert TOKEN not in redact_text(f"Authorization: Bearer {TOKEN}")
    assert TOKEN not in redact_text(f"GET /api?access_token={TOKEN}&x=1")
    assert TOKEN not in redact_text(f"TELEGRAM_BOT_TOKEN={TOKEN}")
    assert "bot***" in redact_text("https://api.telegram.org/bot123456789:AAFakeFakeFakeFakeFakeFake_x/getUpdates")
    assert redact_text("nothing secret here") == "nothing secret here"


def test_keys() -> None:
    assert redact_value("api_key", TOKEN) == "***"
    assert redact_value("env", {"GITHUB_TOKEN": TOKEN, "HOME": "/root"}) == {"GITHUB_TOKEN": "***", "HOME": "/root"}


def test_log_lines_are_redacted_and_single_line(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    out = io.StringIO()
    log.configure("info", out)
    structlog.get_logger().error("restore.step", sandbox="a", error=f"failed\nurl=https://u:{TOKEN}@h", token=TOKEN)
    text = out.getvalue()
    assert TOKEN not in text
    assert text.count("\n") == 1
    assert text.startswith("<3>level=error event=restore.step sandbox=a")


def test_remembered_secrets_are_bounded_and_matched_in_one_pass() -> None:
    """The remembered secrets are bounded (the oldest dropped) and a log line is matched
    against all of them at once, longest first."""
    from clawguard.redact import MASK, Secrets

    secrets = Secrets(limit=3)
    secrets.remember("alpha-secret-1", "alpha-secret-1-longer", "bravo-secret-2")
    assert secrets.mask("x alpha-secret-1-longer y alpha-secret-1 z") == f"x {MASK} y {MASK} z"  # longest first
    secrets.remember("charlie-secret-3", "delta-secret-44")
    assert len(secrets) == 3  # the oldest were dropped
    assert secrets.mask("alpha-secret-1 delta-secret-44") == f"alpha-secret-1 {MASK}"
    secrets.remember("short")  # too short to be told from a word: never masked
    assert secrets.mask("short") == "short"
