"""One full recovery of a sandbox: restore, start the gateway, confirm it is healthy.

``clawguard restore`` and the daemon both call ``converge``, so the one-shot
command and the always-on service do exactly the same thing, under the same lock.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import structlog

from . import hooks, persist
from .agent import SandboxFacts, probe
from .agent.cli import VERDICTS_FILE, Verdicts
from .backoff import Waitable
from .config import SandboxConfig
from .context import SandboxContext
from .errors import InputError, SandboxGone, TargetError
from .gateway import GatewayError, Health, Located
from .plan import Plan, build_plan
from .pod import Pod
from .restore import CHANGED, FAILED, PERSISTED, Progress, RestoreReport, persisted_entries, run_plan
from .sandboxfs import SandboxCommandFailed, inspect_args
from .targets import Instance, Target

log = structlog.get_logger("clawguard.converge")

# A pod replaced while we work is retried on the new pod; more than this many
# replacements in one go means something else is wrong.
MAX_POD_CHANGES = 5


@dataclass
class Convergence:
    sandbox: str
    container_id: str
    report: RestoreReport
    gateway: Health | None
    gateway_error: str | None = None
    plan: Plan | None = None  # the plan made for this pod (it carries the pod's facts)

    @property
    def ok(self) -> bool:
        gateway_ok = self.gateway is None or self.gateway.healthy
        return self.report.ok and gateway_ok and self.gateway_error is None

    def status_line(self) -> str:
        verb = "checked" if self.report.dry_run else "restored"
        line = f"{self.sandbox}: {verb} {len(self.report.steps)} steps in {self.report.duration:.1f}s"
        if not self.report.ok:
            line = f"{self.sandbox}: restore FAILED at {self.report.failed_step}"
        if self.gateway_error:
            line += f", gateway failed: {self.gateway_error}"
        elif self.gateway is not None:
            line += ", gateway healthy" if self.gateway.healthy else f", gateway unhealthy ({self.gateway.status})"
        return line


def open_pod(
    sandbox: SandboxConfig,
    target: Target,
    instance: Instance,
    known: SandboxFacts | None = None,
    first_look: Callable[[], list[str]] | None = None,
) -> Pod:
    """The pod ``instance`` with its facts: ``known`` when they are this pod's, else read now,
    with an inspection of ``first_look()``'s inspector arguments in the same exec (kept for
    the restore's first read, which uses it only if it asks for exactly those)."""
    if known is not None and known.container_id == instance.id:
        return Pod(target, instance, known, sandbox.user, sandbox.agent.command)
    try:
        known, preread = probe(
            target,
            instance,
            user=sandbox.user,
            split_dirs=sandbox.layout.split_dirs(),
            command=sandbox.agent.command,
            version=sandbox.agent.pinned_version,
            inspect=first_look() if first_look else (),
        )
    except SandboxCommandFailed as exc:
        raise TargetError(str(exc)) from None
    log.info("sandbox.facts", sandbox=sandbox.name, container_id=instance.short_id, agent=known.describe())
    return Pod(target, instance, known, sandbox.user, sandbox.agent.command, preread)


# A capture larger than this is not read a second time to guess a restore's first read:
# the exec it would save costs less than reading it.
FIRST_LOOK_MAX_CAPTURE = 8 << 20


def first_look(ctx: SandboxContext, plan: Plan | None, latest: Callable[[], persist.Capture | None]) -> list[str]:
    """The inspector's arguments a restore of a new pod will most likely start with: those
    of ``plan`` (made for the last pod, or else from the config alone) and of the capture
    it would write back (``latest()``). They are read with the pod's facts, in one exec;
    the restore uses that read only if the plan made for the facts asks for exactly the
    same paths (a pod of another image or agent version does not)."""
    try:
        guess = plan if plan is not None else build_plan(ctx.config)
    except InputError:
        return []  # the plan for the pod will say what is wrong
    entries = guess.entries
    capture = latest() if guess.persist else None
    if capture is not None and capture.size <= FIRST_LOOK_MAX_CAPTURE:
        with contextlib.suppress(persist.CaptureRejected, TargetError, OSError):
            entries += persisted_entries(guess, capture, None)[0]
    return inspect_args(entries, contents=True)


def plan_for(sandbox: SandboxConfig, pod: Pod, plan: Plan | None = None) -> Plan:
    """``plan`` when it was made for this pod, else the full plan for it (validated whole)."""
    if plan is not None and plan.facts is not None and plan.facts.container_id == pod.id:
        return plan
    return build_plan(sandbox, pod.facts)


def verdicts_for(ctx: SandboxContext, pod: Pod) -> Verdicts | None:
    """What the agent in ``pod`` accepted before, kept in the sandbox's state directory and
    named for its version (none when the version is not known)."""
    if pod.facts.version is None:
        return None
    return Verdicts(ctx.store.sandbox_dir(ctx.name) / VERDICTS_FILE, pod.facts.version_text)


def _nothing() -> None:
    pass


def _never(_container_id: str) -> bool:
    return False


@dataclass(frozen=True)
class Callbacks:
    """How a caller follows a recovery (none of them changes what it does).

    ``replaced(container_id)`` is asked after the restore and while waiting for the
    gateway: when it says the pod was replaced, the run is abandoned and started over on
    the new pod. ``heartbeat`` is called whenever work goes on; ``restored`` once a
    restore has been written and verified, before the gateway is started or waited for;
    ``on_wait(what)`` while the sandbox's lock is held by another clawguard.
    """

    progress: Progress | None = None
    heartbeat: Callable[[], None] = _nothing
    restored: Callable[[], None] = _nothing
    replaced: Callable[[str], bool] = _never
    on_wait: Callable[[str], None] | None = None


@dataclass
class Restored:
    """The restore half of a recovery, done: the pod and its report, and what the gateway
    half needs. Nothing is recorded yet (:func:`conclude` does that)."""

    instance: Instance
    pod: Pod
    plan: Plan
    report: RestoreReport
    restart_for: list[str]  # changed steps the gateway reads only at start
    fresh: bool  # a replaced pod that had to be restored: it never runs a gateway

    def outcome(self, sandbox: str, health: Health | None, gateway_error: str | None) -> Convergence:
        return Convergence(sandbox, self.instance.id, self.report, health, gateway_error, self.plan)


def restore_once(
    ctx: SandboxContext,
    *,
    plan: Plan | None = None,
    facts: SandboxFacts | None = None,
    dry_run: bool = False,
    reason: str = "manual",
    lock_timeout: float | None = None,
    callbacks: Callbacks = Callbacks(),
    located: Instance | None = None,
    capture_first: bool = True,
) -> Restored:
    """One restore of the sandbox's pod (``located``, or the one found now), under the
    sandbox's lock, which is released before it returns: the gateway is brought up
    without it, so that a capture or a status never waits for a gateway's start.
    ``capture_first``: capture the agent's state before writing (a re-sync of archive
    steps, which never include a persisted path, goes without: it is on the way of a
    SOUL.md edit to the agent, and the interval captures go on).

    Raises SandboxGone when the pod went away meanwhile (the caller starts over)."""
    sandbox, target = ctx.config, ctx.target
    with ctx.store.lock(sandbox.name, timeout=lock_timeout, on_wait=callbacks.on_wait):
        instance, hinted = located or target.locate(), located is not None
        # Chosen once (it reads and checksums the capture): the first look and the restore share it.
        latest = functools.cache(partial(_latest_capture, ctx, instance.id))
        # A replaced pod most likely needs its gateway started: the start command's session
        # is opened now, while the facts are read and the restore runs, so that the start
        # goes out the moment the files are written (Gateway.prime).
        primed = reason == POD_REPLACED and not dry_run and bool(sandbox.gateway["enabled"])
        if primed:
            ctx.gateway.prime(Located(target, instance))
        try:
            try:
                pod = open_pod(sandbox, target, instance, facts, partial(first_look, ctx, plan, latest))
            except TargetError as exc:
                if hinted:  # gone since the caller located it: find the pod that is there now
                    raise SandboxGone(f"the located pod cannot be read ({exc})") from None
                raise
            this_plan = plan_for(sandbox, pod, plan)
            if this_plan.persist and not dry_run and capture_first:
                capture_before_restore(ctx, this_plan, pod)
            capture = _capture_to_restore(ctx, this_plan, pod, dry_run, latest)
            callbacks.heartbeat()
            report = run_plan(
                this_plan,
                pod,
                dry_run=dry_run,
                progress=callbacks.progress,
                persisted=capture,
                verdicts=verdicts_for(ctx, pod),
            )
            callbacks.restored()
            callbacks.heartbeat()
            if callbacks.replaced(pod.id):
                raise SandboxGone("the pod was replaced during the restore")
            if capture is not None and not dry_run and _persisted_ok(report):
                persist.set_persist_state(
                    ctx.store,
                    sandbox.name,
                    live_pod=pod.id,
                    restored={"generation": capture.generation, "into": pod.id, "at": time.time()},
                )
        except BaseException:
            if primed:
                ctx.gateway.unprime()
            raise
    # A change the gateway only reads at start (SOUL.md) restarts a running one.
    restart = [
        r.name
        for p, r in zip(this_plan.steps, report.steps, strict=False)
        if r.outcome == CHANGED and p.step.restart_gateway
    ]
    # A replaced pod that had to be restored was wiped, and a new pod never runs a gateway
    # (NemoClaw #2042): start it without a health probe that cannot succeed. (The start is
    # in the background: a gateway that does run just stays healthy.)
    fresh = reason == POD_REPLACED and report.changed > 0
    if primed and not (fresh and report.ok):
        ctx.gateway.unprime()  # no start follows at once: a probe comes first, or nothing
    return Restored(instance, pod, this_plan, report, restart, fresh)


def log_gateway_health(sandbox: str, restored: Restored, health: Health | None, error: str | None) -> None:
    """The ``gateway.health`` event that ends a gateway's start (the metrics read it)."""
    log.log(
        20 if health and health.healthy else 40,
        "gateway.health",
        sandbox=sandbox,
        container_id=restored.instance.short_id,
        outcome="healthy" if health and health.healthy else "unhealthy",
        status=health.status if health else error,
    )


def bring_up_gateway(
    ctx: SandboxContext, restored: Restored, callbacks: Callbacks, stop: Waitable | None = None
) -> tuple[Health | None, str | None]:
    """The gateway half, waited for here (``clawguard restore``): its health, or why it failed."""
    health: Health | None = None
    error = None
    try:
        health = ctx.gateway.ensure(
            restored.pod,
            callbacks.heartbeat,
            restart_for=restored.restart_for,
            replaced=partial(callbacks.replaced, restored.pod.id),
            fresh=restored.fresh,
            stop=stop,
        )
    except GatewayError as exc:
        error = str(exc)
    log_gateway_health(ctx.name, restored, health, error)
    return health, error


def conclude(
    ctx: SandboxContext,
    restored: Restored,
    health: Health | None,
    gateway_error: str | None,
    *,
    reason: str,
    dry_run: bool = False,
    lock_timeout: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Convergence:
    """The recovery's outcome, recorded in the sandbox's state (under its lock, briefly) and
    announced to the outcome hooks."""
    result = restored.outcome(ctx.name, health, gateway_error)
    if not dry_run:
        with ctx.store.lock(ctx.name, timeout=lock_timeout, on_wait=on_wait):
            first_failure = record(ctx, result, reason)
        _announce(ctx, result, reason, first_failure)
    return result


def converge(
    ctx: SandboxContext,
    *,
    plan: Plan | None = None,
    facts: SandboxFacts | None = None,
    dry_run: bool = False,
    with_gateway: bool = True,
    reason: str = "manual",
    lock_timeout: float | None = None,
    callbacks: Callbacks = Callbacks(),
    located: Instance | None = None,
    stop: Waitable | None = None,
) -> Convergence:
    """Restore the sandbox and bring its gateway up; record the outcome in its state.

    ``plan`` is used when it was made for the pod found (a subset of steps, for a live
    re-sync); otherwise the pod's facts are read (``facts`` when they are its) and a
    full plan is made for it. ``located`` is the pod the caller has just located: the
    first attempt takes it instead of locating again, and locates afresh if it cannot be
    read. The sandbox's lock is held for the restore and the record, not while the
    gateway starts; ``stop`` ends the gateway's wait at once (backoff.Stopped).
    """
    sandbox, target = ctx.config, ctx.target
    use_gateway = with_gateway and not dry_run and bool(sandbox.gateway["enabled"])
    # Every event of this recovery says why it runs (restore.done feeds the metrics by reason).
    with structlog.contextvars.bound_contextvars(reason=reason):
        for _attempt in range(MAX_POD_CHANGES):
            hint, located = located, None
            try:
                restored = restore_once(
                    ctx,
                    plan=plan,
                    facts=facts,
                    dry_run=dry_run,
                    reason=reason,
                    lock_timeout=lock_timeout,
                    callbacks=callbacks,
                    located=hint,
                )
                facts = restored.pod.facts
                health: Health | None = None
                gateway_error = None
                if use_gateway and restored.report.ok:
                    health, gateway_error = bring_up_gateway(ctx, restored, callbacks, stop)
                if target.locate().id != restored.instance.id:
                    raise SandboxGone("the pod was replaced during the restore")
            except SandboxGone as exc:
                log.warning("restore.restart", sandbox=sandbox.name, reason=str(exc))
                continue
            return conclude(
                ctx,
                restored,
                health,
                gateway_error,
                reason=reason,
                dry_run=dry_run,
                lock_timeout=lock_timeout,
                on_wait=callbacks.on_wait,
            )
    raise TargetError(
        f"{sandbox.name}: the pod was replaced {MAX_POD_CHANGES} times while restoring; giving up this round"
    )


DRIFT_CHECK = "drift check"
POD_REPLACED = "pod replaced"
RESYNC = "archive changed"


def _persisted_ok(report: RestoreReport) -> bool:
    return any(step.name == PERSISTED and step.outcome != FAILED for step in report.steps)


def _capture_to_restore(
    ctx: SandboxContext, plan: Plan, pod: Pod, dry_run: bool, latest: Callable[[], persist.Capture | None]
) -> persist.Capture | None:
    """The capture to write into this pod, when the plan persists anything (``latest()``);
    when there is none, the pod's persisted paths are the agent's own from now on."""
    if not plan.persist:
        return None
    capture = latest()
    if capture is None and not dry_run and persist.live_pod(ctx.store, ctx.name) != pod.id:
        persist.set_persist_state(ctx.store, ctx.name, live_pod=pod.id)
    return capture


def _latest_capture(ctx: SandboxContext, pod_id: str) -> persist.Capture | None:
    """The latest good capture, unless the pod is live already (its persisted paths are the
    agent's own), nothing was captured yet, or the capture came from this very pod."""
    if persist.live_pod(ctx.store, ctx.name) == pod_id:
        return None
    latest = persist.CaptureStore(ctx.store, ctx.name, ctx.settings.persist_keep).latest_good()
    return None if latest is None or latest.container_id == pod_id else latest


def capture_before_restore(ctx: SandboxContext, plan: Plan, pod: Pod) -> None:
    """Save the agent's latest state before a restore touches the pod (it is skipped on a new pod)."""
    try:
        persist.capture(ctx, plan.persist, pod, "before restore")
    except TargetError as exc:
        if isinstance(exc, SandboxGone):
            raise
        log.warning("persist.capture_failed", sandbox=ctx.name, error=str(exc))


def capture_sandbox(
    ctx: SandboxContext,
    *,
    reason: str = "manual",
    instance: Instance | None = None,
    facts: SandboxFacts | None = None,
    plan: Plan | None = None,
    lock_timeout: float | None = 60.0,
) -> persist.CaptureOutcome:
    """Locate the sandbox and capture its persisted paths once, under its lock. ``plan``
    (the daemon's, for this pod) saves validating the archive again for every capture.

    Raises state.Busy when a restore holds the lock past ``lock_timeout``, InputError
    for a plan that does not validate, and TargetError when the sandbox cannot be
    reached or read.
    """
    with ctx.store.lock(ctx.name, timeout=lock_timeout):
        pod = open_pod(ctx.config, ctx.target, instance or ctx.target.locate(), facts)
        return persist.capture(ctx, plan_for(ctx.config, pod, plan).persist, pod, reason)


def _announce(ctx: SandboxContext, result: Convergence, reason: str, first_failure: bool = True) -> None:
    """Log drift by name and run the matching outcome hook: ``on_failed`` once per failure
    episode (``first_failure``: no failure recorded since the last success), not at every
    retry of the same failure."""
    sandbox = ctx.config
    report = result.report
    changed_steps = [s for s in report.steps if s.outcome == CHANGED]
    changed = [s.name for s in changed_steps]
    if reason == DRIFT_CHECK and changed:
        log.warning(
            "sandbox.drift",
            sandbox=sandbox.name,
            container_id=result.container_id[:12],
            steps=changed,
            changes=[c for s in changed_steps for c in s.changes],
        )
    if not result.ok:
        if not first_failure:
            log.info("hook.skipped", sandbox=sandbox.name, hook="on_failed", why="failing since an earlier attempt")
            return
        event = "on_failed"
    elif changed:
        event = "on_drift" if reason == DRIFT_CHECK else "on_restored"
    else:
        return
    env = {
        "CLAWGUARD_EVENT": event.removeprefix("on_"),
        "CLAWGUARD_SANDBOX": sandbox.name,
        "CLAWGUARD_CONTAINER_ID": result.container_id,
        "CLAWGUARD_OUTCOME": "ok" if result.ok else "failed",
        "CLAWGUARD_FAILED_STEP": report.failed_step or "",
        "CLAWGUARD_CHANGED_STEPS": ",".join(changed),
        "CLAWGUARD_DURATION": f"{report.duration:.3f}",
        "CLAWGUARD_REASON": reason,
        "CLAWGUARD_GATEWAY": "" if result.gateway is None else ("healthy" if result.gateway.healthy else "unhealthy"),
    }
    hooks.fire(sandbox.hooks, event, env, sandbox.name, ctx.store)


def record(ctx: SandboxContext, result: Convergence, reason: str) -> bool:
    """Write the outcome into the sandbox's state (call with its lock held). Returns whether
    a failure starts a failure episode: ``failing_since`` is set by the first failure and
    cleared by the next success."""
    report = result.report
    failing_since = ctx.store.load(ctx.name).get("failing_since")
    changes: dict[str, Any] = {
        "container_id": result.container_id,
        "status": result.status_line(),
        "config_error": None,  # a plan was made and run: whatever input error there was is gone
        "last_restore": {
            "at": time.time(),
            "reason": reason,
            "outcome": "ok" if report.ok else "failed",
            "changed": report.changed,
            "failed_step": report.failed_step,
            "duration": round(report.duration, 3),
            "steps": [{"name": s.name, "outcome": s.outcome, "duration": round(s.duration, 3)} for s in report.steps],
        },
    }
    if result.gateway is not None or result.gateway_error:
        changes["gateway"] = (
            result.gateway.to_dict()
            if result.gateway
            else {"healthy": False, "status": result.gateway_error, "checked_at": time.time()}
        )
    changes["failing_since"] = None if result.ok else (failing_since or time.time())
    ctx.store.update(ctx.name, **changes)
    return not result.ok and not failing_since


def plan_live(sandbox: SandboxConfig, target: Target) -> tuple[Plan, Pod | None, str]:
    """The plan for the sandbox's live pod, read without writing anything; or, when the pod
    cannot be reached, the plan from the config alone. The third item says which."""
    try:
        pod = open_pod(sandbox, target, target.locate())
    except TargetError as exc:
        return build_plan(sandbox), None, f"pod not reachable ({exc}): planned from the config alone"
    return build_plan(sandbox, pod.facts), pod, f"pod {pod.short_id}: {pod.facts.describe()}"
