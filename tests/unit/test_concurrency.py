"""A one-shot restore and the daemon racing on one sandbox never interleave writes."""

from __future__ import annotations

import io
import itertools
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import clawguard.converge as converge_module
from clawguard import log, parse_config
from clawguard.converge import converge
from clawguard.daemon import Daemon
from clawguard.gateway import GatewayStartup, Health
from clawguard.sandboxfs import APPLY_SCRIPT
from clawguard.targets.base import ExecResult, Instance

from .chroot_sandbox import context, make_sandbox_root
from .conftest import basic_config
from .test_daemon import PodTarget, Recorder, _wait


class SlowPod(PodTarget):
    """Every command takes a little longer, so that the racers really overlap in time."""

    writes: list[tuple[int, float, float]]

    def exec(
        self, instance: Instance, argv: Sequence[str], stdin: bytes | None = None, *, user: str | None = None
    ) -> ExecResult:
        time.sleep(0.01)
        started = time.monotonic()
        result = super().exec(instance, argv, stdin, user=user)
        if APPLY_SCRIPT in argv:
            self.writes.append((threading.get_ident(), started, time.monotonic()))
        return result


def test_one_shot_restores_and_the_daemon_take_turns(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log.configure("error", io.StringIO())
    spans: list[tuple[int, float, float]] = []
    real_run_plan = converge_module.run_plan

    def recorded(*args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        try:
            return real_run_plan(*args, **kwargs)
        finally:
            spans.append((threading.get_ident(), started, time.monotonic()))

    monkeypatch.setattr(converge_module, "run_plan", recorded)
    config = parse_config(basic_config(archive, "    gateway: {enabled: false}\n"), "c.yaml")
    sandbox = config.sandboxes["my-assistant"]
    root = tmp_path / "root"
    daemon_target = SlowPod(make_sandbox_root(root))
    writes: list[tuple[int, float, float]] = []
    daemon_target.writes = writes
    daemon = Daemon(config, Recorder(), targets={"my-assistant": daemon_target})
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        _wait(lambda: bool(spans))
        for round_number in range(4):
            daemon_target.replace_pod(f"{round_number + 1}" * 64)  # wiped: everyone has work to do
            one_shot = SlowPod(root)
            one_shot.instance = daemon_target.instance
            one_shot.writes = writes
            racers = [threading.Thread(target=converge, args=(context(sandbox, one_shot),)) for _ in range(2)]
            for racer in racers:
                racer.start()
            for racer in racers:
                racer.join(60)
        _wait(lambda: len({ident for ident, _, _ in spans}) >= 3)  # the daemon and the one-shots all ran
    finally:
        daemon.shutdown()
        runner.join(20)

    spans.sort(key=lambda span: span[1])
    for (a_ident, _a_start, a_end), (b_ident, b_start, _b_end) in itertools.pairwise(spans):
        assert b_start >= a_end, f"restores overlapped: thread {a_ident} and thread {b_ident}"
    assert len(writes) >= 5  # one batched write per restore that had work: the first and four rounds
    for ident, start, end in writes:  # every write inside a restore of the same thread
        assert any(s_ident == ident and s <= start and end <= e for s_ident, s, e in spans)


def test_restores_across_sandboxes_run_in_parallel_up_to_the_bound(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log.configure("error", io.StringIO())
    running = 0
    peak = 0
    guard = threading.Lock()
    real_run_plan = converge_module.run_plan

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal running, peak
        with guard:
            running += 1
            peak = max(peak, running)
        try:
            time.sleep(0.3)  # long enough for the others to pile up
            return real_run_plan(*args, **kwargs)
        finally:
            with guard:
                running -= 1

    monkeypatch.setattr(converge_module, "run_plan", counted)
    names = [f"sandbox-{n}" for n in range(5)]
    text = "version: 1\ndaemon: {max_parallel: 2}\nsandboxes:\n" + "".join(
        f"  {name}:\n    target: {{kind: k3s}}\n    archive: {archive}\n    gateway: {{enabled: false}}\n"
        for name in names
    )
    targets = {name: SlowPod(make_sandbox_root(tmp_path / name)) for name in names}
    for target in targets.values():
        target.writes = []
    daemon = Daemon(parse_config(text, "c.yaml"), Recorder(), targets=dict(targets))
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        _wait(lambda: all(t.writes for t in targets.values()), timeout=60)  # every sandbox restored
    finally:
        daemon.shutdown()
        runner.join(20)
    assert peak == 2  # parallel, and never more than max_parallel


def test_a_gateway_wait_does_not_hold_a_restore_slot(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """max_parallel bounds restores: a sandbox waiting for its gateway (a real agent takes
    seconds to start) has freed its slot for the next sandbox's restore."""
    log.configure("error", io.StringIO())
    events: list[tuple[str, str, float]] = []
    guard = threading.Lock()
    real_run_plan = converge_module.run_plan

    def restore(plan: Any, *args: Any, **kwargs: Any) -> Any:
        with guard:
            events.append(("restore", plan.sandbox.name, time.monotonic()))
        return real_run_plan(plan, *args, **kwargs)

    def slow_gateway(self: GatewayStartup) -> Health:  # the daemon brings a gateway up step by step
        with guard:
            events.append(("gateway from", self.gateway.sandbox, time.monotonic()))
        time.sleep(1.5)
        with guard:
            events.append(("gateway to", self.gateway.sandbox, time.monotonic()))
        return Health(True, "live", time.time())

    monkeypatch.setattr(converge_module, "run_plan", restore)
    monkeypatch.setattr(GatewayStartup, "step", slow_gateway)
    names = ["sandbox-a", "sandbox-b"]
    text = "version: 1\ndaemon: {max_parallel: 1}\nsandboxes:\n" + "".join(
        f"  {name}:\n    target: {{kind: k3s}}\n    archive: {archive}\n" for name in names
    )
    targets = {name: PodTarget(make_sandbox_root(tmp_path / name)) for name in names}
    daemon = Daemon(parse_config(text, "c.yaml"), Recorder(), targets=dict(targets))
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        _wait(lambda: sum(kind == "gateway to" for kind, _, _ in events) == 2, timeout=60)
    finally:
        daemon.shutdown()
        runner.join(20)
    first_wait = next((at, name) for kind, name, at in events if kind == "gateway from")
    second_restore = next(at for kind, name, at in events if kind == "restore" and name != first_wait[1])
    first_done = next(at for kind, name, at in events if kind == "gateway to" and name == first_wait[1])
    assert first_wait[0] <= second_restore < first_done  # the next restore did not wait for that gateway
