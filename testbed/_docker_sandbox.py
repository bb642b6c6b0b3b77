"""Generation 2 OpenShell sandboxes for the test bed: plain Docker containers.

From NemoClaw v0.0.44 (NemoClaw #3721) OpenShell's Docker driver runs each
sandbox as an ordinary Docker container. :class:`DockerSandboxes` makes such
containers from the *same* root filesystem as the k3s pods
(:func:`testbed._images.sandbox_rootfs`), imported into Docker with
``docker import``, and names and labels them the way the driver does (OpenShell
``crates/openshell-driver-docker``):

* name ``openshell-<sandbox name>-<sandbox id>``, with a new sandbox id for
  every creation: a recreated sandbox has a new container *name* as well as a
  new container ID;
* labels ``openshell.ai/managed-by=openshell``, ``openshell.ai/sandbox-id``,
  ``openshell.ai/sandbox-name`` and ``openshell.ai/sandbox-namespace``;
* restart policy ``no``; no network but loopback (``network_mode: none``), where
  the gateway listens; ``/run`` a tmpfs, as in the pods.

Inside, everything is as in a pod: PID 1 is tini running sandbox-init, which
makes the container's own SSH host key, starts sshd listening on 127.0.0.1 and
becomes ``sleep infinity``; the gateway is not started. ``add(...,
agent="2026.9.6")`` makes a real-agent sandbox instead: the Debian image of
:mod:`testbed._agent_image` with the OpenClaw install bind-mounted read-only
at ``/usr/local``.

``recreate(name)`` removes the container and creates a new one, as NemoClaw does
when it recreates a sandbox: new sandbox id, new name, new container ID, a fresh
writable layer (everything written by hand is gone) and a new host key. A
sandbox added with ``container_name=`` keeps that fixed name instead (a
container the user runs himself: ``target: {kind: docker, container: NAME}``).

SSH: the ``openshell`` stand-in's ``ssh-proxy --gateway-name G --name N`` finds
the container by its labels and runs ``/opt/openshell/bin/ssh-relay`` in it with
``docker exec -i``, which connects to the sandbox's listening sshd.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from clawguard.targets._docker import ExecTimeout, exec_in
from clawguard.targets.base import ExecResult

from . import _agent_image, _agents
from . import _images as images
from ._images import DEFAULT_SANDBOX_UID, HASH_LABEL, ROLE_LABEL, SANDBOX_REPO, ImageBuildError
from ._spec import SandboxSpec
from ._testbed import LABEL_GATEWAY, POD_NAMESPACE, SandboxHelpers, TestbedError

log = logging.getLogger("testbed")

MANAGED_BY_LABEL = "openshell.ai/managed-by"
MANAGED_BY_VALUE = "openshell"
SANDBOX_ID_LABEL = "openshell.ai/sandbox-id"
SANDBOX_NAME_LABEL = "openshell.ai/sandbox-name"
SANDBOX_NAMESPACE_LABEL = "openshell.ai/sandbox-namespace"
#: Set on a sandbox whose container keeps one name across recreations.
FIXED_NAME_LABEL = "testbed.container-name"
ROLE = "docker-sandbox"

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_CONTAINER_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")

# Wait (up to 10 s) for sandbox-init's ready file (sshd listens) and, if given, the
# host key file; print "ready" once they are there.
_READY_SCRIPT = """\
ready=$1 key=$2
i=0
while { [ ! -s "$ready" ] || { [ -n "$key" ] && [ ! -s "$key" ]; }; } && [ "$i" -lt 400 ]; do
  i=$((i + 1))
  sleep 0.025
done
[ -s "$ready" ] && { [ -z "$key" ] || [ -s "$key" ]; } && echo ready
"""


def image_tag(uid: int) -> str:
    return f"{SANDBOX_REPO}:uid-{uid}"


class DockerSandboxes(SandboxHelpers):
    """OpenShell generation 2 sandboxes of one gateway: plain Docker containers."""

    __test__ = False  # not a pytest test class

    def __init__(self, client: docker.DockerClient | None = None, gateway: str = "nemoclaw") -> None:
        if not _NAME_RE.match(gateway):
            raise TestbedError(f"invalid gateway name {gateway!r}")
        self.gateway = gateway
        self._client = client

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                self._client = docker.from_env()
                self._client.ping()
            except docker.errors.DockerException as exc:
                self._client = None
                raise TestbedError(f"cannot reach the Docker daemon ({exc})") from exc
        return self._client

    # ------------------------------------------------------------------ image

    def ensure_image(self, uid: int = DEFAULT_SANDBOX_UID) -> str:
        """``docker import`` the sandbox root filesystem for ``uid`` unless it is cached."""
        tag = image_tag(uid)
        try:
            key = images.sandbox_image_key(uid)
        except (ImageBuildError, ValueError) as exc:
            raise TestbedError(str(exc)) from exc
        old: str | None = None
        with contextlib.suppress(docker.errors.ImageNotFound):
            image = self.client.images.get(tag)
            if image.labels.get(HASH_LABEL) == key:
                return tag
            old = str(image.id)
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="clawguard-testbed-") as tmp:
            tarpath = Path(tmp) / "rootfs.tar"
            images.write_rootfs_tar(images.sandbox_rootfs(uid), tarpath)
            repository, _, version = tag.partition(":")
            self.client.api.import_image_from_file(
                str(tarpath), repository=repository, tag=version, changes=images.sandbox_changes(key)
            )
        log.info("built %s in %.1fs", tag, time.monotonic() - started)
        if old is not None:
            with contextlib.suppress(docker.errors.APIError):  # still used by a container
                self.client.images.remove(old)
        return tag

    def ensure_agent_image(self, uid: int = DEFAULT_SANDBOX_UID, layout: str = "flat") -> str:
        """``docker load`` the real-agent image for ``uid`` and ``layout`` unless it is cached.

        The Debian base image is loaded once from its cached archive; the image
        itself is a small top layer on it (see :mod:`testbed._agent_image`).
        """
        try:
            image = _agent_image.agent_image(uid, layout, say=log.info)
        except (ImageBuildError, ValueError) as exc:
            raise TestbedError(str(exc)) from exc
        try:
            self.client.images.get(image.base.ref)
        except docker.errors.ImageNotFound:
            started = time.monotonic()
            with image.base.archive.open("rb") as fh:
                self.client.images.load(fh)
            log.info("loaded %s in %.1fs", image.base.ref, time.monotonic() - started)
        old: str | None = None
        with contextlib.suppress(docker.errors.ImageNotFound):
            found = self.client.images.get(image.ref)
            if found.labels.get(HASH_LABEL) == image.key:
                return image.ref
            old = str(found.id)
        self.client.images.load(image.archive_bytes())
        if old is not None:
            with contextlib.suppress(docker.errors.APIError):  # still used by a container
                self.client.images.remove(old)
        return image.ref

    # -------------------------------------------------------------- sandboxes

    def _filters(self, name: str | None = None) -> dict[str, Any]:
        labels = [f"{ROLE_LABEL}={ROLE}", f"{LABEL_GATEWAY}={self.gateway}"]
        if name is not None:
            labels.append(f"{SANDBOX_NAME_LABEL}={name}")
        return {"label": labels}

    def containers(self, name: str | None = None) -> list[Container]:
        """This gateway's sandbox containers (running or not), or sandbox ``name``'s."""
        found: list[Container] = self.client.containers.list(all=True, filters=self._filters(name))
        return found

    def container(self, name: str) -> Container | None:
        found = self.containers(name)
        if len(found) > 1:
            shown = ", ".join(str(c.name) for c in found)
            raise TestbedError(f"sandbox {name!r} has {len(found)} containers: {shown}")
        return found[0] if found else None

    def _require(self, name: str) -> Container:
        found = self.container(name)
        if found is None:
            raise TestbedError(f"no Docker sandbox named {name!r}")
        return found

    def container_id(self, name: str) -> str | None:
        """Current container ID of sandbox ``name`` (None if there is none)."""
        found = self.container(name)
        return str(found.id) if found is not None else None

    def container_name(self, name: str) -> str:
        return str(self._require(name).name)

    def sandboxes(self) -> dict[str, str]:
        """Sandbox name -> container ID."""
        return {str(c.labels.get(SANDBOX_NAME_LABEL)): str(c.id) for c in self.containers()}

    def sandbox_spec(self, name: str) -> SandboxSpec:
        """What sandbox ``name`` is made of (from its labels)."""
        return SandboxSpec.from_labels(self._require(name).labels)

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for c in self.containers():
            spec = SandboxSpec.from_labels(c.labels)
            out[str(c.labels.get(SANDBOX_NAME_LABEL))] = {
                "container": c.name,
                "container_id": c.id,
                "status": c.status,
                "sandbox_uid": spec.uid,
                "agent": spec.agent,
                "layout": spec.layout,
                "host_key_file": spec.host_key_file,
                "sandbox_id": c.labels.get(SANDBOX_ID_LABEL),
            }
        return out

    def add(
        self,
        name: str,
        uid: int = DEFAULT_SANDBOX_UID,
        container_name: str | None = None,
        *,
        agent: str = _agents.STANDIN,
        layout: str | None = None,
        host_key_file: bool | None = None,
    ) -> str:
        """Create and start sandbox ``name`` whose ``sandbox`` user has ``uid``; return its container ID.

        ``container_name`` fixes the container's name for good; by default it is
        ``openshell-<name>-<sandbox id>``, new with every creation. ``agent``,
        ``layout`` and ``host_key_file`` as for :meth:`testbed.Testbed.add_sandbox`
        (a real agent's install is bind-mounted read-only at ``/usr/local``).
        """
        if not _NAME_RE.match(name):
            raise TestbedError(f"invalid sandbox name {name!r} (use DNS-1123 labels)")
        try:
            spec = SandboxSpec.make(uid, agent, layout, host_key_file)
        except ValueError as exc:
            raise TestbedError(str(exc)) from exc
        if container_name is not None and not _CONTAINER_NAME_RE.match(container_name):
            raise TestbedError(f"invalid container name {container_name!r}")
        if self.containers(name):
            raise TestbedError(f"Docker sandbox {name!r} already exists; use recreate")
        return self._run(name, spec, container_name)

    def _run(self, name: str, spec: SandboxSpec, container_name: str | None) -> str:
        sandbox_id = str(uuid.uuid4())
        labels = {
            MANAGED_BY_LABEL: MANAGED_BY_VALUE,
            SANDBOX_ID_LABEL: sandbox_id,
            SANDBOX_NAME_LABEL: name,
            SANDBOX_NAMESPACE_LABEL: POD_NAMESPACE,
            ROLE_LABEL: ROLE,
            LABEL_GATEWAY: self.gateway,
            **spec.labels(),
        }
        if container_name is not None:
            labels[FIXED_NAME_LABEL] = container_name
        volumes: dict[str, dict[str, str]] = {}
        if spec.standin:
            image = self.ensure_image(spec.uid)
            command = images.pod_command(images.SANDBOX_INIT, spec.host_key_file)
        else:
            try:
                install = _agents.build_agent(spec.agent, say=log.info)
            except (_agents.AgentBuildError, ValueError) as exc:
                raise TestbedError(f"cannot install OpenClaw {spec.agent}: {exc}") from exc
            image = self.ensure_agent_image(spec.uid, spec.layout)
            command = images.pod_command(_agent_image.AGENT_INIT, spec.host_key_file, tini=_agent_image.AGENT_TINI)
            volumes[str(install.usr_local)] = {"bind": _agent_image.AGENT_MOUNT, "mode": "ro"}
        # kwargs via dict[str, Any]: types-docker lacks restart policy "no".
        run_kwargs: dict[str, Any] = dict(
            name=container_name or f"openshell-{name}-{sandbox_id}",
            command=command,
            detach=True,
            hostname=name,
            labels=labels,
            network_mode="none",
            restart_policy={"Name": "no"},
            tmpfs={"/run": "rw,nosuid,nodev,exec,mode=0755"},
            volumes=volumes,
        )
        container = self.client.containers.run(image, **run_kwargs)
        cid = str(container.id)
        hostkey = images.SSH_HOST_PUBKEY if spec.host_key_file else ""
        ready = self._exec(cid, ["sh", "-c", _READY_SCRIPT, "sh", images.SSH_READY, hostkey], None, None, 60)
        container.reload()
        if container.status != "running":
            logs = container.logs(tail=20).decode(errors="replace")
            raise TestbedError(f"Docker sandbox {name} ({container.name}) is {container.status}:\n{logs}")
        if ready.stdout.strip() != b"ready":
            sshd_log = self._exec(cid, ["tail", "-n", "5", "/var/log/openshell-sshd.log"], None, None, 30)
            wanted = images.SSH_READY + (f" and {images.SSH_HOST_PUBKEY}" if spec.host_key_file else "")
            raise TestbedError(
                f"Docker sandbox {name}: sandbox-init made no {wanted} (its sshd is not listening?); sshd log: "
                + sshd_log.stdout.decode(errors="replace").strip()
            )
        log.info("Docker sandbox %s (%s) running as container %s (%s)", name, spec.agent, container.name, cid)
        return cid

    def recreate(
        self,
        name: str,
        *,
        uid: int | None = None,
        agent: str | None = None,
        layout: str | None = None,
        host_key_file: bool | None = None,
    ) -> str:
        """Replace sandbox ``name`` with a new container, as NemoClaw does; return the new ID.

        It keeps its uid, agent, layout and host-key file unless given.
        """
        old = self._require(name)
        try:
            spec = SandboxSpec.from_labels(old.labels).changed(
                uid=uid, agent=agent, layout=layout, host_key_file=host_key_file
            )
        except ValueError as exc:
            raise TestbedError(str(exc)) from exc
        fixed = old.labels.get(FIXED_NAME_LABEL)
        old.remove(force=True)
        return self._run(name, spec, fixed)

    def remove(self, name: str) -> None:
        for container in self.containers(name):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)

    def remove_all(self) -> list[str]:
        """Remove every Docker sandbox of this gateway; return their names."""
        names = []
        for container in self.containers():
            names.append(str(container.labels.get(SANDBOX_NAME_LABEL)))
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        return names

    # ------------------------------------------------------------------- exec

    def _exec(
        self, cid: str, argv: list[str], user: str | None, stdin: bytes | None, timeout: float | None
    ) -> ExecResult:
        try:
            return exec_in(self.client.api, cid, argv, stdin, timeout, user=user or "0:0")
        except ExecTimeout as exc:
            raise TestbedError(f"`{' '.join(argv)}`: {exc}") from exc
        except docker.errors.APIError as exc:
            raise TestbedError(f"docker exec in {cid[:12]} failed: {exc.explanation or exc}") from exc

    def exec_in_sandbox(
        self,
        name: str,
        argv: list[str],
        user: str | int | None = None,
        stdin: bytes | None = None,
        timeout: float | None = 300.0,
    ) -> tuple[int, bytes, bytes]:
        """Run ``argv`` in sandbox ``name`` with ``docker exec``; (exit code, stdout, stderr).

        ``user`` is a name, uid or ``uid:gid`` (Docker resolves names from the
        sandbox's own /etc/passwd); default root.
        """
        if not argv:
            raise TestbedError("exec_in_sandbox needs a command")
        cid = str(self._require(name).id)
        result = self._exec(cid, argv, None if user is None else str(user), stdin, timeout)
        return result.code, result.stdout, result.stderr
