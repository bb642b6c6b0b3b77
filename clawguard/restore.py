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
from .entries import Drift, Entry, Ids, Inspection, SourceChanged, compare, declared_paths
from .errors import ConfigError, TargetError
from .persist import Capture, CaptureRejected, read_members
from .plan import Plan, build_plan
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
        users, before = fs.users_and_inspect(plan.entries)  # one exec reads everything
    except SandboxCommandFailed as exc:
        raise TargetError(str(exc)) from None
    ids = resolve_owners(plan, users)
    declared = declared_paths(plan.entries)
    report = RestoreReport(plan.sandbox.name, instance.id, dry_run)
    bound.info("restore.start", steps=len(plan.steps), dry_run=dry_run)
    groups = [Group(p.step.name, p.step.kind, p.entries) for p in plan.steps]
    for index, step_report in enumerate(apply_groups(groups, fs, before, ids, declared, dry_run), 1):
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


@dataclass(frozen=True)
class Group:
    """Entries checked and reported together: one step of the plan, or the persisted state."""

    name: str
    kind: str
    entries: list[Entry]


def apply_groups(
    groups: list[Group],
    fs: SandboxFS,
    before: Inspection,
    ids: Mapping[Entry, Ids | None],
    declared: frozenset[str],
    dry_run: bool,
) -> list[StepReport]:
    """Check every group, apply all of them in one exec (one tar stream, then the
    fix-ups, in plan order), and verify each from the read-back of that same exec.

    If the batch fails, the groups are applied one by one instead, so that the
    report names the step that really failed.
    """
    started = time.monotonic()
    reports: list[StepReport] = []
    pending: list[tuple[Group, StepReport, list[Drift]]] = []
    for group in groups:
        report = StepReport(group.name, group.kind, OK, 0.0)
        drifts = _drifts(group.entries, before, ids, declared)
        report.changes = [f"{d.entry.path}: {p}" for d in drifts for p in d.problems]
        reports.append(report)
        if not drifts:
            continue
        if dry_run:
            report.outcome = WOULD_CHANGE
        elif unsafe := [d.entry.path for d in drifts if d.unsafe]:
            report.outcome = FAILED
            report.error = "refusing to write through an undeclared symlink: " + ", ".join(unsafe)
        else:
            pending.append((group, report, drifts))
    if pending:
        write = _write([d for _, _, drifts in pending for d in drifts], ids)
        verify = [entry for group, _, _ in pending for entry in group.entries]
        try:
            after = fs.apply(write, verify)
        except (SandboxCommandFailed, SourceChanged):
            for group, report, drifts in pending:  # find out which step it was
                _apply_one(group, report, drifts, fs, ids, declared)
        else:
            for group, report, _ in pending:
                _verify(group, report, after, ids, declared)
    elapsed = time.monotonic() - started
    for report in reports:  # the checks and the write were shared: split their time evenly
        report.duration = elapsed / len(reports)
    return reports


def _drifts(
    entries: list[Entry], inspection: Inspection, ids: Mapping[Entry, Ids | None], declared: frozenset[str]
) -> list[Drift]:
    found = (compare(e, inspection, ids[e], declared) for e in entries)
    return [d for d in found if d is not None]


def _write(drifts: list[Drift], ids: Mapping[Entry, Ids | None]) -> Write:
    return Write(
        remove=[path for d in drifts for path in d.remove],
        members=[(d.entry, ids[d.entry]) for d in drifts if d.write],
        fixups=[(d.entry, ids[d.entry]) for d in drifts],
    )


def _verify(
    group: Group, report: StepReport, after: Inspection, ids: Mapping[Entry, Ids | None], declared: frozenset[str]
) -> None:
    left = _drifts(group.entries, after, ids, declared)
    if left:
        report.outcome = FAILED
        report.error = "still wrong after apply: " + "; ".join(f"{d.entry.path}: {p}" for d in left for p in d.problems)
    else:
        report.outcome = CHANGED


def _apply_one(
    group: Group,
    report: StepReport,
    drifts: list[Drift],
    fs: SandboxFS,
    ids: Mapping[Entry, Ids | None],
    declared: frozenset[str],
) -> None:
    try:
        after = fs.apply(_write(drifts, ids), group.entries)
    except (SandboxCommandFailed, SourceChanged) as exc:
        report.outcome, report.error = FAILED, str(exc)
    else:
        _verify(group, report, after, ids, declared)


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
    [report] = apply_groups([Group(PERSISTED, "persist", entries)], fs, before, ids, declared_paths(entries), dry_run)
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
