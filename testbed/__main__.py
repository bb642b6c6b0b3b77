"""CLI: ``python -m testbed {up,down,status,restart,add,rm,exec,...}``.

Also: ``install-openshell DIR`` (the ``openshell`` stand-in, for ssh's
ProxyCommand), ``known-hosts NAME`` (the pod's current host key as a
known_hosts line, for sandboxes with ``--host-key-file``), ``start-gateway
NAME``, ``gateway-status NAME`` and ``openclaw NAME -- ARGS`` (the OpenClaw CLI
inside the sandbox, as ``sandbox``).

Real OpenClaw: ``build --agent 2026.9.6`` (repeatable) installs versions into
the cache ahead of time; ``add NAME --agent 2026.9.6`` (or ``add-docker``)
starts a sandbox running it (``--layout split|flat`` overrides the era's
layout; ``--host-key-file`` keeps the SSH host key as a file).

Generation 2 (each sandbox a plain Docker container, no cluster needed):
``add-docker NAME``, ``recreate-docker NAME``, ``rm-docker NAME`` and
``exec-docker NAME -- CMD...``; ``status`` lists them under
``docker_sandboxes`` and ``down`` removes them too.

Generation 3 (OpenShell 0.1.x through its gRPC gateway API): ``gateway COMMAND --home DIR
[--name NAME] ...`` runs the stand-in gateway of :mod:`testbed.openshell_gateway` (``serve``,
``up``, ``down``, ``destroy``, ``status``, ``create``, ``delete``, ``recreate``, ``replace-pod``,
``restart-main``, ``fail``, ``crash``, ``exec``, ``exec-log``, ``env``; ``gateway --help``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ._agent_image import LAYOUTS
from ._agents import AGENT_VERSIONS, STANDIN
from ._docker_sandbox import DockerSandboxes
from ._images import DEFAULT_SANDBOX_UID
from ._testbed import Testbed, TestbedError


def _spec_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """--agent, --layout, --host-key-file; ``defaults`` False: None means "keep"."""
    versions = ", ".join(AGENT_VERSIONS)
    parser.add_argument(
        "--agent",
        default=STANDIN if defaults else None,
        help=f"'{STANDIN}' (busybox stand-in) or an OpenClaw version from npm, e.g. {versions}"
        + (" (default %(default)s)" if defaults else " (default: keep)"),
    )
    parser.add_argument(
        "--layout", choices=LAYOUTS, default=None, help="NemoClaw's ~/.openclaw layout (default: the agent's era)"
    )
    parser.add_argument(
        "--host-key-file",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep the SSH host key as /etc/ssh/ssh_host_ed25519_key (default: yes for the stand-in, no for OpenClaw)",
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m testbed",
        description="Fake OpenShell: a gen-1 cluster (Docker + real containerd) and gen-2 plain Docker sandboxes.",
    )
    p.add_argument("--gateway", default="nemoclaw", help="gateway name (default %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", required=True)
    bd = sub.add_parser("build", help="build/cache images only (and, with --agent, real OpenClaw installs)")
    bd.add_argument(
        "--agent",
        action="append",
        default=[],
        metavar="VERSION",
        help=f"also install OpenClaw VERSION (repeatable; 'all' = {', '.join(AGENT_VERSIONS)})",
    )
    sub.add_parser("up", help="start the cluster container (idempotent)")
    sub.add_parser("down", help="remove cluster container and volume (keeps images)")
    sub.add_parser("status", help="print cluster and sandbox state as JSON")
    sub.add_parser("stop", help="stop the cluster container (pods die)")
    sub.add_parser("start", help="start a stopped cluster and recover its pods")
    add = sub.add_parser("add", help="start a sandbox pod; prints its container ID")
    add.add_argument("name")
    add.add_argument(
        "--uid", type=int, default=DEFAULT_SANDBOX_UID, help="uid/gid of the sandbox user (default %(default)s)"
    )
    _spec_options(add, defaults=True)
    rm = sub.add_parser("rm", help="delete a sandbox pod")
    rm.add_argument("name")
    rs = sub.add_parser("restart", help="replace a pod; prints the new container ID")
    rs.add_argument("name")
    rs.add_argument("--uid", type=int, default=None, help="a new uid for the sandbox user (default: keep)")
    _spec_options(rs, defaults=False)
    ex = sub.add_parser("exec", help="run a command in a sandbox: exec NAME -- CMD...")
    ex.add_argument("name")
    ex.add_argument("--user", "-u", default=None, help="user name, uid or uid:gid")
    ex.add_argument("--stdin", "-i", action="store_true", help="forward stdin")
    ex.add_argument("argv", nargs=argparse.REMAINDER, metavar="CMD")
    inst = sub.add_parser(
        "install-openshell", help="install the `openshell` CLI stand-in (ssh-proxy) as DIR/openshell; prints its path"
    )
    inst.add_argument("dir", type=Path)
    kh = sub.add_parser("known-hosts", help="print `openshell-NAME <host key>` for ssh's known_hosts")
    kh.add_argument("name")
    sg = sub.add_parser("start-gateway", help="start the OpenClaw gateway stand-in in a sandbox; prints its status")
    sg.add_argument("name")
    gs = sub.add_parser("gateway-status", help="print the gateway's JSON status (exit 1 if it is down)")
    gs.add_argument("name")
    oc = sub.add_parser("openclaw", help="run the OpenClaw CLI in a sandbox as `sandbox`: openclaw NAME -- ARGS...")
    oc.add_argument("name")
    oc.add_argument("argv", nargs=argparse.REMAINDER, metavar="ARGS")
    ad = sub.add_parser(
        "add-docker", help="start a generation 2 sandbox (a plain Docker container); prints its container ID"
    )
    ad.add_argument("name")
    ad.add_argument(
        "--uid", type=int, default=DEFAULT_SANDBOX_UID, help="uid/gid of the sandbox user (default %(default)s)"
    )
    ad.add_argument(
        "--container-name",
        default=None,
        help="a fixed container name kept across recreations (default: openshell-NAME-<sandbox id>, new each time)",
    )
    _spec_options(ad, defaults=True)
    rd = sub.add_parser(
        "recreate-docker", help="remove and re-create a generation 2 sandbox as NemoClaw does; prints the new ID"
    )
    rd.add_argument("name")
    rd.add_argument("--uid", type=int, default=None, help="a new uid for the sandbox user (default: keep)")
    _spec_options(rd, defaults=False)
    xd = sub.add_parser("rm-docker", help="remove a generation 2 sandbox")
    xd.add_argument("name")
    ed = sub.add_parser("exec-docker", help="run a command in a generation 2 sandbox: exec-docker NAME -- CMD...")
    ed.add_argument("name")
    ed.add_argument("--user", "-u", default=None, help="user name, uid or uid:gid")
    ed.add_argument("--stdin", "-i", action="store_true", help="forward stdin")
    ed.add_argument("argv", nargs=argparse.REMAINDER, metavar="CMD")
    gw = sub.add_parser(
        "gateway",
        help="the OpenShell 0.1.x gateway stand-in (gRPC, mTLS): gateway COMMAND --home DIR ... (see gateway --help)",
        add_help=False,
    )
    gw.add_argument("argv", nargs=argparse.REMAINDER, metavar="COMMAND")
    return p


def _command(argv: Sequence[str]) -> list[str]:
    cmd = list(argv)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise TestbedError("exec needs a command after --")
    return cmd


def _run_and_forward(result: tuple[int, bytes, bytes]) -> int:
    code, out, err = result
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    sys.stderr.buffer.write(err)
    sys.stderr.flush()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if args.cmd == "gateway":  # its own CLI parses the rest (`gateway --help` too)
        from . import openshell_gateway

        return openshell_gateway.main([*(["-v"] if args.verbose else []), *unknown, *args.argv])
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(message)s",
        stream=sys.stderr,
    )
    tb = Testbed(args.gateway)
    docker_sandboxes = DockerSandboxes(gateway=args.gateway)
    t0 = time.monotonic()
    try:
        if args.cmd == "build":
            print(tb.build_images([DEFAULT_SANDBOX_UID]))
            versions = [v for a in args.agent for v in (AGENT_VERSIONS if a == "all" else [a])]
            for install in tb.build_agents(versions):
                print(install.usr_local)
        elif args.cmd == "up":
            tb.up()
            logging.info("%s is up (%.1fs)", tb.cluster_name, time.monotonic() - t0)
        elif args.cmd == "down":
            tb.down()
            docker_sandboxes.remove_all()
        elif args.cmd == "status":
            print(json.dumps({**tb.status(), "docker_sandboxes": docker_sandboxes.status()}, indent=2))
        elif args.cmd == "stop":
            tb.stop_cluster()
        elif args.cmd == "start":
            tb.start_cluster()
        elif args.cmd == "add":
            print(
                tb.add_sandbox(
                    args.name, args.uid, agent=args.agent, layout=args.layout, host_key_file=args.host_key_file
                )
            )
        elif args.cmd == "rm":
            tb.remove_sandbox(args.name)
        elif args.cmd == "restart":
            print(
                tb.restart(
                    args.name, uid=args.uid, agent=args.agent, layout=args.layout, host_key_file=args.host_key_file
                )
            )
        elif args.cmd == "exec":
            cmd = _command(args.argv)
            data = sys.stdin.buffer.read() if args.stdin else None
            return _run_and_forward(tb.exec_in_sandbox(args.name, cmd, args.user, data))
        elif args.cmd == "install-openshell":
            print(Testbed.install_openshell(args.dir))
        elif args.cmd == "known-hosts":
            print(tb.known_hosts_line(args.name))
        elif args.cmd == "start-gateway":
            print(json.dumps(tb.start_gateway(args.name)))
        elif args.cmd == "gateway-status":
            status = tb.gateway_status(args.name)
            if status is None:
                print(f"gateway in {args.name} is not answering", file=sys.stderr)
                return 1
            print(json.dumps(status))
        elif args.cmd == "openclaw":
            code, out, err = tb.agent_cli(args.name, _command(args.argv))
            return _run_and_forward((code, out.encode(), err.encode()))
        elif args.cmd == "add-docker":
            print(
                docker_sandboxes.add(
                    args.name,
                    args.uid,
                    args.container_name,
                    agent=args.agent,
                    layout=args.layout,
                    host_key_file=args.host_key_file,
                )
            )
        elif args.cmd == "recreate-docker":
            print(
                docker_sandboxes.recreate(
                    args.name, uid=args.uid, agent=args.agent, layout=args.layout, host_key_file=args.host_key_file
                )
            )
        elif args.cmd == "rm-docker":
            docker_sandboxes.remove(args.name)
        elif args.cmd == "exec-docker":
            data = sys.stdin.buffer.read() if args.stdin else None
            return _run_and_forward(docker_sandboxes.exec_in_sandbox(args.name, _command(args.argv), args.user, data))
    except TestbedError as exc:
        print(f"testbed error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
