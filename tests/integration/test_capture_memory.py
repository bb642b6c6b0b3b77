"""A capture never holds the persisted paths in the daemon's memory.

The daemon used to read a capture's whole tar stream into memory before checking it
against limits.max_persist_bytes: one large file in memory/ could push it out of memory
at every persist interval. Here the agent writes 1 GiB into memory/ under the default
64 MiB limit while the daemon captures every second, and the daemon's resident memory
is sampled all along: it must stay within 20 MB of what it was idle, every capture must
fail as over the limit, and the capture stored before must stay the latest.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clawguard import parse_config
from clawguard.targets import make_target
from clawguard.targets.base import OutputTooLarge
from testbed import DockerSandboxes, Testbed

from .conftest import REPO, clawguard, clawguard_env, fresh_sandbox, wait_for
from .test_daemon import DaemonProcess

pytestmark = pytest.mark.integration

NAME = "io-rss"
MEMORY = "/sandbox/.openclaw-data/workspace/memory"
MB = 1024 * 1024


@pytest.fixture
def pod(testbed: Testbed) -> Iterator[str]:
    yield from fresh_sandbox(testbed, NAME)


def _rss(pid: int) -> int:
    """Resident memory of ``pid``, in bytes (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def _refused(daemon: DaemonProcess) -> list[str]:
    """The daemon's log lines of captures stopped as over the limit."""
    return [
        line
        for line in daemon.lines()
        if "event=persist.capture_failed" in line and "over limits.max_persist_bytes" in line
    ]


def _capture_pids(testbed: Testbed, pod: str) -> set[str]:
    """Pids of the processes in the pod that run a capture's tar (the tar and the script
    that starts it)."""
    code, out, err = testbed.exec_in_sandbox(pod, ["sh", "-c", "ps -o pid,args | grep '[t]ar -c' || true"])
    assert code == 0, err
    return {line.split()[0] for line in out.decode().splitlines() if line.strip()}


def _status(config: Path) -> dict[str, object]:
    done = clawguard("--config", str(config), "status", "--json")
    assert done.returncode == 0, done.stderr
    found: dict[str, object] = next(s for s in json.loads(done.stdout)["sandboxes"] if s["sandbox"] == NAME)
    return found


def _generation(config: Path) -> object:
    persist = _status(config).get("persist") or {}
    assert isinstance(persist, dict)
    return persist.get("last_capture_generation")


def test_a_capture_over_the_limit_costs_the_daemon_no_memory(testbed: Testbed, pod: str, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""version: 1
daemon: {{persist_interval: 1, poll_interval: 5, verify_interval: 3600, health_interval: 3600}}
sandboxes:
  {NAME}:
    target: {{kind: k3s, cluster: {testbed.cluster_name}}}
    archive: {REPO / "restore-archive"}
    user: sandbox
    gateway: {{enabled: false}}
"""
    )
    code, _, err = testbed.exec_in_sandbox(
        pod, ["sh", "-c", f"mkdir -p {MEMORY} && echo 'the user likes tea' > {MEMORY}/2026-11-28.md"], user="sandbox"
    )
    assert code == 0, err
    daemon = DaemonProcess(config, clawguard_env(), tmp_path / "daemon.log")
    try:
        wait_for("a first capture", lambda: _generation(config) is not None, timeout=120)
        kept = _generation(config)
        time.sleep(3)  # a few more (unchanged) captures: the daemon at its working size
        idle = 0
        for _ in range(20):
            idle = max(idle, _rss(daemon.proc.pid))
            time.sleep(0.1)
        assert not any("persist.capture_failed" in line for line in daemon.lines())

        # The agent puts 1 GiB into memory/ (written beside it, then moved in: no capture sees it
        # half-written), while the daemon goes on capturing every second.
        write = f"head -c {1024 * MB} /dev/zero > /sandbox/big.bin && mv /sandbox/big.bin {MEMORY}/big.bin"
        code, _, err = testbed.exec_in_sandbox(pod, ["sh", "-c", write], user="sandbox", timeout=600)
        assert code == 0, err
        peak, samples = idle, 0
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            peak = max(peak, _rss(daemon.proc.pid))
            samples += 1
            time.sleep(0.02)
        failed = _refused(daemon)
        print(f"daemon RSS: idle {idle / MB:.1f} MB, peak {peak / MB:.1f} MB over {samples} samples")
        print(f"captures refused as over the limit: {len(failed)}")

        assert peak < idle + 20 * MB, f"RSS rose from {idle / MB:.1f} MB to {peak / MB:.1f} MB"
        assert len(failed) >= 3, "\n".join(daemon.lines()[-20:])
        assert _generation(config) == kept
        # No tar is left reading the big file in the pod. The daemon goes on capturing every
        # second, so one capture may be reading right now: a left tar is one that outlives
        # the next two refused captures.
        reading = _capture_pids(testbed, pod)
        refused = len(_refused(daemon))
        wait_for("two more refused captures", lambda: len(_refused(daemon)) >= refused + 2, timeout=120)
        left = reading & _capture_pids(testbed, pod)
        assert not left, f"capture processes still in the pod: {sorted(left)}"
    finally:
        testbed.exec_in_sandbox(pod, ["rm", "-f", f"{MEMORY}/big.bin", "/sandbox/big.bin"])
        code = daemon.stop()
    assert code == 0, "\n".join(daemon.lines()[-30:])
    assert "Traceback" not in daemon.log.read_text()
    # No refused capture left its stream file behind (checked once the daemon stopped: while it
    # runs, the capture in progress has one).
    store = tmp_path / "state" / "clawguard" / NAME / "persist"
    assert sorted(p.name for p in store.iterdir() if p.name.startswith(".capture-")) == []


class _Counter:
    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes, /) -> int:
        self.size += len(data)
        return len(data)


@pytest.mark.parametrize("kind", ["k3s", "docker"])
def test_a_command_over_its_limit_is_stopped_in_the_sandbox(testbed: Testbed, kind: str, tmp_path: Path) -> None:
    """Both targets: past the limit the connection is closed and the whole command, pipeline
    included, is killed inside the sandbox (Docker alone would let it run to its end)."""
    name = f"io-limit-{kind}"
    gen2 = DockerSandboxes(testbed.client)
    bed: Any = testbed if kind == "k3s" else gen2
    if bed.container_id(name) is not None:
        bed.remove_sandbox(name) if kind == "k3s" else gen2.remove(name)
    if kind == "k3s":
        testbed.add_sandbox(name)
        target_yaml = f"{{kind: k3s, cluster: {testbed.cluster_name}}}"
    else:
        gen2.add(name)
        target_yaml = f"{{kind: docker, container: {gen2.container_name(name)}}}"
    try:
        text = (
            f"version: 1\nsandboxes:\n  {name}:\n    target: {target_yaml}\n    archive: {REPO / 'restore-archive'}\n"
        )
        sandbox = parse_config(text, tmp_path / "config.yaml").sandboxes[name]
        target = make_target(name, sandbox.target)
        instance = target.locate()
        sink = _Counter()
        argv = ["sh", "-c", "head -c 4000000000 /dev/zero | cat; echo never"]
        with pytest.raises(OutputTooLarge):
            target.exec_limited(instance, argv, sink, limit=MB, user="998:998")
        assert sink.size <= MB
        left = "ps -o args | grep -c '[h]ead -c 4000000000' || true"
        wait_for("the command to be gone", lambda: bed.exec_in_sandbox(name, ["sh", "-c", left])[1].strip() == b"0")
        done = target.exec_limited(instance, ["sh", "-c", "echo fine; echo said >&2"], sink, limit=MB)
        assert (done.code, done.stderr) == (0, b"said\n")
    finally:
        testbed.remove_sandbox(name) if kind == "k3s" else gen2.remove(name)
