"""The always-on loop behind ``clawguard run``.

One worker thread per sandbox, so a sandbox that is unreachable or slow never
stalls another. Each worker wakes on an event from its target (or on the
safety-net poll), locates the pod, and converges when the container ID is new,
or on start-up, when it verifies the live sandbox instead of trusting its memory.

Each worker is a state machine (:class:`Phase`): every wait is a state with a
deadline that the worker's loop sleeps towards, never a blocking call, so an event,
a due capture or SIGTERM is handled within a round whatever it is waiting for. A
gateway's start in particular is one step per round (:class:`GatewayStartup`), with
the sandbox's lock released: captures go on meanwhile, and a one-shot `clawguard
capture` is not kept waiting. The main thread only supervises: it sends READY=1 once
every worker watches its sandbox, and pings systemd's watchdog while every worker
shows signs of life, so a hung worker makes systemd restart the service.
"""

from __future__ import annotations

import _thread
import contextlib
import enum
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Protocol

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from . import hooks, threads
from .agent import SandboxFacts
from .backoff import Backoff, keep_running
from .config import Config, DaemonSettings
from .context import SandboxContext, sandbox_contexts
from .converge import (
    DRIFT_CHECK,
    RESYNC,
    Callbacks,
    Restored,
    capture_sandbox,
    conclude,
    log_gateway_health,
    open_pod,
    restore_once,
)
from .errors import ClawguardError, InputError, SandboxGone, SandboxStarted
from .gateway import GatewayError, GatewayStartup, Health
from .plan import Plan, PlannedStep, build_plan
from .redact import redact_value
from .state import Busy, StateStore, write_json
from .targets import Instance, Target
from .threads import guarded

log = structlog.get_logger("clawguard.daemon")

# Editors save in bursts (temp file, rename, chmod): wait this long after the last
# event before re-validating the archive.
RESYNC_DEBOUNCE = 1.0
# Retry delays below this are the normal gap while a pod is replaced: logged at info.
UNREACHABLE_WARN_AFTER = 4.0
# How long a stopping daemon waits for its workers' final captures: systemd's stop, and a
# SIGTERM in a terminal, get an answer within 10 s whatever the workers were doing (every
# wait of theirs ends with the stop event; a command already running in a pod is bounded).
SHUTDOWN_GRACE = 8.0
# How long the final capture waits for the sandbox's lock (a one-shot restore may hold it).
FINAL_CAPTURE_LOCK_TIMEOUT = 4.0
# A notification that cannot be queued within this long is dropped. systemd drains its
# socket at once; one that stops draining (its queue holds net.unix.max_dgram_qlen
# datagrams, 10 by default) must not block the main loop for good, nor its stop.
NOTIFY_TIMEOUT = 0.5


class Notifier(Protocol):
    def notify(self, state: str) -> bool | None:
        """Send one sd_notify message; False when it could not be sent (None: not known)."""


class _NullNotifier:
    def notify(self, state: str) -> bool:
        return True


class SocketNotifier:
    """sd_notify(3) on a connected datagram socket, each send bounded by NOTIFY_TIMEOUT
    (sdnotify's own notify blocks for as long as the socket's queue is full)."""

    def __init__(self, sock: socket.socket) -> None:
        sock.settimeout(NOTIFY_TIMEOUT)
        self._socket = sock
        self.dropped = 0

    def notify(self, state: str) -> bool:
        try:
            self._socket.sendall(state.encode())
        except OSError as exc:  # TimeoutError included: nobody drains the socket
            self.dropped += 1
            if self.dropped == 1:  # once per episode; the key only (a STATUS line may name anything)
                log.warning("systemd.notify_dropped", message=state.partition("=")[0], error=type(exc).__name__)
            return False
        if self.dropped:
            log.info("systemd.notify_recovered", dropped=self.dropped)
            self.dropped = 0
        return True


def systemd_notifier() -> Notifier:
    if not os.environ.get("NOTIFY_SOCKET"):
        return _NullNotifier()
    import sdnotify

    # sdnotify finds and connects the socket ($NOTIFY_SOCKET, abstract names too).
    sock = sdnotify.SystemdNotifier().socket
    return _NullNotifier() if sock is None else SocketNotifier(sock)


@dataclass
class WorkerStatus:
    line: str = "starting"
    settled: bool = False  # the worker is watching its sandbox (READY=1 waits for every worker)
    beat: float = 0.0
    busy_until: float = 0.0  # a long but bounded operation is in progress


class Phase(enum.Enum):
    """Where a sandbox's worker is. Each change is one ``worker.state`` event; every wait is
    a deadline the worker's loop sleeps towards (an event, the stop or a due capture cuts
    it short), never a blocking call."""

    STARTING = "starting"  # the pod is to be located
    CONFIG_ERROR = "config error"  # the archive or the plan is bad: watched, protected once fixed
    UNREACHABLE = "unreachable"  # locating failed: tried again at the deadline (backoff)
    RESTORING = "restoring"  # a restore runs (under the sandbox's lock; bounded)
    GATEWAY = "gateway"  # bringing the gateway up: one step per round, each when it is due
    FAILED = "failed"  # the last recovery failed: this pod is tried again at the deadline
    WATCHING = "watching"  # converged: events, health, drift checks and captures when due
    STOPPED = "stopped"


@dataclass
class PodMemory:
    """What the worker knows of its sandbox's pods (in memory only: a restarted daemon
    verifies the live pod again)."""

    seen: str | None = None  # the container ID last located
    owed: str | None = None  # the reason a full recovery of ``seen`` is owed, until one succeeds
    restored: str | None = None  # restored (its persisted paths are the agent's): captured when due
    converged: str | None = None  # restored with its gateway up


@dataclass
class Due:
    """When the periodic duties come round next (monotonic)."""

    health: float = math.inf
    verify: float = math.inf
    capture: float = math.inf

    def schedule(self, now: float, settings: DaemonSettings) -> None:
        self.health = now + settings.health_interval
        self.verify = now + settings.verify_interval
        self.capture = now + settings.persist_interval


@dataclass
class ArchiveChanges:
    """Archive paths changed since the plan was built (written by the archive watcher's thread)."""

    files: set[str] = field(default_factory=set)
    at: float | None = None  # monotonic time of the last change

    def take(self) -> list[str]:
        files = sorted(self.files)
        self.files.clear()
        self.at = None
        return files


@dataclass
class GatewayRun:
    """A gateway being brought up after a restore: the worker runs one step per round."""

    restored: Restored
    startup: GatewayStartup
    reason: str
    subset: bool  # the restore applied only some steps (a re-sync)


class Stopping(ClawguardError):
    """The daemon is stopping: a wait for the sandbox's lock is given up."""


class SandboxWorker(threading.Thread):
    def __init__(
        self,
        ctx: SandboxContext,
        plan: Plan | None,
        stop: threading.Event,
        on_change: Callable[[], None],
        slots: threading.Semaphore,
        config_error: InputError | None = None,
    ) -> None:
        """``plan`` is None when the sandbox's archive or plan is bad (``config_error``): the
        worker then reports it, watches the archive and starts protecting once it is fixed.
        ``slots`` is shared by all workers: how many restores may run at once."""
        super().__init__(name=f"worker-{ctx.name}", daemon=True)
        self.ctx = ctx
        self.slots = slots
        self.sandbox = ctx.config
        self.plan = plan
        self.settings = ctx.settings
        self.stop = stop
        self.on_change = on_change
        self.target = ctx.target
        # Whichever of the worker's locates made the target start the sandbox (its round, a
        # health check's, a restore's), the hook is told.
        self.target.on_started = self._on_sandbox_started
        self.log = log.bind(sandbox=ctx.name)
        self.status = WorkerStatus(line=f"{ctx.name}: starting", beat=time.monotonic())
        self.phase = Phase.STARTING
        self.deadline: float | None = None  # when the current phase's wait ends
        self.wake = threading.Event()
        self.events = 0  # counts every event, so a restore can tell it was overtaken
        self.events_seen = 0  # the count the last round saw
        self.woken_at: float | None = None  # monotonic time of the first event since the last round
        self._located: tuple[Instance | None, int] = (None, -1)  # a new pod, and the event count it was seen at
        self.pods = PodMemory()
        self.last_instance: Instance | None = None  # the last pod restored: captured once more at stop
        self.facts: SandboxFacts | None = None  # of the last pod restored: read once per pod
        self.startup_error = config_error
        self.config_error: str | None = None  # the input error in force, as reported
        self.next_plan_try = 0.0
        self.changes = ArchiveChanges()
        self.due = Due()
        self.unreachable = Backoff(1.0, self.settings.backoff_max)  # locating fails
        self.retry = Backoff(1.0, self.settings.backoff_max)  # a recovery of the same pod fails
        self.errors = Backoff(1.0, self.settings.backoff_max)  # a round fails on a bug
        self.gateway_run: GatewayRun | None = None

    @property
    def last_id(self) -> str | None:
        """The pod last converged (restored, gateway up)."""
        return self.pods.converged

    def heartbeat(self) -> None:
        self.status.beat = time.monotonic()

    def _set(self, line: str) -> None:
        if line != self.status.line:
            self.status.line = line
            self.on_change()

    def _enter(self, phase: Phase, deadline: float | None = None, **why: object) -> None:
        """Move to ``phase``: one ``worker.state`` event per change."""
        self.deadline = deadline
        if phase is self.phase:
            return
        self.log.info(
            "worker.state",
            state=phase.value,
            previous=self.phase.value,
            wait=round(deadline - time.monotonic(), 1) if deadline is not None else None,
            **why,
        )
        self.phase = phase

    def notice(self, reason: str) -> None:
        self.events += 1
        if self.woken_at is None:
            self.woken_at = time.monotonic()
        self.log.debug("watch.event", reason=reason)
        self.wake.set()

    def archive_changed(self, path: str) -> None:
        """Called from the archive watcher's thread; the worker re-syncs after RESYNC_DEBOUNCE."""
        self.changes.files.add(path)
        self.changes.at = time.monotonic()
        self.wake.set()

    def run(self) -> None:
        guarded(self._loop, self.name)()

    def _loop(self) -> None:
        threads.start(self._watch, f"watch-{self.sandbox.name}")
        self.status.settled = True  # watching: READY=1 need not wait for a restore, nor a gateway
        self.on_change()
        if self.startup_error is not None:
            self._report_config_error(self.startup_error, "daemon start")
        while not self.stop.is_set():
            self.heartbeat()
            # Cleared before the round, not after the wait: an event that arrives
            # while we work makes the next wait return at once instead of being lost.
            self.wake.clear()
            try:
                delay = self._tick()
                self.errors.reset()
            except Exception as exc:  # a bug must cost one round, never the worker
                if self.stop.is_set():
                    break
                self._set(f"{self.sandbox.name}: internal error: {exc!r}")
                with contextlib.suppress(Exception):
                    self.log.exception("worker.error")
                delay = self.errors.next()
            self.wake.wait(delay)
        if self.gateway_run is not None:
            self.log.info("gateway.abandoned", why="the daemon is stopping")
            self._drop_gateway_run()
        self._enter(Phase.STOPPED)
        if self.last_instance is not None:  # the agent's latest state, before systemd stops us
            self._capture(self.last_instance, "daemon stopping", lock_timeout=FINAL_CAPTURE_LOCK_TIMEOUT)

    # ------------------------------------------------------------------ rounds

    def _tick(self) -> float:
        """One round: locate, converge if the pod is owed a recovery, else whatever is due.
        Returns how long to sleep before the next round (an event cuts it short)."""
        if self.plan is None:
            return self._retry_plan()
        woken = self.events != self.events_seen  # an event arrived since the last round
        self.events_seen = self.events
        woken_at, self.woken_at = self.woken_at, None
        if self.gateway_run is not None:
            return self._gateway_round(woken)
        now = time.monotonic()
        if self.phase is Phase.UNREACHABLE and not woken and self.deadline is not None and now < self.deadline:
            return self.deadline - now  # an archive edit woke us: the pod is still to be found
        try:
            instance = self.target.locate()
        except ClawguardError as exc:
            delay = self.unreachable.next()
            self._set(f"{self.sandbox.name}: waiting: {exc}")
            # A pod being replaced is briefly absent: only a longer absence is a warning.
            level = 30 if delay >= UNREACHABLE_WARN_AFTER else 20
            self.log.log(level, "sandbox.unreachable", error=str(exc), retry_in=round(delay, 1))
            self._enter(Phase.UNREACHABLE, now + delay)
            return delay
        self.unreachable.reset()
        self._note_pod(instance.id, woken_at)
        if self.pods.owed is not None:
            if self.phase is Phase.FAILED and self.deadline is not None and now < self.deadline:
                # This pod's recovery failed a moment ago: retried with backoff, not at every
                # poll; what it has restored is still captured meanwhile.
                self._capture_if_due(instance)
                return max(0.05, min(self.deadline - now, self.settings.poll_interval, self._until_capture()))
            self._located = (instance, self.events)
            self._converge(self.pods.owed)
        elif woken and self.sandbox.gateway["enabled"]:
            # Same container, but something happened to it (docker restart keeps the ID and
            # kills the gateway): check the gateway now, not at the next health_interval.
            self.due.health = now + self.settings.health_interval
            self._check_health(instance)
        elif self.changes.at is not None and now >= self.changes.at + RESYNC_DEBOUNCE:
            self._resync(instance)
        elif now >= self.due.capture:
            self._capture_if_due(instance)
        elif now >= self.due.verify:
            # The plan's checks against the live sandbox; only drifted steps are re-applied.
            self.due.verify = now + self.settings.verify_interval
            self._converge(DRIFT_CHECK)
        elif now >= self.due.health and self.sandbox.gateway["enabled"]:
            self.due.health = now + self.settings.health_interval
            self._check_health(instance)
        return self._next_round()

    def _next_round(self) -> float:
        now = time.monotonic()
        if self.gateway_run is not None:
            return max(0.05, min(self.gateway_run.startup.next_at - now, self._until_capture()))
        if self.changes.at is not None:
            return max(0.05, self.changes.at + RESYNC_DEBOUNCE - now)
        due = min(self.due.health, self.due.verify, self.due.capture) - now
        return min(self.settings.poll_interval, max(1.0, due))

    def _until_capture(self) -> float:
        return max(0.05, self.due.capture - time.monotonic())

    def _note_pod(self, container_id: str, woken_at: float | None) -> None:
        """The pod located now. Another one than before is owed a full recovery, named for
        why: the first this daemon sees is verified ("daemon start"), any later one is a
        replacement ("pod replaced": detected, counted and timed), whatever became of the
        recovery of the one before."""
        pods = self.pods
        if container_id == pods.seen:
            return
        if pods.seen is None:
            self.log.info("sandbox.verify", container_id=container_id[:12])
            pods.owed = "daemon start"
        else:
            self.log.info(
                "sandbox.detected",
                container_id=container_id[:12],
                previous=pods.seen[:12],
                # From the event that woke this round; None (not logged) when the poll found it.
                since_event=round(time.monotonic() - woken_at, 3) if woken_at is not None else None,
            )
            pods.owed = "pod replaced"
        pods.seen = container_id
        pods.converged = pods.restored = None
        self.retry.reset()  # a new pod is restored at once, whatever became of the old one
        if self.phase is Phase.FAILED:
            self._enter(Phase.STARTING, pod=container_id[:12])

    # ------------------------------------------------------------------ config errors

    def _on_sandbox_started(self, started: SandboxStarted) -> None:
        """The target asked the platform to start the stopped sandbox: the on_started hook."""
        outcome = started.outcome
        env = {
            "CLAWGUARD_EVENT": "started",
            "CLAWGUARD_SANDBOX": self.sandbox.name,
            "CLAWGUARD_CONTAINER_ID": self.pods.seen or "",
            "CLAWGUARD_OUTCOME": outcome,
            "CLAWGUARD_REASON": str(started),
        }
        hooks.fire(self.sandbox.hooks, "on_started", env, self.sandbox.name, self.ctx.store)

    def _report_config_error(self, error: InputError, reason: str) -> None:
        """The sandbox's input is bad: say so once per distinct error, everywhere a user looks
        (journal at priority err, status, the systemd STATUS= line, the on_failed hook)."""
        message = str(error)
        self._set(f"{self.sandbox.name}: config error: {message}")
        self._enter(Phase.CONFIG_ERROR)
        if message == self.config_error:
            return
        self.config_error = message
        self.log.error("sandbox.config_error", error=message, reason=reason)
        self.ctx.store.update_when_free(
            self.sandbox.name,
            status=self.status.line,
            config_error={"message": message, "at": time.time(), "reason": reason},
        )
        env = {
            "CLAWGUARD_EVENT": "failed",
            "CLAWGUARD_SANDBOX": self.sandbox.name,
            "CLAWGUARD_CONTAINER_ID": self.pods.seen or "",
            "CLAWGUARD_OUTCOME": "failed",
            "CLAWGUARD_FAILED_STEP": "",
            "CLAWGUARD_CHANGED_STEPS": "",
            "CLAWGUARD_DURATION": "0",
            "CLAWGUARD_REASON": f"config error ({reason})",
            "CLAWGUARD_GATEWAY": "",
        }
        hooks.fire(self.sandbox.hooks, "on_failed", env, self.sandbox.name, self.ctx.store)

    def _retry_plan(self) -> float:
        """In the config-error state: try the archive again when it changed (after the
        debounce) or every poll; a valid plan ends the state and protection starts."""
        now = time.monotonic()
        if self.changes.at is not None and now < self.changes.at + RESYNC_DEBOUNCE:
            return max(0.05, self.changes.at + RESYNC_DEBOUNCE - now)
        if self.changes.at is None and now < self.next_plan_try:
            return min(self.next_plan_try - now, self.settings.poll_interval)
        files = self.changes.take()
        self.next_plan_try = now + self.settings.poll_interval
        try:
            self.plan = build_plan(self.sandbox, self.facts)
        except InputError as exc:
            self._report_config_error(exc, "archive changed" if files else "retry")
            return min(self.next_plan_try - now, self.settings.poll_interval)
        self.plan.log_warnings()
        self.log.info("sandbox.config_fixed", files=files or None)
        self.config_error = None
        # Restore in full with the new plan (a pod not located yet is verified as at start).
        self.pods.converged = None
        if self.pods.seen is not None:
            self.pods.owed = self.pods.owed or RESYNC
        self._set(f"{self.sandbox.name}: config fixed, restoring")
        self._enter(Phase.STARTING)
        return 0.0

    # ------------------------------------------------------------------ re-sync and captures

    def _resync(self, instance: Instance) -> None:
        """Re-validate the archive after an edit; apply only the steps whose result changed."""
        files = self.changes.take()
        try:
            plan = build_plan(self.sandbox, self.facts)
        except InputError as exc:
            # The last valid plan stays in force; the next edit is validated again.
            self._set(f"{self.sandbox.name}: archive invalid, the last valid plan stays in force: {exc}")
            self.log.error("archive.invalid", error=str(exc), files=files)
            return
        changed = changed_steps(self.plan, plan) if self.plan is not None else plan.steps
        if self.plan is None or plan.warnings != self.plan.warnings:
            plan.log_warnings()
        self.plan = plan
        if not changed:
            self.log.info("archive.unchanged", files=files)
            return
        self.log.info("archive.changed", files=files, steps=[p.step.name for p in changed])
        if self.pods.owed is not None or self.pods.converged != instance.id:
            return  # not restored yet: the next full restore uses the new plan
        self._located = (instance, self.events)  # this round's locate: the re-sync need not locate again
        self._converge(RESYNC, plan.subset(changed))

    def _capture_if_due(self, instance: Instance) -> None:
        if time.monotonic() >= self.due.capture:
            self._capture(instance, "interval")
            self.due.capture = time.monotonic() + self.settings.persist_interval

    def _capture(self, instance: Instance, reason: str, lock_timeout: float = 0.0) -> None:
        if self.plan is None or not self.plan.persist or self.pods.restored != instance.id:
            return
        try:
            capture_sandbox(
                self.ctx,
                reason=reason,
                instance=instance,
                facts=self.facts,
                plan=self.plan,
                lock_timeout=lock_timeout,
            )
        except Busy:
            pass  # a restore holds the lock, and it captures first itself
        except ClawguardError as exc:
            self.log.warning("persist.capture_failed", error=str(exc), reason=reason)

    def _watch(self) -> None:
        """The target's event source, run again with backoff whenever it fails."""
        keep_running(
            lambda: self.target.watch(self.notice, self.stop),
            stop=self.stop,
            backoff=Backoff(1.0, self.settings.backoff_max),
            healthy_after=30.0,
            failed=lambda exc, delay: self.log.warning("watch.failed", error=str(exc), retry_in=round(delay, 1)),
        )

    # ------------------------------------------------------------------ recoveries

    def _converge(self, reason: str, plan: Plan | None = None) -> None:
        """Restore (``plan``: only those steps), then bring the gateway up over the next rounds."""
        while not self.slots.acquire(timeout=1.0):  # waiting for a slot is alive, not hung
            self.heartbeat()
            if self.stop.is_set():
                return
        # The slot bounds the restores (CPU in the cluster), not the wait for a gateway
        # (seconds of a real agent's start): it is freed as soon as the restore is verified.
        free = _Once(self.slots.release)
        try:
            self._enter(Phase.RESTORING, reason=reason)
            restored = self._restore(reason, plan, free)
        finally:
            free()
        if restored is None:
            return
        # A re-sync that landed on a new pod gave it only the changed steps: no gateway for that,
        # the next round restores it in full.
        partial_on_new = plan is not None and self.pods.owed is not None
        if self.sandbox.gateway["enabled"] and restored.report.ok and not partial_on_new:
            startup = self.ctx.gateway.startup(restored.pod, restored.restart_for, restored.fresh)
            self.gateway_run = GatewayRun(restored, startup, reason, plan is not None)
            self._enter(Phase.GATEWAY, reason=reason)
            if not self.stop.is_set():
                self._gateway_round(False)  # its first step at once (a restart: the stop)
            return
        self._conclude(restored, None, None, reason, plan is not None)

    def _restore(self, reason: str, plan: Plan | None, free: Callable[[], None]) -> Restored | None:
        """The restore half, under the sandbox's lock; None when it did not get through."""
        events_at_start = self.events
        # The pod this round located, unless an event about it arrived since (a slot can
        # take a while): the restore need not locate it a second time.
        (instance, located_at), self._located = self._located, (None, -1)
        self.status.busy_until = time.monotonic() + 300
        try:
            with structlog.contextvars.bound_contextvars(reason=reason):
                restored = restore_once(
                    self.ctx,
                    plan=plan or self.plan,
                    facts=self.facts,
                    reason=reason,
                    located=instance if located_at == events_at_start else None,
                    capture_first=plan is None,  # a re-sync writes archive steps only
                    callbacks=Callbacks(
                        heartbeat=self.heartbeat,
                        restored=free,
                        on_wait=self._waiting,
                        replaced=lambda current: self.events != events_at_start and self._pod_changed(current),
                    ),
                )
        except SandboxGone as exc:
            self._start_over(str(exc), reason)
            return None
        except InputError as exc:  # e.g. the configured user is missing in this pod's image
            self.log.error("restore.input_error", error=str(exc), reason=reason)
            self._report_config_error(exc, reason)
            self._failed(reason)
            return None
        except ClawguardError as exc:
            self._set(f"{self.sandbox.name}: waiting: {exc}")
            self.log.warning("restore.interrupted", error=str(exc))
            self._failed(reason)
            return None
        finally:
            self.status.busy_until = 0.0
        self._note_pod(restored.instance.id, None)
        self.config_error = None
        facts = restored.plan.facts
        if facts is not None:
            self.facts = facts
            if plan is None:  # a full plan for this pod: the base for re-syncs and drift checks
                self.plan = restored.plan
        if restored.report.ok and self.pods.restored != restored.instance.id:
            # Its persisted paths are the agent's now: captured from here on, and the other
            # periodic duties start (a retry on the same pod does not push them back).
            self.pods.restored = restored.instance.id
            self.last_instance = restored.instance
            self.due.schedule(time.monotonic(), self.settings)
        return restored

    def _gateway_round(self, woken: bool) -> float:
        """One step of bringing the gateway up, when it is due; captures go on meanwhile."""
        run = self.gateway_run
        assert run is not None
        pod = run.restored.instance
        if woken and self._pod_changed(pod.id):
            self._start_over("the pod was replaced while waiting for its gateway", run.reason)
            return 0.0
        if time.monotonic() < run.startup.next_at:
            # Between two steps: the agent's state is captured when due (a step due now goes
            # first: a restart is not held up by a capture).
            self._capture_if_due(pod)
            return self._next_round()
        health: Health | None = None
        error = None
        self.status.busy_until = time.monotonic() + 300  # one step: a probe, the start, or the stop
        try:
            with structlog.contextvars.bound_contextvars(reason=run.reason):
                health = run.startup.step()
        except SandboxGone as exc:
            self._start_over(str(exc), run.reason)
            return 0.0
        except GatewayError as exc:
            error = str(exc)
        finally:
            self.status.busy_until = 0.0
        if health is None and error is None:
            self._set(f"{self.sandbox.name}: restored, {run.startup.describe()}")
            return self._next_round()
        self._drop_gateway_run()
        with structlog.contextvars.bound_contextvars(reason=run.reason):
            log_gateway_health(self.sandbox.name, run.restored, health, error)
        try:
            replaced = self.target.locate().id != pod.id
        except ClawguardError:
            replaced = True
        if replaced:
            self._start_over("the pod was replaced during the restore", run.reason)
            return 0.0
        self._conclude(run.restored, health, error, run.reason, run.subset)
        return self._next_round()

    def _conclude(
        self, restored: Restored, health: Health | None, error: str | None, reason: str, subset: bool
    ) -> None:
        """Record and announce the recovery; the next phase follows from its outcome."""
        try:
            with structlog.contextvars.bound_contextvars(reason=reason):
                result = conclude(self.ctx, restored, health, error, reason=reason, on_wait=self._waiting)
        except ClawguardError as exc:
            self.log.warning("restore.interrupted", error=str(exc))
            self._failed(reason)
            return
        self._set(result.status_line())
        if not result.ok:
            self._failed(reason)
            return
        if subset and self.pods.owed is not None:
            # The pod was replaced in between and got only the changed steps: restore it fully.
            self.pods.converged = None
            self.wake.set()
            self._enter(Phase.STARTING)
            return
        self.pods.converged = result.container_id
        self.pods.owed = None
        self.retry.reset()
        self._enter(Phase.WATCHING)

    def _failed(self, reason: str) -> None:
        """The recovery failed: the same pod is tried again after a growing delay (a new pod
        at once), under the reason it was owed (a replaced pod stays "pod replaced")."""
        self.pods.converged = None
        self.pods.owed = self.pods.owed or reason
        delay = self.retry.next()
        self._enter(Phase.FAILED, time.monotonic() + delay, retry_in=delay)

    def _drop_gateway_run(self) -> None:
        """Stop bringing the gateway up: a health watch still running in the pod is ended."""
        run, self.gateway_run = self.gateway_run, None
        if run is not None:
            run.startup.close()

    def _start_over(self, why: str, reason: str) -> None:
        """The pod went away mid-recovery: the next round (at once) locates the new one."""
        self._drop_gateway_run()
        self.log.warning("restore.restart", reason=why)
        self.pods.owed = self.pods.owed or reason
        self.pods.converged = None
        self.wake.set()
        self._enter(Phase.STARTING, why=why)

    def _waiting(self, what: str) -> None:
        """While another clawguard holds the sandbox's lock: alive (the watchdog is fed) and
        saying so in the status (a one-shot `clawguard restore` can take minutes). A stopping
        daemon gives the wait up."""
        self.heartbeat()
        if self.stop.is_set():
            raise Stopping(f"{self.sandbox.name}: the daemon is stopping")
        self._set(f"{self.sandbox.name}: waiting for {what}")

    def _pod_changed(self, current: str) -> bool:
        """Only asked after an event arrived mid-restore: one locate decides."""
        try:
            return self.target.locate().id != current
        except ClawguardError:
            return True

    def _check_health(self, instance: Instance) -> None:
        try:
            health = self.ctx.gateway.probe(open_pod(self.sandbox, self.target, instance, self.facts))
        except ClawguardError as exc:
            self.log.warning("gateway.probe_failed", error=str(exc))
            return
        if not health.healthy and self._pod_changed(instance.id):
            # The gateway is down because the pod is going or gone: the next round
            # handles it as a replacement (detected, restored in full, named so).
            self.wake.set()
            return
        self.ctx.store.update_when_free(self.sandbox.name, gateway=health.to_dict())
        if not health.healthy:
            self.log.warning("gateway.down", container_id=instance.short_id, status=health.status)
            self._converge("gateway down")


class _Once:
    """Calls ``action`` the first time it is called, and never again."""

    def __init__(self, action: Callable[[], object]) -> None:
        self._action: Callable[[], object] | None = action
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            action, self._action = self._action, None
        if action is not None:
            action()


class Daemon:
    def __init__(
        self,
        config: Config,
        notifier: Notifier | None = None,
        store: StateStore | None = None,
        targets: Mapping[str, Target] | None = None,
        contexts: Sequence[SandboxContext] | None = None,
    ) -> None:
        """``contexts``: the sandboxes as the façade built them; by default, built here from
        ``config`` (with ``targets`` for the sandboxes whose target is given)."""
        self.config = config
        self.notifier = notifier or systemd_notifier()
        self.store = store or StateStore()
        self.stop = threading.Event()
        self.changed = threading.Event()
        self.stopped_by: str | None = None  # the signal's name, once one asked us to stop
        # Only a bad config.yaml stops the daemon (load_config raised already). A sandbox whose
        # archive or plan is bad gets a worker in the config-error state: every other sandbox
        # stays protected, and it is protected as soon as its archive is fixed.
        slots = threading.BoundedSemaphore(config.daemon.max_parallel_resolved)
        self.workers = []
        for ctx in contexts if contexts is not None else sandbox_contexts(config, self.store, targets or {}):
            plan: Plan | None = None
            error: InputError | None = None
            try:
                plan = build_plan(ctx.config)
                plan.log_warnings()
            except InputError as exc:
                error = exc
            self.workers.append(SandboxWorker(ctx, plan, self.stop, self.changed.set, slots, config_error=error))

    def _watchdog_interval(self) -> float:
        usec = os.environ.get("WATCHDOG_USEC")
        return max(0.5, int(usec) / 1e6 / 3) if usec and usec.isdigit() else 5.0

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # The handler runs between two bytecodes of the main thread, which may be holding the
        # lock that setting an Event takes (self.changed.clear()): the events are set from a
        # bare thread (threading.Thread.start takes a lock of its own), and the logging and
        # STOPPING=1 (a send that may wait) happen in the main loop.
        self.stopped_by = signal.Signals(signum).name
        _thread.start_new_thread(self.shutdown, ())

    def shutdown(self) -> None:
        """Stop the workers and wake the main loop now, not at its next watchdog tick."""
        self.stop.set()
        self.changed.set()
        for worker in self.workers:
            worker.wake.set()

    def _watch_archives(self) -> BaseObserver | None:
        if not self.config.daemon.live_resync:
            return None
        observer = Observer()
        for worker in self.workers:
            # A missing archive cannot be watched: its worker (in the config-error state) tries
            # it again every poll_interval instead.
            if worker.sandbox.archive.is_dir():
                observer.schedule(ArchiveEvents(worker), str(worker.sandbox.archive), recursive=True)
        observer.daemon = True
        observer.start()
        return observer

    def run(self) -> int:
        if threading.current_thread() is threading.main_thread():  # tests run it in a thread
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        started = time.time()
        log.info(
            "daemon.start",
            sandboxes=[w.sandbox.name for w in self.workers],
            pid=os.getpid(),
            restores_at_once=self.config.daemon.max_parallel_resolved,
        )
        for worker in self.workers:
            worker.start()
        observer = self._watch_archives()
        interval = self._watchdog_interval()
        # A worker silent for longer than this (outside a bounded long operation) is hung.
        stale_after = max(interval * 3, self.config.daemon.poll_interval + 30.0)
        ready = False
        last_status = ""
        write_failed = False
        while not self.stop.is_set():
            now = time.monotonic()
            hung = [
                w.sandbox.name for w in self.workers if now - w.status.beat > stale_after and now > w.status.busy_until
            ]
            if not hung:
                self.notifier.notify("WATCHDOG=1")
            else:
                log.error("daemon.hung", sandboxes=hung)
            # READY=1 once every worker watches its sandbox (the first recoveries, gateway
            # waits included, go on behind it and show in STATUS=). It and the status line are
            # sent again next round if they could not go out (a unit whose READY=1 is lost
            # fails its start); a lost WATCHDOG=1 is just late.
            status = "; ".join(w.status.line for w in self.workers)
            if not ready and all(w.status.settled for w in self.workers):
                # One datagram: systemd has the status line when `systemctl start` returns.
                ready = self.notifier.notify(f"READY=1\nSTATUS={status}") is not False
                if ready:
                    last_status = status
                    log.info("daemon.ready")
            if status != last_status and self.notifier.notify(f"STATUS={status}") is not False:
                last_status = status
            try:
                write_json(
                    self.store.daemon_file,
                    {
                        "pid": os.getpid(),
                        "started_at": started,
                        "heartbeat_at": time.time(),
                        "ready": ready,
                        # What each worker is doing; masked like the logs (an error may quote a secret).
                        "workers": redact_value("", {w.sandbox.name: w.status.line for w in self.workers}),
                        "phases": {w.sandbox.name: w.phase.value for w in self.workers},
                    },
                )
            except OSError as exc:  # a full disk: `clawguard status` goes stale, the protection goes on
                if not write_failed:
                    log.error("daemon.state_write_failed", path=str(self.store.daemon_file), error=str(exc))
                    write_failed = True
            else:
                if write_failed:
                    log.info("daemon.state_write_recovered", path=str(self.store.daemon_file))
                    write_failed = False
            self.changed.wait(interval)
            self.changed.clear()
        log.info("daemon.stopping", signal=self.stopped_by)
        self.notifier.notify("STOPPING=1")
        if observer is not None:
            observer.stop()
        # Let each worker take its last capture; systemd's stop timeout bounds us anyway.
        deadline = time.monotonic() + SHUTDOWN_GRACE
        for worker in self.workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        log.info("daemon.stopped")
        return 0


class ArchiveEvents(FileSystemEventHandler):
    """Feeds a worker the paths that changed in its archive (editors' temp files included:
    the debounce and the plan comparison sort them out)."""

    RELEVANT = frozenset({"created", "modified", "deleted", "moved", "closed"})

    def __init__(self, worker: SandboxWorker) -> None:
        self.worker = worker

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in self.RELEVANT:
            path = event.src_path
            self.worker.archive_changed(path.decode() if isinstance(path, bytes) else path)


def _signature(planned: PlannedStep) -> tuple[object, ...]:
    """What a step would make the sandbox look like; equal signatures need no re-apply."""
    return tuple(
        (e.path, e.kind, e.mode, e.owner, e.sha256 if e.kind == "file" else None, e.link, e.recursive_owner, e.exact)
        for e in planned.entries
    )


def changed_steps(old: Plan, new: Plan) -> list[PlannedStep]:
    """The steps of ``new`` whose desired state differs from ``old``'s step of the same name."""
    before = {planned.step.name: _signature(planned) for planned in old.steps}
    return [planned for planned in new.steps if before.get(planned.step.name) != _signature(planned)]
