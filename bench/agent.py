"""The real OpenClaw gateway: pod replaced -> ``/health`` live under the daemon, next to
the gateway's own cold start, measured alone in the same run.

* **Cold start alone**: a fresh pod of the real agent (:data:`testbed.LATEST_AGENT`,
  no restore, no daemon), its gateway started by hand the way NemoClaw does
  (``Testbed.start_gateway``: ``nohup openclaw gateway run &`` as the sandbox user),
  timed from the start command until ``/health`` answers live (polled from inside the
  pod with ``curl``, every 0.1 s once it answers at all; ``start_gateway`` itself
  polls every 0.5 s until the first answer).
* **Under the daemon**: one sandbox of the same agent with clawguard's example archive
  (``restore-archive/``, as ``scripts/demo.sh`` uses it), the daemon with default
  settings and the ``openshell`` stand-in on its PATH; once it has restored the first
  pod and its gateway is live, the pod is replaced. The figure is pod replaced (the new
  pod container's creation) -> the daemon's ``gateway.health outcome=healthy`` (its own
  probe of ``/health`` over ssh through the OpenShell proxy), split into detection,
  restore, restore.done -> ``gateway.start`` (the start command issued), the start
  command itself (-> ``gateway.waiting``), and start -> healthy.
"""

from __future__ import annotations

import random
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testbed import LATEST_AGENT, Testbed, TestbedError

from .clawguard_figures import noticed
from .cluster import PodClock
from .daemon import Daemon, write_config
from .stats import summary

Progress = Callable[[str], None]
REPO = Path(__file__).resolve().parents[1]
DAEMON_SANDBOX = "bench-agent"
COLD_SANDBOX = "bench-agent-cold"
LIVE = {"ok": True, "status": "live"}
TIMEOUT = 300.0


def _cold_start(bed: Testbed, agent: str) -> dict[str, float]:
    """One cold start of the gateway, alone, in a fresh pod: start command -> first answer -> live."""
    bed.remove_sandbox(COLD_SANDBOX)
    bed.add_sandbox(COLD_SANDBOX, agent=agent)
    try:
        # What one call of the agent's CLI costs (a restore makes several: version, config validate,
        # approvals get, set, get), before the gateway runs, as in a restore.
        started = time.monotonic()
        code, _, err = bed.agent_cli(COLD_SANDBOX, ["approvals", "get", "--json"])
        cli = time.monotonic() - started
        if code != 0:
            raise TestbedError(f"openclaw approvals get failed ({code}): {err[-300:]}")
        started = time.monotonic()
        status: dict[str, Any] | None = bed.start_gateway(COLD_SANDBOX, timeout=TIMEOUT)
        answered = time.monotonic() - started
        while status != LIVE:
            if time.monotonic() - started > TIMEOUT:
                raise TestbedError(f"the gateway answered {status} but was not live within {TIMEOUT:.0f}s")
            time.sleep(0.1)
            status = bed.gateway_status(COLD_SANDBOX)
        return {"first_answer_s": answered, "live_s": time.monotonic() - started, "cli_approvals_get_s": cli}
    finally:
        bed.remove_sandbox(COLD_SANDBOX)


def measure(
    bed: Testbed,
    clock: PodClock,
    *,
    iterations: int,
    cold_iterations: int,
    workdir: Path,
    bin_dir: Path,
    progress: Progress,
    agent: str = LATEST_AGENT,
) -> dict[str, Any]:
    progress(f"real agent: OpenClaw {agent} (install cached after the first build)")
    bed.build_agents([agent])
    cold: list[dict[str, float]] = []
    for i in range(cold_iterations):
        cold.append(_cold_start(bed, agent))
        progress(
            f"real agent, cold start alone {i + 1}/{cold_iterations}: first answer {cold[-1]['first_answer_s']:.2f}s, "
            f"/health live {cold[-1]['live_s']:.2f}s after the start command"
        )

    archive = workdir / "agent-archive"
    if not archive.exists():
        shutil.copytree(REPO / "restore-archive", archive)
    bed.remove_sandbox(DAEMON_SANDBOX)
    bed.add_sandbox(DAEMON_SANDBOX, agent=agent)
    config = write_config(workdir / "agent.yaml", archive, [DAEMON_SANDBOX], bed.cluster_name, bed.gateway)
    began = time.time()
    daemon = Daemon(config, workdir, bin_dir, name="daemon-agent")
    rows: list[dict[str, float]] = []
    reasons: Counter[str] = Counter()
    failures: list[str] = []
    first_live = None
    rng = random.Random()
    try:
        pod = bed.container_id(DAEMON_SANDBOX) or ""
        first = daemon.wait(
            "gateway.health", sandbox=DAEMON_SANDBOX, container_id=pod[:12], outcome="healthy", timeout=TIMEOUT
        )
        first_live = first.ts - began
        progress(f"real agent under the daemon: first pod restored, /health live {first_live:.1f}s after the start")
        for i in range(iterations):
            time.sleep(rng.uniform(1.0, 3.0))
            new_id = bed.restart(DAEMON_SANDBOX)
            created = clock.wait(new_id)
            short = new_id[:12]
            healthy = daemon.wait(
                "gateway.health", sandbox=DAEMON_SANDBOX, container_id=short, outcome="healthy", timeout=TIMEOUT
            )
            done, start, waiting, begun, facts = (
                daemon.find(name, sandbox=DAEMON_SANDBOX, container_id=short)
                for name in ("restore.done", "gateway.start", "gateway.waiting", "restore.start", "sandbox.facts")
            )
            approvals = [
                float(e.fields.get("duration", 0))
                for e in daemon.events
                if e.name == "restore.step"
                and e.fields.get("container_id") == short
                and e.fields.get("kind") == "exec_approvals"
            ]
            seen = None if begun is None else noticed(daemon, DAEMON_SANDBOX, short, begun.ts)
            if seen is None or done is None or start is None or waiting is None or facts is None or begun is None:
                failures.append(
                    f"iteration {i + 1}: missing events for {short}: "
                    + ", ".join(
                        name
                        for name, e in (
                            ("sandbox.detected", seen),
                            ("restore.done", done),
                            ("gateway.start", start),
                            ("gateway.waiting", waiting),
                            ("sandbox.facts", facts),
                        )
                        if e is None
                    )
                )
                continue
            reasons[start.fields.get("reason", "")] += 1
            rows.append(
                {
                    "live_s": healthy.ts - created,
                    "detection_s": seen.ts - created,
                    "restore_s": done.ts - seen.ts,
                    "detected_to_facts_s": facts.ts - seen.ts,
                    "facts_to_restore_start_s": begun.ts - facts.ts,
                    "restore_start_to_done_s": done.ts - begun.ts,
                    "approvals_step_s": sum(approvals),
                    "restored_to_start_s": start.ts - done.ts,
                    "gateway_start_s": start.ts - created,
                    "start_command_s": waiting.ts - start.ts,
                    "start_to_live_s": healthy.ts - start.ts,
                }
            )
            progress(
                f"real agent under the daemon {i + 1}/{iterations}: pod replaced -> /health live "
                f"{rows[-1]['live_s']:.2f}s (gateway start issued at {rows[-1]['gateway_start_s']:.2f}s, "
                f"start -> live {rows[-1]['start_to_live_s']:.2f}s)"
            )
    finally:
        daemon_exit = daemon.stop()
        bed.remove_sandbox(DAEMON_SANDBOX)
    errors = []
    if "Traceback" in daemon.log.read_text():
        errors.append(f"the real-agent daemon logged a traceback: see {daemon.log}")
    keys = rows[0].keys() if rows else ()
    return {
        "agent": agent,
        "archive": "restore-archive/ (clawguard's example archive)",
        "cold_start": {key: summary([c[key] for c in cold]) for key in ("first_answer_s", "live_s")},
        "cli_approvals_get_alone_s": summary([c["cli_approvals_get_s"] for c in cold]),
        "daemon": {
            **{key: summary([row[key] for row in rows]) for key in keys},
            "first_pod_live_after_daemon_start_s": first_live,
            "gateway_start_reasons": dict(reasons),
            "failures": failures,
            "exit": daemon_exit,
        },
        "errors": errors,
    }
