"""The public API: everything the command line does, as methods of one object.

Like ansible-runner's ``interface.run()``: the CLI parses arguments, calls one of
these and prints what it returns; it holds no logic of its own. Dependencies (the
state store, each sandbox's target and gateway) are built here, once::

    from clawguard import Clawguard

    guard = Clawguard.load("~/.config/clawguard/config.yaml")
    for result in guard.restore("my-assistant"):
        print(result.status_line())

Every method validates the whole config and every selected archive before it
touches a sandbox, and raises ``InputError`` (exit 2) when they are bad.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .agent import SandboxFacts
from .config import Config, SandboxConfig, load_config
from .context import SandboxContext, build_context
from .converge import Callbacks, Convergence, capture_sandbox, converge, open_pod, plan_live
from .errors import TargetError
from .persist import CaptureOutcome
from .plan import Plan, build_plan
from .pod import Pod
from .restore import AgentRejected, Progress, preflight_objections, resolve_owners
from .state import StateStore, read_json
from .targets import Discovery, Target
from .targets import discover as discover_with

if TYPE_CHECKING:  # the daemon's own dependencies (watchdog, sdnotify) load only when it runs
    from .daemon import Daemon


@dataclass(frozen=True)
class Checked:
    """``check`` for one sandbox: its plan, the pod it was made for (if reachable), and what was accepted."""

    plan: Plan
    pod: Pod | None
    where: str  # which pod, or why none
    accepted: list[str]  # steps whose files the agent in the pod accepted


class Clawguard:
    def __init__(
        self,
        config: Config,
        *,
        store: StateStore | None = None,
        targets: Mapping[str, Target] | None = None,
    ) -> None:
        """``targets`` replaces the target built from the config for the sandboxes it names
        (tests, and embedding programs that reach their sandboxes their own way)."""
        self.config = config
        self.store = store or StateStore()
        self._targets = dict(targets or {})
        self._contexts: dict[str, SandboxContext] = {}

    @classmethod
    def load(cls, path: str | Path | None = None, **kwargs: Any) -> Clawguard:
        """From the config file at ``path`` (default: $CLAWGUARD_CONFIG, then the XDG location)."""
        return cls(load_config(path), **kwargs)

    def context(self, name: str) -> SandboxContext:
        """The sandbox ``name`` with its target, gateway and state, built once."""
        if name not in self._contexts:
            self._contexts[name] = build_context(self.config, name, self.store, self._targets.get(name))
        return self._contexts[name]

    def select(self, name: str | None = None, *, warn: bool = False) -> list[SandboxContext]:
        """The sandbox ``name``, or all; each one's archive validated (InputError) before any is
        used, and its plan's warnings logged when ``warn``."""
        chosen = self.config.select(name)
        for sandbox in chosen:
            plan = build_plan(sandbox)
            if warn:
                plan.log_warnings()
        return [self.context(sandbox.name) for sandbox in chosen]

    # ----------------------------------------------------------------- actions

    def restore(
        self,
        sandbox: str | None = None,
        *,
        dry_run: bool = False,
        gateway: bool = True,
        progress: Progress | None = None,
        on_each: Callable[[Convergence], None] | None = None,
    ) -> list[Convergence]:
        """Check, apply and verify every step, then start the gateway and check it (``gateway``).

        With several sandboxes, every pod's plan is made and its users resolved first (reads
        only), so that a bad second one stops the command before the first is written.
        """
        contexts = self.select(sandbox, warn=True)
        facts = {ctx.name: self._check_pod(ctx) for ctx in contexts} if len(contexts) > 1 else {}
        results = []
        for ctx in contexts:
            result = converge(
                ctx,
                facts=facts.get(ctx.name),
                dry_run=dry_run,
                with_gateway=gateway,
                callbacks=Callbacks(progress=progress),
            )
            results.append(result)
            if on_each is not None:
                on_each(result)
        return results

    def _check_pod(self, ctx: SandboxContext) -> SandboxFacts | None:
        try:
            pod = open_pod(ctx.config, ctx.target, ctx.target.locate())
        except TargetError:
            return None  # unreachable now: its own restore reports that, and writes nothing
        resolve_owners(build_plan(ctx.config, pod.facts), pod.facts.users)
        return pod.facts

    def capture(self, sandbox: str | None = None) -> list[tuple[str, CaptureOutcome]]:
        """Capture each sandbox's persisted paths from its live pod, once."""
        return [(ctx.name, capture_sandbox(ctx)) for ctx in self.select(sandbox)]

    def check(self, sandbox: str | None = None, *, offline: bool = False) -> list[Checked]:
        """Validate the config and the archives; where the pod is reachable (and not ``offline``),
        plan for it and have its agent accept openclaw.json. Writes nothing. Raises
        AgentRejected (an InputError) when the agent refuses a file."""
        contexts = self.select(sandbox, warn=True)
        results = []
        for ctx in contexts:
            if offline:
                results.append(Checked(build_plan(ctx.config), None, "not read (--offline)", []))
                continue
            plan, pod, where = plan_live(ctx.config, ctx.target)
            accepted = []
            if pod is not None:
                for planned in plan.steps:
                    rejected: list[AgentRejected] = preflight_objections(planned, pod)
                    if rejected:
                        raise rejected[0]
                    if planned.preflights:
                        accepted.append(planned.step.name)
            results.append(Checked(plan, pod, where, accepted))
        return results

    def plan(self, sandbox: str | None = None) -> list[tuple[Plan, Pod | None, str]]:
        """The ordered plan for each sandbox's live pod (or from the config alone, and why)."""
        return [plan_live(ctx.config, ctx.target) for ctx in self.select(sandbox)]

    def status(self) -> dict[str, Any]:
        """What the daemon and the last restores recorded, per sandbox. Reads only."""
        return {
            "daemon": _daemon_info(self.store),
            "sandboxes": [{"sandbox": name, **self.store.load(name)} for name in self.config.sandboxes],
        }

    def daemon(self, notifier: Any = None, *, log_level: str = "info") -> Daemon:
        """The always-on service (``clawguard run``): ``.run()`` blocks until SIGTERM.

        With ``daemon.metrics.listen`` set, the metrics endpoint is served too."""
        from .daemon import Daemon  # watchdog and sdnotify are the daemon's alone

        listen = self.config.daemon.metrics.get("listen")
        if listen:
            from .metrics import enable  # prometheus_client is imported only when metrics are on

            # Before the daemon: its workers' loggers keep the processor chain they were bound with.
            enable(listen, self.config, self.store, log_level)
        contexts = [self.context(name) for name in self.config.sandboxes]
        return Daemon(self.config, notifier, self.store, contexts=contexts)


def discover(docker_host: str | None = None) -> Discovery:
    """Every OpenShell sandbox running on this machine (``clawguard init``), each one found
    by its target kind and located as the daemon will locate it: k3s pods and Docker
    containers through the Docker engine at ``docker_host``, OpenShell 0.1.x sandboxes
    through every gateway the OpenShell CLI registered. Needs no config."""
    return discover_with(docker_host)


def _daemon_info(store: StateStore) -> dict[str, Any]:
    info = read_json(store.daemon_file)
    pid = info.get("pid")
    alive = False
    if isinstance(pid, int):
        try:
            os.kill(pid, 0)
            alive = True
        except (ProcessLookupError, PermissionError):
            alive = False
    info["running"] = alive and time.time() - float(info.get("heartbeat_at", 0)) < 120
    return info


__all__ = ["Checked", "Clawguard", "SandboxConfig", "discover"]
