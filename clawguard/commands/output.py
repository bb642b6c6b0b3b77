"""Human-facing lines for the CLI (logs go to stderr through structlog)."""

from __future__ import annotations

import os
import sys
from typing import TextIO

from ..redact import redact_text
from ..restore import FAILED, RestoreReport, StepReport


def step_line(index: int, total: int, step: StepReport, *, verbose: bool = False, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    width = len(str(total))
    outcome = paint(f"{step.outcome:<12}", _OUTCOME_COLOUR.get(step.outcome, "dim"), out)
    # A step of the shared batch has no time of its own: the summary line gives the batch's.
    took = "  batch" if step.batched and not step.duration else f"{step.duration:6.2f}s"
    print(f"[{index:>{width}}/{total}] {step.name:<32} {outcome} {took}", file=out, flush=True)
    if step.outcome == FAILED and step.error:
        print(f"      error: {redact_text(step.error)}", file=out)
    if verbose or step.outcome in ("would-change", FAILED):
        for change in step.changes:
            print(f"      - {redact_text(change)}", file=out)


def summary_line(report: RestoreReport, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    counts = {o: sum(s.outcome == o for s in report.steps) for o in ("ok", "changed", "would-change", "failed")}
    shown = ", ".join(f"{n} {o}" for o, n in counts.items() if n)
    verdict = "verified" if report.ok and not report.dry_run else ("dry run" if report.dry_run else "FAILED")
    phases = report.phases
    read = "read with the pod's facts" if report.read_with_facts else f"read {phases.get('read', 0):.2f}s"
    measured = (
        f" ({read}, write and read back {phases.get('write', 0):.2f}s"
        + (f", agent CLI {phases['agent']:.2f}s" if phases.get("agent", 0) >= 0.005 else "")
        + ")"
        if phases
        else ""
    )
    print(
        f"{report.sandbox} ({report.container_id[:12]}): {verdict}: {len(report.steps)} steps ({shown}) "
        f"in {report.duration:.2f}s{measured}",
        file=out,
        flush=True,
    )


def error(message: str) -> None:
    print(f"clawguard: error: {redact_text(message)}", file=sys.stderr, flush=True)


_COLOURS = {"green": "32", "red": "31", "yellow": "33", "dim": "2", "bold": "1"}
_OUTCOME_COLOUR = {"ok": "green", "changed": "yellow", "would-change": "yellow", "failed": "red"}


def colour_enabled(out: TextIO | None = None) -> bool:
    """Colour only for a terminal, and never when NO_COLOR is set (no-color.org)."""
    out = out or sys.stdout
    return "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb" and out.isatty()


def paint(text: str, colour: str, out: TextIO | None = None) -> str:
    return f"\033[{_COLOURS[colour]}m{text}\033[0m" if colour_enabled(out) else text
