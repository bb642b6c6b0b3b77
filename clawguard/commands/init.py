"""clawguard init: find the OpenShell sandboxes on this machine and write a starter config.

Generation 1: every running ``openshell-cluster-<gateway>`` container; its pods are
listed by their kubelet labels with ``ctr`` (the k3s target's namespace and
container), then each is located exactly as the daemon will locate it.
Generation 2: every running container labelled ``openshell.ai/managed-by=openshell``,
one sandbox per ``openshell.ai/sandbox-name``, located with the label selector the
config will hold. Next to the config goes an empty archive per sandbox.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, TextIO

import docker
import docker.errors

from ..config import SANDBOX_NAME, default_path, parse_config
from ..errors import ClawguardError, TargetError
from ..state import atomic_write
from ..targets import Instance, Target
from ..targets import _docker as docker_api
from ..targets.docker import MANAGED_BY_LABEL, MANAGED_BY_VALUE, SANDBOX_NAME_LABEL, DockerTarget, nemoclaw_labels
from ..targets.k3s import K3sTarget
from . import output

HELP = "Find the OpenShell sandboxes on this machine (both generations) and write a starter config and archives."
EXAMPLE = "example: clawguard init --print"

CLUSTER_PREFIX = "openshell-cluster-"
DEFAULT_GATEWAY = "nemoclaw"
ARCHIVE_FOLDERS = ("credentials", "scripts", "skills")

# Arguments: ctr, address, namespace, filter. Prints `ctr containers info` (JSON) of
# every matching container, then the task table.
_LIST_PODS = r"""
for id in $("$1" --address "$2" -n "$3" containers ls -q "$4"); do
  "$1" --address "$2" -n "$3" containers info "$id" 2>/dev/null
done
echo --tasks--
"$1" --address "$2" -n "$3" tasks ls || exit 3
"""


def add_parser(subparsers: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("init", help=HELP, description=HELP, epilog=EXAMPLE, parents=parents)
    parser.add_argument(
        "--archive",
        metavar="DIR",
        help="where the archives go, one directory per sandbox (default: archives/ next to the config)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing config")
    parser.add_argument(
        "--print", dest="print_only", action="store_true", help="print the config instead of writing anything"
    )
    parser.set_defaults(run=run)


@dataclass(frozen=True)
class Found:
    """One sandbox seen on this machine."""

    name: str  # its OpenShell name: the pod, or openshell.ai/sandbox-name
    kind: str  # the target kind
    target: dict[str, Any]  # the config's target keys (kind and what differs from the defaults)
    gateway: str  # the OpenShell gateway, for the SSH proxy
    instance: Instance

    @property
    def generation(self) -> int:
        return 1 if self.kind == "k3s" else 2


@dataclass
class Discovery:
    found: list[Found]
    notes: list[str]  # what was seen but left out, and why


def _defaults(cls: type[Target]) -> dict[str, Any]:
    return {name: spec.default for name, spec in cls.params.items()}


def _container_name(container: Mapping[str, Any]) -> str:
    names = container.get("Names") or []
    return str(names[0]).lstrip("/") if names else str(container.get("Id", ""))[:12]


def discover(client: docker.DockerClient) -> Discovery:
    """Every running sandbox of either generation; raises TargetError without Docker."""
    result = Discovery([], [])
    try:
        clusters = client.api.containers(all=True, filters={"name": CLUSTER_PREFIX})
        sandboxes = client.api.containers(all=True, filters={"label": [f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"]})
    except (docker.errors.DockerException, OSError) as exc:
        raise TargetError(f"Docker is not reachable: {exc}") from None
    for cluster in sorted(clusters, key=_container_name):
        name = _container_name(cluster)
        if not name.startswith(CLUSTER_PREFIX):
            continue
        if cluster.get("State") != "running":
            result.notes.append(f"{name}: {cluster.get('State')}, skipped (start it and run init again)")
            continue
        _discover_pods(client, name, result)
    running: dict[str, list[str]] = {}
    for container in sandboxes:
        sandbox = (container.get("Labels") or {}).get(SANDBOX_NAME_LABEL)
        if not sandbox:
            continue
        if container.get("State") == "running":
            running.setdefault(sandbox, []).append(_container_name(container))
        else:
            result.notes.append(f"{_container_name(container)}: {container.get('State')}, skipped")
    for sandbox in sorted(running):
        target = DockerTarget(sandbox, {**_defaults(DockerTarget), "labels": nemoclaw_labels(sandbox)})
        _locate(result, sandbox, "docker", {"kind": "docker", "labels": target.labels}, DEFAULT_GATEWAY, target)
    return result


def _discover_pods(client: docker.DockerClient, cluster: str, result: Discovery) -> None:
    values = {**_defaults(K3sTarget), "cluster": cluster}
    selector = ",".join(
        f'labels."{key}"=={value}'
        for key, value in (
            ("io.kubernetes.pod.namespace", values["namespace"]),
            ("io.kubernetes.container.name", values["container"]),
        )
    )
    argv = ["sh", "-c", _LIST_PODS, "sh", values["ctr"], values["containerd_address"], values["containerd_namespace"]]
    try:
        listed = docker_api.exec_in(client.api, cluster, [*argv, selector], None, values["timeout"])
    except (docker.errors.DockerException, OSError, docker_api.ExecTimeout) as exc:
        result.notes.append(f"{cluster}: cannot list its pods ({exc})")
        return
    if listed.code != 0:
        result.notes.append(f"{cluster}: cannot list its pods ({listed.stderr.decode(errors='replace').strip()})")
        return
    gateway = cluster.removeprefix(CLUSTER_PREFIX)
    for pod in _running_pods(listed.stdout.decode(errors="replace")):
        target = {"kind": "k3s", "cluster": cluster}
        _locate(result, pod, "k3s", target, gateway, K3sTarget(pod, values))


def _running_pods(text: str) -> list[str]:
    """Pod names of the listed containers that have a running task."""
    infos, _, tasks = text.partition("--tasks--")
    running = {fields[0] for fields in (line.split() for line in tasks.splitlines()) if fields[2:3] == ["RUNNING"]}
    decoder = json.JSONDecoder()
    pods: set[str] = set()
    position = 0
    while position < len(infos):
        if infos[position].isspace():
            position += 1
            continue
        try:
            info, position = decoder.raw_decode(infos, position)
        except ValueError:
            break  # a container that vanished mid-listing leaves nothing parsable behind
        labels = info.get("Labels") or {}
        if info.get("ID") in running and labels.get("io.kubernetes.pod.name"):
            pods.add(labels["io.kubernetes.pod.name"])
    return sorted(pods)


def _locate(result: Discovery, name: str, kind: str, target: dict[str, Any], gateway: str, located_by: Target) -> None:
    """Keep the sandbox only if the config's own target finds it: what init writes must work."""
    try:
        instance = located_by.locate()
    except ClawguardError as exc:
        result.notes.append(f"{name} ({kind}): skipped: {exc}")
        return
    result.found.append(Found(name, kind, target, gateway, instance))


# --------------------------------------------------------------------- writing


def config_keys(found: list[Found], notes: list[str]) -> list[tuple[str, Found]]:
    """A config key per sandbox: its own name, unless that is taken or not a valid key."""
    keys: list[tuple[str, Found]] = []
    taken: set[str] = set()
    for item in found:
        if not re.fullmatch(SANDBOX_NAME, item.name):
            notes.append(f"{item.name} ({item.kind}): skipped: not usable as a config key (a-z, 0-9 and '-')")
            continue
        key, number = item.name, 2
        while key in taken:  # the same name in both generations
            suffix = f"-{number}"
            key = item.name[: 63 - len(suffix)].rstrip("-") + suffix
            number += 1
        taken.add(key)
        keys.append((key, item))
    return keys


def _q(value: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(value)


def render(entries: list[tuple[str, Found]], archives: Path) -> str:
    lines = [
        f"# Written by `clawguard init` on {date.today().isoformat()} from the sandboxes Docker showed.",
        "# Every key: docs/configuration.md. Validate with `clawguard check`.",
        "# Switching a sandbox between OpenShell generations means changing only its target:",
        "# kind: k3s (a pod in openshell-cluster-<gateway>) or kind: docker (a plain container).",
        "version: 1",
        "sandboxes:",
    ]
    for key, item in entries:
        where = item.instance.where
        if item.kind == "k3s":
            lines.append(f"  # generation 1: {where}")
        else:
            lines.append(f"  # generation 2: {where}; NemoClaw renames it when it recreates the sandbox,")
            lines.append("  # its labels stay")
        lines += [f"  {key}:", "    target:", f"      kind: {item.kind}"]
        for name, value in item.target.items():
            if name == "kind":
                continue
            if isinstance(value, dict):
                lines.append(f"      {name}:")
                lines += [f"        {_q(k)}: {_q(v)}" for k, v in value.items()]
            else:
                lines.append(f"      {name}: {_q(value)}")
        if item.kind == "k3s" and key != item.name:
            lines.append(f"      pod: {_q(item.name)}")
        lines.append(f"    archive: {_q(str(archives / key))}")
        proxy_name = "{sandbox}" if key == item.name else item.name
        if item.gateway != DEFAULT_GATEWAY or key != item.name:
            lines += [
                "    gateway:",
                f"      ssh_proxy: {_q(f'openshell ssh-proxy --gateway-name {item.gateway} --name {proxy_name}')}",
            ]
            if key != item.name:
                lines.append(f"      ssh_host: {_q(f'openshell-{item.name}')}")
        else:
            proxy = f"openshell ssh-proxy --gateway-name {DEFAULT_GATEWAY} --name {{sandbox}}"
            lines.append(f"    # gateway: reached over `{proxy}` (the default)")
    return "\n".join(lines) + "\n"


def readme(key: str, item: Found) -> str:
    return f"""# Restore archive of sandbox `{key}`

Made by `clawguard init` for {item.instance.where}. Put here what you placed in the
sandbox by hand; clawguard puts it back after every restart. The layout is the plan
(docs/archive.md); empty folders restore nothing.

| here                  | lands in the sandbox                                                   |
|-----------------------|------------------------------------------------------------------------|
| `exec-approvals.json` | `/sandbox/.openclaw-data/exec-approvals.json`, linked from `/sandbox/.openclaw/` |
| `openclaw.json`       | `/sandbox/.openclaw/openclaw.json`, root, 0444                          |
| `credentials/*`       | `/sandbox/.openclaw-data/credentials/`, 0600 (keep them `chmod 600` here too) |
| `scripts/*`           | `/sandbox/.openclaw-data/<name>`, 0755, linked from `/sandbox/.openclaw/` |
| `skills/<name>/`      | `/sandbox/.openclaw-data/skills/<name>/`, the exact tree               |
| `SOUL.md`             | `/sandbox/.openclaw-data/workspace/SOUL.md`                             |

The telegram directory's owner is always fixed. Then: `clawguard check`, `clawguard restore {key}`.
"""


def write_archive(directory: Path, key: str, item: Found) -> list[str]:
    """Create what is missing of an empty archive; never touch what is there. Returns what was made."""
    made = []
    if not directory.exists():
        made.append(str(directory))
    directory.mkdir(parents=True, exist_ok=True)
    for folder in ARCHIVE_FOLDERS:
        path = directory / folder
        if not path.exists():
            path.mkdir(mode=0o700 if folder == "credentials" else 0o755)
            made.append(f"{folder}/")
    readme_path = directory / "README.md"
    if not readme_path.exists():
        readme_path.write_text(readme(key, item))
        made.append("README.md")
    return made


def run(args: argparse.Namespace) -> int:
    path = Path(args.config).expanduser() if args.config else default_path()
    path = path.absolute()
    if path.exists() and not args.force and not args.print_only:
        output.error(f"{path} exists; use --force to replace it, or --print to see what init would write")
        return 2
    archives = (Path(args.archive).expanduser() if args.archive else path.parent / "archives").absolute()
    # With --print the config goes to stdout, so the findings go to stderr.
    report: TextIO = sys.stderr if args.print_only else sys.stdout
    discovery = discover(docker_api.client())
    entries = config_keys(discovery.found, discovery.notes)
    _report(entries, discovery.notes, report)
    if not entries:
        output.error("no running OpenShell sandbox found (neither openshell-cluster-* pods nor Docker sandboxes)")
        return 1
    text = render(entries, archives)
    parse_config(text, path)  # never write a config clawguard itself would refuse
    if args.print_only:
        print(text, end="")
        return 0
    for key, item in entries:
        made = write_archive(archives / key, key, item)
        if made:
            print(f"archive {archives / key}: created {', '.join(made)}", file=report)
    atomic_write(path, text.encode(), dir_mode=0o777)  # the config dir: the usual umask applies
    print(f"wrote {path}\n\nnext:", file=report)
    print("  put your files in each archive (see its README.md)", file=report)
    print(f"  clawguard --config {path} check", file=report)
    print(f"  clawguard --config {path} restore", file=report)
    return 0


def _report(entries: list[tuple[str, Found]], notes: list[str], out: TextIO) -> None:
    print(f"found {len(entries)} sandbox{'es' if len(entries) != 1 else ''}:", file=out)
    width = max((len(key) for key, _ in entries), default=0)
    for key, item in entries:
        print(
            f"  {key:<{width}}  generation {item.generation} ({item.kind})  {item.instance.where}  "
            f"{item.instance.short_id}",
            file=out,
        )
    for note in notes:
        print(f"  note: {note}", file=out)
