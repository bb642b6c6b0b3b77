"""The one retry helper: capped exponential delays, every wait cut short by the stop event."""

from __future__ import annotations

import threading
import time

import pytest
from tenacity import Retrying, retry_if_result, stop_after_delay

from clawguard.backoff import Backoff, Stopped, interruptible, keep_running


def test_delays_double_up_to_the_cap_and_start_over_on_reset() -> None:
    backoff = Backoff(1.0, 30.0)
    assert [backoff.next() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.peek() == 30 and backoff.failures == 7
    backoff.reset()
    assert backoff.peek() == 1 and backoff.next() == 1
    fine = Backoff(0.25, 2.0)
    assert [fine.next() for _ in range(5)] == [0.25, 0.5, 1.0, 2.0, 2.0]


def test_an_interruptible_sleep_raises_when_stopped_and_wakes_early() -> None:
    stop, wake = threading.Event(), threading.Event()
    woken: list[int] = []
    sleep = interruptible(stop, wake, lambda: woken.append(1))
    started = time.monotonic()
    sleep(0.01)  # nothing set: the full (short) time
    wake.set()
    sleep(60)  # returns at once, and says so
    assert woken == [1] and time.monotonic() - started < 5
    threading.Timer(0.1, stop.set).start()
    with pytest.raises(Stopped):
        interruptible(stop)(60)
    assert time.monotonic() - started < 5


def test_a_tenacity_wait_ends_within_a_moment_of_the_stop_event() -> None:
    """The gateway's health wait: up to start_timeout of probes, each sleep cut by SIGTERM."""
    stop = threading.Event()
    probes: list[float] = []
    retrying = Retrying(
        sleep=interruptible(stop),
        stop=stop_after_delay(300),
        wait=Backoff(0.05, 0.2),
        retry=retry_if_result(lambda healthy: not healthy),
    )
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    with pytest.raises(Stopped):
        retrying(lambda: probes.append(time.monotonic()) or False)
    assert time.monotonic() - started < 2 and len(probes) >= 2


def test_keep_running_reports_each_failure_runs_again_and_ends_on_stop() -> None:
    stop = threading.Event()
    runs: list[str] = []
    failures: list[tuple[str, float]] = []
    successes: list[int] = []

    def body() -> None:
        runs.append("run")
        if len(runs) <= 2:
            raise RuntimeError(f"boom {len(runs)}")
        if len(runs) == 4:
            stop.set()

    keep_running(
        body,
        stop=stop,
        backoff=Backoff(0.01, 0.02),
        failed=lambda exc, delay: failures.append((str(exc), delay)),
        succeeded=lambda: successes.append(1),
    )
    assert runs == ["run"] * 4
    assert failures == [("boom 1", 0.01), ("boom 2", 0.02)]
    assert successes == [1]  # the fourth run set stop: no wait, no report after it


def test_keep_running_starts_over_when_told_to_retry_now() -> None:
    stop, now = threading.Event(), threading.Event()
    backoff = Backoff(0.01, 60.0)
    runs: list[float] = []

    def body() -> None:
        runs.append(time.monotonic())
        if len(runs) == 8:  # the backoff has grown to 1.28 s: the next wait is cut short
            now.set()
        if len(runs) == 9:
            stop.set()

    started = time.monotonic()
    keep_running(body, stop=stop, backoff=backoff, retry_now=now)
    assert len(runs) == 9 and time.monotonic() - started < 1.5
    assert runs[8] - runs[7] < 0.5  # not the 1.28 s the backoff had grown to
    assert backoff.peek() == 0.02  # started over: 0.01 was handed out after the ninth run
