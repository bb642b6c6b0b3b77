"""Fault-injection soak: the daemon against the testbed on its bad days.

A supervisor plays systemd: it runs ``clawguard run`` with a notify socket and a
watchdog, restarts it when it dies or stops pinging (``Restart=on-failure``,
``WatchdogSec=``), and counts those restarts. Faults are drawn from a seeded
random generator, so a run can be replayed with ``--seed``. After every fault the
soak waits until both sandboxes are fully verified *from inside the pod*: a
dry-run restore finds nothing to change, the gateway answers, and every marker
the agent wrote before the fault (and that was captured) is still in MEMORY.md.

Run it on its own: ``python -m tests.soak --faults 50 [--seed N]``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from tests.integration.conftest import wait_for

REPO = Path(__file__).resolve().parents[2]
SANDBOXES = ("my-assistant", "other-uid")  # the integration testbed's two pods
AGENT = SANDBOXES[0]  # the one whose memory markers are tracked
OTHER = SANDBOXES[1]
MEMORY_DIR = "/sandbox/.openclaw-data/workspace/memory"  # persisted by default
# Names an agent may give its notes: printf %b escapes, so that non-UTF-8 bytes travel too.
ODD_NAMES = ("back\\\\slash", "new\\nline", "-leading-dash", 'quote\'d "both"', "\\0377\\0376-not-utf8")
OUTAGE_SEC = 60.0
RSS_GROWTH_MAX = 20 << 20  # the daemon's peak RSS may grow this much while a huge file is refused
MEMORY = "/sandbox/.openclaw-data/workspace/MEMORY.md"
WATCHDOG_SEC = 6.0
RESTART_SEC = 1.0
CONVERGE_TIMEOUT = 180.0
# The integration tests' poll, with the soak's patience (a fault may take a daemon restart to heal).
_wait_for = partial(wait_for, timeout=CONVERGE_TIMEOUT, every=0.5)

# Every kind runs once before any repeats, so a short run covers them all.
KINDS = (
    "pod_restart_mid_restore",
    "pod_restarts_back_to_back",
    "cluster_stop_start",
    "cluster_docker_restart",
    "dockerd_restart",
    "ssh_proxy_fails",
    "ssh_proxy_hangs",
    "gateway_crash",
    "daemon_sigkill",
    "daemon_sigstop",
    "bad_archive_while_the_other_restarts",
    "agent_writes_odd_names_and_a_huge_file",
    "cluster_away_for_a_minute",
)

_NEEDS_SUPERVISOR = (
    "bad_archive_while_the_other_restarts",
    "daemon_sigkill",
    "daemon_sigstop",
    "agent_writes_odd_names_and_a_huge_file",
    "cluster_away_for_a_minute",
)

# Arguments: a directory, then escaped names. Writes one file per name, as the agent would.
_WRITE_NAMES = r"""
dir=$1; shift
mkdir -p "$dir"
for e; do n=$(printf '%b.' "$e"); n=${n%.}; printf '%s\n' "$e" > "$dir/$n" || exit 1; done
"""
# Same arguments: exit 1 naming the first name that is not there with its content.
_CHECK_NAMES = r"""
dir=$1; shift
for e; do
  n=$(printf '%b.' "$e"); n=${n%.}
  [ "$(cat "$dir/$n" 2>/dev/null)" = "$e" ] || { printf 'missing %s\n' "$e"; exit 1; }
done
"""

PROXY_WRAPPER = """#!/bin/sh
# The soak's switchable SSH proxy: ok, fail, or hang.
mode=$(cat "{mode}" 2>/dev/null || echo ok)
case $mode in
  fail) echo "openshell: connection refused (soak)" >&2; exit 255 ;;
  hang) exec sleep 3600 ;;
esac
exec "{real}" "$@"
"""


@dataclass
class FaultResult:
    index: int
    kind: str
    converged: bool
    seconds: float
    detail: str = ""


@dataclass
class SoakReport:
    seed: int
    results: list[FaultResult] = field(default_factory=list)
    daemon_restarts: int = 0
    unhandled: int = 0
    data_lost: int = 0

    def summary(self) -> str:
        times = sorted(r.seconds for r in self.results if r.converged)
        converged = sum(r.converged for r in self.results)

        def pct(p: float) -> float:
            return times[min(len(times) - 1, round(p * (len(times) - 1)))] if times else float("nan")

        return (
            f"soak: seed={self.seed} faults={len(self.results)} converged={converged} "
            f"converge_s p50={statistics.median(times) if times else float('nan'):.1f} "
            f"p95={pct(0.95):.1f} max={times[-1] if times else float('nan'):.1f} "
            f"daemon_restarts={self.daemon_restarts} unhandled={self.unhandled} data_lost={self.data_lost}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "summary": self.summary(),
            "daemon_restarts": self.daemon_restarts,
            "unhandled": self.unhandled,
            "data_lost": self.data_lost,
            "faults": [r.__dict__ for r in self.results],
        }


class Supervisor:
    """What systemd does for the unit: notify socket, watchdog, restart on failure."""

    def __init__(self, workdir: Path, env: dict[str, str], config: Path) -> None:
        self.workdir = workdir
        self.env = env
        self.config = config
        self.socket_path = workdir / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.socket_path))
        self.sock.settimeout(0.5)
        self.last_ping = time.monotonic()
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.runs = 0
        self.stopping = False  # no more restarts
        self.closed = False  # the daemon has exited: stop reading the socket
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def log_files(self) -> list[Path]:
        return sorted(self.workdir.glob("daemon-*.log"))

    def start(self) -> None:
        self._spawn()
        self.thread.start()

    def _spawn(self) -> None:
        self.runs += 1
        log = (self.workdir / f"daemon-{self.runs:03d}.log").open("wb")
        env = {
            **self.env,
            "NOTIFY_SOCKET": str(self.socket_path),
            "WATCHDOG_USEC": str(int(WATCHDOG_SEC * 1e6)),
            "PYTHONFAULTHANDLER": "1",  # a hung daemon's stacks, when stop() has to abort it
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clawguard", "--config", str(self.config), "run"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.last_ping = time.monotonic()

    def _loop(self) -> None:
        # Reads the notify socket until the daemon has exited, as systemd does: a daemon may
        # notify while it stops, and a queue nobody drains fills up (net.unix.max_dgram_qlen).
        while not self.closed:
            with contextlib.suppress(TimeoutError, OSError):
                data = self.sock.recv(4096)
                if b"WATCHDOG=1" in data:
                    self.last_ping = time.monotonic()
            with self.lock:
                proc = self.proc
                if self.stopping or proc is None:
                    continue
                if proc.poll() is not None or time.monotonic() - self.last_ping > WATCHDOG_SEC:
                    if proc.poll() is None:  # watchdog expired: systemd aborts, then kills
                        proc.send_signal(signal.SIGKILL)
                        proc.wait(10)
                    time.sleep(RESTART_SEC)
                    self.restarts += 1
                    self._spawn()

    def signal(self, signum: int) -> None:
        with self.lock:
            if self.proc is not None:
                self.proc.send_signal(signum)

    def stop(self) -> int:
        with self.lock:  # not while a restart is under way: it is the new daemon we stop
            self.stopping = True
        code = -1
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGCONT)
                self.proc.terminate()
                try:
                    code = self.proc.wait(60)
                except subprocess.TimeoutExpired:
                    # PYTHONFAULTHANDLER is set for the daemon: SIGABRT writes every thread's stack to its log.
                    self.proc.send_signal(signal.SIGABRT)
                    self.proc.wait(10)
                    tail = "\n".join(self.log_files()[-1].read_text(errors="replace").splitlines()[-60:])
                    raise RuntimeError(
                        f"the daemon did not stop within 60 s of SIGTERM; its log ends:\n{tail}"
                    ) from None
        finally:
            self.closed = True
            self.thread.join(5)
            self.sock.close()
        return code


class Soak:
    def __init__(self, testbed: Any, workdir: Path, seed: int, out: Callable[[str], None] = print) -> None:
        # workdir keeps the daemon logs, the state and soak.json for a post-mortem.
        self.bed = testbed
        self.workdir = workdir
        self.seed = seed
        self.random = random.Random(seed)
        self.out = out
        self.markers: list[str] = []
        self.state_home = workdir / "state"
        self.proxy_mode = workdir / "proxy-mode"

    # ------------------------------------------------------------------ set-up

    def _prepare(self) -> Supervisor:
        real = self.bed.install_openshell(self.workdir / "real-bin")
        bin_dir = self.workdir / "bin"
        bin_dir.mkdir(exist_ok=True)
        wrapper = bin_dir / "openshell"
        wrapper.write_text(PROXY_WRAPPER.format(mode=self.proxy_mode, real=real))
        wrapper.chmod(0o755)
        self.proxy_mode.write_text("ok")
        for name in SANDBOXES:  # one archive each: a bad one must cost only its own sandbox
            shutil.copytree(REPO / "restore-archive", self._archive(name), symlinks=True)
        config = self.workdir / "config.yaml"
        gateway = "    gateway: {ssh_timeout: 5, start_timeout: 30}\n"
        config.write_text(
            "version: 1\n"
            "daemon: {poll_interval: 2, health_interval: 5, verify_interval: 30, persist_interval: 2, backoff_max: 5}\n"
            "sandboxes:\n"
            + "".join(
                f"  {name}:\n"
                f"    target: {{kind: k3s, cluster: {self.bed.cluster_name}}}\n"
                f"    archive: {self._archive(name)}\n"
                f"{gateway}"
                for name in SANDBOXES
            )
        )
        env = {**os.environ, "XDG_STATE_HOME": str(self.state_home), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
        env.pop("NOTIFY_SOCKET", None)
        self.env = env
        self.config = config
        return Supervisor(self.workdir, env, config)

    def _archive(self, name: str) -> Path:
        return self.workdir / f"archive-{name}"

    # ------------------------------------------------------------ observation

    def _state(self, name: str) -> dict[str, Any]:
        try:
            data = json.loads((self.state_home / "clawguard" / name / "state.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "clawguard", "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            check=False,
        )

    def _memory(self) -> tuple[str, str]:
        """MEMORY.md as the agent's pod holds it, and why it could not be read ("" if it was).
        A failed read is tried again: a moment's exec failure is not a loss, a missing file is."""
        why = ""
        for _ in range(3):
            code, out, err = self.bed.exec_in_sandbox(AGENT, ["cat", MEMORY], timeout=30)
            if code == 0:
                return out.decode(errors="replace"), ""
            why = f"cat {MEMORY}: exit {code}: {err.decode(errors='replace').strip()[-200:]}"
            time.sleep(1)
        return "", why

    def _captures(self, lost: list[str]) -> str:
        """For a post-mortem of a loss: the newest generations, and which lost markers each holds."""
        directory = self.state_home / "clawguard" / AGENT / "persist"
        lines = []
        for tar_path in sorted(directory.glob("*.tar"))[-3:]:
            try:
                with tarfile.open(tar_path, ignore_zeros=True) as tar:
                    names = tar.getnames()
                    member = next((m for m in tar.getmembers() if m.name.endswith("MEMORY.md")), None)
                    extracted = tar.extractfile(member) if member else None
                    data = extracted.read().decode(errors="replace") if extracted else ""
            except (OSError, tarfile.TarError) as exc:
                lines.append(f"{tar_path.name}: unreadable ({exc})")
                continue
            held = sum(m in data for m in lost)
            meta = tar_path.with_suffix(".json")
            info = json.loads(meta.read_text()) if meta.is_file() else {}
            lines.append(
                f"{tar_path.name}: from {str(info.get('container_id'))[:12]} ({info.get('reason')}), "
                f"{names}, holds {held}/{len(lost)} lost markers"
            )
        return "; ".join(lines) or f"no capture in {directory}"

    def _converged(self, since: float) -> bool:
        """Cheap checks first (state, gateway from inside), then a full dry-run verification."""
        for name in SANDBOXES:
            state = self._state(name)
            gateway = state.get("gateway") or {}
            if (
                state.get("container_id") != self.bed.container_id(name)
                or (state.get("last_restore") or {}).get("outcome") != "ok"
                or not gateway.get("healthy")
                or gateway.get("checked_at", 0) < since
            ):
                return False
            if self.bed.gateway_status(name) is None:
                return False
        done = self._cli("restore", "--dry-run", "--no-gateway", "--json")
        if done.returncode != 0:
            return False
        reports = json.loads(done.stdout)
        return all(step["outcome"] == "ok" for report in reports for step in report["steps"])

    def _wait_converged(self, since: float) -> tuple[bool, float]:
        started = time.monotonic()
        while time.monotonic() - started < CONVERGE_TIMEOUT:
            try:
                if self._converged(since):
                    return True, time.monotonic() - started
            except Exception:  # the engine itself may be away right after a dockerd restart
                pass
            time.sleep(0.5)
        return False, time.monotonic() - started

    def _write_marker(self, index: int) -> None:
        """The agent writes to its memory; wait until a capture has it (the data we may not lose)."""
        marker = f"soak marker {self.seed}-{index}"
        script = 'printf "%s\\n" "$1" >> "$2"'
        code, _, err = self.bed.exec_in_sandbox(AGENT, ["sh", "-c", script, "sh", marker, MEMORY], user="sandbox")
        if code != 0:
            raise RuntimeError(f"writing the marker failed: {err!r}")
        written_at = time.time()  # after the write returned: a capture that started later has it
        self.markers.append(marker)
        deadline = time.monotonic() + 30
        while ((self._state(AGENT).get("persist") or {}).get("last_capture_at") or 0) <= written_at:
            if time.monotonic() > deadline:
                raise RuntimeError("no capture after the marker was written")
            time.sleep(0.2)

    # ----------------------------------------------------------------- faults

    def _pod_restart_mid_restore(self) -> str:
        self.bed.restart(AGENT)
        delay = self.random.uniform(0.3, 2.5)  # the daemon is detecting or restoring by now
        time.sleep(delay)
        self.bed.restart(AGENT)
        return f"second restart {delay:.1f}s after the first"

    def _pod_restarts_back_to_back(self) -> str:
        self.bed.restart(AGENT)
        self.bed.restart(AGENT)
        return "two restarts, no pause"

    def _cluster_stop_start(self) -> str:
        self.bed.stop_cluster(timeout=5)
        pause = self.random.uniform(1, 4)
        time.sleep(pause)
        self.bed.start_cluster()
        return f"cluster down {pause:.1f}s"

    def _cluster_docker_restart(self) -> str:
        self.bed.client.containers.get(self.bed.cluster_name).restart(timeout=5)
        self.bed.start_cluster()  # waits for containerd, then re-creates the pods, as a kubelet does
        return "docker restart of the cluster container"

    def _dockerd_restart(self) -> str:
        pid = int(Path("/var/run/docker.pid").read_text().strip())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        subprocess.run(["bash", str(REPO / "scripts" / "setup-host.sh")], check=True, capture_output=True)
        self.bed.start_cluster()  # unless-stopped brings the container back; its pods need a kubelet
        return "dockerd stopped and started"

    def _proxy(self, mode: str) -> str:
        self.proxy_mode.write_text(mode)
        self._kill_gateway()
        pause = self.random.uniform(6, 12)
        time.sleep(pause)
        self.proxy_mode.write_text("ok")
        return f"ssh proxy {mode} for {pause:.1f}s with the gateway down"

    def _ssh_proxy_fails(self) -> str:
        return self._proxy("fail")

    def _ssh_proxy_hangs(self) -> str:
        return self._proxy("hang")

    def _kill_gateway(self) -> None:
        self.bed.exec_in_sandbox(AGENT, ["pkill", "-KILL", "-f", "openclaw gateway run"])

    def _gateway_crash(self) -> str:
        time.sleep(self.random.uniform(0, 2))
        self._kill_gateway()
        return "gateway SIGKILLed"

    def _daemon_sigkill(self, supervisor: Supervisor) -> str:
        supervisor.signal(signal.SIGKILL)
        if self.random.random() < 0.5:
            self.bed.restart(AGENT)  # and the pod restarts while no daemon watches
            return "daemon SIGKILLed, pod restarted while it was down"
        return "daemon SIGKILLed"

    def _daemon_sigstop(self, supervisor: Supervisor) -> str:
        supervisor.signal(signal.SIGSTOP)
        time.sleep(WATCHDOG_SEC + 2)  # the watchdog fires and the supervisor kills and restarts it
        return "daemon SIGSTOPped until the watchdog fired"

    def _bad_archive_while_the_other_restarts(self, supervisor: Supervisor) -> str:
        """A bad archive at start-up stopped the whole daemon; it must cost only its own
        sandbox. (While the daemon runs, the last valid plan stays in force; a typo followed by a
        restart of the daemon is the case that broke.)"""
        config = self._archive(OTHER) / "openclaw.json"
        good = config.read_bytes()
        config.write_text('{"gateway": {"mode": "local",')  # a typo mid-edit
        try:
            time.sleep(2)  # the running daemon reports it and keeps the last valid plan
            supervisor.signal(signal.SIGTERM)  # then the daemon restarts (an upgrade, a reboot)
            _wait_for(
                f"{OTHER} in the config-error state",
                lambda: bool(self._state(OTHER).get("config_error")),
                timeout=90,  # the daemon's stop (a capture), restart and start-up
            )
            new_id = self.bed.restart(AGENT)
            took = _wait_for(
                f"{AGENT} restored while {OTHER}'s archive is bad",
                lambda: (
                    self._state(AGENT).get("container_id") == new_id
                    and (self._state(AGENT).get("last_restore") or {}).get("outcome") == "ok"
                ),
            )
        finally:
            config.write_bytes(good)
        _wait_for(f"{OTHER} out of the config-error state", lambda: not self._state(OTHER).get("config_error"))
        return f"{OTHER}'s openclaw.json broken, daemon restarted: {AGENT}'s new pod restored in {took:.1f}s; fixed"

    def _daemon_peak_rss(self, supervisor: Supervisor) -> int:
        proc = supervisor.proc
        try:
            status = Path(f"/proc/{proc.pid if proc else 0}/status").read_text()
        except OSError:
            return 0
        return next((int(line.split()[1]) << 10 for line in status.splitlines() if line.startswith("VmHWM:")), 0)

    def _agent_writes_odd_names_and_a_huge_file(self, supervisor: Supervisor) -> str:
        """Every name Linux allows survives capture and restore; a file over the capture
        limit is refused in the pod, costs the daemon no memory, and the previous capture stays."""
        escaped = list(ODD_NAMES)
        code, _, err = self.bed.exec_in_sandbox(
            AGENT, ["sh", "-c", _WRITE_NAMES, "sh", MEMORY_DIR, *escaped], user="sandbox"
        )
        if code != 0:
            raise RuntimeError(f"writing odd names failed: {err!r}")
        written_at = time.time()
        _wait_for(
            "a capture with the odd names",
            lambda: ((self._state(AGENT).get("persist") or {}).get("last_capture_at") or 0) > written_at,
            timeout=30,
        )
        peak_before = self._daemon_peak_rss(supervisor)
        # 96 MiB of zeros over the default 64 MiB limit (sparse: costs the pod no disk).
        huge = f"{MEMORY_DIR}/huge.bin"
        code, _, err = self.bed.exec_in_sandbox(AGENT, ["truncate", "-s", "96M", huge], user="sandbox")
        if code != 0:
            raise RuntimeError(f"writing the huge file failed: {err!r}")

        def refused() -> int:
            logs = supervisor.log_files()
            text = logs[-1].read_text(errors="replace") if logs else ""
            return text.count("over limits.max_persist_bytes")

        already = refused()
        # Two captures refused (stopped in the pod) while the daemon's peak RSS is watched.
        _wait_for("two captures refused as over the limit", lambda: refused() >= already + 2, timeout=60)
        growth = self._daemon_peak_rss(supervisor) - peak_before
        new_id = self.bed.restart(AGENT)
        _wait_for(f"{AGENT}'s new pod restored", lambda: self._state(AGENT).get("container_id") == new_id)
        code, out, _ = self.bed.exec_in_sandbox(AGENT, ["sh", "-c", _CHECK_NAMES, "sh", MEMORY_DIR, *escaped])
        if code != 0:
            raise RuntimeError(f"odd names lost over the restart: {out.decode(errors='replace').strip()}")
        code, _, _ = self.bed.exec_in_sandbox(AGENT, ["test", "-e", huge])
        if code == 0:
            raise RuntimeError("the file over the capture limit came back")
        if growth > RSS_GROWTH_MAX:
            raise RuntimeError(f"the daemon's peak RSS grew {growth >> 20} MiB while the huge file was refused")
        return f"{len(escaped)} odd names restored, 96 MiB file refused, daemon peak RSS +{growth >> 10} KiB"

    def _cluster_away_for_a_minute(self, supervisor: Supervisor) -> str:
        """The event watchers hammered Docker while the cluster was away."""
        logs = supervisor.log_files()
        before = logs[-1].read_text(errors="replace").count("event=events.lost") if logs else 0
        self.bed.stop_cluster(timeout=5)
        time.sleep(OUTAGE_SEC)
        logs = supervisor.log_files()
        lost = (logs[-1].read_text(errors="replace").count("event=events.lost") if logs else 0) - before
        self.bed.start_cluster()
        if lost > 2:  # one per source at most (Docker's stream may stay up)
            raise RuntimeError(f"{lost} events.lost lines in one outage: one per change of state expected")
        return f"cluster down {OUTAGE_SEC:.0f}s, {lost} events.lost line(s)"

    # -------------------------------------------------------------------- run

    def run(self, faults: int) -> SoakReport:
        report = SoakReport(self.seed)
        self.out(
            f"soak: seed={self.seed} faults={faults} (replay: python -m tests.soak --faults {faults} --seed {self.seed})"
        )
        supervisor = self._prepare()
        supervisor.start()
        try:
            ok, took = self._wait_converged(0)
            if not ok:
                raise RuntimeError("the daemon never converged before the first fault")
            kinds = list(KINDS)
            self.random.shuffle(kinds)
            plan = [kinds[i] if i < len(kinds) else self.random.choice(KINDS) for i in range(faults)]
            for index, kind in enumerate(plan, 1):
                self._write_marker(index)
                fault = getattr(self, f"_{kind}")
                detail = fault(supervisor) if kind in _NEEDS_SUPERVISOR else fault()
                since = time.time()
                ok, took = self._wait_converged(since)
                memory, unreadable = self._memory() if ok else ("", "")
                lost = [m for m in self.markers if m not in memory] if ok else []
                if lost:
                    report.data_lost += len(lost)
                    detail += (
                        f"; LOST {lost} ({unreadable or 'MEMORY.md read, markers missing'}; {self._captures(lost)})"
                    )
                    self.markers = [m for m in self.markers if m not in lost]  # each loss counts once
                result = FaultResult(index, kind, ok and not lost, round(took, 2), detail)
                report.results.append(result)
                self.out(
                    f"fault {index:3d}/{faults} {kind:26s} {'converged' if result.converged else 'NOT CONVERGED'} "
                    f"in {took:5.1f}s  ({detail})"
                )
                if not ok or lost:
                    self.out(self._tail(supervisor))
        finally:
            supervisor.stop()
            report.daemon_restarts = supervisor.restarts
            report.unhandled = self._unhandled(supervisor)
        self.out(report.summary())
        (self.workdir / "soak.json").write_text(json.dumps(report.to_dict(), indent=2))
        return report

    def _unhandled(self, supervisor: Supervisor) -> int:
        count = 0
        for path in supervisor.log_files():
            text = path.read_text(errors="replace")
            count += sum(text.count(mark) for mark in ("Traceback", "event=worker.error", "event=thread.crashed"))
        return count

    def _tail(self, supervisor: Supervisor) -> str:
        files = supervisor.log_files()
        return "\n".join(files[-1].read_text(errors="replace").splitlines()[-40:]) if files else ""
