"""A local stand-in for an OpenShell "generation 1" gateway cluster.

The real thing is a Docker container ``openshell-cluster-<gateway>`` running
k3s; every sandbox is a pod whose containers are containerd containers in the
``k8s.io`` namespace. Here the cluster container runs a real containerd (no
kubelet, no CRI) with the same state directory (``/run/k3s/containerd``), and
each sandbox "pod" is one real containerd container with a random 64-hex ID,
Kubernetes-style labels and a real overlay rootfs mounted at
``/run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io/<id>/rootfs``.

Inside each pod (see :mod:`testbed._images` and
:mod:`testbed.standins`):

* the main command is ``tini -- /usr/local/bin/sandbox-init``: sandbox-init
  generates the pod's own SSH host key (``/etc/ssh/ssh_host_ed25519_key``, in
  the pod's overlay, so every new pod presents a new key) and then
  ``exec sleep infinity``. The OpenClaw gateway is *not* started (NemoClaw
  #2042). PID 1 is tini so that orphans (sshd's session processes, gateways
  started over ssh) are reaped, as OpenShell's in-pod supervisor does;
* ``/usr/local/bin/openclaw`` is a stand-in OpenClaw gateway (POSIX sh +
  busybox): ``nohup openclaw gateway run > /tmp/gateway.log 2>&1 &`` as
  ``sandbox``; it answers ``http://127.0.0.1:18789/`` with a JSON status
  (:meth:`Testbed.gateway_status`, :meth:`Testbed.start_gateway`);
* ``/bin/sh`` is dash, as in Debian-based images (busybox ash would run its
  own ``wget`` applet, whose ``-T`` segfaults, instead of the
  ``/usr/local/bin/wget`` wrapper);
* Debian's real ``sshd`` is installed but does not listen: the host-side
  ``openshell`` stand-in (:meth:`Testbed.install_openshell`) is an ssh
  ``ProxyCommand`` that runs ``sshd -i`` per connection through
  ``ctr task exec``. The ``sandbox`` user has an empty password, so
  ``ssh -o BatchMode=yes sandbox@openshell-NAME`` logs in with no key.

Lifecycle notes:

* ``restart(name)`` replaces the pod like a kubelet would after the pod is
  deleted and recreated: new container ID, new snapshot, new pod UID; writes
  made to the old pod are gone.
* ``stop_cluster()`` stops the cluster container: every pod process dies with
  it (``/run`` is a tmpfs, so task state is gone too) while the containerd
  metadata and snapshots survive on the named volume. ``start_cluster()``
  starts it again and calls ``recover()``, which deletes each dead pod
  container (and its snapshot) and starts a fresh one with a new container ID
  for the same pod (same pod UID), as a kubelet does after a node reboot.
* ``down()`` removes the cluster container and its volume; images stay cached.
* If Docker restarts the cluster container behind our back, pods stay dead
  (there is no kubelet) until ``up()`` or ``recover()`` is called.

Gotchas of containerd 1.6 ``ctr`` (Debian bookworm) found while building this:

* ``ctr task exec --user NAME`` or ``--user UID`` (without ``:GID``) looks the
  user up by mounting the container's *active* overlay snapshot a second time,
  which breaks the running pod's rootfs (later copy-ups fail with ENOENT).
  Always pass numeric ``--user UID:GID``; ``exec_in_sandbox`` does that.
* ``ctr task exec`` hangs if its stdin reaches EOF before the exec process is
  created (empty ``docker exec -i`` input, or no ``-i`` with a command that
  reads stdin). Non-empty input such as a tar stream works.
* Arguments after the container ID are passed through verbatim, including
  ones starting with ``-``; a ``--`` there becomes argv[0] of the process.
* ``sshd -i``'s privileged monitor exits without reaping its session child,
  so with ``sleep infinity`` as PID 1 every ssh connection left a zombie:
  hence tini as PID 1.
* ``ssh ... "pkill -f 'openclaw gateway'; ..."`` kills its own remote shell
  (whose command line matches): the session ends with 255. A lone
  ``pkill -f 'openclaw gateway'`` also gets 255 under dash. Use
  ``openclaw gateway stop`` or ``pkill -f '[o]penclaw gateway'`` on its own.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import secrets
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from clawguard.targets._docker import ExecTimeout, exec_in
from clawguard.targets.base import ExecResult

from . import _containers, standins
from . import _images as images
from ._images import (
    CONTAINERD_SOCK,
    DEFAULT_SANDBOX_UID,
    HASH_LABEL,
    ROLE_LABEL,
    ImageBuildError,
)

log = logging.getLogger("testbed")

K8S_NAMESPACE = "k8s.io"
POD_NAMESPACE = "openshell"
CONTAINER_NAME = "agent"
LABEL_POD_NAME = "io.kubernetes.pod.name"
LABEL_POD_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_CONTAINER_NAME = "io.kubernetes.container.name"
LABEL_POD_UID = "io.kubernetes.pod.uid"
LABEL_SANDBOX_UID = "testbed.sandbox-uid"
LABEL_GATEWAY = "testbed.gateway"

_OCI_CACHE: dict[int, images.OCIImage] = {}

TASK_DIR = "/run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io"
SLEEP_FOREVER = ["sleep", "infinity"]  # what sandbox-init finally becomes
GATEWAY_PORT = 18789
GATEWAY_START = "nohup openclaw gateway run > /tmp/gateway.log 2>&1 &"

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_USER_SPEC_RE = re.compile(r"^\d+:\d+$")
_SETUP_HINT = "run scripts/setup-host.sh as root to install and start Docker"


class TestbedError(RuntimeError):
    """Anything that went wrong in the test bed, with a message for humans."""

    __test__ = False  # not a pytest test class


@dataclass(frozen=True)
class PodInfo:
    name: str
    container_id: str
    pod_uid: str
    image: str
    sandbox_uid: int
    labels: dict[str, str]


def rootfs_path(container_id: str) -> str:
    """Where a running pod's rootfs is mounted inside the cluster container."""
    return f"{TASK_DIR}/{container_id}/rootfs"


def new_container_id() -> str:
    return secrets.token_hex(32)


class SandboxHelpers:
    """What both testbeds offer on top of ``exec_in_sandbox``: SSH host keys and the stand-in gateway."""

    def exec_in_sandbox(
        self,
        name: str,
        argv: list[str],
        user: str | int | None = None,
        stdin: bytes | None = None,
        timeout: float | None = 300.0,
    ) -> tuple[int, bytes, bytes]:
        raise NotImplementedError

    def host_public_key(self, name: str) -> str:
        """Sandbox ``name``'s SSH host key, ``"ssh-ed25519 AAAA..."`` (no comment).

        A new pod or container (``restart``, ``recover``, a recreate) has a new key.
        """
        code, out, err = self.exec_in_sandbox(name, ["cat", images.SSH_HOST_PUBKEY])
        fields = out.decode().split()
        if code != 0 or len(fields) < 2:
            raise TestbedError(f"no SSH host key in sandbox {name!r}: {err.decode(errors='replace').strip()}")
        return f"{fields[0]} {fields[1]}"

    def known_hosts_line(self, name: str) -> str:
        """``known_hosts`` line for ``ssh sandbox@openshell-NAME`` via the proxy."""
        return f"openshell-{name} {self.host_public_key(name)}"

    def gateway_status(self, name: str, port: int = GATEWAY_PORT) -> dict[str, Any] | None:
        """The stand-in gateway's JSON status from inside sandbox ``name``; None if down."""
        code, out, _ = self.exec_in_sandbox(
            name, ["timeout", "5", "wget", "-q", "-O", "-", f"http://127.0.0.1:{port}/"], user="sandbox"
        )
        if code != 0:
            return None
        try:
            status = json.loads(out)
        except ValueError:
            return None
        return status if isinstance(status, dict) else None

    def start_gateway(self, name: str, timeout: float = 10.0, port: int = GATEWAY_PORT) -> dict[str, Any]:
        """Start the gateway as ``sandbox`` the way NemoClaw does; wait until healthy.

        Runs ``nohup openclaw gateway run > /tmp/gateway.log 2>&1 &`` (stdin
        from /dev/null) with ``exec_in_sandbox``, not over ssh. Returns the
        gateway's status. If a gateway is already up, the new one exits with
        "gateway already running" (see /tmp/gateway.log) and this returns the
        running one's status.
        """
        start = "nohup openclaw gateway run > /tmp/gateway.log 2>&1 < /dev/null &"
        code, _, err = self.exec_in_sandbox(name, ["sh", "-c", start], "sandbox")
        if code != 0:
            raise TestbedError(f"starting the gateway in {name!r} failed: {err.decode(errors='replace').strip()}")
        deadline = time.monotonic() + timeout
        while True:
            status = self.gateway_status(name, port)
            if status is not None:
                return status
            if time.monotonic() > deadline:
                _, logtext, _ = self.exec_in_sandbox(name, ["tail", "-n", "20", "/tmp/gateway.log"])
                raise TestbedError(
                    f"gateway in {name!r} not healthy after {timeout:.0f}s; /tmp/gateway.log:\n"
                    + logtext.decode(errors="replace")
                )
            time.sleep(0.1)


class Testbed(SandboxHelpers):
    """Fake OpenShell gen-1 cluster: Docker container + real containerd."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        gateway: str = "nemoclaw",
        client: docker.DockerClient | None = None,
    ) -> None:
        if not _NAME_RE.match(gateway):
            raise TestbedError(f"invalid gateway name {gateway!r}")
        self.gateway = gateway
        self._client = client
        self._cluster_key: str | None = None

    # ------------------------------------------------------------------ names

    @property
    def cluster_name(self) -> str:
        return f"openshell-cluster-{self.gateway}"

    @property
    def volume_name(self) -> str:
        return f"{self.cluster_name}-containerd"

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = docker.from_env()
                self._client.ping()
            except docker.errors.DockerException as exc:
                self._client = None
                raise TestbedError(f"cannot reach the Docker daemon ({exc}); {_SETUP_HINT}") from exc
        return self._client

    # ----------------------------------------------------------------- images

    def cluster_image(self) -> str:
        """Tag of the cluster image for the current inputs."""
        if self._cluster_key is None:
            try:
                fs = images.cluster_rootfs()
            except ImageBuildError as exc:
                raise TestbedError(str(exc)) from exc
            self._cluster_key = images.cluster_image_key(fs)
        return f"{images.CLUSTER_REPO}:{self._cluster_key[:16]}"

    def build_images(self, uids: Iterable[int] = ()) -> str:
        """Build the cluster image (skipped when cached) and return its tag.

        Sandbox images are OCI tarballs imported into the cluster's containerd
        on demand (see :meth:`ensure_sandbox_image`); ``uids`` pre-builds them
        in this process and validates the uids.
        """
        tag = self.cluster_image()
        key = self._cluster_key
        assert key is not None
        cached = False
        with contextlib.suppress(docker.errors.ImageNotFound):
            cached = self.client.images.get(tag).labels.get(HASH_LABEL) == key
        if cached:
            log.debug("cluster image %s is cached", tag)
        else:
            t0 = time.monotonic()
            fs = images.cluster_rootfs()
            with tempfile.TemporaryDirectory(prefix="clawguard-testbed-") as tmp:
                tarpath = Path(tmp) / "rootfs.tar"
                images.write_rootfs_tar(fs, tarpath)
                repo, _, ver = tag.partition(":")
                self.client.api.import_image_from_file(
                    str(tarpath),
                    repository=repo,
                    tag=ver,
                    changes=images.cluster_changes(key),
                )
            log.info("built %s in %.1fs", tag, time.monotonic() - t0)
            self._prune_old_cluster_images(tag)
        for uid in uids:
            self._sandbox_oci(uid)
        return tag

    def _prune_old_cluster_images(self, keep: str) -> None:
        for img in self.client.images.list(name=images.CLUSTER_REPO, filters={"label": f"{ROLE_LABEL}=cluster"}):
            if keep in img.tags:
                continue
            with contextlib.suppress(docker.errors.APIError):  # still in use
                self.client.images.remove(str(img.id))

    def _sandbox_oci(self, uid: int) -> images.OCIImage:
        cached = _OCI_CACHE.get(uid)
        if cached is None:
            try:
                cached = images.build_sandbox_image(uid)
            except (ImageBuildError, ValueError) as exc:
                raise TestbedError(str(exc)) from exc
            _OCI_CACHE[uid] = cached
        return cached

    def ensure_sandbox_image(self, uid: int = DEFAULT_SANDBOX_UID) -> str:
        """Import the sandbox image for ``uid`` into containerd unless present."""
        ref = images.sandbox_ref(uid)
        key = images.sandbox_image_key(uid)
        flt = f'name=="{ref}",labels."{HASH_LABEL}"=="{key}"'
        found = self._ctr(["images", "ls", "-q", flt]).stdout.decode().split()
        if ref in found:
            return ref
        oci = self._sandbox_oci(uid)
        t0 = time.monotonic()
        name = f"sandbox-uid-{uid}.oci.tar"
        self._put_file("/tmp", name, oci.tarball)
        self._ctr(["images", "import", f"/tmp/{name}"])
        self._ctr(["images", "label", ref, f"{HASH_LABEL}={key}"])
        self._cluster_exec(["rm", "-f", f"/tmp/{name}"])
        log.info("imported %s in %.1fs", ref, time.monotonic() - t0)
        return ref

    # ---------------------------------------------------------------- cluster

    def _container(self) -> Container | None:
        return _containers.find(self.client, self.cluster_name)

    def _running_container(self) -> Container:
        return _containers.running(self.client, self.cluster_name, TestbedError)

    def up(self, timeout: float = 60.0) -> None:
        """Start (or reuse) the cluster container and wait for containerd."""
        tag = self.build_images()
        c = self._container()
        if c is not None:
            c.reload()
            stale = tag not in (c.image.tags if c.image else [])
            if stale:
                log.info("cluster container uses an old image; recreating it")
                c.remove(force=True)
                c = None
            elif c.status != "running":
                log.info("starting existing cluster container %s", self.cluster_name)
                c.start()
        if c is None:
            self._ensure_volume()
            # kwargs via dict[str, Any]: types-docker lacks "unless-stopped".
            run_kwargs: dict[str, Any] = dict(
                name=self.cluster_name,
                detach=True,
                init=True,
                hostname=self.cluster_name,
                restart_policy={"Name": "unless-stopped"},
                cap_add=["ALL"],
                cap_drop=["SYS_RESOURCE"],
                security_opt=["seccomp=unconfined", "apparmor=unconfined"],
                cgroupns="host",
                tmpfs={"/run": "rw,nosuid,nodev,exec,mode=0755"},
                volumes={
                    "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
                    self.volume_name: {
                        "bind": images.CONTAINERD_ROOT,
                        "mode": "rw",
                    },
                },
                labels={ROLE_LABEL: "cluster", LABEL_GATEWAY: self.gateway},
            )
            c = self.client.containers.run(tag, **run_kwargs)
        self._wait_ready(timeout)
        self.ensure_sandbox_image(DEFAULT_SANDBOX_UID)
        # Pods whose tasks died (container restarted or recreated on the old
        # volume) come back with new container IDs, like after a node reboot.
        self.recover()

    def _ensure_volume(self) -> None:
        try:
            self.client.volumes.get(self.volume_name)
        except docker.errors.NotFound:
            self.client.volumes.create(
                self.volume_name,
                labels={ROLE_LABEL: "containerd-root", LABEL_GATEWAY: self.gateway},
            )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = b""
        while True:
            c = self._container()
            if c is None:
                raise TestbedError(f"cluster container {self.cluster_name} vanished")
            c.reload()
            if c.status in ("exited", "dead"):
                logs = c.logs(tail=30).decode(errors="replace")
                raise TestbedError(
                    f"cluster container {self.cluster_name} exited "
                    f"(code {c.attrs['State'].get('ExitCode')}); last log lines:\n{logs}"
                )
            if c.status == "running":
                res = self._cluster_exec(["ctr", "--address", CONTAINERD_SOCK, "version"])
                if res.code == 0:
                    return
                last = res.stderr
            if time.monotonic() > deadline:
                logs = c.logs(tail=30).decode(errors="replace")
                raise TestbedError(
                    f"containerd in {self.cluster_name} did not answer within "
                    f"{timeout:.0f}s: {last.decode(errors='replace').strip()}\n{logs}"
                )
            time.sleep(0.1)

    def is_up(self) -> bool:
        c = self._container()
        if c is None or c.status != "running":
            return False
        res = self._cluster_exec(["ctr", "--address", CONTAINERD_SOCK, "version"])
        return res.code == 0

    def stop_cluster(self, timeout: int = 10) -> None:
        """Stop the cluster container: all pod processes die with it."""
        c = self._container()
        if c is not None:
            c.stop(timeout=timeout)

    def start_cluster(self, timeout: float = 60.0) -> None:
        """Start a stopped cluster container, then :meth:`recover` its pods."""
        c = self._container()
        if c is None:
            raise TestbedError(f"cluster container {self.cluster_name} does not exist")
        c.reload()
        if c.status != "running":
            c.start()
        self._wait_ready(timeout)
        self.recover()

    def down(self) -> None:
        """Remove the cluster container and its volume (images stay cached)."""
        c = self._container()
        if c is not None:
            c.reload()
            if c.status == "running":
                # Let the shims tear down tasks, mounts and cgroups cleanly.
                self._cluster_exec(["sh", "-c", _KILL_ALL_SCRIPT, "sh", K8S_NAMESPACE])
            c.remove(force=True)
        with contextlib.suppress(docker.errors.NotFound):
            self.client.volumes.get(self.volume_name).remove(force=True)

    # ------------------------------------------------------------ exec layer

    def _cluster_exec(
        self,
        argv: Sequence[str],
        stdin: bytes | None = None,
        timeout: float | None = 300.0,
    ) -> ExecResult:
        """Run ``argv`` in the cluster container (docker exec), demuxing output."""
        try:
            return _docker_exec(self.client, self.cluster_name, list(argv), stdin, timeout)
        except docker.errors.NotFound as exc:
            raise TestbedError(f"cluster container {self.cluster_name} does not exist; run `up` first") from exc
        except docker.errors.APIError as exc:
            raise TestbedError(f"docker exec in {self.cluster_name} failed: {exc.explanation or exc}") from exc

    def cluster_exec(self, argv: list[str], stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
        """Run ``argv`` in the cluster container (``docker exec [-i]``).

        ``ctr`` there defaults to the test bed's socket (``CONTAINERD_ADDRESS``).
        """
        res = self._cluster_exec(argv, stdin)
        return res.code, res.stdout, res.stderr

    def _ctr(
        self,
        args: Sequence[str],
        stdin: bytes | None = None,
        check: bool = True,
        timeout: float | None = 300.0,
    ) -> ExecResult:
        argv = ["ctr", "--address", CONTAINERD_SOCK, "-n", K8S_NAMESPACE, *args]
        res = self._cluster_exec(argv, stdin, timeout)
        if check and res.code != 0:
            raise TestbedError(
                f"`{' '.join(argv)}` failed with exit code {res.code}: {res.stderr.decode(errors='replace').strip()}"
            )
        return res

    def _put_file(self, directory: str, name: str, data: bytes) -> None:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
        if not self._running_container().put_archive(directory, buf.getvalue()):
            raise TestbedError(f"could not copy {name} into {self.cluster_name}")

    # ------------------------------------------------------------------- pods

    def _pods(self, name: str | None = None) -> list[PodInfo]:
        """Pod containers known to containerd (running or not)."""
        script = 'for id in $(ctr -n "$1" containers ls -q "$2"); do ctr -n "$1" containers info "$id" || exit 1; done'
        flt = f'labels."{LABEL_POD_NAMESPACE}"=="{POD_NAMESPACE}"'
        if name is not None:
            flt += f',labels."{LABEL_POD_NAME}"=="{name}"'
        res = self._cluster_exec(["sh", "-c", script, "sh", K8S_NAMESPACE, flt])
        if res.code != 0:
            raise TestbedError(f"listing pods failed: {res.stderr.decode(errors='replace').strip()}")
        pods: list[PodInfo] = []
        decoder = json.JSONDecoder()
        text = res.stdout.decode()
        pos = 0
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos >= len(text):
                break
            obj, pos = decoder.raw_decode(text, pos)
            labels: dict[str, str] = obj.get("Labels") or {}
            pods.append(
                PodInfo(
                    name=labels.get(LABEL_POD_NAME, ""),
                    container_id=obj["ID"],
                    pod_uid=labels.get(LABEL_POD_UID, ""),
                    image=obj.get("Image", ""),
                    sandbox_uid=int(labels.get(LABEL_SANDBOX_UID, DEFAULT_SANDBOX_UID)),
                    labels=labels,
                )
            )
        return pods

    def _task_status(self) -> dict[str, str]:
        out = self._ctr(["tasks", "ls"]).stdout.decode().splitlines()
        status: dict[str, str] = {}
        for line in out[1:]:
            parts = line.split()
            if len(parts) >= 3:
                status[parts[0]] = parts[2]
        return status

    def container_id(self, name: str) -> str | None:
        """Current container ID of sandbox ``name`` (None if there is none)."""
        pods = self._pods(name)
        if len(pods) > 1:
            raise TestbedError(
                f"sandbox {name!r} has {len(pods)} containers: " + ", ".join(p.container_id for p in pods)
            )
        return pods[0].container_id if pods else None

    def rootfs(self, name: str) -> str:
        """Path of pod ``name``'s rootfs mount inside the cluster container."""
        return rootfs_path(self._require_id(name))

    def _require_id(self, name: str) -> str:
        cid = self.container_id(name)
        if cid is None:
            raise TestbedError(f"no sandbox named {name!r} in {self.cluster_name}")
        return cid

    def sandboxes(self) -> dict[str, str]:
        """Sandbox name -> current container ID."""
        return {p.name: p.container_id for p in self._pods()}

    def status(self) -> dict[str, Any]:
        """Cluster and pod state, for humans (CLI ``status``)."""
        c = self._container()
        info: dict[str, Any] = {
            "cluster": self.cluster_name,
            "volume": self.volume_name,
            "container": None,
            "sandboxes": {},
        }
        if c is None:
            return info
        c.reload()
        info["container"] = {
            "status": c.status,
            "image": (c.image.tags or [str(c.image.id)])[0] if c.image else None,
        }
        if c.status == "running" and self.is_up():
            tasks = self._task_status()
            for p in self._pods():
                info["sandboxes"][p.name] = {
                    "container_id": p.container_id,
                    "task": tasks.get(p.container_id, "NO TASK"),
                    "sandbox_uid": p.sandbox_uid,
                    "pod_uid": p.pod_uid,
                    "image": p.image,
                    "rootfs": rootfs_path(p.container_id),
                }
        return info

    def add_sandbox(self, name: str, uid: int = DEFAULT_SANDBOX_UID) -> str:
        """Start pod ``name`` whose ``sandbox`` user has ``uid``; return its ID."""
        if not _NAME_RE.match(name):
            raise TestbedError(f"invalid sandbox name {name!r} (use DNS-1123 labels)")
        if not 1 <= uid <= 65533:
            raise TestbedError(f"sandbox uid must be in 1..65533, got {uid}")
        self._running_container()
        if self._pods(name):
            raise TestbedError(f"sandbox {name!r} already exists; use restart()")
        ref = self.ensure_sandbox_image(uid)
        return self._run_pod(name, ref, uid, str(uuid.uuid4()))

    def _run_pod(self, name: str, image: str, uid: int, pod_uid: str) -> str:
        cid = new_container_id()
        labels = {
            LABEL_POD_NAME: name,
            LABEL_POD_NAMESPACE: POD_NAMESPACE,
            LABEL_CONTAINER_NAME: CONTAINER_NAME,
            LABEL_POD_UID: pod_uid,
            LABEL_SANDBOX_UID: str(uid),
        }
        args = ["run", "-d", "--cgroup", f"kubepods/pod{pod_uid}/{cid}"]
        for k, v in labels.items():
            args += ["--label", f"{k}={v}"]
        args += [image, cid, *images.POD_COMMAND]
        self._ctr(args)
        # One exec: wait for sandbox-init's host key, then read the task state.
        hostkey = rootfs_path(cid) + images.SSH_HOST_PUBKEY
        res = self._cluster_exec(["sh", "-c", _POD_READY_SCRIPT, "sh", K8S_NAMESPACE, cid, hostkey], timeout=60)
        status, _, key_state = res.stdout.decode().partition("\n")
        status = status.strip() or "NO TASK"
        if status != "RUNNING":
            raise TestbedError(f"pod {name} ({cid}) task is {status}, not RUNNING")
        if key_state.strip() != "hostkey":
            raise TestbedError(f"pod {name} ({cid}): sandbox-init made no SSH host key ({images.SSH_HOST_KEY})")
        log.info("sandbox %s running as container %s", name, cid)
        return cid

    def _delete_pod(self, cid: str) -> None:
        # task delete -f kills (SIGKILL) and reaps; containers delete removes
        # the snapshot too (ctr uses WithSnapshotCleanup).
        self._cluster_exec(["sh", "-c", _DELETE_SCRIPT, "sh", K8S_NAMESPACE, cid], timeout=60)
        if cid in self._ctr(["containers", "ls", "-q"]).stdout.decode().split():
            raise TestbedError(f"could not delete container {cid}")

    def remove_sandbox(self, name: str) -> None:
        for p in self._pods(name):
            self._delete_pod(p.container_id)

    def restart(self, name: str) -> str:
        """Replace pod ``name`` (new container ID, snapshot and pod UID)."""
        pods = self._pods(name)
        if not pods:
            raise TestbedError(f"no sandbox named {name!r} in {self.cluster_name}")
        old = pods[0]
        for p in pods:
            self._delete_pod(p.container_id)
        ref = self.ensure_sandbox_image(old.sandbox_uid)
        return self._run_pod(name, ref, old.sandbox_uid, str(uuid.uuid4()))

    def recover(self) -> dict[str, str]:
        """Re-create pods whose task is not running (e.g. after a cluster restart).

        Like a kubelet after a node reboot: same pod (pod UID kept), new
        container ID and a fresh snapshot. Returns name -> new container ID.
        """
        tasks = self._task_status()
        replaced: dict[str, str] = {}
        for p in self._pods():
            if tasks.get(p.container_id) == "RUNNING":
                continue
            self._delete_pod(p.container_id)
            ref = self.ensure_sandbox_image(p.sandbox_uid)
            replaced[p.name] = self._run_pod(p.name, ref, p.sandbox_uid, p.pod_uid or str(uuid.uuid4()))
        return replaced

    # ------------------------------------------------------------------- exec

    def _resolve_user(self, cid: str, user: str | int) -> str:
        """Turn a user name or bare uid into numeric ``uid:gid``.

        ctr 1.6 resolves names (and bare uids) by mounting the container's
        *active* overlay snapshot a second time; that resets the work dir of
        the pod's rootfs mount and breaks every later copy-up (ENOENT). So we
        look the user up inside the pod and always pass ``uid:gid``.
        """
        spec = str(user)
        if _USER_SPEC_RE.match(spec):
            return spec
        res = self._task_exec(cid, ["sh", "-c", _LOOKUP_USER_SCRIPT, "sh", spec], None, None)
        ids = res.stdout.decode().strip()
        if res.code == 0 and _USER_SPEC_RE.match(ids):
            return ids
        if spec.isdigit():
            return f"{spec}:0"  # uid without passwd entry: primary gid 0, like runc
        raise TestbedError(f"unknown user {spec!r} in sandbox container {cid}")

    def _task_exec(
        self,
        cid: str,
        argv: Sequence[str],
        user: str | None,
        stdin: bytes | None,
        timeout: float | None = 300.0,
    ) -> ExecResult:
        args = ["tasks", "exec", "--exec-id", f"testbed-{secrets.token_hex(6)}"]
        if user is not None:
            args += ["--user", user]
        args += [cid, *argv]
        return self._ctr(args, stdin=stdin, check=False, timeout=timeout)

    def exec_in_sandbox(
        self,
        name: str,
        argv: list[str],
        user: str | int | None = None,
        stdin: bytes | None = None,
        timeout: float | None = 300.0,
    ) -> tuple[int, bytes, bytes]:
        """Run ``argv`` in pod ``name`` via ``ctr task exec``.

        Returns (exit code, stdout, stderr). ``user`` is a name, uid or
        ``uid:gid``; default root. ``stdin`` bytes are piped in and closed.
        """
        if not argv:
            raise TestbedError("exec_in_sandbox needs a command")
        if stdin is not None and not stdin:
            # ctr 1.6 `task exec` only forwards stdin EOF once the exec is
            # created; an immediately-empty stdin loses the EOF and hangs.
            raise TestbedError("empty stdin hangs `ctr task exec`; pass stdin=None instead")
        cid = self._require_id(name)
        spec = None if user is None else self._resolve_user(cid, user)
        res = self._task_exec(cid, argv, spec, stdin, timeout)
        return res.code, res.stdout, res.stderr

    # ------------------------------------------------------- ssh and gateway

    @staticmethod
    def install_openshell(bin_dir: Path) -> Path:
        """Install the ``openshell`` CLI stand-in as ``bin_dir/openshell`` (0755).

        It is a standalone stdlib-only Python script; ``openshell ssh-proxy
        --gateway-name G --name N`` is an ssh ``ProxyCommand`` into pod N's
        sshd (see :mod:`testbed.standins.openshell`).
        """
        bin_dir = Path(bin_dir)
        bin_dir.mkdir(parents=True, exist_ok=True)
        dest = bin_dir / "openshell"
        # On a real host DIR/openshell may be the real OpenShell CLI: never replace a
        # file this stand-in did not write.
        if (dest.exists() or dest.is_symlink()) and not standins.is_openshell_standin(dest):
            raise TestbedError(
                f"{dest} exists and is not the testbed's openshell stand-in; refusing to replace it "
                "(choose another directory)"
            )
        tmp = bin_dir / f".openshell.{os.getpid()}.tmp"
        try:
            tmp.write_bytes(standins.read(standins.OPENSHELL))
            tmp.chmod(0o755)
            tmp.replace(dest)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise TestbedError(f"cannot install openshell into {bin_dir}: {exc}") from exc
        return dest


# Wait (up to 5 s) for the pod's SSH host key, then print the task status and
# "hostkey" if the key is there.
_POD_READY_SCRIPT = """\
ns=$1 id=$2 key=$3
i=0
while [ ! -s "$key" ] && [ "$i" -lt 200 ]; do
  i=$((i + 1))
  sleep 0.025
done
ctr -n "$ns" tasks ls | awk -v id="$id" '$1 == id { s = $3 } END { print s }'
[ -s "$key" ] && echo hostkey
"""

_DELETE_SCRIPT = """\
ns=$1 id=$2
ctr -n "$ns" tasks delete -f "$id" >/dev/null 2>&1 || true
ctr -n "$ns" containers delete "$id"
"""

# Print "uid:gid" for a user name (first) or a numeric uid from /etc/passwd.
_LOOKUP_USER_SCRIPT = """\
awk -F: -v u="$1" '$1 == u { print $3 ":" $4; f = 1; exit } END { exit !f }' /etc/passwd ||
awk -F: -v u="$1" '$3 == u { print $3 ":" $4; f = 1; exit } END { exit !f }' /etc/passwd
"""

_KILL_ALL_SCRIPT = """\
ns=$1
for id in $(ctr -n "$ns" tasks ls -q); do
  ctr -n "$ns" tasks delete -f "$id" >/dev/null 2>&1 || true
done
"""


def _docker_exec(
    client: docker.DockerClient,
    container_id: str,
    argv: list[str],
    stdin: bytes | None,
    timeout: float | None,
) -> ExecResult:
    try:
        return exec_in(client.api, container_id, argv, stdin, timeout)
    except ExecTimeout as exc:
        raise TestbedError(f"`{' '.join(argv)}`: {exc}") from exc
