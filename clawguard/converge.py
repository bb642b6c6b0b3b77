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
from .config import SandboxConfig
from .context import SandboxContext
from .errors import InputError, SandboxGone, TargetError
from .gateway import GatewayError, Health
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
) -> Convergence:
    """Restore the sandbox and bring its gateway up; record the outcome in its state.

    ``plan`` is used when it was made for the pod found (a subset of steps, for a live
    re-sync); otherwise the pod's facts are read (``facts`` when they are its) and a
    full plan is made for it. ``located`` is the pod the caller has just located (the
    daemon, on its event): the first attempt takes it instead of locating again, and
    locates afresh if it cannot be read.
    """
    sandbox, target, gateway = ctx.config, ctx.target, ctx.gateway
    use_gateway = with_gateway and not dry_run and bool(sandbox.gateway["enabled"])
    # Every event of this recovery says why it runs (restore.done feeds the metrics by reason).
    with (
        structlog.contextvars.bound_contextvars(reason=reason),
        ctx.store.lock(sandbox.name, timeout=lock_timeout, on_wait=callbacks.on_wait),
    ):
        for _attempt in range(MAX_POD_CHANGES):
            instance, hinted, located = located or target.locate(), located is not None, None
            bound = log.bind(sandbox=sandbox.name, container_id=instance.short_id)
            # Chosen once (it reads and checksums the capture): the first look and the restore share it.
            latest = functools.cache(partial(_latest_capture, ctx, instance.id))
            try:
                try:
                    pod = open_pod(sandbox, target, instance, facts, partial(first_look, ctx, plan, latest))
                except TargetError as exc:
                    if hinted:  # gone since the caller located it: find the pod that is there now
                        raise SandboxGone(f"the located pod cannot be read ({exc})") from None
                    raise
                facts = pod.facts
                this_plan = plan_for(sandbox, pod, plan)
                if this_plan.persist and not dry_run:
                    capture_before_restore(ctx, this_plan, pod)
                capture = _capture_to_restore(ctx, this_plan, pod, dry_run, latest)
                callbacks.heartbeat()
                report = run_plan(this_plan, pod, dry_run=dry_run, progress=callbacks.progress, persisted=capture)
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
                # A replaced pod that had to be restored was wiped, and a new pod never runs a
                # gateway (NemoClaw #2042): start it without a health probe that cannot succeed.
                # (The start is in the background: a gateway that does run just stays healthy.)
                fresh = reason == "pod replaced" and report.changed > 0
                health: Health | None = None
                gateway_error = None
                if use_gateway and report.ok:
                    # A change the gateway only reads at start (SOUL.md) restarts a running one.
                    restart = [
                        r.name
                        for p, r in zip(this_plan.steps, report.steps, strict=False)
                        if r.outcome == CHANGED and p.step.restart_gateway
                    ]
                    try:
                        health = gateway.ensure(
                            pod,
                            callbacks.heartbeat,
                            restart_for=restart,
                            replaced=partial(callbacks.replaced, pod.id),
                            fresh=fresh,
                        )
                    except GatewayError as exc:
                        gateway_error = str(exc)
                    bound.log(
                        20 if health and health.healthy else 40,
                        "gateway.health",
                        outcome="healthy" if health and health.healthy else "unhealthy",
                        status=health.status if health else gateway_error,
                    )
                if target.locate().id != instance.id:
                    raise SandboxGone("the pod was replaced during the restore")
            except SandboxGone as exc:
                bound.warning("restore.restart", reason=str(exc))
                continue
            result = Convergence(sandbox.name, instance.id, report, health, gateway_error, this_plan)
            if not dry_run:
                record(ctx, result, reason)
                _announce(ctx, result, reason)
            return result
    raise TargetError(
        f"{sandbox.name}: the pod was replaced {MAX_POD_CHANGES} times while restoring; giving up this round"
    )


DRIFT_CHECK = "drift check"
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


def _announce(ctx: SandboxContext, result: Convergence, reason: str) -> None:
    """Log drift by name and run the matching outcome hook."""
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


def record(ctx: SandboxContext, result: Convergence, reason: str) -> None:
    report = result.report
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
    ctx.store.update(ctx.name, **changes)


def plan_live(sandbox: SandboxConfig, target: Target) -> tuple[Plan, Pod | None, str]:
    """The plan for the sandbox's live pod, read without writing anything; or, when the pod
    cannot be reached, the plan from the config alone. The third item says which."""
    try:
        pod = open_pod(sandbox, target, target.locate())
    except TargetError as exc:
        return build_plan(sandbox), None, f"pod not reachable ({exc}): planned from the config alone"
    return build_plan(sandbox, pod.facts), pod, f"pod {pod.short_id}: {pod.facts.describe()}"
