"""Capped exponential backoff: the one retry helper, every wait cut short by a stop event.

Two ways to use it:

* :class:`Backoff` is the sequence of delays (tenacity's ``wait_exponential``: 1, 2, 4 …
  capped), restartable. A loop that keeps its own deadlines takes the next delay from it
  (the daemon's workers: a wait is a state with a deadline, never a sleep); it is also a
  tenacity ``wait=``.
* :func:`keep_running` runs a body again and again until a stop event is set, with those
  delays between attempts, through tenacity's ``Retrying``: its ``sleep=`` is
  :func:`interruptible`, an ``Event.wait`` that raises :class:`Stopped` as soon as the
  stop event is set. A body that raises is logged by the caller's ``failed`` and run
  again: the thread that runs it never dies of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from tenacity import RetryCallState, Retrying, retry_always, wait_exponential


class Waitable(Protocol):
    """What is needed of a threading.Event (tests give one on a virtual clock)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class Resettable(Waitable, Protocol):
    def clear(self) -> None: ...


class Stopped(Exception):
    """The stop event was set while waiting between two attempts."""


@dataclass
class _Attempt:
    attempt_number: int


class Backoff:
    """The delays before attempts 2, 3, …: ``initial``, then ``factor`` times the last,
    at most ``maximum`` (tenacity's ``wait_exponential``). ``reset()`` starts over."""

    def __init__(self, initial: float = 1.0, maximum: float = 60.0, factor: float = 2.0) -> None:
        self._strategy = wait_exponential(multiplier=initial, min=initial, max=maximum, exp_base=factor)
        self.failures = 0  # delays handed out since the last reset

    def next(self) -> float:
        """The next delay (and one failure more)."""
        self.failures += 1
        return float(self._strategy(_Attempt(self.failures)))  # type: ignore[arg-type]

    def peek(self) -> float:
        """The delay ``next()`` would hand out, without counting a failure."""
        return float(self._strategy(_Attempt(self.failures + 1)))  # type: ignore[arg-type]

    def reset(self) -> None:
        self.failures = 0

    def __call__(self, _retry_state: RetryCallState) -> float:  # as tenacity's wait=
        return self.next()


def interruptible(
    stop: Waitable, wake: Waitable | None = None, on_wake: Callable[[], None] | None = None
) -> Callable[[float], None]:
    """A tenacity ``sleep=`` that waits on ``wake`` (default: ``stop``) and raises
    :class:`Stopped` once ``stop`` is set. A ``wake`` set before the time is up ends the
    sleep early and calls ``on_wake`` (e.g. to start the backoff over)."""
    event = wake if wake is not None else stop

    def sleep(seconds: float) -> None:
        if stop.is_set():
            raise Stopped
        woken = event.wait(seconds)
        if stop.is_set():
            raise Stopped
        if woken and on_wake is not None:
            on_wake()

    return sleep


def keep_running(
    body: Callable[[], object],
    *,
    stop: Waitable,
    backoff: Backoff,
    retry_now: Resettable | None = None,
    healthy_after: float | None = None,
    failed: Callable[[Exception, float], None] | None = None,
    succeeded: Callable[[], None] | None = None,
) -> None:
    """Run ``body`` until ``stop`` is set, waiting ``backoff``'s next delay after each run.

    A body that raises is reported with ``failed(exception, delay)``, one that returns with
    ``succeeded()``; either way it runs again after the delay. One that ran for at least
    ``healthy_after`` seconds starts the backoff over. ``retry_now``, when set during a
    wait, ends it at once and starts the backoff over (it is cleared before each run, so
    that only what happens from then on counts). Returns once ``stop`` is set."""
    outcome: list[Exception | None] = [None]

    def attempt() -> None:
        if retry_now is not None and retry_now is not stop:
            retry_now.clear()
        started = time.monotonic()
        try:
            body()
            outcome[0] = None
        except Exception as exc:  # reported by before_sleep, then run again
            outcome[0] = exc
        if healthy_after is not None and time.monotonic() - started >= healthy_after:
            backoff.reset()

    def before_sleep(state: RetryCallState) -> None:
        error = outcome[0]
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        if error is not None and failed is not None:
            failed(error, delay)
        elif error is None and succeeded is not None:
            succeeded()

    retrying = Retrying(
        sleep=interruptible(stop, retry_now, backoff.reset),
        stop=lambda _state: stop.is_set(),
        wait=backoff,
        retry=retry_always,
        before_sleep=before_sleep,
        retry_error_callback=lambda _state: None,
    )
    try:
        retrying(attempt)
    except Stopped:
        return
