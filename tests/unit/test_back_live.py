"""A replaced pod's gateway is started the moment what it reads at start is in
place, and the agent's CLI is asked only what the restore does not know: a config this
agent version accepted before, approvals already in the state database it restores."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from http.server import HTTPServer
from pathlib import Path
from typing import Any, cast

import pytest

from clawguard import build_plan, parse_config
from clawguard.agent import SandboxFacts
from clawguard.agent.cli import VERDICTS_FILE
from clawguard.config import SandboxConfig
from clawguard.converge import POD_REPLACED, converge, open_pod, restore_once, verdicts_for
from clawguard.entries import Entry
from clawguard.errors import ClawguardError
from clawguard.gateway import Gateway, GatewayError, GatewayStartup, Health, Started
from clawguard.persist import Capture
from clawguard.pod import Pod
from clawguard.restore import CHANGED, FAILED, OK, Group, StepReport, _verified_files, run_plan
from clawguard.sandboxfs import UserTable
from clawguard.steps.exec_approvals import same_approvals
from clawguard.targets.base import Instance

from .chroot_sandbox import ChrootTarget, context, make_sandbox_root
from .conftest import basic_config
from .test_gateway import LiveHealth

# ---------------------------------------------------------------- what the restore knows


def _group(name: str, *entries: Entry) -> Group:
    return Group(name, "file", list(entries))


def test_only_files_written_and_verified_byte_for_byte_are_known() -> None:
    ok = _group("ok", Entry("/a", "file", 0o600, content=b"a"), Entry("/dir", "dir", 0o700))
    changed = _group("changed", Entry("/b", "file", 0o600, content=b"b"))
    failed = _group("failed", Entry("/c", "file", 0o600, content=b"c"))
    # Equivalent is not equal: the pod's file may hold other bytes (the agent's own keys).
    alike = _group("alike", Entry("/d", "file", 0o600, content=b"{}", equivalent=same_approvals))
    reports = [StepReport(g.name, "file", outcome, 0.0) for g, outcome in ((ok, OK), (changed, CHANGED))]
    reports += [StepReport("failed", "file", FAILED, 0.0), StepReport("alike", "file", OK, 0.0)]
    groups = [ok, changed, failed, alike]
    written = _verified_files(groups, reports, dry_run=False)
    assert [written(p) for p in ("/a", "/b", "/c", "/d", "/dir", "/other")] == [b"a", b"b", None, None, None, None]
    # A dry run wrote nothing: only what was found as wanted is known.
    planned = _verified_files(groups, [*reports[:1], StepReport("changed", "file", "would-change", 0.0)], True)
    assert planned("/a") == b"a" and planned("/b") is None


# ---------------------------------------------------------------- the start, at once


class _Gateway:
    """What GatewayStartup asks of a Gateway, recorded in order."""

    def __init__(self) -> None:
        self.sandbox = "my-assistant"
        self.values: dict[str, Any] = {"start_timeout": 120, "stop": None}
        self.done: list[str] = []

    def probe(self, pod: Pod) -> Health:
        self.done.append("probe")
        return Health(False, "no answer", 0.0)

    def start(self, pod: Pod) -> Started:
        self.done.append("start")
        return Started()


def _pod() -> Pod:
    return cast(Pod, type("P", (), {"short_id": "0" * 12, "id": "0" * 64})())


def test_a_new_pods_gateway_is_started_in_the_first_step() -> None:
    """Nothing is probed on a new pod (no gateway runs there), so nothing stands between
    the restore and the start command: not even a round of the daemon's loop."""
    gateway = _Gateway()
    startup = GatewayStartup(cast(Gateway, gateway), _pod(), fresh=True)
    assert startup.step() is None
    assert gateway.done == ["start"] and startup.phase == "up" and startup.started


def test_a_pod_that_may_run_a_gateway_is_probed_first_and_started_a_step_later() -> None:
    gateway = _Gateway()
    startup = GatewayStartup(cast(Gateway, gateway), _pod())
    assert startup.step() is None and gateway.done == ["probe"]  # one bounded thing per step
    assert startup.step() is None and gateway.done == ["probe", "start"]


# ---------------------------------------------------------------- the agent's CLI, in a pod


STATE = "/sandbox/.openclaw/state"
DATABASE = f"{STATE}/openclaw.sqlite"
# OpenClaw 2026.9.6's CLI as far as a restore asks it, each call logged to /tmp/openclaw-calls:
# `config validate` accepts any JSON object; approvals are kept in /sandbox/fake-approvals.json, and
# `approvals set` answers with what it stored.
AGENT = """#!/bin/sh
echo "$*" >> /tmp/openclaw-calls
case "$*" in
  "config validate --json") echo '{"valid":true,"path":"/dev/stdin"}' ;;
  "approvals get --json")
    if [ -f /sandbox/fake-approvals.json ]; then printf '{"path":"db","exists":true,"file":%s}' "$(cat /sandbox/fake-approvals.json)"
    else echo '{"path":"db","exists":false}'; fi ;;
  "approvals set --stdin --json") cat > /sandbox/fake-approvals.json
    printf '{"path":"db","exists":true,"file":%s}' "$(cat /sandbox/fake-approvals.json)" ;;
  *) echo "openclaw $*: not in this stand-in" >&2; exit 2 ;;
esac
"""


def _new_pod(tmp_path: Path, name: str) -> ChrootTarget:
    """A new pod of OpenClaw 2026.9.6: nothing of the agent's in it yet."""
    root = make_sandbox_root(tmp_path / name, agent="2026.9.6")
    script = root / "usr/local/lib/node_modules/openclaw/openclaw.sh"
    script.write_text(AGENT)
    (root / "tmp" / "openclaw-calls").touch()
    (root / "tmp" / "openclaw-calls").chmod(0o666)  # the agent's CLI runs as the sandbox user
    return ChrootTarget(root)


def _calls(target: ChrootTarget) -> list[str]:
    return (target.root / "tmp" / "openclaw-calls").read_text().splitlines()


def _state_database(path: Path, approvals: bytes) -> bytes:
    """The agent's state database as 2026.9.6 leaves it, holding ``approvals`` as it stores them."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE schema_meta (meta_key TEXT PRIMARY KEY, app_version TEXT)")
    db.execute("INSERT INTO schema_meta VALUES ('primary', '2026.9.6')")
    db.execute("CREATE TABLE exec_approvals_config (config_key TEXT PRIMARY KEY, raw_json TEXT NOT NULL)")
    stored = json.loads(approvals)
    stored["socket"] = {"path": "/sandbox/.openclaw/exec-approvals.sock", "token": "t0k3n"}
    db.execute("INSERT INTO exec_approvals_config VALUES ('current', ?)", (json.dumps(stored, indent=2),))
    db.commit()
    db.close()
    return path.read_bytes()


def _capture(tmp_path: Path, database: bytes) -> Capture:
    """A capture of the last pod's state directory, as the daemon keeps one."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        directory = tarfile.TarInfo(STATE.lstrip("/"))
        directory.type, directory.mode, directory.uid, directory.gid = tarfile.DIRTYPE, 0o700, 998, 998
        tar.addfile(directory)
        member = tarfile.TarInfo(DATABASE.lstrip("/"))
        member.size, member.mode, member.uid, member.gid = len(database), 0o600, 998, 998
        tar.addfile(member, io.BytesIO(database))
    data = buffer.getvalue()
    path = tmp_path / "1.tar"
    path.write_bytes(data)
    return Capture(1, 0.0, "9" * 64, "interval", 1, len(data), hashlib.sha256(data).hexdigest(), [STATE], path)


@pytest.fixture
def sandbox(archive: Path) -> SandboxConfig:
    extra = f"    gateway: {{enabled: false}}\n    persist: [{STATE}]\n"
    return parse_config(basic_config(archive, extra), "c.yaml").sandboxes["my-assistant"]


def test_a_replaced_pod_that_gets_its_agents_state_back_costs_no_cli_call(
    sandbox: SandboxConfig, archive: Path, tmp_path: Path
) -> None:
    first = _new_pod(tmp_path, "first")
    ctx = context(sandbox, first)
    assert converge(ctx).ok
    # The first pod ever: the agent is asked everything, and its acceptance is kept.
    assert _calls(first) == ["config validate --json", "approvals get --json", "approvals set --stdin --json"]
    kept = json.loads((ctx.store.sandbox_dir(sandbox.name) / VERDICTS_FILE).read_text())
    assert list(kept["config validate"]) == ["openclaw 2026.9.6"]

    # The pod is replaced; the capture holds the state database of the last one.
    wanted = (archive / "exec-approvals.json").read_bytes()
    capture = _capture(tmp_path, _state_database(tmp_path / "db.sqlite", wanted))
    second = _new_pod(tmp_path, "second")
    pod = open_pod(sandbox, second, second.locate())
    report = run_plan(build_plan(sandbox, pod.facts), pod, persisted=capture, verdicts=verdicts_for(ctx, pod))
    assert report.ok, report.to_dict()
    assert _calls(second) == []  # not one Node.js start before the gateway's
    assert (second.root / DATABASE.lstrip("/")).read_bytes()[:16] == b"SQLite format 3\0"
    approvals = next(s for s in report.steps if s.name == "exec-approvals")
    assert approvals.outcome == OK  # its file step had nothing to do, and the agent's state is as wanted


def test_approvals_that_changed_in_the_archive_are_set_without_asking_first(
    sandbox: SandboxConfig, archive: Path, tmp_path: Path
) -> None:
    old = (archive / "exec-approvals.json").read_bytes()
    document = json.loads(old)
    document["defaults"]["security"] = "allowlist"
    (archive / "exec-approvals.json").write_text(json.dumps(document))
    capture = _capture(tmp_path, _state_database(tmp_path / "db.sqlite", old))
    target = _new_pod(tmp_path, "pod")
    pod = open_pod(sandbox, target, target.locate())
    report = run_plan(build_plan(sandbox, pod.facts), pod, persisted=capture)
    assert report.ok, report.to_dict()
    # No verdict kept yet: the config is asked; the approvals only set (`get` would say what the restore knows).
    assert _calls(target) == ["config validate --json", "approvals set --stdin --json"]
    assert json.loads((target.root / "sandbox/fake-approvals.json").read_text()) == document
    assert next(s for s in report.steps if s.name == "exec-approvals").outcome == CHANGED


# ---------------------------------------------------------------- the start's session, opened ahead


@pytest.fixture
def local_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An `ssh` on PATH that runs the remote command here with sh, one run a directory (its
    argv; "finished" with the exit status): the primed session's protocol (the go, the start,
    the line with its status, the watch) runs for real. The start command of
    :func:`_ssh_gateway` writes "started" in the run's directory."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    runs = tmp_path / "runs"
    runs.mkdir()
    (bin_dir / "ssh").write_text(
        f'#!/bin/sh\nrun=$(mktemp -d {runs}/run.XXXXXX)\nprintf "%s\\n" "$@" > "$run/argv"\n'
        'for last; do :; done\nRUN=$run sh -c "$last"\nstatus=$?\necho "$status" > "$run/finished"\nexit "$status"\n'
    )
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return runs


@pytest.fixture
def live_url() -> Iterator[str]:
    """A gateway's /health that answers live."""
    server = HTTPServer(("127.0.0.1", 0), LiveHealth)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/health"
    finally:
        server.shutdown()


def _ssh_gateway(archive: Path, tmp_path: Path, extra: str = "") -> Gateway:
    config = parse_config(basic_config(archive, extra), "c.yaml")
    return Gateway("my-assistant", dict(config.sandboxes["my-assistant"].gateway), tmp_path)


class _RootTarget(ChrootTarget):
    runs_as_root = True  # as k3s: the gateway is reached over ssh (transport auto)


def _ssh_pod(pod_id: str = "a" * 64) -> Pod:
    users = UserTable({"sandbox": (998, 998)}, {"sandbox": 998}, {"sandbox": "/sandbox"})
    target = _RootTarget(Path("/nonexistent"))
    instance = Instance(pod_id, "test")
    return Pod(target, instance, SandboxFacts(pod_id, users, "flat", None, "test"), "sandbox")


def _wait_for(what: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _primed_gateway(
    archive: Path, tmp_path: Path, url: str, start: str = 'echo started > \\"$RUN/started\\"'
) -> Gateway:
    return _ssh_gateway(archive, tmp_path, f'    gateway: {{start: "{start}", health_url: "{url}"}}\n')


def test_a_primed_start_opens_its_session_ahead_runs_on_go_and_then_watches(
    archive: Path, tmp_path: Path, local_ssh: Path, live_url: str
) -> None:
    gateway = _primed_gateway(archive, tmp_path, live_url)
    pod = _ssh_pod()
    gateway.prime(pod)
    # The session is open (proxy, handshake) while the restore runs; it waits for its go.
    _wait_for(lambda: any((run / "argv").exists() for run in local_ssh.iterdir()))
    time.sleep(0.2)
    (run,) = local_ssh.iterdir()
    assert not (run / "started").exists() and not (run / "finished").exists()
    watch = gateway.start(pod).watch
    assert watch is not None and (run / "started").read_text() == "started\n"
    _wait_for(lambda: watch.result() is not None)
    (result,) = [watch.result() or subprocess.CompletedProcess([], 255, "", "")]
    assert gateway.judge(pod, result).healthy  # the same session watched the gateway: no second ssh
    assert [r.name for r in local_ssh.iterdir()] == [run.name]


def test_an_unused_primed_start_runs_nothing(archive: Path, tmp_path: Path, local_ssh: Path, live_url: str) -> None:
    gateway = _primed_gateway(archive, tmp_path, live_url)
    gateway.prime(_ssh_pod())
    _wait_for(lambda: any((run / "argv").exists() for run in local_ssh.iterdir()))
    gateway.unprime()
    time.sleep(0.2)
    (run,) = local_ssh.iterdir()
    assert not (run / "started").exists() and not (run / "finished").exists()  # killed before any go


def test_a_start_for_another_pod_opens_its_own_session(
    archive: Path, tmp_path: Path, local_ssh: Path, live_url: str
) -> None:
    gateway = _primed_gateway(archive, tmp_path, live_url)
    gateway.prime(_ssh_pod("a" * 64))
    _wait_for(lambda: any((run / "argv").exists() for run in local_ssh.iterdir()))
    assert gateway.start(_ssh_pod("b" * 64)).watch is None  # its own session, which only starts it
    runs = sorted(local_ssh.iterdir(), key=lambda r: (r / "started").exists())
    assert len(runs) == 2
    primed, own = runs
    assert not (primed / "started").exists() and (own / "finished").read_text() == "0\n"
    assert (own / "argv").read_text().splitlines()[-2].endswith(gateway.values["start"])


def test_a_primed_start_that_fails_says_why(archive: Path, tmp_path: Path, local_ssh: Path, live_url: str) -> None:
    gateway = _primed_gateway(archive, tmp_path, live_url, start="echo no such command >&2; exit 3")
    pod = _ssh_pod()
    gateway.prime(pod)
    with pytest.raises(GatewayError, match=r"failed \(3\): no such command"):
        gateway.start(pod)
    (run,) = local_ssh.iterdir()
    assert (run / "finished").read_text() == "3\n"  # it did not go on to watch


def test_a_new_pods_primed_start_is_watched_by_its_own_session(
    archive: Path, tmp_path: Path, local_ssh: Path, live_url: str
) -> None:
    """The daemon's way: a fresh startup says go to the primed session in its first step and
    waits for that session's answer; healthy without a second ssh session."""
    gateway = _primed_gateway(archive, tmp_path, live_url)
    pod = _ssh_pod()
    gateway.prime(pod)
    startup = gateway.startup(pod, fresh=True)
    assert startup.step() is None and startup.watching is not None
    answer = None
    deadline = time.monotonic() + 20
    while answer is None and time.monotonic() < deadline:
        time.sleep(max(0.0, startup.next_at - time.monotonic()))
        answer = startup.step()
    assert answer is not None and answer.healthy
    assert len(list(local_ssh.iterdir())) == 1


def test_nothing_is_primed_through_the_targets_exec(archive: Path, tmp_path: Path, local_ssh: Path) -> None:
    gateway = _ssh_gateway(archive, tmp_path, "    gateway: {transport: target}\n")
    gateway.prime(_ssh_pod())
    assert list(local_ssh.iterdir()) == []


def test_a_replaced_pods_start_is_primed_before_its_facts_are_read(archive: Path, tmp_path: Path) -> None:
    """The ssh handshake needs only where the pod is: it runs beside the facts' exec, not after it."""
    sandbox = parse_config(basic_config(archive), "c.yaml").sandboxes["my-assistant"]
    target = _new_pod(tmp_path, "pod")
    ctx = context(sandbox, target)
    execs_when_primed: list[int] = []
    ended: list[str] = []
    ctx.gateway.prime = lambda where: execs_when_primed.append(len(target.calls))  # type: ignore[method-assign]
    ctx.gateway.unprime = lambda: ended.append("unprimed")  # type: ignore[method-assign]
    restored = restore_once(ctx, reason=POD_REPLACED)
    assert restored.report.ok and restored.fresh
    assert execs_when_primed == [0] and ended == []  # primed first; the start that follows uses it


def test_a_primed_start_ends_when_the_pods_facts_cannot_be_read(archive: Path, tmp_path: Path) -> None:
    sandbox = parse_config(basic_config(archive), "c.yaml").sandboxes["my-assistant"]
    target = _new_pod(tmp_path, "pod")
    instance = target.locate()
    shutil.rmtree(target.root / "etc")  # no passwd: no sandbox user to read
    ctx = context(sandbox, target)
    ended: list[str] = []
    ctx.gateway.prime = lambda where: ended.append("primed")  # type: ignore[method-assign]
    ctx.gateway.unprime = lambda: ended.append("unprimed")  # type: ignore[method-assign]
    with pytest.raises(ClawguardError):
        restore_once(ctx, reason=POD_REPLACED, located=instance)
    assert ended == ["primed", "unprimed"]
