"""The always-on loop behind ``clawguard run``.

One worker thread per sandbox, so a sandbox that is unreachable or slow never
stalls another. Each worker wakes on an event from its target (or on the
safety-net poll), locates the pod, and converges when the container ID is new,
or on start-up, when it verifies the live sandbox instead of trusting its memory.
The main thread only supervises: it pings systemd's watchdog while every worker
shows signs of life, so a hung worker makes systemd restart the service.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Protocol

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from . import hooks, threads
from .agent import SandboxFacts
from .api import sandbox_contexts
from .config import Config
from .context import SandboxContext
from .converge import DRIFT_CHECK, RESYNC, Callbacks, Convergence, capture_sandbox, converge, open_pod
from .errors import ClawguardError, InputError
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
# How long a stopping daemon waits for its workers' final captures.
SHUTDOWN_GRACE = 20.0
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
    settled: bool = False  # the first state is known (restored, or known to be unreachable)
    beat: float = 0.0
    busy_until: float = 0.0  # a long but bounded operation is in progress


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
        self.status = WorkerStatus(beat=time.monotonic())
        self.wake = threading.Event()
        self.last_id: str | None = None  # in memory only: a restarted daemon verifies again
        self.last_instance: Instance | None = None
        self.facts: SandboxFacts | None = None  # of the last pod restored: read once per pod
        self.startup_error = config_error
        self.config_error: str | None = None  # the input error in force, as reported
        self._next_plan_try = 0.0
        self.changed_files: set[str] = set()  # archive paths changed since the plan was built
        self.changed_at: float | None = None
        self.generation = 0  # bumped by every event, so a restore can tell it was overtaken
        self.woken_at: float | None = None  # monotonic time of the first event since the last round
        self._located: tuple[Instance | None, int] = (None, -1)  # a new pod, and the generation it was seen at
        self.log = log.bind(sandbox=ctx.name)

    def heartbeat(self) -> None:
        self.status.beat = time.monotonic()

    def _set(self, line: str, settled: bool = True) -> None:
        if line != self.status.line:
            self.status.line = line
            self.on_change()
        self.status.settled = self.status.settled or settled

    def notice(self, reason: str) -> None:
        self.generation += 1
        if self.woken_at is None:
            self.woken_at = time.monotonic()
        self.log.debug("watch.event", reason=reason)
        self.wake.set()

    def archive_changed(self, path: str) -> None:
        """Called from the archive watcher's thread; the worker re-syncs after RESYNC_DEBOUNCE."""
        self.changed_files.add(path)
        self.changed_at = time.monotonic()
        self.wake.set()

    def run(self) -> None:
        guarded(self._loop, self.name)()

    def _loop(self) -> None:
        threads.start(self._watch, f"watch-{self.sandbox.name}")
        if self.startup_error is not None:
            self._report_config_error(self.startup_error, "daemon start")
        self._backoff = 1.0
        self._failed_pod: str | None = None  # the pod whose last restore failed, retried at _retry_at
        self._retry_at = 0.0
        self._retry_delay = 1.0
        self._next_health = 0.0
        self._next_verify = 0.0
        self._next_capture = 0.0
        self._seen_generation = self.generation
        while not self.stop.is_set():
            self.heartbeat()
            # Cleared before the round, not after the wait: an event that arrives
            # while we work makes the next wait return at once instead of being lost.
            self.wake.clear()
            try:
                delay = self._tick()
            except Exception as exc:  # a bug must cost one round, never the worker
                self._set(f"{self.sandbox.name}: internal error: {exc!r}")
                with contextlib.suppress(Exception):
                    self.log.exception("worker.error")
                delay = self._backoff
                self._backoff = min(self._backoff * 2, self.settings.backoff_max)
            self.wake.wait(delay)
        if self.last_instance is not None:  # the agent's latest state, before systemd stops us
            self._capture(self.last_instance, "daemon stopping", lock_timeout=10.0)

    def _tick(self) -> float:
        """One round: locate, converge if the pod is new, probe the gateway when due.
        Returns how long to sleep before the next round (an event cuts it short)."""
        if self.plan is None:
            return self._retry_plan()
        woken = self.generation != self._seen_generation  # an event arrived since the last round
        self._seen_generation = self.generation
        woken_at, self.woken_at = self.woken_at, None
        try:
            instance = self.target.locate()
        except ClawguardError as exc:
            self._set(f"{self.sandbox.name}: waiting: {exc}")
            # A pod being replaced is briefly absent: only a longer absence is a warning.
            level = 30 if self._backoff >= UNREACHABLE_WARN_AFTER else 20
            self.log.log(level, "sandbox.unreachable", error=str(exc), retry_in=round(self._backoff, 1))
            delay = self._backoff
            self._backoff = min(self._backoff * 2, self.settings.backoff_max)
            return delay
        self._backoff = 1.0
        if instance.id != self.last_id and instance.id == self._failed_pod and time.monotonic() < self._retry_at:
            # This pod's restore failed a moment ago: retry with backoff, not at every poll.
            return max(0.05, min(self._retry_at - time.monotonic(), self.settings.poll_interval))
        if instance.id != self.last_id:
            self.log.info(
                "sandbox.detected" if self.last_id else "sandbox.verify",
                container_id=instance.short_id,
                previous=self.last_id[:12] if self.last_id else None,
                # From the event that woke this round; None (not logged) when the poll found it.
                since_event=round(time.monotonic() - woken_at, 3) if woken_at is not None and self.last_id else None,
            )
            self._located = (instance, self.generation)
            self._converge("pod replaced" if self.last_id else "daemon start")
            self._next_health = time.monotonic() + self.settings.health_interval
            self._next_verify = time.monotonic() + self.settings.verify_interval
            self._next_capture = time.monotonic() + self.settings.persist_interval
        elif woken and self.sandbox.gateway["enabled"]:
            # Same container, but something happened to it (docker restart keeps the ID and
            # kills the gateway): check the gateway now, not at the next health_interval.
            self._check_health(instance)
            self._next_health = time.monotonic() + self.settings.health_interval
        elif self.changed_at is not None and time.monotonic() >= self.changed_at + RESYNC_DEBOUNCE:
            self._resync(instance)
        elif time.monotonic() >= self._next_capture:
            self._capture(instance, "interval")
            self._next_capture = time.monotonic() + self.settings.persist_interval
        elif time.monotonic() >= self._next_verify:
            # The plan's checks against the live sandbox; only drifted steps are re-applied.
            self._converge(DRIFT_CHECK)
            self._next_verify = time.monotonic() + self.settings.verify_interval
        elif time.monotonic() >= self._next_health and self.sandbox.gateway["enabled"]:
            self._check_health(instance)
            self._next_health = time.monotonic() + self.settings.health_interval
        due = min(self._next_health, self._next_verify, self._next_capture) - time.monotonic()
        if self.changed_at is not None:
            return max(0.05, self.changed_at + RESYNC_DEBOUNCE - time.monotonic())
        return min(self.settings.poll_interval, max(1.0, due))

    def _report_config_error(self, error: InputError, reason: str) -> None:
        """The sandbox's input is bad: say so once per distinct error, everywhere a user looks
        (journal at priority err, status, the systemd STATUS= line, the on_failed hook)."""
        message = str(error)
        self._set(f"{self.sandbox.name}: config error: {message}")
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
            "CLAWGUARD_CONTAINER_ID": self.last_id or "",
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
        if self.changed_at is not None and now < self.changed_at + RESYNC_DEBOUNCE:
            return max(0.05, self.changed_at + RESYNC_DEBOUNCE - now)
        if self.changed_at is None and now < self._next_plan_try:
            return min(self._next_plan_try - now, self.settings.poll_interval)
        files = sorted(self.changed_files)
        self.changed_files.clear()
        self.changed_at = None
        self._next_plan_try = now + self.settings.poll_interval
        try:
            self.plan = build_plan(self.sandbox, self.facts)
        except InputError as exc:
            self._report_config_error(exc, "archive changed" if files else "retry")
            return min(self._next_plan_try - now, self.settings.poll_interval)
        self.plan.log_warnings()
        self.log.info("sandbox.config_fixed", files=files or None)
        self.config_error = None
        self.last_id = None  # restore in full with the new plan
        self._set(f"{self.sandbox.name}: config fixed, restoring", settled=False)
        return 0.0

    def _resync(self, instance: Instance) -> None:
        """Re-validate the archive after an edit; apply only the steps whose result changed."""
        files = sorted(self.changed_files)
        self.changed_files.clear()
        self.changed_at = None
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
        if self.last_id is None:
            return  # not restored yet: the next full restore uses the new plan
        self._converge(RESYNC, plan.subset(changed))
        if self.last_id is not None and self.last_id != instance.id:
            # The pod was replaced in between and got only the changed steps: restore it fully.
            self.last_id = None
            self.wake.set()

    def _capture(self, instance: Instance, reason: str, lock_timeout: float = 0.0) -> None:
        if self.plan is None or not self.plan.persist or self.last_id != instance.id:
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
        delay = 1.0
        while not self.stop.is_set():
            try:
                self.target.watch(self.notice, self.stop)
                delay = 1.0
            except Exception as exc:  # an event source failing must never kill the worker
                self.log.warning("watch.failed", error=str(exc), retry_in=delay)
            self.stop.wait(delay)
            delay = min(delay * 2, self.settings.backoff_max)

    def _converge(self, reason: str, plan: Plan | None = None) -> None:
        while not self.slots.acquire(timeout=1.0):  # waiting for a slot is alive, not hung
            self.heartbeat()
            if self.stop.is_set():
                return
        # The slot bounds the restores (CPU in the cluster), not the wait for a gateway
        # (seconds of a real agent's start): it is freed as soon as the restore is verified.
        free = _Once(self.slots.release)
        try:
            self._converge_now(reason, plan, free)
        finally:
            free()

    def _converge_now(self, reason: str, plan: Plan | None, restored: Callable[[], None]) -> None:
        ok = False
        try:
            ok = self._converge_once(reason, plan, restored)
        finally:
            if ok:
                self._failed_pod, self._retry_delay = None, 1.0
            else:  # the same pod is tried again after a growing delay (a new pod at once)
                self._failed_pod = self._current_pod()
                self._retry_at = time.monotonic() + self._retry_delay
                self._retry_delay = min(self._retry_delay * 2, self.settings.backoff_max)

    def _current_pod(self) -> str | None:
        try:
            return self.target.locate().id
        except ClawguardError:
            return None

    def _converge_once(self, reason: str, plan: Plan | None, restored: Callable[[], None]) -> bool:
        """One converge; whether it succeeded."""
        started_generation = self.generation
        # The pod this round located, unless an event about it arrived since (a slot can
        # take a while): converge then need not locate it a second time.
        (instance, generation), self._located = self._located, (None, -1)
        self.status.busy_until = time.monotonic() + 300
        try:
            result: Convergence = converge(
                self.ctx,
                plan=plan or self.plan,
                facts=self.facts,
                reason=reason,
                located=instance if generation == started_generation else None,
                callbacks=Callbacks(
                    heartbeat=self.heartbeat,
                    restored=restored,
                    on_wait=self._waiting,
                    replaced=lambda current: self.generation != started_generation and self._pod_changed(current),
                ),
            )
        except InputError as exc:  # e.g. the configured user is missing in this pod's image
            self.log.error("restore.input_error", error=str(exc), reason=reason)
            self._report_config_error(exc, reason)
            self.last_id = None
            return False
        except ClawguardError as exc:
            self._set(f"{self.sandbox.name}: waiting: {exc}")
            self.log.warning("restore.interrupted", error=str(exc))
            return False
        finally:
            self.status.busy_until = 0.0
        self._set(result.status_line())
        self.config_error = None
        if result.plan is not None and result.plan.facts is not None:
            self.facts = result.plan.facts
            if plan is None:  # a full plan for this pod: the base for re-syncs and drift checks
                self.plan = result.plan
        # A failed restore is retried at the next poll or event; a good one is remembered.
        self.last_id = result.container_id if result.ok else None
        if result.ok:
            self.last_instance = Instance(result.container_id, self.sandbox.name)
        return result.ok

    def _waiting(self, what: str) -> None:
        """While another clawguard holds the sandbox's lock: alive (the watchdog is fed) and
        saying so in the status (a one-shot `clawguard restore` can take minutes)."""
        self.heartbeat()
        self._set(f"{self.sandbox.name}: waiting for {what}", settled=False)

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
    ) -> None:
        self.config = config
        self.notifier = notifier or systemd_notifier()
        self.store = store or StateStore()
        self.stop = threading.Event()
        self.changed = threading.Event()
        self.stopped_by: str | None = None  # the signal's name, once one asked us to stop
        # Only a bad config.yaml stops the daemon (load_config raised already). A sandbox whose
        # archive or plan is bad gets a worker in the config-error state: every other sandbox
        # stays protected, and it is protected as soon as its archive is fixed.
        slots = threading.BoundedSemaphore(config.daemon.restores_at_once)
        self.workers = []
        for ctx in sandbox_contexts(config, self.store, targets or {}):
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
            restores_at_once=self.config.daemon.restores_at_once,
        )
        for worker in self.workers:
            worker.start()
        observer = self._watch_archives()
        interval = self._watchdog_interval()
        # A worker silent for longer than this (outside a bounded long operation) is hung.
        stale_after = max(interval * 3, self.config.daemon.poll_interval + 30.0)
        ready = False
        last_status = ""
        while not self.stop.is_set():
            now = time.monotonic()
            hung = [
                w.sandbox.name for w in self.workers if now - w.status.beat > stale_after and now > w.status.busy_until
            ]
            if not hung:
                self.notifier.notify("WATCHDOG=1")
            else:
                log.error("daemon.hung", sandboxes=hung)
            # READY=1 and the status line are sent again next round if they could not go out
            # (a unit whose READY=1 is lost fails its start); a lost WATCHDOG=1 is just late.
            if not ready and all(w.status.settled for w in self.workers):
                ready = self.notifier.notify("READY=1") is not False
                if ready:
                    log.info("daemon.ready")
            status = "; ".join(w.status.line for w in self.workers)
            if status != last_status and self.notifier.notify(f"STATUS={status}") is not False:
                last_status = status
            write_json(
                self.store.daemon_file,
                {
                    "pid": os.getpid(),
                    "started_at": started,
                    "heartbeat_at": time.time(),
                    "ready": ready,
                    # What each worker is doing; masked like the logs (an error may quote a secret).
                    "workers": redact_value("", {w.sandbox.name: w.status.line for w in self.workers}),
                },
            )
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
