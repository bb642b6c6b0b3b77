#!/usr/bin/env python3
"""openshell: the clawguard test bed's stand-in for OpenShell's CLI (generations 1 and 2).

Standalone: Python 3 standard library plus the ``docker`` CLI, so it works for
any user allowed to run ``docker``. Install it with
``python -m testbed install-openshell DIR`` (copies it to
``DIR/openshell``, mode 0755).

Supported:

``openshell ssh-proxy --gateway-name G --name N``
    The ssh ``ProxyCommand``: connects stdin/stdout to the SSH server listening
    on 127.0.0.1 inside sandbox N's running container (as OpenShell relays to
    its in-pod supervisor's SSH server): a pod in cluster
    ``openshell-cluster-G`` or, in generation 2, its own Docker container::

        ssh -o ProxyCommand='openshell ssh-proxy --gateway-name nemoclaw --name my-assistant' \\
            sandbox@openshell-my-assistant

    Generation 2 first: if a Docker container carries the labels of OpenShell's
    Docker driver for N (``openshell.ai/managed-by=openshell``,
    ``openshell.ai/sandbox-name=N``), it replaces itself (``execv``) with
    ``docker exec -i <container> /opt/openshell/bin/ssh-relay``. Otherwise
    (generation 1) it replaces itself with one ``docker exec -i`` into the
    cluster container, running a small script that finds the pod's container by
    its Kubernetes labels, checks it has a task and ``exec``\\ s
    ``ctr -n k8s.io task exec --exec-id <unique> <id> /opt/openshell/bin/ssh-relay``.
    ssh-relay (socat, or busybox nc) connects to the sandbox's sshd on
    127.0.0.1:2222, started by the sandbox's init with an in-memory host key.
    The real gateway finds Docker sandboxes by its own labels; the stand-in does
    not check that a Docker sandbox belongs to gateway G.
    ``--server``/``--workspace`` are accepted and ignored. sshd logs errors
    to ``/var/log/openshell-sshd.log`` inside the sandbox.

``openshell sandbox ssh-config N [--gateway-name G]``
    Prints the ssh_config block the real CLI prints.

``openshell --version``

Everything else exits 2 with "not supported by the testbed stand-in".
The gateway name defaults to ``$OPENSHELL_GATEWAY`` or ``nemoclaw``.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence

VERSION = "0.0.0-clawguard-testbed"
DEFAULT_GATEWAY = "nemoclaw"
K8S_NAMESPACE = "k8s.io"
POD_NAMESPACE = "openshell"
CONTAINERD_SOCK = "/run/k3s/containerd/containerd.sock"
TASK_DIR = "/run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io"
#: In every test-bed sandbox: relays stdin/stdout to the sandbox's listening sshd.
SSH_RELAY = "/opt/openshell/bin/ssh-relay"
# Labels of OpenShell's Docker driver (generation 2: each sandbox a Docker container).
MANAGED_BY_LABEL = "openshell.ai/managed-by=openshell"
SANDBOX_NAME_LABEL = "openshell.ai/sandbox-name"
EXIT_UNSUPPORTED = 2
EXIT_PROXY_FAILED = 255  # what ssh reports for a dead transport

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

# Runs in the cluster container: $1 sandbox name, $2 exec id, $3.. the relay's argv.
# Looks the pod up exactly like the test bed does (labels), then becomes
# `ctr task exec`, whose stdin/stdout are the ssh transport.
_PROXY_SCRIPT = """\
name=$1 execid=$2
shift 2
ctr() { command ctr --address "$SOCK" -n "$NS" "$@"; }
flt="labels.\\"io.kubernetes.pod.name\\"==\\"$name\\""
flt="$flt,labels.\\"io.kubernetes.pod.namespace\\"==\\"$PODNS\\""
ids=$(ctr containers ls -q "$flt") || exit 255
id=
for c in $ids; do  # the one with a live task (its shim's state dir exists)
  [ -e "$TASKS/$c/rootfs" ] && id=$c
done
if [ -z "$id" ]; then
  if [ -z "$ids" ]; then
    echo "openshell: sandbox '$name' not found in $(hostname)" >&2
  else
    echo "openshell: sandbox '$name' is not running (container $ids)" >&2
  fi
  exit 255
fi
exec ctr --address "$SOCK" -n "$NS" tasks exec --exec-id "$execid" "$id" "$@"
"""


def _fail(message: str, code: int) -> int:
    print(f"openshell: {message}", file=sys.stderr)
    return code


def _check_name(kind: str, value: str) -> str | None:
    if _NAME_RE.match(value):
        return None
    return f"invalid {kind} {value!r}"


def _default_gateway() -> str:
    return os.environ.get("OPENSHELL_GATEWAY") or DEFAULT_GATEWAY


def ssh_proxy(gateway: str, name: str) -> int:
    for kind, value in (("gateway name", gateway), ("sandbox name", name)):
        problem = _check_name(kind, value)
        if problem:
            return _fail(problem, EXIT_PROXY_FAILED)
    docker = shutil.which("docker")
    if docker is None:
        return _fail("the docker CLI is not on PATH", EXIT_PROXY_FAILED)
    relay = [SSH_RELAY]
    found = _docker_sandbox(docker, name)
    if isinstance(found, int):
        return found
    if found is not None:
        return _exec(docker, ["docker", "exec", "-i", found, *relay])
    exec_id = f"ssh-proxy-{os.getpid()}-{secrets.token_hex(4)}"
    argv = [
        "docker",
        "exec",
        "-i",
        "-e",
        f"NS={K8S_NAMESPACE}",
        "-e",
        f"PODNS={POD_NAMESPACE}",
        "-e",
        f"SOCK={CONTAINERD_SOCK}",
        "-e",
        f"TASKS={TASK_DIR}",
        f"openshell-cluster-{gateway}",
        "sh",
        "-c",
        _PROXY_SCRIPT,
        "openshell-ssh-proxy",
        name,
        exec_id,
        *relay,
    ]
    return _exec(docker, argv)


def _docker_sandbox(docker: str, name: str) -> str | int | None:
    """The running generation 2 container of sandbox ``name``; None if there is
    none (try the cluster); an exit code when it exists but cannot be used."""
    listing = [
        docker,
        "ps",
        "--all",
        "--no-trunc",
        "--filter",
        f"label={MANAGED_BY_LABEL}",
        "--filter",
        f"label={SANDBOX_NAME_LABEL}={name}",
        "--format",
        "{{.ID}} {{.State}} {{.Names}}",
    ]
    try:
        done = subprocess.run(listing, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return _fail(f"docker ps failed: {exc}", EXIT_PROXY_FAILED)
    if done.returncode != 0:
        return _fail(f"docker ps failed: {done.stderr.strip()}", EXIT_PROXY_FAILED)
    rows = [line.split() for line in done.stdout.splitlines() if line.strip()]
    running = [row[0] for row in rows if len(row) >= 2 and row[1] == "running"]
    if len(running) == 1:
        return running[0]
    if len(running) > 1:
        return _fail(f"sandbox '{name}' has {len(running)} running containers", EXIT_PROXY_FAILED)
    if rows:
        shown = ", ".join(" ".join(row[1:]) for row in rows)
        return _fail(f"sandbox '{name}' is not running (container {shown})", EXIT_PROXY_FAILED)
    return None


def _exec(docker: str, argv: list[str]) -> int:
    """Become ``argv``: its stdin and stdout are the ssh transport."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(docker, argv)
    except OSError as exc:
        return _fail(f"cannot run {docker}: {exc}", EXIT_PROXY_FAILED)
    return EXIT_PROXY_FAILED  # not reached


def ssh_config(gateway: str, name: str) -> str:
    """The block `openshell sandbox ssh-config NAME` prints (OpenShell ssh.rs)."""
    exe = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else "openshell"
    proxy = f"{shlex.quote(exe)} ssh-proxy --gateway-name {shlex.quote(gateway)} --name {shlex.quote(name)}"
    return (
        f"Host openshell-{name}\n"
        "    User sandbox\n"
        "    StrictHostKeyChecking no\n"
        "    UserKnownHostsFile /dev/null\n"
        "    GlobalKnownHostsFile /dev/null\n"
        "    LogLevel ERROR\n"
        "    ServerAliveInterval 15\n"
        "    ServerAliveCountMax 3\n"
        f"    ProxyCommand {proxy}\n"
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="openshell",
        description="clawguard testbed stand-in for the OpenShell CLI (ssh-proxy, sandbox ssh-config).",
    )
    p.add_argument("--version", "-V", action="version", version=f"openshell {VERSION}")
    sub = p.add_subparsers(dest="cmd")
    proxy = sub.add_parser("ssh-proxy", help="ssh ProxyCommand into a sandbox's sshd")
    proxy.add_argument("--gateway-name", "-g", dest="gateway", default=None)
    proxy.add_argument("--name", default=None)
    proxy.add_argument("--server", default=None, help="ignored")
    proxy.add_argument("--workspace", default=None, help="ignored")
    proxy.add_argument("--gateway", dest="gateway_url", default=None, help="token form: not supported")
    proxy.add_argument("--sandbox-id", default=None, help="token form: not supported")
    proxy.add_argument("--token", default=None, help="token form: not supported")
    proxy.add_argument("positional_name", nargs="?", default=None, help=argparse.SUPPRESS)
    sandbox = sub.add_parser("sandbox", help="sandbox commands (only ssh-config)")
    sandbox.add_argument("--gateway-name", "-g", dest="gateway", default=None)
    sandbox.add_argument("action", nargs="?", default=None)
    sandbox.add_argument("rest", nargs="*")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    known = {"ssh-proxy", "sandbox", "--version", "-V", "--help", "-h"}
    if not args_list or args_list[0] not in known:
        what = " ".join(args_list) or "(no command)"
        return _fail(f"{what}: not supported by the testbed stand-in", EXIT_UNSUPPORTED)
    args, unknown = _parser().parse_known_args(args_list)
    if unknown:
        return _fail(f"{' '.join(args_list)}: not supported by the testbed stand-in", EXIT_UNSUPPORTED)
    if args.cmd == "ssh-proxy":
        if args.token or args.sandbox_id or args.gateway_url:
            return _fail("ssh-proxy --token/--sandbox-id: not supported by the testbed stand-in", EXIT_UNSUPPORTED)
        name = args.name or args.positional_name
        if not name:
            return _fail("ssh-proxy needs --name NAME", EXIT_UNSUPPORTED)
        return ssh_proxy(args.gateway or _default_gateway(), name)
    if args.cmd == "sandbox":
        rest = list(args.rest)
        gateway = args.gateway or _default_gateway()
        if args.action == "ssh-config" and len(rest) == 1:
            problem = _check_name("sandbox name", rest[0]) or _check_name("gateway name", gateway)
            if problem:
                return _fail(problem, 1)
            sys.stdout.write(ssh_config(gateway, rest[0]))
            return 0
        what = " ".join(["sandbox", *([args.action] if args.action else []), *rest])
        return _fail(f"{what}: not supported by the testbed stand-in", EXIT_UNSUPPORTED)
    return _fail("not supported by the testbed stand-in", EXIT_UNSUPPORTED)


if __name__ == "__main__":
    sys.exit(main())
