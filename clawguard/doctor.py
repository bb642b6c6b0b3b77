"""``clawguard doctor``: every known trap, checked in order, each as one line with its fix.

The checks follow the path a restore takes: the config, then for each sandbox its
archive, the Docker daemon its target reaches it through (only for a target kind that
uses Docker, at the target's own ``docker_host``), the sandbox as its target locates
it, the plan against the live sandbox, the two files whose absence breaks the agent
silently (exec-approvals, the telegram directory's owner), the gateway; then the
systemd user service that keeps all of it running. Every sandbox is reached only
through its own Target: one whose Docker is down does not stop the others' checks,
and a kind that needs no Docker never asks for one. A check that cannot run because
an earlier one failed is reported as skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .api import Clawguard
from .config import Config, default_path, load_config
from .context import SandboxContext
from .converge import open_pod
from .entries import Entry, Inspection
from .errors import ClawguardError, InputError
from .plan import Plan, build_plan
from .pod import Pod
from .restore import FAILED, WOULD_CHANGE, run_plan
from .sandboxfs import SandboxCommandFailed
from .targets import Target
from .targets import _docker as docker_api

#: Where docker-py connects when neither the target nor DOCKER_HOST names a daemon.
LOCAL_DOCKER = "unix:///var/run/docker.sock"

PASS, FAIL, SKIP = "ok", "failed", "skipped"

# Runs a host command; replaced in tests. Returns (exit status, stdout).
Runner = Callable[[Sequence[str]], tuple[int, str]]


def run_host(argv: Sequence[str]) -> tuple[int, str]:
    if shutil.which(argv[0]) is None:
        return 127, f"{argv[0]}: not installed"
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return 124, f"{argv[0]} timed out"
    return done.returncode, (done.stdout + done.stderr).strip()


@dataclass
class Check:
    name: str
    outcome: str
    detail: str
    fix: str = ""
    sandbox: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def diagnose(
    config_path: str | Path | None = None,
    sandbox: str | None = None,
    *,
    runner: Runner = run_host,
    targets: dict[str, Target] | None = None,
) -> Iterator[Check]:
    """Yield each check as it completes (the CLI prints them as they come)."""
    path = Path(config_path).expanduser() if config_path else default_path()
    try:
        config = load_config(path)
        selected = config.select(sandbox)
    except InputError as exc:
        yield Check(
            "config", FAIL, str(exc), f"fix the file, then `clawguard check` (reference: {_DOCS}/configuration.md)"
        )
        yield from _systemd(runner, None)
        return
    yield Check("config", PASS, f"{path}: {len(config.sandboxes)} sandbox(es)")
    guard = Clawguard(config, targets=targets)
    dockers: dict[str | None, tuple[str, str]] = {}  # each Docker daemon is asked once, whoever uses it
    for item in selected:
        yield from _sandbox(guard.context(item.name), dockers)
    yield from _systemd(runner, config)


_DOCS = "docs"


def docker_host(target: Target) -> str | None:
    """The Docker daemon ``target`` reaches its sandbox through, as docker-py will connect
    to it (the target's ``docker_host``, else DOCKER_HOST, else the local socket); None for
    a kind that needs no Docker. A kind uses Docker when it declares ``docker_host``."""
    if "docker_host" not in target.params:
        return None
    return target.values.get("docker_host") or os.environ.get("DOCKER_HOST") or LOCAL_DOCKER


def _reach_docker(configured: str | None) -> tuple[str, str]:
    """Ask the Docker daemon that a target with ``docker_host: configured`` connects to
    for its version, as the target connects. (version, "") or ("", the error)."""
    import docker.errors

    try:
        client = docker_api.client(configured, 10)
        try:
            return str(client.version().get("Version", "?")), ""
        finally:
            client.close()
    except (ClawguardError, docker.errors.DockerException, OSError) as exc:
        return "", str(exc).removeprefix("Docker is not reachable: ") or type(exc).__name__


def _docker_check(name: str, target: Target, host: str, reached: tuple[str, str]) -> Check:
    version, error = reached
    if not error:
        return Check("docker", PASS, f"reachable at {host}: Docker {version}, as uid {os.getuid()}", sandbox=name)
    where = f"sandboxes.{name}.target.docker_host" if target.values.get("docker_host") else "DOCKER_HOST"
    if "Permission denied" in error or "PermissionError" in error:
        fix = (
            "add yourself to the docker group (`sudo usermod -aG docker $USER`, then log in again); "
            f"that group is root-equivalent, see {_DOCS}/security.md"
        )
    elif "No such file" in error or "Connection refused" in error:
        fix = f"start Docker there (`sudo systemctl start docker`), or fix {where}"
    else:
        fix = f"check that `docker -H {host} info` works for this user, or fix {where}"
    return Check("docker", FAIL, f"Docker at {host} is not reachable: {error[-200:]}", fix, name)


def _sandbox(ctx: SandboxContext, dockers: dict[str | None, tuple[str, str]]) -> Iterator[Check]:
    sandbox, name = ctx.config, ctx.name

    def check(what: str, outcome: str, detail: str, fix: str = "") -> Check:
        return Check(what, outcome, detail, fix, name)

    def skipped(*names: str, why: str) -> Iterator[Check]:
        for item in names:
            yield check(item, SKIP, f"needs {why}")

    later = ("plan", "exec-approvals", "telegram directory", "gateway")
    static: Plan | None = None
    try:
        static = build_plan(sandbox)
    except InputError as exc:
        yield check("archive", FAIL, str(exc), f"fix the archive, then `clawguard check {name}`")
    else:
        yield check("archive", PASS, f"{sandbox.archive}: {len(static.steps)} steps, {len(static.entries)} paths")
    target = ctx.target
    host = docker_host(target)
    if host is not None:
        configured = target.values.get("docker_host")
        if configured not in dockers:
            dockers[configured] = _reach_docker(configured)
        docker_line = _docker_check(name, target, host, dockers[configured])
        yield docker_line
        if docker_line.outcome != PASS:
            yield from skipped("sandbox", "agent", "user", *later, why=f"Docker at {host}")
            return
    try:
        pod = open_pod(sandbox, target, target.locate())
    except ClawguardError as exc:
        yield check(
            "sandbox",
            FAIL,
            str(exc),
            "start the sandbox (`nemoclaw <name> connect` or `openshell sandbox create`), or fix `target:`",
        )
        yield from skipped("agent", "user", *later, why="the sandbox")
        return
    yield check("sandbox", PASS, f"{pod.short_id} ({pod.instance.where})")
    yield _agent_check(name, pod)
    try:
        ids = pod.ids
    except LookupError as exc:
        yield check("user", FAIL, str(exc), f"set sandboxes.{name}.user to the agent's user (NemoClaw: sandbox)")
        yield from skipped(*later, why="the sandbox user")
        return
    yield check("user", PASS, f"{sandbox.user} is uid {ids.uid}, gid {ids.gid}")
    plan: Plan | None = None
    if static is not None:
        try:
            plan = build_plan(sandbox, pod.facts)
        except InputError as exc:
            yield check(
                "plan", FAIL, str(exc), f"fix the config or archive for this pod, then `clawguard check {name}`"
            )
    if plan is not None:
        yield _plan_check(name, plan, pod)
    layout = plan.layout if plan is not None else sandbox.layout.resolve(pod.facts.style)
    approvals = str(PurePosixPath(layout.config_dir, "exec-approvals.json"))
    probe = [
        Entry(approvals, "file"),
        Entry(str(PurePosixPath(layout.data_dir, "exec-approvals.json")), "file"),
        Entry(layout.telegram_dir, "dir"),
    ]
    try:
        seen = pod.fs().inspect(probe)
    except SandboxCommandFailed as exc:
        yield check("exec-approvals", FAIL, str(exc), "check that the sandbox has a POSIX shell")
        return
    yield _approvals_check(name, pod, seen, approvals)
    yield _telegram_check(name, seen, layout.telegram_dir, ids.uid)
    yield _gateway_check(ctx, pod)


def _agent_check(name: str, pod: Pod) -> Check:
    facts = pod.facts
    if facts.version is None:
        return Check(
            "agent",
            FAIL,
            f"cannot tell which OpenClaw runs here ({facts.version_text}); clawguard assumes the oldest OpenClaw "
            "it knows (2026.2: approvals and the telegram offset in files)",
            f"check `{pod.command} --version` in the sandbox, or set sandboxes.{name}.agent.version",
            name,
        )
    row = facts.capabilities
    store = "SQLite (through `openclaw approvals`)" if row.approvals == "cli" else "a file"
    return Check(
        "agent",
        PASS,
        f"{facts.describe()}: approvals in {store}, telegram offset in {row.state} (docs/compatibility.md)",
        sandbox=name,
    )


def _plan_check(name: str, plan: Plan, pod: Pod) -> Check:
    try:
        report = run_plan(plan, pod, dry_run=True)
    except ClawguardError as exc:
        return Check("plan", FAIL, str(exc), f"`clawguard restore {name} --dry-run -v` shows more", name)
    drifted = [s for s in report.steps if s.outcome in (WOULD_CHANGE, FAILED)]
    if not drifted:
        return Check("plan", PASS, f"all {len(report.steps)} steps verified in the live sandbox", sandbox=name)
    listing = "; ".join(f"{s.name}: {', '.join(s.changes[:2]) or s.error}" for s in drifted[:4])
    more = f" (+{len(drifted) - 4} more)" if len(drifted) > 4 else ""
    return Check("plan", FAIL, f"{len(drifted)} step(s) drifted: {listing}{more}", f"clawguard restore {name}", name)


def _approvals_check(name: str, pod: Pod, seen: Inspection, path: str) -> Check:
    found = seen.found.get(path)
    if pod.facts.capabilities.approvals == "cli":
        if found is not None:
            return Check(
                "exec-approvals",
                FAIL,
                f"{path} exists, but {pod.facts.describe().split(',')[0]} keeps approvals in its database: "
                "a leftover file blocks every approval (ExecApprovalsMigrationRequiredError)",
                f"clawguard restore {name} removes it and sets the approvals through `openclaw approvals set`",
                name,
            )
        try:
            answer = pod.agent().approvals_get()
        except (ClawguardError, LookupError) as exc:
            return Check("exec-approvals", FAIL, str(exc), f"`clawguard restore {name}`", name)
        if not answer.get("exists"):
            return Check(
                "exec-approvals",
                FAIL,
                f"no approvals in {answer.get('path')}: the gateway falls back to its defaults",
                f"put exec-approvals.json in the archive, then `clawguard restore {name}`",
                name,
            )
        return Check("exec-approvals", PASS, f"stored in {answer.get('path')}", sandbox=name)
    target = found
    if found is not None and found.kind == "symlink" and found.link:
        link = found.link if found.link.startswith("/") else str(PurePosixPath(path).parent / found.link)
        target = seen.found.get(link)
    if target is None or target.kind != "file":
        what = "a dangling symlink" if found is not None else "missing"
        return Check(
            "exec-approvals",
            FAIL,
            f"{path} is {what}: the gateway falls back to deny and every tool call fails "
            "with 'exec denied: allowlist miss'",
            f"put exec-approvals.json in the archive, then `clawguard restore {name}` (the gateway must restart)",
            name,
        )
    return Check("exec-approvals", PASS, f"{path} present", sandbox=name)


def _telegram_check(name: str, seen: Inspection, path: str, uid: int) -> Check:
    found = seen.found.get(path)
    if found is None:
        return Check("telegram directory", FAIL, f"{path} is missing", f"clawguard restore {name} creates it", name)
    if found.uid != uid:
        return Check(
            "telegram directory",
            FAIL,
            f"{path} is owned by uid {found.uid}, the gateway runs as {uid}: it cannot save its polling offset "
            "(EACCES, NemoClaw #975) and replays old messages",
            f"clawguard restore {name} (its telegram step chowns it)",
            name,
        )
    return Check("telegram directory", PASS, f"{path} owned by uid {uid}", sandbox=name)


def _gateway_check(ctx: SandboxContext, pod: Pod) -> Check:
    sandbox, name = ctx.config, ctx.name
    if not sandbox.gateway["enabled"]:
        return Check("gateway", SKIP, "gateway.enabled is false", sandbox=name)
    try:
        health = ctx.gateway.probe(pod)
    except ClawguardError as exc:
        return Check("gateway", FAIL, str(exc), "see gateway.host_key in docs/daemon.md", name)
    if health.healthy:
        return Check("gateway", PASS, f"healthy (HTTP {health.status}) through the SSH proxy", sandbox=name)
    if health.status.startswith("ssh failed"):
        return Check(
            "gateway",
            FAIL,
            f"the SSH proxy is not reachable: {health.status}",
            "check that `openshell` is on PATH and gateway.ssh_proxy is right "
            f"(try: ssh -o ProxyCommand='{sandbox.gateway['ssh_proxy']}' sandbox@openshell-{name} true)",
            name,
        )
    return Check(
        "gateway",
        FAIL,
        f"the gateway is down ({health.status}): the agent is deaf until it is started",
        f"clawguard restore {name} starts it (or the daemon does within daemon.health_interval)",
        name,
    )


def _systemd(runner: Runner, config: Config | None) -> Iterator[Check]:
    from .commands.install_service import unit_path

    unit = unit_path()
    if not unit.exists():
        yield Check("service", FAIL, f"{unit} is not installed", "clawguard install-service")
    else:
        code, out = runner(["systemctl", "--user", "is-enabled", "clawguard"])
        if code == 0 and out.strip() == "enabled":
            yield Check("service", PASS, f"{unit} installed and enabled")
        else:
            yield Check(
                "service",
                FAIL,
                f"{unit} installed but not enabled ({out.strip() or code})",
                "systemctl --user enable --now clawguard",
            )
        code, out = runner(["systemctl", "--user", "show", "clawguard", "-p", "WatchdogUSec", "--value"])
        if code == 0 and out.strip() not in ("", "0", "infinity"):
            yield Check("watchdog", PASS, f"WatchdogSec={out.strip()}: a hung daemon is restarted")
        else:
            yield Check(
                "watchdog",
                FAIL,
                f"no watchdog configured for the unit ({out.strip() or code})",
                "clawguard install-service --force, then systemctl --user daemon-reload",
            )
    user = os.environ.get("USER") or str(os.getuid())
    code, out = runner(["loginctl", "show-user", user, "-p", "Linger", "--value"])
    if code == 0 and out.strip() == "yes":
        yield Check("lingering", PASS, f"on for {user}: the service runs while you are logged out")
    else:
        # loginctl cannot show a user with no session and no lingering: that is "off" too.
        if code == 0 or "not logged in or lingering" in out:
            detail = f"lingering is off for {user}: the service stops when you log out"
        else:
            first = out.strip().splitlines()[0][:120] if out.strip() else f"exit status {code}"
            detail = f"cannot tell whether lingering is on for {user} ({first}); without it the service stops at logout"
        yield Check("lingering", FAIL, detail, f"sudo loginctl enable-linger {user}")
