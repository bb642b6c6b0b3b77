"""The restore engine: validate everything, then check → apply → check each step."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog

from . import redact
from .config import SandboxConfig
from .entries import Entry, Ids, Inspection, SourceChanged, compare, declared_paths
from .errors import ConfigError, TargetError
from .persist import Capture, CaptureRejected, read_members
from .plan import Plan, PlannedStep, build_plan
from .sandboxfs import SandboxCommandFailed, SandboxFS, UserTable, Write
from .targets import Instance, Target, make_target

log = structlog.get_logger("clawguard.restore")

OK, CHANGED, FAILED, WOULD_CHANGE = "ok", "changed", "failed", "would-change"


@dataclass
class StepReport:
    name: str
    kind: str
    outcome: str
    duration: float
    changes: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class RestoreReport:
    sandbox: str
    container_id: str
    dry_run: bool
    steps: list[StepReport] = field(default_factory=list)
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return all(s.outcome != FAILED for s in self.steps)

    @property
    def changed(self) -> int:
        return sum(s.outcome in (CHANGED, WOULD_CHANGE) for s in self.steps)

    @property
    def failed_step(self) -> str | None:
        return next((s.name for s in self.steps if s.outcome == FAILED), None)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(ok=self.ok, changed=self.changed)
        return data


Progress = Callable[[int, int, StepReport], None]


def restore(
    sandbox: SandboxConfig,
    *,
    dry_run: bool = False,
    target: Target | None = None,
    progress: Progress | None = None,
) -> RestoreReport:
    """Bring one sandbox to the state its plan declares, and verify it from inside.

    Raises InputError (nothing written) for a bad plan, archive or owner, and
    TargetError when the sandbox cannot be reached. Step failures are reported,
    not raised: check ``report.ok``.
    """
    plan = build_plan(sandbox)
    target = target or make_target(sandbox.name, sandbox.target)
    instance = target.locate()
    return run_plan(plan, target, instance, dry_run=dry_run, progress=progress)


def run_plan(
    plan: Plan,
    target: Target,
    instance: Instance,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> RestoreReport:
    started = time.monotonic()
    bound = log.bind(sandbox=plan.sandbox.name, container_id=instance.short_id)
    for entry in plan.entries:
        if entry.kind == "file" and entry.mode is not None and not entry.mode & 0o077:
            with contextlib.suppress(SourceChanged, OSError):  # the step itself reports those
                redact.remember_private_content(entry.data())  # a credential: never let it reach a log line
    fs = SandboxFS(lambda argv, stdin: target.exec(instance, argv, stdin))
    try:
        ids = resolve_owners(plan, fs.users())
        before = fs.inspect(plan.entries)
    except SandboxCommandFailed as exc:
        raise TargetError(str(exc)) from None
    declared = declared_paths(plan.entries)
    report = RestoreReport(plan.sandbox.name, instance.id, dry_run)
    bound.info("restore.start", steps=len(plan.steps), dry_run=dry_run)
    for index, planned in enumerate(plan.steps, 1):
        step_report = _run_step(planned, fs, before, ids, declared, dry_run)
        report.steps.append(step_report)
        bound.log(
            40 if step_report.outcome == FAILED else 20,
            "restore.step",
            step=step_report.name,
            kind=step_report.kind,
            outcome=step_report.outcome,
            duration=round(step_report.duration, 3),
            changes=step_report.changes or None,
            error=step_report.error,
        )
        if progress:
            progress(index, len(plan.steps), step_report)
    report.duration = time.monotonic() - started
    bound.log(
        20 if report.ok else 40,
        "restore.done",
        outcome="ok" if report.ok else "failed",
        changed=report.changed,
        duration=round(report.duration, 3),
        dry_run=dry_run,
    )
    return report


def resolve_owners(plan: Plan, users: UserTable) -> dict[Entry, Ids | None]:
    """Map every entry to numeric ids; an unknown user is a config error (exit 2)."""
    config = plan.sandbox.config
    result: dict[Entry, Ids | None] = {}
    for planned in plan.steps:
        for entry in planned.entries:
            if entry.owner is None:
                result[entry] = None
                continue
            try:
                result[entry] = users.resolve(entry.owner)
            except LookupError as exc:
                own = planned.step.values.get("owner")
                key = (
                    f"{planned.step.origin.key}.owner"
                    if own is not None and own == entry.owner
                    else f"{plan.sandbox.key}.user"
                )
                raise ConfigError(str(exc), file=config.path, key=key, line=config.lines.get(key)) from None
    return result


def _run_step(
    planned: PlannedStep,
    fs: SandboxFS,
    before: Inspection,
    ids: dict[Entry, Ids | None],
    declared: frozenset[str],
    dry_run: bool,
) -> StepReport:
    step = planned.step
    return apply_entries(step.name, step.kind, planned.entries, fs, before, ids, declared, dry_run)


def apply_entries(
    name: str,
    kind: str,
    entries: list[Entry],
    fs: SandboxFS,
    before: Inspection,
    ids: Mapping[Entry, Ids | None],
    declared: frozenset[str],
    dry_run: bool,
) -> StepReport:
    """Check → apply → check one group of entries; the report says what happened."""
    started = time.monotonic()
    report = StepReport(name, kind, OK, 0.0)

    def drifts(inspection: Inspection) -> list[Any]:
        found = (compare(e, inspection, ids[e], declared) for e in entries)
        return [d for d in found if d is not None]

    pending = drifts(before)
    report.changes = [f"{d.entry.path}: {p}" for d in pending for p in d.problems]
    if pending and dry_run:
        report.outcome = WOULD_CHANGE
    elif pending:
        unsafe = [d.entry.path for d in pending if d.unsafe]
        if unsafe:
            report.outcome = FAILED
            report.error = "refusing to write through an undeclared symlink: " + ", ".join(unsafe)
        else:
            write = Write(
                remove=[path for d in pending for path in d.remove],
                members=[(d.entry, ids[d.entry]) for d in pending if d.write],
                fixups=[(d.entry, ids[d.entry]) for d in pending],
            )
            try:
                left = drifts(fs.apply(write, entries))
            except (SandboxCommandFailed, SourceChanged) as exc:
                report.outcome, report.error = FAILED, str(exc)
            else:
                if left:
                    report.outcome = FAILED
                    report.error = "still wrong after apply: " + "; ".join(
                        f"{d.entry.path}: {p}" for d in left for p in d.problems
                    )
                else:
                    report.outcome = CHANGED
    report.duration = time.monotonic() - started
    return report


PERSISTED = "persisted state"


def restore_persisted(
    plan: Plan, target: Target, instance: Instance, capture: Capture, *, dry_run: bool = False
) -> StepReport:
    """Write one capture's paths back into a new pod, with their captured owners and modes."""
    started = time.monotonic()
    report = StepReport(PERSISTED, "persist", FAILED, 0.0)
    try:
        members = read_members(capture.read(), plan.persist, plan.sandbox.layout.root)
    except (CaptureRejected, TargetError, OSError) as exc:
        report.error = str(exc)
        return report
    fs = SandboxFS(lambda argv, stdin: target.exec(instance, argv, stdin))
    entries = [m.entry for m in members]
    try:
        before = fs.inspect(entries)
    except SandboxCommandFailed as exc:
        raise TargetError(str(exc)) from None
    ids: dict[Entry, Ids | None] = {m.entry: m.ids for m in members}
    report = apply_entries(PERSISTED, "persist", entries, fs, before, ids, declared_paths(entries), dry_run)
    report.duration = time.monotonic() - started
    log.log(
        40 if report.outcome == FAILED else 20,
        "restore.step",
        sandbox=plan.sandbox.name,
        container_id=instance.short_id,
        step=PERSISTED,
        kind="persist",
        outcome=report.outcome,
        generation=capture.generation,
        captured_from=capture.container_id[:12],
        paths=len(entries),
        duration=round(report.duration, 3),
        error=report.error,
    )
    return report
