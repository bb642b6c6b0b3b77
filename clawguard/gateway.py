"""Starting the OpenClaw gateway over the OpenShell SSH proxy, and checking its health.

After a pod restart the gateway does not come back by itself (NemoClaw #2042);
NemoClaw's own recovery probes http://127.0.0.1:18789/ inside the sandbox and, if
it is down, runs ``nohup openclaw gateway run``. We do the same, with the real
OpenSSH client.

Host keys: every new pod has a new host key, so a fixed known_hosts entry cannot
work, and ``StrictHostKeyChecking=no`` would trust anyone. With ``host_key: pin``
(the default) clawguard reads the pod's public host key through the target (the
Docker channel it already trusts) each time the pod changes, writes it to its own
known_hosts file for that sandbox, and runs ssh with ``StrictHostKeyChecking=yes``
against that file only.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_exponential

from .errors import ClawguardError
from .schema import Bool, Field, Int, ListOf, Record, SandboxPath, Str
from .targets import Instance, Target

log = structlog.get_logger("clawguard.gateway")

GATEWAY_SCHEMA = Record(
    {
        "enabled": Field(Bool(), "Start and health-check the gateway after a restore.", True),
        "ssh_proxy": Field(
            Str(),
            "ProxyCommand for ssh; {sandbox} is replaced.",
            "openshell ssh-proxy --gateway-name nemoclaw --name {sandbox}",
        ),
        "ssh_host": Field(Str(pattern=r"[A-Za-z0-9_.{}-]+"), "Host name given to ssh.", "openshell-{sandbox}"),
        "ssh_user": Field(Str(pattern=r"[a-z_][a-z0-9_-]*"), "User to log in as.", "sandbox"),
        "ssh_options": Field(ListOf(Str(pattern=r"[A-Za-z]+=[^\n]*")), "Extra ssh -o options.", []),
        "start": Field(
            Str(),
            "Command that starts the gateway in the sandbox.",
            "nohup openclaw gateway run > /tmp/gateway.log 2>&1 &",
        ),
        "stop": Field(
            Str(),
            "Command that stops the gateway in the sandbox, for restarts after a change it only reads at start.",
            "openclaw gateway stop",
        ),
        "health_url": Field(
            Str(pattern=r"https?://[^\s'\"]+"),
            "Probed from inside the sandbox; 200 or 401 means up.",
            "http://127.0.0.1:18789/",
        ),
        "host_key": Field(
            Str(choices=("pin", "accept-new", "strict")),
            "pin: read each new pod's host key through the target; accept-new: trust the first key of each pod; "
            "strict: only your own known_hosts.",
            "pin",
        ),
        "host_key_path": Field(
            SandboxPath(), "The pod's public host key, for host_key: pin.", "/etc/ssh/ssh_host_ed25519_key.pub"
        ),
        "start_timeout": Field(Int(minimum=1, maximum=600), "Seconds to wait for health after a start.", 60),
        "ssh_timeout": Field(Int(minimum=1, maximum=600), "Seconds allowed for one ssh command.", 30),
    }
)

# Prints the HTTP status of $1; curl where it exists (NemoClaw's image), else busybox wget.
_PROBE = (
    'if command -v curl >/dev/null 2>&1; then curl -s -o /dev/null -w "%{http_code}" --max-time 5 "$1"; '
    'else wget -S -q -O /dev/null "$1" 2>&1 | sed -n "s/^ *HTTP\\/[0-9.]* \\([0-9]*\\).*/\\1/p" | tail -n 1; fi'
)


class GatewayError(ClawguardError):
    """The gateway could not be started or did not become healthy."""


@dataclass
class Health:
    healthy: bool
    status: str  # the HTTP status, or why there is none
    checked_at: float

    def to_dict(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "status": self.status, "checked_at": self.checked_at}


class Gateway:
    def __init__(self, sandbox: str, values: dict[str, Any], target: Target, state: Path) -> None:
        self.sandbox = sandbox
        self.values = values
        self.target = target
        self.known_hosts = state / "known_hosts"
        self._pinned_for: str | None = None

    @property
    def host(self) -> str:
        return str(self.values["ssh_host"]).replace("{sandbox}", self.sandbox)

    def _ssh(self, instance: Instance, remote: str) -> subprocess.CompletedProcess[str]:
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
        mode = self.values["host_key"]
        if mode == "strict":
            argv += ["-o", "StrictHostKeyChecking=yes"]
        else:  # clawguard's own known_hosts file for this sandbox
            if mode == "pin":
                self._pin(instance)
            elif self._pinned_for != instance.id:  # accept-new, on a new pod: forget the old pod's key
                self.known_hosts.unlink(missing_ok=True)
                self._pinned_for = instance.id
            checking = "yes" if mode == "pin" else "accept-new"
            argv += ["-o", f"StrictHostKeyChecking={checking}", "-o", f"UserKnownHostsFile={self.known_hosts}"]
            argv += ["-o", f"HostKeyAlias={self.host}"]
        for option in self.values["ssh_options"]:
            argv += ["-o", option]
        argv += [f"{self.values['ssh_user']}@{self.host}", remote]
        try:
            # A session of its own, so that a hung ProxyCommand dies with ssh on a timeout
            # instead of lingering (and holding our pipes) once ssh is killed.
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise GatewayError("the OpenSSH client (ssh) is not installed") from None
        try:
            out, err = proc.communicate(timeout=self.values["ssh_timeout"])
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return subprocess.CompletedProcess(argv, 255, "", f"ssh timed out after {self.values['ssh_timeout']}s")
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def _pin(self, instance: Instance) -> None:
        if self._pinned_for == instance.id and self.known_hosts.exists():
            return
        result = self.target.exec(instance, ["cat", self.values["host_key_path"]])
        key = result.stdout.decode(errors="replace").split()
        if result.code != 0 or len(key) < 2 or not key[0].startswith(("ssh-", "ecdsa-")):
            raise GatewayError(
                f"cannot read the sandbox's host key at {self.values['host_key_path']} "
                "(set gateway.host_key_path, or gateway.host_key: accept-new)"
            )
        self.known_hosts.write_text(f"{self.host} {key[0]} {key[1]}\n")
        self._pinned_for = instance.id

    def probe(self, instance: Instance) -> Health:
        remote = shlex.join(["sh", "-c", _PROBE, "sh", self.values["health_url"]])
        result = self._ssh(instance, remote)
        now = time.time()
        code = result.stdout.strip()
        if result.returncode == 255:
            return Health(False, f"ssh failed: {result.stderr.strip()[-200:]}", now)
        if code in ("200", "401"):
            return Health(True, code, now)
        return Health(False, code or "no answer", now)

    def start(self, instance: Instance) -> None:
        # A background job that keeps the session's stdin open makes sshd (and so
        # ssh) wait forever; start it with stdin from /dev/null.
        result = self._ssh(instance, "exec </dev/null; " + self.values["start"])
        if result.returncode != 0:
            raise GatewayError(f"starting the gateway failed ({result.returncode}): {result.stderr.strip()[-300:]}")

    def stop(self, instance: Instance) -> None:
        result = self._ssh(instance, "exec </dev/null; " + self.values["stop"])
        if result.returncode == 255:
            raise GatewayError(f"stopping the gateway failed: {result.stderr.strip()[-300:]}")

    def ensure(
        self, instance: Instance, heartbeat: Callable[[], None] = lambda: None, restart_for: Sequence[str] = ()
    ) -> Health:
        """Healthy already, or start it and wait (with backoff) until it is.

        ``restart_for`` names changed steps the gateway reads only at start: a
        running gateway is stopped and started again so that it sees them.
        """
        health = self.probe(instance)
        if health.healthy and not restart_for:
            return health
        if health.healthy:
            log.info("gateway.restart", sandbox=self.sandbox, container_id=instance.short_id, steps=list(restart_for))
            self.stop(instance)
            health = self._wait(instance, heartbeat, lambda h: not h.healthy, health)
            if health.healthy:
                raise GatewayError(f"the gateway did not stop within {self.values['start_timeout']}s")
        else:
            log.info("gateway.start", sandbox=self.sandbox, container_id=instance.short_id, reason=health.status)
        self.start(instance)
        return self._wait(instance, heartbeat, lambda h: h.healthy, health)

    def _wait(
        self, instance: Instance, heartbeat: Callable[[], None], done: Callable[[Health], bool], last: Health
    ) -> Health:
        """Probe with backoff until ``done`` or ``start_timeout``; the last probe's answer."""
        waiting = Retrying(
            stop=stop_after_delay(self.values["start_timeout"]),
            wait=wait_exponential(multiplier=0.2, max=5),
            retry=retry_if_result(lambda health: not done(health)),
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else last,
            before=lambda _state: heartbeat(),
        )
        result: Health = waiting(self.probe, instance)
        return result
