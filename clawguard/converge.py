"""One full recovery of a sandbox: restore, start the gateway, confirm it is healthy.

``clawguard restore`` and the daemon both call ``converge``, so the one-shot
command and the always-on service do exactly the same thing, under the same lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from . import hooks, persist
from .config import SandboxConfig
from .errors import SandboxGone, TargetError
from .gateway import Gateway, GatewayError, Health
from .plan import Plan, build_plan
from .restore import CHANGED, OK, Progress, RestoreReport, StepReport, restore_persisted, run_plan
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


def make_gateway(sandbox: SandboxConfig, target: Target, state_root: Path | None = None) -> Gateway:
    return Gateway(sandbox.name, dict(sandbox.gateway), target, sandbox_dir(sandbox.name, state_root))


def converge(
    sandbox: SandboxConfig,
    *,
    plan: Plan | None = None,
    target: Target | None = None,
    gateway: Gateway | None = None,
    dry_run: bool = False,
    with_gateway: bool = True,
    progress: Progress | None = None,
    heartbeat: Callable[[], None] = lambda: None,
    replaced: Callable[[str], bool] = lambda _container_id: False,
    lock_timeout: float | None = None,
    state_root: Path | None = None,
    reason: str = "manual",
) -> Convergence:
    """Restore ``sandbox`` and bring its gateway up; record the outcome in its state.

    ``replaced(container_id)`` is asked between steps: when it says the pod was
    replaced, the run is abandoned and started over on the new pod.
    """
    plan = plan or build_plan(sandbox)
    target = target or make_target(sandbox.name, sandbox.target)
    use_gateway = with_gateway and not dry_run and bool(sandbox.gateway["enabled"])
    if use_gateway and gateway is None:
        gateway = make_gateway(sandbox, target, state_root)

    with sandbox_lock(sandbox.name, state_root, timeout=lock_timeout):
        for _attempt in range(MAX_POD_CHANGES):
            instance = target.locate()
            bound = log.bind(sandbox=sandbox.name, container_id=instance.short_id)

            def step_done(index: int, total: int, step: StepReport, current: str = instance.id) -> None:
                heartbeat()
                if progress:
                    progress(index, total, step)
                if replaced(current):
                    raise SandboxGone("the pod was replaced during the restore")

            try:
                if plan.persist and not dry_run:
                    capture_before_restore(sandbox, plan, target, instance, state_root)
                report = run_plan(plan, target, instance, dry_run=dry_run, progress=step_done)
                if report.ok and plan.persist:
                    persisted = _restore_persisted(plan, target, instance, dry_run, state_root)
                    if persisted is not None:
                        report.steps.append(persisted)
                        report.duration += persisted.duration
                        step_done(len(report.steps), len(report.steps), persisted)
                health: Health | None = None
                gateway_error = None
                if use_gateway and report.ok and gateway is not None:
                    # A change the gateway only reads at start (SOUL.md) restarts a running one.
                    restart = [
                        r.name
                        for p, r in zip(plan.steps, report.steps, strict=False)
                        if r.outcome == CHANGED and p.step.restart_gateway
                    ]
                    try:
                        health = gateway.ensure(instance, heartbeat, restart_for=restart)
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
            result = Convergence(sandbox.name, instance.id, report, health, gateway_error)
            if not dry_run:
                record(sandbox.name, result, reason, state_root)
                _announce(sandbox, result, reason, state_root)
            return result
    raise TargetError(
        f"{sandbox.name}: the pod was replaced {MAX_POD_CHANGES} times while restoring; giving up this round"
    )


DRIFT_CHECK = "drift check"
RESYNC = "archive changed"


def capture_before_restore(
    sandbox: SandboxConfig, plan: Plan, target: Target, instance: Instance, state_root: Path | None
) -> None:
    """Save the agent's latest state before a restore touches the pod (it is skipped on a new pod)."""
    try:
        persist.capture(
            sandbox.name,
            plan.persist,
            sandbox.layout.root,
            target,
            instance,
            keep=sandbox.config.daemon.persist_keep,
            max_bytes=sandbox.limits.max_persist_bytes,
            reason="before restore",
            state_root=state_root,
        )
    except TargetError as exc:
        if isinstance(exc, SandboxGone):
            raise
        log.warning("persist.capture_failed", sandbox=sandbox.name, error=str(exc))


def _restore_persisted(
    plan: Plan, target: Target, instance: Instance, dry_run: bool, state_root: Path | None
) -> StepReport | None:
    """On a pod the persisted paths were not restored into yet, write the latest capture back."""
    name = plan.sandbox.name
    if persist.live_pod(name, state_root) == instance.id:
        return None
    latest = persist.CaptureStore(name, plan.sandbox.config.daemon.persist_keep, state_root).latest_good()
    if latest is None or latest.container_id == instance.id:
        # Nothing captured yet, or the capture came from this very pod: its files are the agent's own.
        if not dry_run:
            persist.set_persist_state(name, state_root, live_pod=instance.id)
        return None
    report = restore_persisted(plan, target, instance, latest, dry_run=dry_run)
    if report.outcome in (OK, CHANGED) and not dry_run:
        persist.set_persist_state(
            name,
            state_root,
            live_pod=instance.id,
            restored={"generation": latest.generation, "into": instance.id, "at": time.time()},
        )
    return report


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
