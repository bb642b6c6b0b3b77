"""Starting the OpenClaw gateway over the OpenShell SSH proxy, checking it, stopping it.

After a pod restart the gateway does not come back by itself (NemoClaw #2042). Like
NemoClaw's own recovery, clawguard runs ``nohup openclaw gateway run`` over the
OpenShell SSH proxy, as the sandbox user, and then waits until the gateway answers.

Health: every OpenClaw from 2026.3 to 2026.9 answers ``GET /health`` with 200
``{"ok":true,"status":"live"}`` once it listens, without a token. A gateway that
answers with an error instead (2026.3.31 does when a bundled plugin's dependency is
missing) is asked through its own CLI, ``openclaw health``, before it is called down.

Host keys: OpenShell's SSH endpoint is not OpenSSH. The sandbox supervisor generates
a new Ed25519 host key in memory every time it starts and keeps no key file, and
OpenShell's own CLI connects with ``StrictHostKeyChecking=no``: the authenticated
``ssh-proxy`` relay is the trust anchor. ``host_key: proxy`` (the default) does the
same. ``pin`` (read the pod's key file through the target, the Docker channel
clawguard already trusts), ``accept-new`` and ``strict`` are for endpoints that have
a stable or readable key.

Stopping: ``openclaw gateway stop`` does not stop a gateway started with nohup
(2026.3 to 2026.6 only disable a service, 2026.9 wants a terminal or ``--force``),
and a gateway asked to stop may drain for minutes. The built-in stop signals the
processes serving the gateway's port, as root through the target, then kills what
is left after ``stop_timeout``, and is done only when nothing listens on the port.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import structlog
from tenacity import Retrying, retry_if_result

from .agent import AgentError
from .backoff import Backoff, Waitable, interruptible
from .errors import ClawguardError, SandboxGone
from .pod import Pod
from .schema import Bool, Field, Int, ListOf, Record, SandboxPath, Str
from .targets.base import Instance, Target, shell_script

log = structlog.get_logger("clawguard.gateway")

GATEWAY_SCHEMA = Record(
    {
        "enabled": Field(Bool(), "Start and health-check the gateway after a restore.", True),
        "transport": Field(
            Str(choices=("auto", "ssh", "target")),
            "How the gateway's start, stop and health probe reach the sandbox. ssh: over the OpenShell SSH "
            "proxy (ssh_proxy), as ssh_user; target: through the target's own exec, as the sandbox user "
            "(OpenShell 0.1.x: the gateway API's ExecSandbox, no SSH and no ProxyCommand); auto: target for "
            "targets that reach the sandbox only as the sandbox user (kind openshell), ssh otherwise.",
            "auto",
        ),
        "ssh_proxy": Field(
            Str(placeholders=("sandbox",)),
            "ProxyCommand for ssh; {sandbox} is replaced.",
            "openshell ssh-proxy --gateway-name nemoclaw --name {sandbox}",
        ),
        "ssh_host": Field(
            Str(pattern=r"[A-Za-z0-9_.{}-]+", placeholders=("sandbox",)),
            "Host name given to ssh; {sandbox} is replaced.",
            "openshell-{sandbox}",
        ),
        "ssh_user": Field(Str(pattern=r"[a-z_][a-z0-9_-]*"), "User to log in as.", "sandbox"),
        "ssh_options": Field(
            ListOf(Str(pattern=r"[A-Za-z]+=[^\n]*")), "Extra ssh -o options.", [], example='["ServerAliveInterval=15"]'
        ),
        "start": Field(
            Str(),
            "Command that starts the gateway in the sandbox (over ssh, as ssh_user). The process it puts in "
            "the background ($!) is the one looked at when nothing answers within start_timeout.",
            "nohup openclaw gateway run > /tmp/gateway.log 2>&1 &",
        ),
        "stop": Field(
            Str(),
            "Command that stops the gateway (over ssh), for restarts after a change it only reads at start. "
            "Default: signal the processes serving the gateway's port (SIGTERM, then SIGKILL after "
            "stop_timeout), as root through the target.",
            example='"pkill -u sandbox -f openclaw-gateway"',
        ),
        "health_url": Field(
            Str(pattern=r"https?://[^\s'\"]+"),
            'Probed from inside the sandbox: 200 (with {"ok": true} when it is JSON) or 401 is up; another '
            "answer is checked with `openclaw health`. Its port is the gateway's port.",
            "http://127.0.0.1:18789/health",
        ),
        "host_key": Field(
            Str(choices=("proxy", "pin", "gateway", "accept-new", "strict")),
            "proxy: trust the authenticated OpenShell proxy, like OpenShell's CLI (its endpoint has a new "
            "in-memory key at every start); pin: read each new pod's key file (host_key_path) through the "
            "target; gateway: accept only the key whose fingerprint the OpenShell 0.1.x gateway publishes for "
            "the sandbox (host_key_fingerprint; kind openshell); accept-new: trust the first key of each pod; "
            "strict: only your own known_hosts.",
            "proxy",
        ),
        "host_key_path": Field(
            SandboxPath(), "The pod's public host key, for host_key: pin.", "/etc/ssh/ssh_host_ed25519_key.pub"
        ),
        "start_timeout": Field(Int(minimum=1, maximum=900), "Seconds to wait for health after a start.", 120),
        "stop_timeout": Field(Int(minimum=1, maximum=600), "Seconds a stopping gateway gets before it is killed.", 15),
        "ssh_timeout": Field(Int(minimum=1, maximum=600), "Seconds allowed for one ssh command.", 30),
    }
)

# Asks the health URL (clawguard/data/sh/gateway-health.sh): the HTTP status line, then the body.
_PROBE = shell_script("gateway-health.sh")

# The first probe after a start is at once, then after 0.25, 0.5, 1 and every 2 s: a gateway
# that is up is seen within 2 s (letting the wait grow to 3 s would cost a restart up to 3 s more).
PROBE_FIRST = 0.25
PROBE_MAX = 2.0

# While a gateway it started is not live yet, clawguard watches it from inside the pod over ssh:
# one session asks /health every WATCH_EVERY s (the same probe script) and answers as soon as
# anything answers, or after WATCH_SECONDS. A new ssh session for every probe (the proxy, the
# handshake, sshd's session and a login shell: ~0.2 CPU-s on the host and in the pod each, every
# 2 s) takes CPU from the gateway's own cold start while it is under way, and sees it live up
# to 2 s late.
WATCH_SECONDS = 20.0
WATCH_EVERY = 0.25

# Runs the probe in the pod until something answers (clawguard/data/sh/gateway-watch.sh).
_WATCH = shell_script("gateway-watch.sh")

# Stops what serves the gateway's port, as root (clawguard/data/sh/gateway-stop.sh).
STOP_SCRIPT = shell_script("gateway-stop.sh")


class PodAddress(Protocol):
    """Where a pod is: all that an ssh session to it needs. A :class:`Pod` is one; so is a
    :class:`Located` pod whose facts are not read yet (a start primed that early)."""

    @property
    def target(self) -> Target: ...

    @property
    def instance(self) -> Instance: ...


@dataclass(frozen=True)
class Located:
    """A pod as located, before its facts are read."""

    target: Target
    instance: Instance


class GatewayError(ClawguardError):
    """The gateway could not be started or stopped, or did not become healthy."""


@dataclass
class Health:
    healthy: bool
    status: str  # the HTTP status, or why there is none
    checked_at: float
    answered: bool = False  # something listens on the port, healthy or not
    # Something accepted the connection but did not answer in time: a gateway still starting
    # (or wedged), never "nothing there": another one must not be started beside it.
    timed_out: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "status": self.status, "checked_at": self.checked_at}


class Gateway:
    def __init__(self, sandbox: str, values: dict[str, Any], state: Path) -> None:
        self.sandbox = sandbox
        self.values = values
        self.known_hosts = state / "known_hosts"
        self._pinned_for: str | None = None
        self._primed: _Primed | None = None  # the start's ssh session, opened ahead (prime)

    @property
    def host(self) -> str:
        return str(self.values["ssh_host"]).replace("{sandbox}", self.sandbox)

    @property
    def port(self) -> int:
        url = urlsplit(self.values["health_url"])
        return url.port or (443 if url.scheme == "https" else 80)

    def uses_target(self, pod: PodAddress) -> bool:
        """Whether the gateway is reached through the target's exec instead of SSH."""
        transport = self.values.get("transport", "auto")
        return transport == "target" or (transport == "auto" and not pod.target.runs_as_root)

    def _remote(self, pod: Pod, remote: str) -> subprocess.CompletedProcess[str]:
        """Run the shell command ``remote`` in the sandbox as its user, over SSH or through the
        target (OpenShell 0.1.x: ExecSandbox, which runs it as the sandbox user under its policy).
        Exit status 255 means the command could not be run at all, as ssh says it."""
        if not self.uses_target(pod):
            return self._ssh(pod, remote)
        argv = ["sh", "-c", remote]
        try:
            result = pod.exec(argv, as_user=True)
        except SandboxGone:
            raise
        except ClawguardError as exc:
            return subprocess.CompletedProcess(argv, 255, "", str(exc))
        return subprocess.CompletedProcess(
            argv, result.code, result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")
        )

    def _ssh(self, pod: Pod, remote: str) -> subprocess.CompletedProcess[str]:
        return self._ssh_finish(*self._ssh_open(pod, remote))

    def _ssh_open(
        self, pod: PodAddress, remote: str, stdin: int = subprocess.DEVNULL
    ) -> tuple[list[str], subprocess.Popen[str]]:
        """Start ssh running ``remote`` (the proxy, the handshake, the command): see _ssh_finish."""
        proxy = str(self.values["ssh_proxy"]).replace("{sandbox}", shlex.quote(self.sandbox))
        argv = [
            "ssh",
            "-T",
            "-o",
            "BatchMode=yes",
            "-o",
            f"ProxyCommand={proxy}",
            "-o",
            f"ConnectTimeout={self.values['ssh_timeout']}",
            "-o",
            "LogLevel=ERROR",
        ]
        argv += self._host_key_options(pod)
        for option in self.values["ssh_options"]:
            argv += ["-o", option]
        argv += [f"{self.values['ssh_user']}@{self.host}", remote]
        try:
            # A session of its own, so that a hung ProxyCommand dies with ssh on a timeout
            # instead of lingering (and holding our pipes) once ssh is killed.
            proc = subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise GatewayError("the OpenSSH client (ssh) is not installed") from None
        return argv, proc

    def _ssh_finish(
        self, argv: list[str], proc: subprocess.Popen[str], data: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Wait for ssh (given ``data`` on its stdin, when it was opened with a pipe), at most
        ``ssh_timeout``: then it is killed and the result is exit status 255."""
        try:
            out, err = proc.communicate(data, timeout=self.values["ssh_timeout"])
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return subprocess.CompletedProcess(argv, 255, "", f"ssh timed out after {self.values['ssh_timeout']}s")
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def _host_key_options(self, pod: PodAddress) -> list[str]:
        mode = self.values["host_key"]
        if mode == "proxy":  # OpenShell's own CLI: the authenticated relay is the trust anchor
            return [
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
            ]
        if mode == "strict":
            return ["-o", "StrictHostKeyChecking=yes"]
        if mode == "gateway":
            return gateway_pin_options(self._published_fingerprint(pod))
        if mode == "pin":
            self._pin(pod)
        elif self._pinned_for != pod.instance.id:  # accept-new, on a new pod: forget the old pod's key
            self.known_hosts.unlink(missing_ok=True)
            self._pinned_for = pod.instance.id
        checking = "yes" if mode == "pin" else "accept-new"
        return [
            "-o",
            f"StrictHostKeyChecking={checking}",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            f"HostKeyAlias={self.host}",
        ]

    def _published_fingerprint(self, pod: PodAddress) -> str:
        fingerprint = pod.target.host_key_fingerprint(pod.instance)
        if not fingerprint or not _FINGERPRINT.fullmatch(fingerprint):
            raise GatewayError(
                f"gateway.host_key: gateway needs the host key fingerprint an OpenShell 0.1.x gateway publishes "
                f"(target kind openshell); the {pod.target.kind} target has {fingerprint or 'none'}"
            )
        return fingerprint

    def _pin(self, pod: PodAddress) -> None:
        if self._pinned_for == pod.instance.id and self.known_hosts.exists():
            return
        result = pod.target.exec(pod.instance, ["cat", self.values["host_key_path"]])  # as root
        key = result.stdout.decode(errors="replace").split()
        if result.code != 0 or len(key) < 2 or not key[0].startswith(("ssh-", "ecdsa-")):
            raise GatewayError(
                f"cannot read the sandbox's host key at {self.values['host_key_path']} (OpenShell's endpoint "
                "keeps its key in memory: use gateway.host_key: proxy, the default)"
            )
        self.known_hosts.write_text(f"{self.host} {key[0]} {key[1]}\n")
        self._pinned_for = pod.instance.id

    def probe(self, pod: Pod) -> Health:
        remote = shlex.join(["sh", "-c", _PROBE, "sh", self.values["health_url"]])
        return self.judge(pod, self._remote(pod, remote))

    def can_watch(self, pod: Pod) -> bool:
        """Whether :meth:`watch` can wait for this pod's gateway (over ssh; through the target's
        exec a start is waited for with probes)."""
        return not self.uses_target(pod)

    def watch(self, pod: Pod, seconds: float) -> Watch | None:
        """Start watching the gateway's health from inside the pod for at most ``seconds``
        (:data:`_WATCH`), in the background: :meth:`Watch.result` says when it answered, and
        :meth:`judge` what. None when no session could be opened (probe instead)."""
        if not self.can_watch(pod):
            return None
        length = max(1, int(seconds))
        try:
            argv, proc = self._ssh_open(pod, self._watch_command(length))
        except ClawguardError as exc:
            log.info("gateway.watch_failed", sandbox=self.sandbox, container_id=pod.short_id, error=str(exc))
            return None
        return Watch(argv, proc, time.monotonic() + length + self.values["ssh_timeout"])

    def _watch_command(self, seconds: int) -> str:
        return shlex.join(["sh", "-c", _WATCH, "sh", str(seconds), str(WATCH_EVERY), _PROBE, self.values["health_url"]])

    def judge(self, pod: Pod, result: subprocess.CompletedProcess[str]) -> Health:
        """The gateway's health from what the probe script printed (:meth:`probe`, :meth:`watch`)."""
        now = time.time()
        if result.returncode == 255:
            via = "the sandbox's exec" if self.uses_target(pod) else "ssh"
            return Health(False, f"{via} failed: {result.stderr.strip()[-200:]}", now)
        code, _, body = result.stdout.partition("\n")
        code = code.strip()
        if code == "401" or (code == "200" and _says_ok(body)):
            return Health(True, code, now, answered=True)
        if code == "timeout":
            return Health(False, "no answer within 5s", now, timed_out=True)
        if not code or code == "000":
            return Health(False, "no answer", now)
        # It answers, but not as a live gateway does: ask the agent itself (2026.3.31 answers
        # 500 to every HTTP request when a bundled plugin's dependency is missing).
        try:
            answer = pod.agent().run(["health", "--json", "--timeout", "3000"])
        except (AgentError, LookupError, ClawguardError):
            return Health(False, f"HTTP {code}", now, answered=True)
        if answer.code == 0 and _says_ok(answer.stdout.decode(errors="replace")):
            return Health(True, f"HTTP {code}; openclaw health: ok", now, answered=True)
        return Health(False, f"HTTP {code}", now, answered=True)

    def prime(self, pod: PodAddress) -> None:
        """Open the start command's session now, for a start that follows soon: a replaced
        pod's, as soon as it is located, while its facts are read and its restore runs. Over
        ssh the proxy and the handshake are most of a start command's time, and none of it
        needs the restored files: :meth:`start` then only says go, the moment they are in
        place. Over the target's exec there is nothing to open. A session that cannot be
        opened only means start() opens its own."""
        self.unprime()
        if self.uses_target(pod):
            return
        # Once started, the same session watches the new gateway (Gateway.watch): a second
        # session would cost its proxy, handshake and login shell while the gateway cold-starts.
        seconds = watch_length(self.values)
        remote = f'{_PRIMED}{self._start_command()}; [ "$rc" = 0 ] || exit "$rc"; exec {self._watch_command(seconds)}'
        try:
            argv, proc = self._ssh_open(pod, remote, stdin=subprocess.PIPE)
        except ClawguardError as exc:
            log.info("gateway.prime_failed", sandbox=self.sandbox, container_id=pod.instance.short_id, error=str(exc))
            return
        self._primed = _Primed(pod.instance.id, argv, proc, seconds)

    def unprime(self) -> None:
        """End a primed start unused: its session closes without running anything."""
        primed, self._primed = self._primed, None
        if primed is not None:
            primed.cancel()

    def _start_command(self) -> str:
        """The start command, then a line that says it ran (:func:`_said_started`). Its own
        stdin is /dev/null: a background job that kept the session's stdin open would make
        sshd (and so ssh) wait forever."""
        return f"exec </dev/null; {{ {self.values['start']}\n}}; {_SAY_STARTED}"

    def _start_primed(self, pod: Pod) -> Started | None:
        """Run the start through the session :meth:`prime` opened for this pod; the session
        watches the gateway now. None when there is none that can still run it (then the
        start opens its own)."""
        primed, self._primed = self._primed, None
        if primed is None:
            return None
        if primed.pod_id != pod.id or primed.proc.poll() is not None:  # another pod's, or its session ended
            primed.cancel()
            return None
        try:
            assert primed.proc.stdin is not None
            primed.proc.stdin.write("start\n")
            primed.proc.stdin.flush()
        except OSError:
            primed.cancel()
            return None
        said, after = _started(primed.proc, self.values["ssh_timeout"])
        if said is None:  # it ended, or hung, before it said it ran the start
            try:
                primed.proc.wait(timeout=1)  # ssh exits just after its output ends
            except subprocess.TimeoutExpired:
                primed.cancel()
                return None  # hung: started again as usual (a second gateway would not get the port)
            result = self._ssh_finish(primed.argv, primed.proc)
            if result.returncode == 255:  # ssh could not run it: started again as usual
                return None
            raise _start_failed(result.returncode, result.stderr)
        status, pid = said
        if status != 0:
            result = self._ssh_finish(primed.argv, primed.proc)
            raise _start_failed(status, result.stderr)
        ends = time.monotonic() + primed.watch_seconds + self.values["ssh_timeout"]
        return Started(pid, Watch(primed.argv, primed.proc, ends, after))

    def start(self, pod: Pod) -> Started:
        """Start the gateway: what it put in the background, and, when it went through a
        primed session, that session, which watches it now (:meth:`watch`)."""
        started = self._start_primed(pod)
        if started is not None:
            return started
        result = self._remote(pod, f'{self._start_command()}; exit "$rc"')
        if result.returncode != 0:
            raise _start_failed(result.returncode, result.stderr)
        said = next(filter(None, map(_said_started, result.stdout.splitlines())), None)
        return Started(said[1] if said else None)

    def cpu_seconds(self, pod: Pod, pid: int) -> float | None:
        """The CPU time process ``pid`` in the pod has used so far (read as the sandbox user,
        whose process a gateway is); None when it is gone or cannot be read."""
        try:
            result = pod.exec(["cat", f"/proc/{pid}/stat"], as_user=True)
        except (ClawguardError, LookupError):
            return None
        # After the last ")": the process's name (which the agent sets) may hold any character.
        fields = result.stdout.decode(errors="replace").rpartition(")")[2].split()
        try:
            state, ticks = fields[0], int(fields[11]) + int(fields[12])  # utime + stime
        except (IndexError, ValueError):
            return None
        if result.code != 0 or state in ("Z", "X"):  # gone, or exited and not reaped yet
            return None
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self, pod: Pod) -> None:
        """Stop the gateway and make sure nothing serves its port any more."""
        if self.values["stop"]:
            result = self._remote(pod, "exec </dev/null; " + self.values["stop"])
            if result.returncode == 255:
                raise GatewayError(f"stopping the gateway failed: {result.stderr.strip()[-300:]}")
            return
        argv = ["sh", "-c", STOP_SCRIPT, "sh", str(self.port), str(self.values["stop_timeout"])]
        done = pod.exec(argv)  # as root: it may signal a gateway run by another user
        if done.code == 2:  # root could not see whose socket it is: the sandbox user sees its own
            done = pod.exec(argv, as_user=True)
        if done.code != 0:
            text = done.stderr.decode(errors="replace").strip()[-300:]
            raise GatewayError(f"the gateway did not stop: {text or f'exit status {done.code}'}")
        log.info("gateway.stopped", sandbox=self.sandbox, container_id=pod.short_id)

    def startup(self, pod: Pod, restart_for: Sequence[str] = (), fresh: bool = False) -> GatewayStartup:
        """One :meth:`ensure` as steps, for a caller that works on between them (the daemon)."""
        return GatewayStartup(self, pod, restart_for, fresh)

    def ensure(
        self,
        pod: Pod,
        heartbeat: Callable[[], None] = lambda: None,
        restart_for: Sequence[str] = (),
        replaced: Callable[[], bool] = lambda: False,
        fresh: bool = False,
        stop: Waitable | None = None,
    ) -> Health:
        """Healthy already, or start it and wait (with backoff) until it is.

        ``restart_for`` names changed steps the gateway reads only at start: a running
        gateway is stopped and started again so that it sees them. ``replaced()`` is
        asked while waiting: a pod replaced meanwhile raises SandboxGone at once.
        ``fresh``: a pod just restored for the first time, which never runs a gateway
        (NemoClaw #2042): no probe before the start. ``stop`` (an event) ends every wait
        at once: backoff.Stopped is raised. A gateway that listens but is slow to answer
        is waited for, never started a second time (see :class:`GatewayStartup`).
        """
        return self._wait(self.startup(pod, restart_for, fresh), heartbeat, replaced, stop)

    def _wait(
        self,
        startup: GatewayStartup,
        heartbeat: Callable[[], None],
        replaced: Callable[[], bool],
        stop: Waitable | None,
    ) -> Health:
        """Run ``startup``'s steps until it has an answer, each when it is due; every sleep
        in between ends at once when ``stop`` is set (backoff.Stopped)."""

        def before(_state: object) -> None:
            heartbeat()
            if replaced():
                raise SandboxGone("the pod was replaced while waiting for its gateway")

        waiting = Retrying(
            sleep=interruptible(stop) if stop is not None else time.sleep,
            wait=lambda _state: max(0.0, startup.next_at - time.monotonic()),
            retry=retry_if_result(lambda health: health is None),
            before=before,
            reraise=True,
        )
        try:
            result: Health | None = waiting(startup.step)
        finally:
            startup.close()
        assert result is not None  # retried while None
        return result


# Before a primed start command (Gateway.prime): the session waits for one line; "start" runs
# the command (which takes its stdin from /dev/null), anything else (or the end of its input)
# runs nothing.
_PRIMED = 'IFS= read -r go || exit 0; [ "$go" = start ] || exit 0; '
# Said once the start command ran: its exit status and the process it put in the background
# ($!, empty when none), before a primed session goes on watching the gateway.
_STARTED = "clawguard-gateway-started"
_SAY_STARTED = f'rc=$?; echo "{_STARTED} $rc $!"'
# Past start_timeout with nothing answering, the process the start put in the background is
# looked at twice, PROGRESS_WINDOW s apart: one that used PROGRESS_CPU CPU-s or more between
# is still starting (a Node.js cold start takes minutes with five at once on two CPUs) and
# gets one more start_timeout, instead of a second gateway started beside it.
PROGRESS_WINDOW = 5.0
PROGRESS_CPU = 0.2
_PID_MAX = 1 << 22
_LINE_MAX = 256  # the status line is ~40 bytes


@dataclass(frozen=True)
class Started:
    """A start command that ran: the process it put in the background (``$!``, as the shell
    in the sandbox said it), and the primed session that watches the gateway now, if any."""

    pid: int | None = None
    watch: Watch | None = None


def _start_failed(status: int, stderr: str) -> GatewayError:
    return GatewayError(f"starting the gateway failed ({status}): {stderr.strip()[-300:]}")


def _said_started(line: str) -> tuple[int, int | None] | None:
    """(exit status, background pid) from a ``_SAY_STARTED`` line; None for any other line."""
    words = line.split()
    if len(words) not in (2, 3) or words[0] != _STARTED or not words[1].isdigit():
        return None
    pid = int(words[2]) if len(words) == 3 and words[2].isdigit() and 0 < int(words[2]) < _PID_MAX else None
    return int(words[1]), pid


def watch_length(values: dict[str, Any]) -> int:
    """How long one watch session waits at most (whole seconds: the script's clock)."""
    return max(1, int(min(WATCH_SECONDS, float(values["ssh_timeout"]))))


def _started(proc: subprocess.Popen[str], timeout: float) -> tuple[tuple[int, int | None] | None, str]:
    """What the primed session said of its start command (:func:`_said_started`; lines the
    command itself printed before are passed over), and what it printed after that line
    (the beginning of the watch's answer); None when the session ended first, or said
    nothing within ``timeout``. Read from the pipe's descriptor: the rest of the output is
    left to Watch.result."""
    assert proc.stdout is not None
    fd, pending = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([fd], [], [], left)[0]:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return None, ""
        *lines, pending = (pending + chunk).split(b"\n")
        for i, line in enumerate(lines):
            said = _said_started(line[-_LINE_MAX:].decode(errors="replace"))
            if said is not None:
                return said, b"\n".join([*lines[i + 1 :], pending]).decode(errors="replace")
        # What the sandbox prints is the agent's to choose: a line is kept to a bound.
        pending = pending[-_LINE_MAX:]
    return None, ""


def _end_session(proc: subprocess.Popen[str]) -> None:
    """Kill an ssh session opened ahead (a watch, a primed start): ssh and its proxy are its
    process group, and the remote command ends with them."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(OSError, ValueError, subprocess.SubprocessError):
        proc.communicate(timeout=5)


@dataclass
class Watch:
    """A session watching the gateway's health from inside the pod (Gateway.watch). It ends by
    itself once anything answers or its length has passed; one that runs ``ssh_timeout`` past
    its length (``ends``) is killed, and its result is then ssh's 255."""

    argv: list[str]
    proc: subprocess.Popen[str]
    ends: float  # monotonic
    head: str = ""  # its output read before (a primed start's, after its status line)

    def result(self) -> subprocess.CompletedProcess[str] | None:
        """What the probe script printed last, once the watch is over; None while it runs."""
        if self.proc.poll() is None:
            if time.monotonic() < self.ends:
                return None
            self.cancel()
            return subprocess.CompletedProcess(self.argv, 255, "", "the health watch did not end in time")
        out, err = self.proc.communicate()
        return subprocess.CompletedProcess(self.argv, self.proc.returncode, self.head + out, err)

    def cancel(self) -> None:
        _end_session(self.proc)


@dataclass
class _Primed:
    """A start command's ssh session, opened ahead and waiting for its go (Gateway.prime)."""

    pod_id: str
    argv: list[str]
    proc: subprocess.Popen[str]
    watch_seconds: int  # how long it watches the gateway once started

    def cancel(self) -> None:
        _end_session(self.proc)


class GatewayStartup:
    """Bringing the gateway up, as steps that each do one bounded thing: a probe, the stop,
    the start. ``step()`` does the next one and returns the gateway's health once there is
    an answer (healthy, or still not after ``start_timeout``), None before; ``next_at``
    (monotonic) says when the next step is due. The daemon's worker runs one step per round
    and does everything else in between (events, captures, SIGTERM); ``Gateway.ensure``
    runs them back to back.

    The phases: ``check`` (one probe, skipped on a fresh pod), then ``stop`` (a running
    gateway that must read a change, or a wedged one), ``stopping`` (a custom stop, until
    nothing answers), ``start``, ``up`` (probes with backoff until healthy or the
    deadline). A probe that times out means something is there, starting: ``slow`` waits
    for it without starting a second one beside it; only one that listens without ever
    answering in time for a whole ``start_timeout`` is stopped and started again.
    """

    def __init__(self, gateway: Gateway, pod: Pod, restart_for: Sequence[str] = (), fresh: bool = False) -> None:
        self.gateway = gateway
        self.pod = pod
        self.restart_for = list(restart_for)
        self.fresh = fresh
        self.phase = "check"
        self.next_at = time.monotonic()
        self.deadline: float | None = None  # of the current wait
        self.last = Health(False, "not probed yet", time.time())
        self.backoff = Backoff(PROBE_FIRST, PROBE_MAX)
        self.started = False  # this startup ran the start command
        # Waiting for a gateway it started that did not answer the first probe: a watch
        # (Gateway.watch) instead of a probe every few seconds, where the transport has one.
        self.watching: Watch | None = None
        self.watch_began = 0.0
        self.probed_up = 0  # probes since the start
        self.pid: int | None = None  # what the start put in the background, as the sandbox said
        self.cpu_seen: float | None = None  # its CPU time when the deadline first passed
        self.extended = False  # its wait got one more start_timeout: it was still starting

    def close(self) -> None:
        """End a watch still running (a startup given up before its answer)."""
        watching, self.watching = self.watching, None
        if watching is not None:
            watching.cancel()

    @property
    def timeout(self) -> int:
        return int(self.gateway.values["start_timeout"])

    def describe(self) -> str:
        """What it is doing, for a status line."""
        if self.phase in ("up", "slow", "stopping") and self.deadline is not None:
            left = max(0, round(self.deadline - time.monotonic()))
            what = {"up": "the gateway to answer", "slow": "a slow gateway", "stopping": "the gateway to stop"}
            return f"waiting for {what[self.phase]} ({left}s left of {self.timeout}s, last: {self.last.status})"
        return {"check": "checking the gateway", "stop": "stopping the gateway"}.get(self.phase, "starting the gateway")

    def _fields(self) -> dict[str, Any]:
        return {"sandbox": self.gateway.sandbox, "container_id": self.pod.short_id}

    def _then(self, phase: str, now: float, wait: bool = False) -> None:
        """Go on with ``phase``: at once, or (``wait``) a new wait that ends ``start_timeout`` from now."""
        self.phase = phase
        if wait:
            self.deadline = now + self.timeout
            self.backoff.reset()
        self.next_at = now

    def _probe(self, now: float) -> Health:
        self.last = self.gateway.probe(self.pod)
        self.next_at = now + self.backoff.next()
        return self.last

    def _watch(self, now: float) -> Health | None:
        """The health the watch answered with once it is over (None while it runs): a watch is
        opened when there is none; the next one no sooner than a probe would have been due."""
        if self.watching is None:
            seconds = float(watch_length(self.gateway.values))
            if self.deadline is not None:
                seconds = min(seconds, max(1.0, self.deadline - now))
            self.watching = self.gateway.watch(self.pod, seconds)
            if self.watching is None:
                return self._probe(now)
            self.watch_began = now
        result = self.watching.result()
        if result is None:
            self.next_at = now + WATCH_EVERY
            return None
        self.watching = None
        self.last = self.gateway.judge(self.pod, result)
        self.next_at = max(now, self.watch_began + self.backoff.next())
        return self.last

    def step(self) -> Health | None:
        now = time.monotonic()
        if self.phase == "check":
            if self.restart_for and not self.fresh:
                # It must start again anyway: no probe first (the stop is a no-op when nothing
                # listens). One ssh round trip less on every SOUL.md edit.
                log.info("gateway.restart", **self._fields(), steps=self.restart_for)
                self._then("stop", now)
                return None
            health = Health(False, "new pod", time.time()) if self.fresh else self._probe(now)
            self.last = health
            if health.healthy and not self.restart_for:
                return health
            if health.timed_out:
                log.info("gateway.slow", **self._fields(), status=health.status, timeout=self.timeout)
                self._then("slow", now, wait=True)
            elif health.healthy or health.answered:
                if health.healthy:
                    log.info("gateway.restart", **self._fields(), steps=self.restart_for)
                else:  # listening but not live: a wedged gateway holds the port a new one needs
                    log.warning("gateway.unhealthy", **self._fields(), status=health.status)
                self._then("stop", now)
            else:
                log.info("gateway.start", **self._fields(), reason=health.status)
                self._then("start", now)
            if not (self.fresh and self.phase == "start"):
                return None
            # A new pod, not probed: its start goes out in this same step, not a daemon round later.
        if self.phase == "stop":
            self.gateway.stop(self.pod)
            # A custom stop: wait until it took effect (the built-in one returns once nothing listens).
            self._then("stopping" if self.gateway.values["stop"] else "start", now, wait=True)
            return None
        if self.phase == "start":
            started = self.gateway.start(self.pod)
            self.started = True
            self.probed_up = 0
            self.pid, self.cpu_seen, self.extended = started.pid, None, False
            log.info("gateway.waiting", **self._fields(), timeout=self.timeout)
            self._then("up", now, wait=True)
            if started.watch is not None:  # the start's own session watches it now
                self.watching, self.watch_began = started.watch, now
            return None
        if (
            self.phase == "up"
            and (self.probed_up or self.fresh or self.watching is not None)
            and self.gateway.can_watch(self.pod)
        ):
            # It did not answer the first probe after its start, or it was just started in a new
            # pod (a Node.js gateway is not live one round trip after its start), or the start's
            # session watches it already: watched from inside the pod.
            watched = self._watch(now)
            if watched is None:
                return None
            health = watched
            now = time.monotonic()
        else:
            health = self._probe(now)
            self.probed_up += self.phase == "up"
        over = self.deadline is not None and now >= self.deadline
        if self.phase == "stopping":
            if not (health.healthy or health.answered or health.timed_out):
                self._then("start", now)
            elif over:
                if health.healthy:
                    raise GatewayError(f"the gateway did not stop within {self.timeout}s")
                self._then("start", now)
            return None
        if health.healthy:
            return health
        if self.phase == "slow":
            if not (health.answered or health.timed_out):  # the slow one is gone: nothing listens now
                log.info("gateway.start", **self._fields(), reason=health.status)
                self._then("start", now)
                return None
            if over:  # it listened for a whole start_timeout without ever answering in time: wedged
                log.warning("gateway.unhealthy", **self._fields(), status=health.status, waited=self.timeout)
                self._then("stop", now)
                return None
        if over and self.phase == "up" and not health.answered and self._still_starting(now):
            return None
        return health if over else None

    def _still_starting(self, now: float) -> bool:
        """Whether a start that nothing answered for a whole start_timeout is still under way:
        the process it put in the background is alive and used CPU (PROGRESS_WINDOW s are
        taken to see it). Then its wait gets one more start_timeout, once: a gateway that
        works that long on its start is waited for, not started a second time beside it."""
        if self.pid is None or self.extended:
            return False
        cpu = self.gateway.cpu_seconds(self.pod, self.pid)
        if cpu is None:  # gone: nothing is starting
            return False
        if self.cpu_seen is None:  # first look: look again in a moment
            self.cpu_seen, self.deadline = cpu, now + PROGRESS_WINDOW
            return True
        used, self.cpu_seen = cpu - self.cpu_seen, None
        if used < PROGRESS_CPU:
            return False
        self.extended, self.deadline = True, now + self.timeout
        log.info(
            "gateway.still_starting",
            **self._fields(),
            pid=self.pid,
            cpu_seconds=round(used, 2),
            window=PROGRESS_WINDOW,
            more=self.timeout,
        )
        return True


_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}=?")
# ssh's KnownHostsCommand, given the offered key's fingerprint, host, type and key and the
# published fingerprint: a known_hosts line for the key only when the fingerprints match.
# ssh expands % in it (%% is a %) after splitting it into words like a shell.
KNOWN_HOSTS_SCRIPT = 'if [ "$1" = "$5" ]; then printf "%%s %%s %%s\\n" "$2" "$3" "$4"; fi'


def gateway_pin_options(fingerprint: str) -> list[str]:
    """ssh options that accept exactly the host key whose SHA256 fingerprint the OpenShell
    gateway published for the sandbox, and no other: no known_hosts file is read or written."""
    command = f"/bin/sh -c '{KNOWN_HOSTS_SCRIPT}' sh %f %H %t %K {fingerprint}"
    return [
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "FingerprintHash=sha256",
        "-o",
        f"KnownHostsCommand={command}",
    ]


def _says_ok(body: str) -> bool:
    """A 200 is live unless its body is JSON that says otherwise (``{"ok": false}``)."""
    try:
        answer = json.loads(body)
    except ValueError:
        return True
    return not (isinstance(answer, dict) and answer.get("ok") is False)
