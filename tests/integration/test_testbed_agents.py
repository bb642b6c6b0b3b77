"""The test bed's real-agent sandboxes: the real OpenClaw from npm, in NemoClaw's layout of its era,
reached like OpenShell's SSH endpoint (host key in memory only, new with every pod).

One sandbox per OpenClaw version the test bed supports, each checked from inside as the sandbox user,
over ssh through the ``openshell ssh-proxy`` stand-in, and across a pod restart. The installs are built
once (about a minute per version, two at a time) and cached in /var/cache/clawguard-testbed.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed import AGENT_VERSIONS, LATEST_AGENT, DockerSandboxes, Testbed, TestbedError, layout_for

pytestmark = pytest.mark.integration

SSH_OPTIONS = ["-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=30"]
# Where the sandbox's SSH host key could be left: the image's layer, /run (a tmpfs), /dev/shm.
FIND_HOST_KEYS = (
    "find / /run /dev/shm -xdev \\( -name 'ssh_host_*' -o -path '/run/openshell-ssh*' \\) -print 2>/dev/null; true"
)
GATEWAY_START = "exec </dev/null; nohup openclaw gateway run > /tmp/gateway.log 2>&1 &"
MARK = "/sandbox/.openclaw/workspace/written-before-restart"
# The version whose gateway stages its bundled plugins' runtime deps with npm at start (testbed._agents).
STAGING_AGENT = "2026.4.24"
TELEGRAM_CONFIG = {
    "gateway": {"mode": "local", "port": 18789, "bind": "loopback", "auth": {"mode": "none"}},
    "channels": {"telegram": {"enabled": True, "botToken": "123456789:AAF-test", "apiRoot": "http://127.0.0.1:18081"}},
}


def _name(prefix: str, version: str) -> str:
    return f"{prefix}-{version.replace('.', '-')}"


@pytest.fixture(scope="module")
def agents(testbed: Testbed) -> tuple[str, ...]:
    """Every supported version installed (cached after the first run) before the tests time anything."""
    started = time.monotonic()
    testbed.build_agents(AGENT_VERSIONS)
    print(f"agent installs ready in {time.monotonic() - started:.1f}s")
    return AGENT_VERSIONS


@pytest.fixture(scope="module")
def openshell(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Testbed.install_openshell(tmp_path_factory.mktemp("bin"))


@pytest.fixture
def sandboxes(testbed: Testbed) -> Iterator[Callable[..., str]]:
    """``add(name, **kwargs)``: a generation 1 sandbox, removed after the test (also if an earlier run left it)."""
    added: list[str] = []

    def add(name: str, **kwargs: Any) -> str:
        testbed.remove_sandbox(name)
        added.append(name)
        return testbed.add_sandbox(name, **kwargs)

    yield add
    for name in added:
        testbed.remove_sandbox(name)


def ssh(openshell: Path, name: str, command: str, *options: str) -> subprocess.CompletedProcess[str]:
    """The real OpenSSH client through the ``openshell ssh-proxy`` stand-in, as clawguard and NemoClaw run it."""
    proxy = f"{shlex.quote(str(openshell))} ssh-proxy --gateway-name nemoclaw --name {name}"
    argv = ["ssh", "-o", f"ProxyCommand={proxy}", *SSH_OPTIONS, *options, f"sandbox@openshell-{name}", command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def ssh_untrusted(openshell: Path, name: str, command: str = "true") -> subprocess.CompletedProcess[str]:
    """What OpenShell's own CLI does: trust the proxy, not a host key."""
    options = ("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null")
    return ssh(openshell, name, command, *options, "-o", "GlobalKnownHostsFile=/dev/null")


def seen_host_key(openshell: Path, name: str, known_hosts: Path) -> str:
    """Connect with ``StrictHostKeyChecking=accept-new`` into an empty ``known_hosts``; return the key ssh saw."""
    assert not known_hosts.exists()
    done = ssh(
        openshell,
        name,
        "true",
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
    )
    assert done.returncode == 0, done.stderr
    (line,) = known_hosts.read_text().splitlines()
    key_type, key = line.split()[1:3]
    assert key_type == "ssh-ed25519"
    return key


def run(bed: Testbed | DockerSandboxes, name: str, script: str, user: str | None = None) -> str:
    code, out, err = bed.exec_in_sandbox(name, ["sh", "-c", script], user=user)
    assert code == 0, f"{script!r} in {name}: exit {code}: {err.decode(errors='replace')}"
    return out.decode()


def wait_for_gateway(bed: Testbed | DockerSandboxes, name: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = bed.gateway_status(name)
        if status:
            return status
        if time.monotonic() > deadline:
            tail = run(bed, name, "tail -n 20 /tmp/gateway.log || true")
            raise AssertionError(f"the gateway in {name} did not answer within {timeout}s:\n{tail}")
        time.sleep(0.5)


def check_layout(bed: Testbed | DockerSandboxes, name: str, layout: str) -> None:
    """NemoClaw's ~/.openclaw of the era, seen as the sandbox user."""
    stat = "stat -c '%U %a %F' "
    if layout == "split":
        script = (
            f"{stat} /sandbox/.openclaw /sandbox/.openclaw/openclaw.json /sandbox/.openclaw-data/skills "
            "/sandbox/.openclaw-data/telegram; readlink /sandbox/.openclaw/skills /sandbox/.openclaw/telegram"
        )
        expected = [
            "root 1777 directory",
            "root 444 regular file",
            "sandbox 755 directory",
            "root 755 directory",  # the seed's telegram bug
            "/sandbox/.openclaw-data/skills",
            "/sandbox/.openclaw-data/telegram",
        ]
    else:
        script = (
            f"{stat} /sandbox/.openclaw /sandbox/.openclaw/openclaw.json /sandbox/.openclaw/skills "
            "/sandbox/.openclaw/telegram; test ! -e /sandbox/.openclaw-data && echo no-openclaw-data"
        )
        expected = [
            "sandbox 2770 directory",
            "sandbox 660 regular file",
            "sandbox 2770 directory",
            "sandbox 2770 directory",
            "no-openclaw-data",
        ]
    assert run(bed, name, script, user="sandbox").splitlines() == expected
    # The agent: root-owned and read-only to the sandbox user, at NemoClaw's paths.
    agent = run(
        bed,
        name,
        "stat -c '%U' /usr/local/bin/node /usr/local/lib/node_modules/openclaw; readlink /usr/local/bin/openclaw; "
        "test -w /usr/local/lib/node_modules/openclaw || echo read-only",
        user="sandbox",
    )
    assert agent.splitlines() == ["root", "root", "../lib/node_modules/openclaw/openclaw.mjs", "read-only"]


@pytest.mark.parametrize("version", AGENT_VERSIONS)
def test_a_real_openclaw_sandbox(
    testbed: Testbed,
    agents: tuple[str, ...],
    openshell: Path,
    sandboxes: Callable[..., str],
    tmp_path: Path,
    version: str,
) -> None:
    name = _name("agent", version)
    first = sandboxes(name, agent=version)
    spec = testbed.sandbox_spec(name)
    assert (spec.agent, spec.layout, spec.host_key_file, spec.uid) == (version, layout_for(version), False, 998)

    check_layout(testbed, name, layout_for(version))  # before the gateway touches ~/.openclaw

    # Like OpenShell's endpoint: no host key anywhere in the pod, and ssh through the proxy still works.
    # The gateway started over ssh must outlive the session; it boots while the checks below run.
    assert run(testbed, name, FIND_HOST_KEYS) == ""
    with pytest.raises(TestbedError, match="only in memory"):
        testbed.known_hosts_line(name)
    done = ssh_untrusted(openshell, name, "id -un; echo $HOME; " + GATEWAY_START)
    assert done.returncode == 0 and done.stdout.split() == ["sandbox", "/sandbox"], done.stderr
    key_before = seen_host_key(openshell, name, tmp_path / "known_hosts.1")

    # Inside, as the sandbox user: the real CLI of that version, accepting the image's config.
    code, out, err = testbed.agent_cli(name, ["--version"])
    assert code == 0 and version in out, (out, err)
    code, out, err = testbed.agent_cli(name, ["config", "validate"])
    assert code == 0, out + err

    status = wait_for_gateway(testbed, name)
    assert status.get("ok") is True, status

    run(testbed, name, f"echo hand-placed > {MARK}", user="sandbox")
    second = testbed.restart(name)
    assert second != first and testbed.container_id(name) == second
    assert testbed.sandbox_spec(name) == spec
    assert run(testbed, name, f"test -e {MARK} && echo still-there || echo gone") == "gone\n"
    assert testbed.gateway_status(name) is None  # NemoClaw #2042: nothing restarts it
    assert run(testbed, name, FIND_HOST_KEYS) == ""
    key_after = seen_host_key(openshell, name, tmp_path / "known_hosts.2")
    assert key_after != key_before
    # A client that pinned the old pod's key is refused by the new one.
    pinned = ssh(openshell, name, "true", "-o", f"UserKnownHostsFile={tmp_path / 'known_hosts.1'}")
    assert pinned.returncode == 255 and "REMOTE HOST IDENTIFICATION HAS CHANGED" in pinned.stderr


def test_a_pinned_host_key_file_on_request(
    testbed: Testbed, agents: tuple[str, ...], openshell: Path, sandboxes: Callable[..., str], tmp_path: Path
) -> None:
    """host_key_file=True keeps the key as a file (clawguard's host_key: pin reads it) and sshd presents it."""
    name = "agent-pinned"
    sandboxes(name, agent=LATEST_AGENT, host_key_file=True)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(testbed.known_hosts_line(name) + "\n")
    done = ssh(openshell, name, "true", "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}")
    assert done.returncode == 0, done.stderr
    assert run(testbed, name, "ls /etc/ssh/ssh_host_*").split() == [
        "/etc/ssh/ssh_host_ed25519_key",
        "/etc/ssh/ssh_host_ed25519_key.pub",
    ]


def test_a_standin_sandbox_can_keep_its_key_in_memory_too(
    testbed: Testbed, openshell: Path, sandboxes: Callable[..., str], tmp_path: Path
) -> None:
    name = "standin-no-keyfile"
    first = sandboxes(name, host_key_file=False)
    assert run(testbed, name, FIND_HOST_KEYS) == ""
    key_before = seen_host_key(openshell, name, tmp_path / "known_hosts.1")
    done = ssh_untrusted(openshell, name, GATEWAY_START)
    assert done.returncode == 0, done.stderr
    assert wait_for_gateway(testbed, name, timeout=10)["status"] == "ok"
    assert testbed.restart(name) != first
    assert seen_host_key(openshell, name, tmp_path / "known_hosts.2") != key_before


def test_a_real_openclaw_docker_sandbox(
    testbed: Testbed, agents: tuple[str, ...], openshell: Path, tmp_path: Path
) -> None:
    """Generation 2: the same image as a plain Docker container; a recreation may bring a new uid."""
    gen2 = DockerSandboxes(testbed.client)
    name = "agent-docker"
    gen2.remove(name)
    try:
        first = gen2.add(name, agent=LATEST_AGENT)
        code, out, err = gen2.agent_cli(name, ["--version"])
        assert code == 0 and LATEST_AGENT in out, (out, err)
        check_layout(gen2, name, layout_for(LATEST_AGENT))
        assert run(gen2, name, FIND_HOST_KEYS) == ""
        key_before = seen_host_key(openshell, name, tmp_path / "known_hosts.1")
        done = ssh_untrusted(openshell, name, GATEWAY_START)
        assert done.returncode == 0, done.stderr
        assert wait_for_gateway(gen2, name).get("ok") is True

        # NemoClaw rebuilt the image and `useradd -r` gave the sandbox user another uid.
        second = gen2.recreate(name, uid=1234)
        assert second != first
        assert gen2.sandbox_spec(name).agent == LATEST_AGENT
        assert run(gen2, name, "id -u sandbox; stat -c %u /sandbox/.openclaw").split() == ["1234", "1234"]
        assert seen_host_key(openshell, name, tmp_path / "known_hosts.2") != key_before
        assert ssh_untrusted(openshell, name, "id -u").stdout.strip() == "1234"
    finally:
        gen2.remove(name)


def write_config(bed: Testbed, name: str, config: dict[str, Any]) -> None:
    """``~/.openclaw/openclaw.json`` as NemoClaw's flat layout has it: written as root, the sandbox user's, 0660."""
    path = "/sandbox/.openclaw/openclaw.json"
    script = f"cat > {path} && chown sandbox:sandbox {path} && chmod 0660 {path}"
    code, _, err = bed.exec_in_sandbox(name, ["sh", "-c", script], stdin=json.dumps(config).encode())
    assert code == 0, err.decode(errors="replace")


def wait_for_next_update(bed: Testbed, name: str, offset: int, timeout: float = 120) -> None:
    """Until the agent's Telegram channel asks the stand-in for updates from ``offset`` on."""
    deadline = time.monotonic() + timeout
    while not any(call.get("offset") == offset for call in bed.telegram_calls(name)):
        if time.monotonic() > deadline:
            log = run(bed, name, "grep -E 'plugins|telegram' /tmp/gateway.log | tail -n 20 || true")
            raise AssertionError(
                f"no getUpdates with offset {offset} from {name} within {timeout}s; "
                f"calls: {bed.telegram_calls(name)}\n{log}"
            )
        time.sleep(1)


def test_the_telegram_channel_starts_offline_with_staged_plugin_runtime_deps(
    testbed: Testbed, agents: tuple[str, ...], sandboxes: Callable[..., str]
) -> None:
    """2026.4.24's gateway would install its plugins' runtime deps with npm at start, which fails without a
    network; the test bed stages them in every new pod, as an image built with them, so Telegram runs."""
    name = _name("agent-telegram", STAGING_AGENT)
    first = sandboxes(name, agent=STAGING_AGENT)
    for pod in ("first pod", "after a restart"):
        if pod != "first pod":
            assert testbed.restart(name) != first
        # Staged by sandbox-init before the pod was ready, the sandbox user's, as image content.
        staged = run(testbed, name, "stat -c '%U %n' /sandbox/.openclaw/plugin-runtime-deps/*", user="sandbox")
        roots = [line.split()[1].rsplit("/", 1)[1] for line in staged.splitlines()]
        assert {line.split()[0] for line in staged.splitlines()} == {"sandbox"}, (pod, staged)
        assert f"openclaw-{STAGING_AGENT}-" in " ".join(roots) and any(r.startswith("openclaw-unknown-") for r in roots)

        write_config(testbed, name, TELEGRAM_CONFIG)
        testbed.start_telegram(name, deliver=[4242])
        assert testbed.start_gateway(name).get("ok") is True, pod
        wait_for_next_update(testbed, name, 4243)  # took update 4242, asked for the next one
        log = run(testbed, name, "cat /tmp/gateway.log")
        assert "bundled runtime deps" not in log, (pod, log[-3000:])  # no npm install was needed
