"""A local stand-in for an OpenShell "generation 1" gateway cluster.

The real thing is a Docker container ``openshell-cluster-<gateway>`` running
k3s; every sandbox is a pod whose containers are containerd containers in the
``k8s.io`` namespace. Here the cluster container runs a real containerd (no
kubelet, no CRI) with the same state directory (``/run/k3s/containerd``), and
each sandbox "pod" is one real containerd container with a random 64-hex ID,
Kubernetes-style labels and a real overlay rootfs mounted at
``/run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io/<id>/rootfs``.

Two kinds of pod (``add_sandbox(name, uid, agent=...)``):

* ``agent="standin"`` (the default): the busybox stand-in image of
  :mod:`testbed._images`; ``/usr/local/bin/openclaw`` is a stand-in OpenClaw
  gateway (POSIX sh + busybox): ``nohup openclaw gateway run >
  /tmp/gateway.log 2>&1 &`` as ``sandbox``; it answers
  ``http://127.0.0.1:18789/`` with a JSON status (:meth:`Testbed.gateway_status`,
  :meth:`Testbed.start_gateway`). ``/bin/sh`` is dash, as in Debian-based
  images (busybox ash would run its own ``wget`` applet, whose ``-T``
  segfaults, instead of the ``/usr/local/bin/wget`` wrapper);
* ``agent="<OpenClaw version>"``: the real OpenClaw from npm in a Debian
  image with NemoClaw's layout of that era (:mod:`testbed._agent_image`,
  :mod:`testbed._agents`); its ``/health`` answers ``{"ok":true,"status":"live"}``
  8-30 s after ``openclaw gateway run``; :meth:`Testbed.agent_cli` runs its CLI.

In both:

* the main command is ``tini -- sandbox-init``: sandbox-init generates the
  pod's SSH host key and starts Debian's real ``sshd`` listening on
  127.0.0.1:2222 inside the pod's network namespace, then deletes the key
  file, as OpenShell's supervisor keeps its key in memory (with
  ``host_key_file=True`` it keeps ``/etc/ssh/ssh_host_ed25519_key`` instead);
  every new pod presents a new key. Then it becomes ``sleep infinity``: the
  OpenClaw gateway is *not* started (NemoClaw #2042). PID 1 is tini so that
  orphans (sshd's session processes, gateways started over ssh) are reaped,
  as OpenShell's in-pod supervisor does;
* the host-side ``openshell`` stand-in (:meth:`Testbed.install_openshell`) is
  an ssh ``ProxyCommand`` that runs ``/opt/openshell/bin/ssh-relay`` (socat
  or busybox nc to that sshd) through ``ctr task exec``. The ``sandbox`` user
  has an empty password, so ``ssh -o BatchMode=yes sandbox@openshell-NAME``
  logs in with no key (OpenShell's SSH accepts auth "none").

Lifecycle notes:

* ``restart(name)`` replaces the pod like a kubelet would after the pod is
  deleted and recreated: new container ID, new snapshot, new pod UID; writes
  made to the old pod are gone.
* ``stop_cluster()`` stops the cluster container: every pod process dies with
  it (``/run`` is a tmpfs, so task state is gone too) while the containerd
  metadata and snapshots survive on the named volume. ``start_cluster()``
  starts it again and calls ``recover()``, which deletes each dead pod
  container (and its snapshot) and starts a fresh one with a new container ID
  for the same pod (same pod UID), as a kubelet does after a node reboot: all
  pods at once, each on its own thread.
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
  hence tini as PID 1 (sshd now listens, but tini still reaps the gateways
  and sessions that outlive their parents).
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
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import docker
import docker.errors
from docker.models.containers import Container

from clawguard.targets._docker import ExecTimeout, exec_in
from clawguard.targets.base import ExecResult

from . import _agent_image, _agents, _containers, standins
from . import _images as images
from ._images import (
    CONTAINERD_SOCK,
    DEFAULT_SANDBOX_UID,
    HASH_LABEL,
    ROLE_LABEL,
    ImageBuildError,
)
from ._spec import SandboxSpec

log = logging.getLogger("testbed")

K8S_NAMESPACE = "k8s.io"
POD_NAMESPACE = "openshell"
CONTAINER_NAME = "agent"
LABEL_POD_NAME = "io.kubernetes.pod.name"
LABEL_POD_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_CONTAINER_NAME = "io.kubernetes.container.name"
LABEL_POD_UID = "io.kubernetes.pod.uid"
LABEL_GATEWAY = "testbed.gateway"

_OCI_CACHE: dict[int, images.OCIImage] = {}

TASK_DIR = "/run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io"
SLEEP_FOREVER = ["sleep", "infinity"]  # what sandbox-init finally becomes
GATEWAY_PORT = 18789
#: Where a real-agent sandbox's Telegram stand-in listens and logs (``channels.telegram.apiRoot``).
TELEGRAM_PORT = 18081
TELEGRAM_LOG = "/tmp/telegram-standin.log"
GATEWAY_START = "nohup openclaw gateway run > /tmp/gateway.log 2>&1 &"
#: How long start_gateway waits by default: the stand-in is up at once, the real
#: OpenClaw in 8-30 s (slower on a busy 2-core machine).
STANDIN_GATEWAY_TIMEOUT = 10.0
AGENT_GATEWAY_TIMEOUT = 90.0
AGENT_CLI_TIMEOUT = 180.0
SANDBOX_HOME = "/sandbox"
#: Pods ``recover()`` re-creates at once (each holds one connection to the engine while it
#: waits: the client's pool is sized for it).
RECOVER_PARALLEL = 32

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_USER_SPEC_RE = re.compile(r"^\d+:\d+$")
_SETUP_HINT = "run scripts/setup-host.sh as root to install and start Docker"


class _PodImage(NamedTuple):
    image: str
    command: tuple[str, ...]
    mounts: tuple[str, ...]


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
    spec: SandboxSpec


def rootfs_path(container_id: str) -> str:
    """Where a running pod's rootfs is mounted inside the cluster container."""
    return f"{TASK_DIR}/{container_id}/rootfs"


def new_container_id() -> str:
    return secrets.token_hex(32)


class SandboxHelpers:
    """What both testbeds offer on top of ``exec_in_sandbox``: SSH host keys, the gateway, the OpenClaw CLI."""

    def exec_in_sandbox(
        self,
        name: str,
        argv: list[str],
        user: str | int | None = None,
        stdin: bytes | None = None,
        timeout: float | None = 300.0,
    ) -> tuple[int, bytes, bytes]:
        raise NotImplementedError

    def sandbox_spec(self, name: str) -> SandboxSpec:
        """What sandbox ``name`` is made of (uid, agent, layout, host-key file)."""
        raise NotImplementedError

    def host_public_key(self, name: str) -> str:
        """Sandbox ``name``'s SSH host key, ``"ssh-ed25519 AAAA..."`` (no comment).

        Only for a sandbox made with ``host_key_file=True``: otherwise, as in
        OpenShell, the key exists only in sshd's memory and this raises
        :class:`TestbedError`. A new pod or container (``restart``, ``recover``,
        a recreate) has a new key.
        """
        if not self.sandbox_spec(name).host_key_file:
            raise TestbedError(
                f"sandbox {name!r} keeps its SSH host key only in memory, like OpenShell's "
                "(no /etc/ssh/ssh_host_ed25519_key.pub); add it with host_key_file=True to pin its key"
            )
        code, out, err = self.exec_in_sandbox(name, ["cat", images.SSH_HOST_PUBKEY])
        fields = out.decode().split()
        if code != 0 or len(fields) < 2:
            raise TestbedError(f"no SSH host key in sandbox {name!r}: {err.decode(errors='replace').strip()}")
        return f"{fields[0]} {fields[1]}"

    def known_hosts_line(self, name: str) -> str:
        """``known_hosts`` line for ``ssh sandbox@openshell-NAME`` via the proxy (``host_key_file`` sandboxes)."""
        return f"openshell-{name} {self.host_public_key(name)}"

    def gateway_status(self, name: str, port: int = GATEWAY_PORT) -> dict[str, Any] | None:
        """The gateway's status from inside sandbox ``name``; None if nothing answers.

        Stand-in: its JSON status from ``http://127.0.0.1:PORT/``. Real OpenClaw:
        ``GET http://127.0.0.1:PORT/health`` with curl, as NemoClaw's health check
        does; a 200 JSON object is returned as is (``{"ok": true, "status":
        "live"}``); any other HTTP answer as ``{"ok": False, "http_status": CODE,
        "body": TEXT}`` (a gateway that answers is up, even when unhealthy).
        """
        if self.sandbox_spec(name).standin:
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
        argv = ["curl", "-sS", "-m", "5", "-w", "\n%{http_code}", f"http://127.0.0.1:{port}/health"]
        code, out, _ = self.exec_in_sandbox(name, argv, user="sandbox", timeout=30)
        body, _, http_code = out.decode(errors="replace").rpartition("\n")
        if code != 0 or not http_code.isdigit() or http_code == "000":
            return None
        if http_code == "200":
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                return parsed
        return {"ok": False, "http_status": int(http_code), "body": body[:500]}

    def start_gateway(self, name: str, timeout: float | None = None, port: int = GATEWAY_PORT) -> dict[str, Any]:
        """Start the gateway as ``sandbox`` the way NemoClaw does; wait until it answers.

        Runs ``nohup openclaw gateway run > /tmp/gateway.log 2>&1 &`` (stdin
        from /dev/null; for a real agent with ``HOME=/sandbox``, in ``/sandbox``)
        with ``exec_in_sandbox``, not over ssh. Returns :meth:`gateway_status`.
        ``timeout`` defaults to 10 s for the stand-in and 90 s for the real
        OpenClaw. If a gateway is already up, the new one fails (stand-in:
        "gateway already running"; real: its port is taken; see
        /tmp/gateway.log) and this returns the running one's status.
        """
        spec = self.sandbox_spec(name)
        if timeout is None:
            timeout = STANDIN_GATEWAY_TIMEOUT if spec.standin else AGENT_GATEWAY_TIMEOUT
        start = "nohup openclaw gateway run > /tmp/gateway.log 2>&1 < /dev/null &"
        if not spec.standin:
            start = f"cd {SANDBOX_HOME} && HOME={SANDBOX_HOME} {start}"
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
            time.sleep(0.1 if spec.standin else 0.5)

    def agent_cli(
        self,
        name: str,
        args: Sequence[str],
        *,
        user: str | int = "sandbox",
        stdin: bytes | None = None,
        timeout: float | None = AGENT_CLI_TIMEOUT,
    ) -> tuple[int, str, str]:
        """Run ``openclaw ARGS`` inside sandbox ``name`` as ``user`` with ``HOME=/sandbox``, in ``/sandbox``.

        Returns (exit code, stdout, stderr) as text. The real OpenClaw CLI for a
        real-agent sandbox (``openclaw config validate``, ``openclaw skills list
        --json``...), the stand-in's for a stand-in one.
        """
        argv = ["env", f"HOME={SANDBOX_HOME}", "sh", "-c", 'cd "$HOME" && exec openclaw "$@"', "openclaw", *args]
        code, out, err = self.exec_in_sandbox(name, argv, user=user, stdin=stdin, timeout=timeout)
        return code, out.decode(errors="replace"), err.decode(errors="replace")

    def start_telegram(self, name: str, deliver: Sequence[int] = (), port: int = TELEGRAM_PORT) -> None:
        """Start the Telegram Bot API stand-in inside real-agent sandbox ``name`` (as the
        sandbox user, with the agent's Node.js), delivering each update id once; every
        call it gets is logged to :data:`TELEGRAM_LOG` (see :meth:`telegram_calls`)."""
        script = 'exec </dev/null; nohup node "$@" >/dev/null 2>&1 &'
        argv = ["sh", "-c", script, "sh", _agent_image.TELEGRAM, str(port), TELEGRAM_LOG, *map(str, deliver)]
        code, _, err = self.exec_in_sandbox(name, argv, user="sandbox")
        if code != 0:
            raise TestbedError(f"starting the Telegram stand-in in {name!r} failed: {err.decode(errors='replace')}")

    def telegram_calls(self, name: str, method: str = "getUpdates") -> list[dict[str, Any]]:
        """The calls the Telegram stand-in in ``name`` got, oldest first (``method``'s only)."""
        code, out, _ = self.exec_in_sandbox(name, ["cat", TELEGRAM_LOG])
        if code != 0:
            return []
        calls = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
        return [call for call in calls if call.get("method") == method]


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
                self._client = docker.from_env(max_pool_size=RECOVER_PARALLEL + 4)
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

    def ensure_agent_image(self, uid: int = DEFAULT_SANDBOX_UID, layout: str = "flat") -> str:
        """Import the real-agent image for ``uid`` and ``layout`` into containerd unless present.

        The base image (Debian, :mod:`testbed._agent_image`) is imported in place
        from the cache bind-mounted into the cluster container; the image itself
        is a small top layer on it.
        """
        try:
            image = _agent_image.agent_image(uid, layout, say=log.info)
        except (ImageBuildError, ValueError) as exc:
            raise TestbedError(str(exc)) from exc
        base = image.base
        if base.ref not in self._ctr(["images", "ls", "-q", f'name=="{base.ref}"']).stdout.decode().split():
            t0 = time.monotonic()
            self._ctr(["images", "import", str(base.archive)], timeout=600)
            log.info("imported %s in %.1fs", base.ref, time.monotonic() - t0)
        flt = f'name=="{image.ref}",labels."{HASH_LABEL}"=="{image.key}"'
        if image.ref in self._ctr(["images", "ls", "-q", flt]).stdout.decode().split():
            return image.ref
        t0 = time.monotonic()
        name = f"agent-{layout}-uid-{uid}.oci.tar"
        self._put_file("/tmp", name, image.archive_bytes())
        self._ctr(["images", "import", f"/tmp/{name}"])
        self._ctr(["images", "label", image.ref, f"{HASH_LABEL}={image.key}"])
        self._cluster_exec(["rm", "-f", f"/tmp/{name}"])
        log.info("imported %s in %.1fs", image.ref, time.monotonic() - t0)
        return image.ref

    def _agent_install(self, agent: str) -> _agents.AgentInstall:
        try:
            return _agents.build_agent(agent, say=log.info)
        except (_agents.AgentBuildError, ValueError) as exc:
            raise TestbedError(f"cannot install OpenClaw {agent}: {exc}") from exc

    def build_agents(self, versions: Iterable[str]) -> list[_agents.AgentInstall]:
        """Install (or find cached) the real OpenClaw ``versions`` and the Debian base image, two at a time."""
        try:
            _agent_image.ensure_base(say=log.info)
            return _agents.build_agents(versions, say=log.info)
        except (_agents.AgentBuildError, ImageBuildError, ValueError) as exc:
            raise TestbedError(str(exc)) from exc

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
            mounts = {m.get("Destination") for m in c.attrs.get("Mounts") or []}
            if stale or str(_agents.AGENT_CACHE) not in mounts:
                log.info("cluster container uses an old image or lacks the agent cache mount; recreating it")
                c.remove(force=True)
                c = None
            elif c.status != "running":
                log.info("starting existing cluster container %s", self.cluster_name)
                c.start()
        if c is None:
            self._ensure_volume()
            _agents.AGENT_CACHE.mkdir(parents=True, exist_ok=True)
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
                    # Real-agent installs and the agent base image, for `ctr run --mount` and import.
                    str(_agents.AGENT_CACHE): {"bind": str(_agents.AGENT_CACHE), "mode": "ro"},
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
            if not isinstance(obj, dict) or "ID" not in obj:
                continue  # not a container's info (seen once while 20 pods were being re-created)
            labels: dict[str, str] = obj.get("Labels") or {}
            spec = SandboxSpec.from_labels(labels)
            pods.append(
                PodInfo(
                    name=labels.get(LABEL_POD_NAME, ""),
                    container_id=obj["ID"],
                    pod_uid=labels.get(LABEL_POD_UID, ""),
                    image=obj.get("Image", ""),
                    sandbox_uid=spec.uid,
                    labels=labels,
                    spec=spec,
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

    def sandbox_spec(self, name: str) -> SandboxSpec:
        """What pod ``name`` is made of (from its labels)."""
        pods = self._pods(name)
        if not pods:
            raise TestbedError(f"no sandbox named {name!r} in {self.cluster_name}")
        return pods[0].spec

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
                    "agent": p.spec.agent,
                    "layout": p.spec.layout,
                    "host_key_file": p.spec.host_key_file,
                    "pod_uid": p.pod_uid,
                    "image": p.image,
                    "rootfs": rootfs_path(p.container_id),
                }
        return info

    def add_sandbox(
        self,
        name: str,
        uid: int = DEFAULT_SANDBOX_UID,
        *,
        agent: str = _agents.STANDIN,
        layout: str | None = None,
        host_key_file: bool | None = None,
    ) -> str:
        """Start pod ``name`` whose ``sandbox`` user has ``uid``; return its container ID.

        ``agent`` is ``"standin"`` (the busybox stand-in image) or an OpenClaw
        version (``testbed.AGENT_VERSIONS``; any other from npm): a Debian image
        with that version's install bind-mounted read-only at ``/usr/local``
        (installed on first use, about a minute, then cached). ``layout`` is
        NemoClaw's ``"split"`` or ``"flat"`` ``~/.openclaw`` (default: the
        agent's era). ``host_key_file`` keeps the SSH host key as a file (default:
        :data:`testbed._images.STANDIN_HOST_KEY_FILE` for the stand-in, False for a
        real agent).
        """
        if not _NAME_RE.match(name):
            raise TestbedError(f"invalid sandbox name {name!r} (use DNS-1123 labels)")
        try:
            spec = SandboxSpec.make(uid, agent, layout, host_key_file)
        except ValueError as exc:
            raise TestbedError(str(exc)) from exc
        self._running_container()
        if self._pods(name):
            raise TestbedError(f"sandbox {name!r} already exists; use restart()")
        return self._run_pod(name, spec, str(uuid.uuid4()))

    def ensure_sandbox(self, name: str, uid: int = DEFAULT_SANDBOX_UID, *, agent: str = _agents.STANDIN) -> str:
        """Pod ``name`` made of exactly ``uid`` and ``agent``: kept if it is, else (re)made.

        For callers that need a known sandbox on a cluster that something else
        may have used (``scripts/demo.sh`` makes ``my-assistant`` a real agent).
        Returns its container ID.
        """
        try:
            wanted = SandboxSpec.make(uid, agent)
        except ValueError as exc:
            raise TestbedError(str(exc)) from exc
        current = self.container_id(name)
        if current is not None and self.sandbox_spec(name) == wanted:
            return current
        if current is not None:
            log.info("sandbox %s is not %s with uid %d; re-making it", name, agent, uid)
            self.remove_sandbox(name)
        return self.add_sandbox(name, uid, agent=agent)

    def _pod_image(self, spec: SandboxSpec) -> _PodImage:
        """The image (imported into containerd unless present), command and mounts of a pod made of ``spec``."""
        if spec.standin:
            image = self.ensure_sandbox_image(spec.uid)
            command = images.pod_command(images.SANDBOX_INIT, spec.host_key_file)
            return _PodImage(image, tuple(command), ())
        install = self._agent_install(spec.agent)
        image = self.ensure_agent_image(spec.uid, spec.layout)
        command = images.pod_command(_agent_image.AGENT_INIT, spec.host_key_file, tini=_agent_image.AGENT_TINI)
        mount = f"type=bind,src={install.usr_local},dst={_agent_image.AGENT_MOUNT},options=rbind:ro"
        return _PodImage(image, tuple(command), (mount,))

    def _run_pod(self, name: str, spec: SandboxSpec, pod_uid: str, prepared: _PodImage | None = None) -> str:
        image, command, mounts = prepared or self._pod_image(spec)
        cid = new_container_id()
        labels = {
            LABEL_POD_NAME: name,
            LABEL_POD_NAMESPACE: POD_NAMESPACE,
            LABEL_CONTAINER_NAME: CONTAINER_NAME,
            LABEL_POD_UID: pod_uid,
            **spec.labels(),
        }
        args = ["run", "-d", "--cgroup", f"kubepods/pod{pod_uid}/{cid}"]
        for k, v in labels.items():
            args += ["--label", f"{k}={v}"]
        for mount in mounts:
            args += ["--mount", mount]
        args += [image, cid, *command]
        self._ctr(args)
        # One exec: wait for sandbox-init's listening sshd (and key file), then read the task state.
        ready = rootfs_path(cid) + images.SSH_READY
        hostkey = rootfs_path(cid) + images.SSH_HOST_PUBKEY if spec.host_key_file else ""
        res = self._cluster_exec(["sh", "-c", _POD_READY_SCRIPT, "sh", K8S_NAMESPACE, cid, ready, hostkey], timeout=60)
        status, _, state = res.stdout.decode().partition("\n")
        status = status.strip() or "NO TASK"
        if status != "RUNNING":
            raise TestbedError(f"pod {name} ({cid}) task is {status}, not RUNNING")
        if state.strip() != "ready":
            log_tail = self._task_exec(cid, ["tail", "-n", "5", "/var/log/openshell-sshd.log"], None, None, 30)
            wanted = images.SSH_READY + (f" and {images.SSH_HOST_PUBKEY}" if spec.host_key_file else "")
            raise TestbedError(
                f"pod {name} ({cid}): sandbox-init made no {wanted} (its sshd is not listening?); sshd log: "
                + log_tail.stdout.decode(errors="replace").strip()
            )
        log.info("sandbox %s (%s) running as container %s", name, spec.agent, cid)
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

    def restart(
        self,
        name: str,
        *,
        uid: int | None = None,
        agent: str | None = None,
        layout: str | None = None,
        host_key_file: bool | None = None,
    ) -> str:
        """Replace pod ``name`` (new container ID, snapshot and pod UID).

        It keeps its uid, agent, layout and host-key file unless given: a new
        ``uid`` is a rebuilt image whose ``useradd -r`` gave another uid; a new
        ``agent`` without ``layout`` gets that agent's era layout.
        """
        pods = self._pods(name)
        if not pods:
            raise TestbedError(f"no sandbox named {name!r} in {self.cluster_name}")
        try:
            spec = pods[0].spec.changed(uid=uid, agent=agent, layout=layout, host_key_file=host_key_file)
        except ValueError as exc:
            raise TestbedError(str(exc)) from exc
        for p in pods:
            self._delete_pod(p.container_id)
        return self._run_pod(name, spec, str(uuid.uuid4()))

    def recover(self) -> dict[str, str]:
        """Re-create pods whose task is not running (e.g. after a cluster restart).

        Like a kubelet after a node reboot: same pod (pod UID kept, and its uid,
        agent, layout), new container ID and a fresh snapshot. Returns name -> new
        container ID. The pods are re-created concurrently (at most
        :data:`RECOVER_PARALLEL` at a time), each one deleted, run and waited for
        (its sshd listening) on its own, as a kubelet's pod workers do; it returns
        when every one is ready, and raises :class:`TestbedError` naming every pod
        that failed.
        """
        tasks = self._task_status()
        dead = [p for p in self._pods() if tasks.get(p.container_id) != "RUNNING"]
        if not dead:
            return {}
        # Images first, one at a time (an import must not race another of the same image);
        # then every pod on its own, all at once, as a kubelet's pod workers do.
        prepared: dict[SandboxSpec, _PodImage] = {}
        for p in dead:
            if p.spec not in prepared:
                prepared[p.spec] = self._pod_image(p.spec)

        def recreate(p: PodInfo) -> str:
            self._delete_pod(p.container_id)
            return self._run_pod(p.name, p.spec, p.pod_uid or str(uuid.uuid4()), prepared[p.spec])

        with ThreadPoolExecutor(max_workers=min(len(dead), RECOVER_PARALLEL), thread_name_prefix="recover") as pool:
            futures = [(p.name, pool.submit(recreate, p)) for p in dead]
            wait([f for _, f in futures])
        failed = [f"{name}: {f.exception()}" for name, f in futures if f.exception() is not None]
        if failed:
            raise TestbedError(f"re-creating {len(failed)} of {len(dead)} pods failed: " + "; ".join(failed))
        return {name: f.result() for name, f in futures}

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


# Wait (up to 10 s) for sandbox-init's ready file (sshd listens) and, if given, the
# host key file; then print the task status and "ready".
_POD_READY_SCRIPT = """\
ns=$1 id=$2 ready=$3 key=$4
i=0
while { [ ! -s "$ready" ] || { [ -n "$key" ] && [ ! -s "$key" ]; }; } && [ "$i" -lt 400 ]; do
  i=$((i + 1))
  sleep 0.025
done
ctr -n "$ns" tasks ls | awk -v id="$id" '$1 == id { s = $3 } END { print s }'
[ -s "$ready" ] && { [ -z "$key" ] || [ -s "$key" ]; } && echo ready
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
