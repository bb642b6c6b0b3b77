"""One full recovery of a sandbox: restore, start the gateway, confirm it is healthy.

``clawguard restore`` and the daemon both call ``converge``, so the one-shot
command and the always-on service do exactly the same thing, under the same lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import structlog

from . import hooks, persist
from .agent import SandboxFacts, probe
from .config import SandboxConfig
from .errors import SandboxGone, TargetError
from .gateway import Gateway, GatewayError, Health
from .plan import Plan, build_plan
from .pod import Pod
from .restore import CHANGED, FAILED, PERSISTED, Progress, RestoreReport, run_plan
from .sandboxfs import SandboxCommandFailed
from .state import sandbox_dir, sandbox_lock, update_state
from .targets import Instance, Target, make_target

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


def make_gateway(sandbox: SandboxConfig, state_root: Path | None = None) -> Gateway:
    return Gateway(sandbox.name, dict(sandbox.gateway), sandbox_dir(sandbox.name, state_root))


def open_pod(sandbox: SandboxConfig, target: Target, instance: Instance, known: SandboxFacts | None = None) -> Pod:
    """The pod ``instance`` with its facts: ``known`` when they are this pod's, else read now."""
    if known is None or known.container_id != instance.id:
        try:
            known = probe(
                target,
                instance,
                user=sandbox.user,
                split_dirs=sandbox.layout.split_dirs(),
                command=sandbox.agent.command,
                version=sandbox.agent.pinned_version,
            )
        except SandboxCommandFailed as exc:
            raise TargetError(str(exc)) from None
        log.info("sandbox.facts", sandbox=sandbox.name, container_id=instance.short_id, agent=known.describe())
    return Pod(target, instance, known, sandbox.user, sandbox.agent.command)


def plan_for(sandbox: SandboxConfig, pod: Pod, plan: Plan | None = None) -> Plan:
    """``plan`` when it was made for this pod, else the full plan for it (validated whole)."""
    if plan is not None and plan.facts is not None and plan.facts.container_id == pod.id:
        return plan
    return build_plan(sandbox, pod.facts)


def converge(
    sandbox: SandboxConfig,
    *,
    plan: Plan | None = None,
    target: Target | None = None,
    gateway: Gateway | None = None,
    facts: SandboxFacts | None = None,
    dry_run: bool = False,
    with_gateway: bool = True,
    progress: Progress | None = None,
    heartbeat: Callable[[], None] = lambda: None,
    replaced: Callable[[str], bool] = lambda _container_id: False,
    lock_timeout: float | None = None,
    on_wait: Callable[[str], None] | None = None,
    state_root: Path | None = None,
    reason: str = "manual",
) -> Convergence:
    """Restore ``sandbox`` and bring its gateway up; record the outcome in its state.

    ``plan`` is used when it was made for the pod found (a subset of steps, for a live
    re-sync); otherwise the pod's facts are read and a full plan is made for it.
    ``replaced(container_id)`` is asked between steps and while waiting for the
    gateway: when it says the pod was replaced, the run is abandoned and started
    over on the new pod.
    """
    target = target or make_target(sandbox.name, sandbox.target)
    use_gateway = with_gateway and not dry_run and bool(sandbox.gateway["enabled"])
    if use_gateway and gateway is None:
        gateway = make_gateway(sandbox, state_root)

    # Every event of this recovery says why it runs (restore.done feeds the metrics by reason).
    with (
        structlog.contextvars.bound_contextvars(reason=reason),
        sandbox_lock(sandbox.name, state_root, timeout=lock_timeout, on_wait=on_wait),
    ):
        for _attempt in range(MAX_POD_CHANGES):
            instance = target.locate()
            bound = log.bind(sandbox=sandbox.name, container_id=instance.short_id)

            def step_done(index: int, total: int, step: Any, current: str = instance.id) -> None:
                heartbeat()
                if progress:
                    progress(index, total, step)
                if replaced(current):
                    raise SandboxGone("the pod was replaced during the restore")

            try:
                pod = open_pod(sandbox, target, instance, facts)
                facts = pod.facts
                this_plan = plan_for(sandbox, pod, plan)
                if this_plan.persist and not dry_run:
                    capture_before_restore(sandbox, this_plan, pod, state_root)
                latest = _capture_to_restore(this_plan, pod, dry_run, state_root)
                report = run_plan(this_plan, pod, dry_run=dry_run, progress=step_done, persisted=latest)
                fresh = False
                if latest is not None and not dry_run and _persisted_ok(report):
                    persist.set_persist_state(
                        sandbox.name,
                        state_root,
                        live_pod=pod.id,
                        restored={"generation": latest.generation, "into": pod.id, "at": time.time()},
                    )
                    fresh = reason == "pod replaced"  # a new pod never runs a gateway (NemoClaw #2042)
                health: Health | None = None
                gateway_error = None
                if use_gateway and report.ok and gateway is not None:
                    # A change the gateway only reads at start (SOUL.md) restarts a running one.
                    restart = [
                        r.name
                        for p, r in zip(this_plan.steps, report.steps, strict=False)
                        if r.outcome == CHANGED and p.step.restart_gateway
                    ]
                    try:
                        health = gateway.ensure(
                            pod, heartbeat, restart_for=restart, replaced=partial(replaced, pod.id), fresh=fresh
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
                record(sandbox.name, result, reason, state_root)
                _announce(sandbox, result, reason, state_root)
            return result
    raise TargetError(
        f"{sandbox.name}: the pod was replaced {MAX_POD_CHANGES} times while restoring; giving up this round"
    )


DRIFT_CHECK = "drift check"
RESYNC = "archive changed"


def _persisted_ok(report: RestoreReport) -> bool:
    return any(step.name == PERSISTED and step.outcome != FAILED for step in report.steps)


def _capture_to_restore(plan: Plan, pod: Pod, dry_run: bool, state_root: Path | None) -> persist.Capture | None:
    """The capture to write into this pod: the latest good one, unless the pod is live already
    (its persisted paths are the agent's own) or the capture came from this very pod."""
    name = plan.sandbox.name
    if not plan.persist or persist.live_pod(name, state_root) == pod.id:
        return None
    latest = persist.CaptureStore(name, plan.sandbox.config.daemon.persist_keep, state_root).latest_good()
    if latest is None or latest.container_id == pod.id:
        # Nothing captured yet, or the capture came from this very pod: its files are the agent's own.
        if not dry_run:
            persist.set_persist_state(name, state_root, live_pod=pod.id)
        return None
    return latest


def capture_before_restore(sandbox: SandboxConfig, plan: Plan, pod: Pod, state_root: Path | None) -> None:
    """Save the agent's latest state before a restore touches the pod (it is skipped on a new pod)."""
    try:
        take_capture(sandbox, plan, pod, "before restore", state_root)
    except TargetError as exc:
        if isinstance(exc, SandboxGone):
            raise
        log.warning("persist.capture_failed", sandbox=sandbox.name, error=str(exc))


def take_capture(
    sandbox: SandboxConfig, plan: Plan, pod: Pod, reason: str, state_root: Path | None
) -> persist.CaptureOutcome:
    """Capture ``plan``'s persisted paths from ``pod``. Call with the sandbox lock held."""
    return persist.capture(
        sandbox.name,
        plan.persist,
        pod,
        keep=sandbox.config.daemon.persist_keep,
        max_bytes=sandbox.limits.max_persist_bytes,
        reason=reason,
        node=sandbox.agent.node,
        state_root=state_root,
    )


def capture_sandbox(
    sandbox: SandboxConfig,
    *,
    reason: str = "manual",
    target: Target | None = None,
    instance: Instance | None = None,
    facts: SandboxFacts | None = None,
    plan: Plan | None = None,
    lock_timeout: float | None = 60.0,
    state_root: Path | None = None,
) -> persist.CaptureOutcome:
    """Locate the sandbox and capture its persisted paths once, under its lock. ``plan``
    (the daemon's, for this pod) saves validating the archive again for every capture.

    Raises state.Busy when a restore holds the lock past ``lock_timeout``, InputError
    for a plan that does not validate, and TargetError when the sandbox cannot be
    reached or read.
    """
    target = target or make_target(sandbox.name, sandbox.target)
    with sandbox_lock(sandbox.name, state_root, timeout=lock_timeout):
        pod = open_pod(sandbox, target, instance or target.locate(), facts)
        return take_capture(sandbox, plan_for(sandbox, pod, plan), pod, reason, state_root)


def _announce(sandbox: SandboxConfig, result: Convergence, reason: str, state_root: Path | None) -> None:
    """Log drift by name and run the matching outcome hook."""
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
    hooks.fire(sandbox.hooks, event, env, sandbox.name, state_root)


def record(sandbox: str, result: Convergence, reason: str, state_root: Path | None = None) -> None:
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
    update_state(sandbox, state_root, **changes)


def plan_live(sandbox: SandboxConfig, target: Target | None = None) -> tuple[Plan, Pod | None, str]:
    """The plan for the sandbox's live pod, read without writing anything; or, when the pod
    cannot be reached, the plan from the config alone. The third item says which."""
    target = target or make_target(sandbox.name, sandbox.target)
    try:
        pod = open_pod(sandbox, target, target.locate())
    except TargetError as exc:
        return build_plan(sandbox), None, f"pod not reachable ({exc}): planned from the config alone"
    return build_plan(sandbox, pod.facts), pod, f"pod {pod.short_id}: {pod.facts.describe()}"
