"""Generation 1 OpenShell: a k3s cluster in one Docker container, the sandbox a pod.

We talk to the cluster's containerd with ``ctr`` through ``docker exec``. Every
command inside the pod runs through ``ctr task exec``, so paths resolve in the
pod's own mount namespace: a symlink in the sandbox can never point a write at
the cluster container (which is privileged, i.e. host root).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import docker.errors

from ..errors import SandboxGone, TargetError
from ..schema import Field, Int, SandboxPath, Str
from . import _docker
from ._cluster_events import ClusterEvents, Subscriber
from .base import DEFAULT_GATEWAY, Discovery, ExecResult, Found, Instance, Sink, Target, shell_script

_NAME = r"[a-zA-Z0-9][a-zA-Z0-9_.-]*"
_ID = re.compile(r"[0-9a-f]{64}")
_counter = itertools.count()
_IN_CLUSTER = "an absolute path in the cluster container"

# Run in the cluster container; each file in clawguard/data/sh says its arguments and output.
_LIST_BY_LABELS = shell_script("k3s-list-by-labels.sh")  # our pod's containers, by their kubelet labels
_LIST_BY_MARKER = shell_script("k3s-list-by-marker.sh")  # the rootfs that hold the marker file
_LIST_PODS = shell_script("k3s-list-pods.sh")  # every pod's container info and the task table

CLUSTER_PREFIX = "openshell-cluster-"
# ctr's filter for every container a kubelet made (whatever its pod).
_KUBELET_LABELLED = 'labels."io.kubernetes.container.name"'


class K3sTarget(Target):
    kind = "k3s"
    generation = 1
    params = {
        "cluster": Field(
            Str(pattern=_NAME, hint="a Docker container name"),
            "The Docker container that runs k3s.",
            "openshell-cluster-nemoclaw",
        ),
        "pod": Field(
            Str(pattern=r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?"),
            "Pod name; defaults to the sandbox name.",
            example="my-assistant",
        ),
        "namespace": Field(Str(pattern=r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"), "Kubernetes namespace.", "openshell"),
        "container": Field(Str(pattern=r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"), "Container in the pod.", "agent"),
        "locate": Field(
            Str(choices=("auto", "labels", "marker")),
            "labels: kubelet labels; marker: the one rootfs holding the marker file; "
            "auto: labels, then marker when no labelled container exists.",
            "auto",
        ),
        "marker": Field(SandboxPath(), "File that identifies a sandbox rootfs.", "/sandbox/.openclaw/openclaw.json"),
        "ctr": Field(Str(pattern=r"[A-Za-z0-9_./-]+"), "The ctr binary inside the cluster.", "ctr"),
        "containerd_address": Field(
            SandboxPath(type_name=_IN_CLUSTER), "containerd's socket.", "/run/k3s/containerd/containerd.sock"
        ),
        "containerd_state": Field(
            SandboxPath(type_name=_IN_CLUSTER), "containerd's state directory.", "/run/k3s/containerd"
        ),
        "containerd_namespace": Field(Str(pattern=_NAME), "containerd namespace.", "k8s.io"),
        "docker_host": Field(
            Str(), "Docker daemon URL; defaults to DOCKER_HOST or the local socket.", example="unix:///run/docker.sock"
        ),
        "timeout": Field(Int(minimum=1, maximum=3600), "Seconds allowed for one command.", 120),
    }

    def __init__(self, sandbox: str, values: Mapping[str, Any]) -> None:
        super().__init__(sandbox, values)
        self.cluster: str = self.values["cluster"]
        self.pod: str = self.values["pod"] or sandbox
        self._client: docker.DockerClient | None = None
        self._current: str | None = None  # the container last located: its events are ours

    def identity(self) -> tuple[object, ...]:
        v = self.values
        if v["locate"] == "marker":  # the one pod holding the marker, whatever its name
            return ("k3s", v["docker_host"], self.cluster, "marker", v["marker"])
        return ("k3s", v["docker_host"], self.cluster, v["namespace"], self.pod, v["container"])

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = _docker.client(self.values["docker_host"], self.values["timeout"])
        return self._client

    def _ctr(self) -> list[str]:
        v = self.values
        return [v["ctr"], "--address", v["containerd_address"], "-n", v["containerd_namespace"]]

    def _cluster_exec(self, argv: Sequence[str], stdin: bytes | None = None) -> ExecResult:
        # No inspect call first: exec_create itself answers 404 (missing) or 409
        # (stopped), which saves a Docker round trip on every command.
        try:
            return _docker.exec_in(self.client.api, self.cluster, argv, stdin, self.values["timeout"])
        except docker.errors.NotFound:
            raise TargetError(f"cluster container {self.cluster} not found (is OpenShell running?)") from None
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                raise TargetError(f"cluster container {self.cluster} is not running ({exc.explanation})") from None
            raise TargetError(f"Docker refused a command on {self.cluster}: {exc.explanation}") from None
        except _docker.ExecTimeout as exc:
            raise TargetError(f"a command in {self.cluster} did not finish: {exc}") from None
        except (docker.errors.DockerException, OSError) as exc:
            raise TargetError(f"Docker is not reachable: {exc}") from None

    def locate(self) -> Instance:
        strategy = self.values["locate"]
        ids: list[str] = []
        labelled = False
        if strategy in ("auto", "labels"):
            ids, labelled = self._by_labels()
        # The marker search cannot tell sandboxes apart: only fall back to it when
        # nothing in the cluster carries kubelet labels, never while our pod is
        # merely between two containers (it would find another sandbox's pod).
        if not ids and (strategy == "marker" or (strategy == "auto" and not labelled)):
            ids = self._by_marker(fallback=strategy == "auto")
        where = f"pod {self.values['namespace']}/{self.pod} in {self.cluster}"
        if not ids:
            raise TargetError(f"no running sandbox found for {where}")
        if len(ids) > 1:
            shown = ", ".join(i[:12] for i in ids)
            raise TargetError(f"{len(ids)} running containers match {where} ({shown}); set target.pod")
        self._current = ids[0]
        return Instance(ids[0], where)

    def _by_labels(self) -> tuple[list[str], bool]:
        """The running containers of our pod, and whether any container is kubelet-labelled."""
        v = self.values
        selector = ",".join(
            f'labels."{key}"=={value}'
            for key, value in (
                ("io.kubernetes.pod.name", self.pod),
                ("io.kubernetes.pod.namespace", v["namespace"]),
                ("io.kubernetes.container.name", v["container"]),
            )
        )
        result = self._cluster_exec(
            [
                "sh",
                "-c",
                _LIST_BY_LABELS,
                "sh",
                v["ctr"],
                v["containerd_address"],
                v["containerd_namespace"],
                selector,
                _KUBELET_LABELLED,
            ]
        )
        if result.code != 0:
            raise TargetError(f"listing containers in {self.cluster} failed: {_tail(result.stderr)}")
        listed, _, rest = result.stdout.decode(errors="replace").partition("--labelled--")
        labelled, _, tasks = rest.partition("--tasks--")
        candidates = {word for word in listed.split() if _ID.fullmatch(word)}
        running = []
        for line in tasks.splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[0] in candidates and fields[2] == "RUNNING":
                running.append(fields[0])
        # Our pod's containers are kubelet-labelled: only when there is none does the script
        # ask for any other (and list no tasks), so a locate is two ctr runs, not three.
        return sorted(running), bool(candidates) or _any_id(labelled)

    def _by_marker(self, fallback: bool = False) -> list[str]:
        """The running containers whose rootfs holds the marker. As ``auto``'s fallback it
        finds nothing once any container is kubelet-labelled: nothing was labelled a moment
        ago only because the kubelet was between two pods (a node reboot deletes every old
        container first), and the marker would take another sandbox's new pod for ours."""
        v = self.values
        argv = ["sh", "-c", _LIST_BY_MARKER, "sh", v["containerd_state"], v["containerd_namespace"], v["marker"]]
        if fallback:
            argv += [v["ctr"], v["containerd_address"], _KUBELET_LABELLED]
        result = self._cluster_exec(argv)
        found, _, labelled = result.stdout.decode(errors="replace").partition("--labelled--")
        if fallback and (result.code != 0 or _any_id(labelled)):
            return []
        ids = []
        for line in found.splitlines():
            match = re.search(r"/([0-9a-f]{64})/rootfs$", line.strip())
            if match:
                ids.append(match.group(1))
        return sorted(set(ids))

    @classmethod
    def discover(cls, into: Discovery) -> None:
        """Every running ``openshell-cluster-<gateway>`` container's running pods, listed by
        their kubelet labels with ``ctr``, each located as the daemon will locate it."""
        client = into.docker_client()
        if client is None:
            return
        try:
            clusters = client.api.containers(all=True, filters={"name": CLUSTER_PREFIX})
        except (docker.errors.DockerException, OSError) as exc:
            into.engine_down(exc)
            return
        for cluster in sorted(
            _docker.container_name(c) for c in clusters if _docker.container_name(c).startswith(CLUSTER_PREFIX)
        ):
            state = next(c.get("State") for c in clusters if _docker.container_name(c) == cluster)
            if state != "running":
                into.notes.append(f"{cluster}: {state}, skipped (start it and run init again)")
                continue
            cls._discover_pods(client, cluster, into)

    @classmethod
    def _discover_pods(cls, client: docker.DockerClient, cluster: str, into: Discovery) -> None:
        values = {**cls.defaults(), "cluster": cluster}
        selector = ",".join(
            f'labels."{key}"=={value}'
            for key, value in (
                ("io.kubernetes.pod.namespace", values["namespace"]),
                ("io.kubernetes.container.name", values["container"]),
            )
        )
        argv = ["sh", "-c", _LIST_PODS, "sh", values["ctr"], values["containerd_address"]]
        argv += [values["containerd_namespace"], selector]
        try:
            listed = _docker.exec_in(client.api, cluster, argv, None, values["timeout"])
        except (docker.errors.DockerException, OSError, _docker.ExecTimeout) as exc:
            into.notes.append(f"{cluster}: cannot list its pods ({exc})")
            return
        if listed.code != 0:
            into.notes.append(f"{cluster}: cannot list its pods ({_tail(listed.stderr)})")
            return
        gateway = cluster.removeprefix(CLUSTER_PREFIX) or DEFAULT_GATEWAY
        for pod in running_pods(listed.stdout.decode(errors="replace")):
            keys = {"kind": cls.kind, "cluster": cluster}
            into.add(
                cls(pod, values),
                partial(Found, pod, cls.kind, keys, gateway, generation=cls.generation, keys_if_renamed={"pod": pod}),
            )

    def watch(self, wake: Callable[[str], None], stop: threading.Event) -> None:
        """Follow the cluster container's shared event feed (one per cluster, whatever the
        number of sandboxes in it) until ``stop``: woken by this pod's own containers
        starting or going away, and by the cluster container starting or stopping. The
        daemon then locates the pod: one exec, whatever the number of files in the cluster."""
        subscriber = Subscriber(
            self.sandbox,
            None if self.values["locate"] == "marker" else self.pod,
            self.values["namespace"],
            lambda: self._current,
            wake,
        )
        feed = ClusterEvents.join(self.values, subscriber)
        try:
            stop.wait()
        finally:
            feed.leave(subscriber)

    def exec(
        self,
        instance: Instance,
        argv: Sequence[str],
        stdin: bytes | None = None,
        *,
        user: str | None = None,
        out: Sink | None = None,
        limit: int | None = None,
    ) -> ExecResult:
        exec_id = f"clawguard-{os.getpid()}-{next(_counter)}"
        # Numeric UID:GID only: ctr resolves a name by mounting the pod's active snapshot a
        # second time, which breaks the running pod's rootfs (testbed notes).
        as_user = ["--user", user] if user else []
        command = [*self._ctr(), "tasks", "exec", "--exec-id", exec_id, *as_user, instance.id, *argv]
        if out is None and limit is None:
            result = self._cluster_exec(command, stdin)
        else:  # streamed: ctr's stdout is the pod command's, and so is the limit (OutputTooLarge passes)
            try:
                result = _docker.exec_in(
                    self.client.api, self.cluster, command, stdin, self.values["timeout"], out=out, limit=limit
                )
            except (docker.errors.DockerException, _docker.ExecTimeout, OSError) as exc:
                raise TargetError(f"a command in {instance.short_id} through {self.cluster} failed: {exc}") from None
        if result.code != 0 and _gone(result.stderr):
            raise SandboxGone(f"sandbox container {instance.short_id} is gone ({_tail(result.stderr)})")
        return result


def running_pods(text: str) -> list[str]:
    """Pod names of the containers ``_LIST_PODS`` listed that have a running task."""
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


def _any_id(text: str) -> bool:
    """Whether ``ctr containers ls -q`` output lists any container."""
    return any(_ID.fullmatch(word) for word in text.split())


def _gone(stderr: bytes) -> bool:
    text = stderr.decode(errors="replace").lower()
    return ("not found" in text and ("container" in text or "task" in text)) or "no running task" in text


def _tail(data: bytes, limit: int = 300) -> str:
    text = data.decode(errors="replace").strip()
    return text[-limit:] if text else "(no output)"
