"""The restore engine: validate everything, then check → apply → check each step."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog

from . import redact
from .agent.cli import AgentCLI, Verdicts
from .entries import Drift, Entry, Ids, Inspection, SourceChanged, compare, declared_paths, needs_content, shown
from .errors import ConfigError, InputError, TargetError
from .persist import Capture, CaptureRejected, read_members, stale_journals
from .plan import Plan, PlannedStep
from .pod import Pod
from .sandboxfs import SandboxCommandFailed, SandboxFS, UserTable, Write, needs_root

log = structlog.get_logger("clawguard.restore")

OK, CHANGED, FAILED, WOULD_CHANGE = "ok", "changed", "failed", "would-change"


@dataclass
class StepReport:
    name: str
    kind: str
    outcome: str
    duration: float  # measured for this step alone; 0 for a step of the shared batch
    changes: list[str] = field(default_factory=list)
    error: str | None = None
    # Checked, written and read back in the plan's one exec with the other file steps: its own
    # time is not measured apart (RestoreReport.phases has the batch's).
    batched: bool = False


@dataclass
class RestoreReport:
    sandbox: str
    container_id: str
    dry_run: bool
    steps: list[StepReport] = field(default_factory=list)
    duration: float = 0.0
    # What was measured, per phase: "read" (one exec reads every planned path, and the agent
    # accepts its files), "write" (every file step written, as root where only root may and as the
    # sandbox user where it may itself: an exec each, the last reading it all back), "agent"
    # (state written through the agent's own CLI, each verified).
    phases: dict[str, float] = field(default_factory=dict)
    # The read came with the pod's facts, in the exec before the restore (PreRead): its time
    # is in that exec's, not in phases["read"].
    read_with_facts: bool = False

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


class AgentRejected(InputError):
    """The agent's own validator refused a file of the archive; nothing was written."""


def run_plan(
    plan: Plan,
    pod: Pod,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    persisted: Capture | None = None,
    verdicts: Verdicts | None = None,
) -> RestoreReport:
    """Bring ``pod`` to the state ``plan`` declares and verify it from inside.

    In order: read everything (one exec: every path, and the content of the files
    judged by it), have the agent accept what it must
    (openclaw.json), write every file step and ``persisted`` (a capture of the
    agent's own state, for a new pod) in one batch that reads them back (what the agent
    may change itself written as the agent, the rest as root in directories only root may
    write: an exec each, ``writer``), then restore
    what the agent keeps itself through its CLI, each judged by the snapshot the agent
    answers it stored. The agent is asked only what the restore does not know already:
    bytes this agent version accepted before (``verdicts``) are not validated again, and
    what the files just written and verified hold (a restored state database) answers what
    it can (``AgentState.known``).
    Raises InputError (nothing written) for an owner the pod does not have or a file
    the agent rejects, and TargetError when the pod cannot be reached.
    """
    started = time.monotonic()
    bound = log.bind(sandbox=plan.sandbox.name, container_id=pod.short_id)
    for entry in plan.entries:
        if entry.private:
            with contextlib.suppress(SourceChanged, OSError):  # the step itself reports those
                redact.remember_private_content(entry.data())  # a credential: never let it reach a log line
    fs = writer(pod)
    ids = resolve_owners(plan, pod.facts.users)
    groups = [Group(p.step.name, p.step.kind, p.entries) for p in plan.steps]
    unusable: StepReport | None = None
    if persisted is not None:
        try:
            group, member_ids = _persisted_group(plan, pod, persisted)
        except (CaptureRejected, TargetError, OSError, LookupError) as exc:
            unusable = StepReport(PERSISTED, "persist", FAILED, 0.0, error=str(exc))
        else:
            groups.append(group)
            ids.update(member_ids)
    entries = [entry for group in groups for entry in group.entries]
    try:
        before = fs.inspect(entries, contents=True)  # one exec reads everything
    except SandboxCommandFailed as exc:
        raise TargetError(str(exc)) from None
    try:  # only a file the agent rewrote while it was read is still unread
        before.contents.update(fs.read_files([e.path for e in entries if needs_content(e, before)]))
    except SandboxCommandFailed as exc:  # unread, they count as different: rewritten, and verified
        bound.warning("restore.read_failed", error=str(exc))
    declared = declared_paths(entries)
    _preflight(plan, pod, before, ids, declared, verdicts)
    report = RestoreReport(plan.sandbox.name, pod.id, dry_run, read_with_facts=fs.read_with_facts)
    report.phases["read"] = time.monotonic() - started
    bound.info(
        "restore.start",
        steps=len(groups),
        dry_run=dry_run,
        read=round(report.phases["read"], 3),
        read_with_facts=report.read_with_facts or None,
    )
    mark = time.monotonic()
    reports = apply_groups(groups, fs, before, ids, declared, dry_run) + ([unusable] if unusable else [])
    report.phases["write"] = time.monotonic() - mark
    mark = time.monotonic()
    written = _verified_files(groups, reports, dry_run)
    for planned, step_report in zip(plan.steps, reports, strict=False):
        if planned.agent_states and step_report.outcome != FAILED:
            _restore_agent_states(planned, step_report, pod, dry_run, written)
    report.phases["agent"] = time.monotonic() - mark
    for index, step_report in enumerate(reports, 1):
        report.steps.append(step_report)
        bound.log(
            40 if step_report.outcome == FAILED else 20,
            "restore.step",
            step=step_report.name,
            kind=step_report.kind,
            outcome=step_report.outcome,
            duration=round(step_report.duration, 3),
            batched=step_report.batched or None,
            changes=step_report.changes or None,
            error=step_report.error,
        )
        if progress:
            progress(index, len(reports), step_report)
    report.duration = time.monotonic() - started
    bound.log(
        20 if report.ok else 40,
        "restore.done",
        outcome="ok" if report.ok else "failed",
        changed=report.changed,
        duration=round(report.duration, 3),
        **{phase: round(seconds, 3) for phase, seconds in report.phases.items()},
        dry_run=dry_run,
    )
    return report


def writer(pod: Pod) -> SandboxFS:
    """``pod``'s files, for a restore: read as root, and written as the sandbox user wherever
    the sandbox user may write them itself; root writes only where nobody else can (Write)."""
    fs = pod.fs()
    try:
        agent = pod.ids
    except LookupError:  # no such user in this pod: root's rules alone (every write is checked)
        return fs.writing_as(None, None, root=pod.target.runs_as_root)
    return fs.writing_as(agent, lambda argv, stdin: pod.exec(argv, stdin, as_user=True), root=pod.target.runs_as_root)


def _preflight(
    plan: Plan,
    pod: Pod,
    before: Inspection,
    ids: Mapping[Entry, Ids | None],
    declared: frozenset[str],
    verdicts: Verdicts | None = None,
) -> None:
    """Ask the agent to accept what a step is about to write (openclaw.json) before any write."""
    for planned in plan.steps:
        if not planned.preflights or not _drifts(planned.entries, before, ids, declared):
            continue  # nothing would be written: the running file is the archive's already
        objections = preflight_objections(planned, pod, verdicts)
        if objections:
            raise objections[0]


def preflight_objections(planned: PlannedStep, pod: Pod, verdicts: Verdicts | None = None) -> list[AgentRejected]:
    """What the agent in ``pod`` says against ``planned``'s files, as errors to raise or show
    (what this agent version accepted before, ``verdicts``, is not asked again)."""
    found = []
    for check in planned.preflights:
        cli = pod.agent()
        cli.verdicts = verdicts
        objections = check.objections(cli)
        if objections:
            agent = f"OpenClaw {pod.facts.version}" if pod.facts.version else "the agent"
            found.append(
                AgentRejected(
                    f"{agent} rejects it: " + "; ".join(objections) + " (nothing was written; the running "
                    "config stays)",
                    file=check.source,
                )
            )
    return found


def _verified_files(groups: list[Group], reports: list[StepReport], dry_run: bool) -> Callable[[str], bytes | None]:
    """What the pod's files hold now, where the restore knows it byte for byte: the files of
    every group written and verified (or found as wanted), by path; None for any other."""
    done = (OK,) if dry_run else (OK, CHANGED)  # a dry run wrote nothing: only what was found as wanted
    files = {
        entry.path: entry
        for group, report in zip(groups, reports, strict=False)
        if report.outcome in done
        for entry in group.entries
        # An equivalent file may hold other bytes than the entry's (the agent's own keys).
        if entry.kind == "file" and entry.equivalent is None
    }

    def written(path: str) -> bytes | None:
        entry = files.get(path)
        if entry is None:
            return None
        try:
            return entry.data()
        except (SourceChanged, OSError):
            return None

    return written


def _restore_agent_states(
    planned: PlannedStep,
    report: StepReport,
    pod: Pod,
    dry_run: bool,
    written: Callable[[str], bytes | None] = lambda _path: None,
) -> None:
    """Read each state through the agent's CLI, unless the files just written say what it is
    (``written``); write it when it differs; judge what the agent answers it stored."""
    started = time.monotonic()
    try:
        cli: AgentCLI | None = None
        for state in planned.agent_states:
            problems = state.known(written)
            if problems is not None:
                log.info(
                    "agent.known",
                    container_id=pod.short_id,
                    question=state.label,
                    answer="; ".join(problems) or "as wanted",
                    why="the restored files say",
                )
            else:
                cli = cli or pod.agent()
                problems = state.problems(cli)
            if not problems:
                continue
            report.changes += problems
            if dry_run:
                report.outcome = WOULD_CHANGE
                continue
            cli = cli or pod.agent()
            left = state.write(cli)  # what the agent answers it stored
            if left:
                report.outcome, report.error = FAILED, "still wrong after apply: " + "; ".join(left)
                return
            report.outcome = CHANGED
    except (TargetError, LookupError) as exc:
        report.outcome, report.error = FAILED, str(exc)
    finally:
        report.duration += time.monotonic() - started


def resolve_owners(plan: Plan, users: UserTable) -> dict[Entry, Ids | None]:
    """Map every entry to numeric ids; an unknown user is a config error (exit 2)."""
    config = plan.sandbox.source
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
    """Check every group, apply all of them in one batch (SandboxFS.apply: what the sandbox
    user may change itself as the sandbox user, the rest as root, each in one exec), and
    verify each from the read-back that comes with the batch's last exec.

    A group whose write cannot be made safely (Write.refused), or needs root on a target that
    is never root, fails before anything is written, and is left out of the batch. If the
    batch fails, the groups are applied one by one instead, so that the report names the step
    that really failed.
    """
    reports: list[StepReport] = []
    pending: list[tuple[Group, StepReport, list[Drift]]] = []
    for group in groups:
        report = StepReport(group.name, group.kind, OK, 0.0, batched=True)
        drifts = _drifts(group.entries, before, ids, declared)
        report.changes = [f"{shown(d.entry.path)}: {p}" for d in drifts for p in d.problems]
        reports.append(report)
        if not drifts:
            continue
        if dry_run:
            report.outcome = WOULD_CHANGE
        elif unsafe := [d.entry.path for d in drifts if d.unsafe]:
            report.outcome = FAILED
            report.error = "refusing to write through an undeclared symlink: " + ", ".join(map(shown, unsafe))
        elif (write := _write(drifts, ids, before, fs)).refused:
            report.outcome, report.error = FAILED, "; ".join(write.refused.values())
        elif write.needs_root and not fs.root:
            report.outcome, report.error = FAILED, str(needs_root(write.root_paths()))
        else:
            pending.append((group, report, drifts))
    if pending:
        write = _write([d for _, _, drifts in pending for d in drifts], ids, before, fs)
        verify = [entry for group, _, _ in pending for entry in group.entries]
        try:
            after = fs.apply(write, verify)
        except (SandboxCommandFailed, SourceChanged):
            for group, report, drifts in pending:  # find out which step it was: each on its own, timed
                started = time.monotonic()
                _apply_one(group, report, drifts, fs, before, ids, declared)
                report.duration, report.batched = time.monotonic() - started, False
        else:
            for group, report, _ in pending:
                _verify(group, report, after, ids, declared)
    return reports


def _drifts(
    entries: list[Entry], inspection: Inspection, ids: Mapping[Entry, Ids | None], declared: frozenset[str]
) -> list[Drift]:
    found = (compare(e, inspection, ids[e], declared) for e in entries)
    return [d for d in found if d is not None]


def _write(drifts: list[Drift], ids: Mapping[Entry, Ids | None], before: Inspection, fs: SandboxFS) -> Write:
    """What ``drifts`` need, planned from the read ``before`` for ``fs``'s sandbox user."""
    return Write(
        remove=[path for d in drifts for path in d.remove],
        members=[(d.entry, ids[d.entry]) for d in drifts if d.write],
        fixups=[(d.entry, ids[d.entry]) for d in drifts],
        agent=fs.agent,
        seen=before,
    )


def _verify(
    group: Group, report: StepReport, after: Inspection, ids: Mapping[Entry, Ids | None], declared: frozenset[str]
) -> None:
    left = _drifts(group.entries, after, ids, declared)
    if left:
        report.outcome = FAILED
        report.error = "still wrong after apply: " + "; ".join(
            f"{shown(d.entry.path)}: {p}" for d in left for p in d.problems
        )
    else:
        report.outcome = CHANGED


def _apply_one(
    group: Group,
    report: StepReport,
    drifts: list[Drift],
    fs: SandboxFS,
    before: Inspection,
    ids: Mapping[Entry, Ids | None],
    declared: frozenset[str],
) -> None:
    try:
        after = fs.apply(_write(drifts, ids, before, fs), group.entries)
    except (SandboxCommandFailed, SourceChanged) as exc:
        report.outcome, report.error = FAILED, str(exc)
    else:
        _verify(group, report, after, ids, declared)


PERSISTED = "persisted state"


def _persisted_group(plan: Plan, pod: Pod, capture: Capture) -> tuple[Group, dict[Entry, Ids | None]]:
    """One capture's paths as a group of the write, with their captured owners and modes
    (the sandbox user's mapped to its ids in this pod). Raises CaptureRejected, TargetError
    or OSError when the capture cannot be used."""
    entries, ids = persisted_entries(plan, capture, pod.ids)
    log.info(
        "restore.persisted",
        sandbox=plan.sandbox.name,
        container_id=pod.short_id,
        generation=capture.generation,
        captured_from=capture.container_id[:12],
        paths=sum(entry.kind != "absent" for entry in entries),
    )
    return Group(PERSISTED, "persist", entries), ids


def persisted_entries(plan: Plan, capture: Capture, now: Ids | None) -> tuple[list[Entry], dict[Entry, Ids | None]]:
    """What writing ``capture`` back means for ``plan``: its entries (and the stale journals
    beside its databases), with the ids each is owned by, the sandbox user's as ``now``.
    Raises CaptureRejected or OSError."""
    members = read_members(
        capture.read(), plan.persist, plan.layout.root, (capture.owner, now) if capture.owner and now else None
    )
    entries = [m.entry for m in members] + stale_journals(members)
    ids: dict[Entry, Ids | None] = {m.entry: m.ids for m in members}
    ids.update((entry, None) for entry in entries if entry.kind == "absent")
    return entries, ids
