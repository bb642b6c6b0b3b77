"""A real systemd host in a Docker container, for end-to-end tests of the daemon.

clawguard ships as a *systemd user service* (``Type=notify``, ``WatchdogSec=``,
``Restart=on-failure``) that talks to Docker. :class:`SystemdHost` gives its
tests a Debian bookworm container whose PID 1 is ``/sbin/init`` (systemd 252),
with a lingering user whose user manager (``systemd --user``) runs user units,
and who can reach the host's Docker engine through the bind-mounted
``/var/run/docker.sock``.

Image (:meth:`SystemdHost.build_image`)
    ``debootstrap --variant=minbase`` of bookworm with :data:`PACKAGES` into
    ``/var/cache/clawguard-testbed/bookworm-rootfs`` (built in a temporary
    directory and renamed when debootstrap succeeded, so a rootfs that is
    present is complete; a ``.key`` file beside it records its inputs), then
    ``docker import`` as ``clawguard-testbed/systemd:<hash>`` with
    ``CMD ["/sbin/init"]`` and ``ENV container=docker``. The hash covers every
    input (suite, variant, packages, mirror, the files added on top, the import
    changes, :data:`BUILDER_VERSION`); when that tag exists both steps are
    skipped. ``docker import`` rejects ``STOPSIGNAL``, so the stop signal
    (``SIGRTMIN+3``, systemd's "halt") is set on the container instead.

Container (:meth:`SystemdHost.up`), equivalent to::

    docker run -d --name clawguard-systemd --hostname clawguard-systemd \\
      --stop-signal SIGRTMIN+3 \\
      --cap-add ALL --cap-drop SYS_RESOURCE \\
      --security-opt seccomp=unconfined --security-opt apparmor=unconfined \\
      --cgroupns host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \\
      --tmpfs /run --tmpfs /run/lock --tmpfs /tmp \\
      -v /var/run/docker.sock:/var/run/docker.sock \\
      [-v REPO:/src:ro] \\
      clawguard-testbed/systemd:<hash>

Findings on this kind of host (Docker 20.10, cgroup v1 "hybrid": named
``systemd`` v1 hierarchy plus ``/sys/fs/cgroup/unified``; ``--privileged``
fails here):

* cgroups: systemd needs a *writable* ``name=systemd`` hierarchy. With
  ``--cgroupns host`` and ``/sys/fs/cgroup`` bind-mounted read-write, PID 1
  sees its cgroup as ``/docker/<id>`` (``/proc/1/cgroup``) and builds
  ``init.scope``, ``system.slice`` and ``user.slice`` below it; it reports
  ``Tainted: cgroupsv1`` and boots to ``running`` with no failed unit in about
  a second. On ``docker stop`` (SIGRTMIN+3) it shuts down in under a second and
  Docker removes the whole ``/docker/<id>`` subtree, so nothing leaks on the
  host. ``docker exec`` processes land in ``/docker/<id>`` itself, outside
  systemd's units; that is harmless.
* journald: Debian's systemd package ships ``/var/log/journal``, so the
  default ``Storage=auto`` already means persistent storage, which is what
  makes journald split out ``user-<uid>.journal`` (with an ACL granting the
  user read access; overlayfs keeps ACLs). With volatile storage everything
  would go to one ``system.journal`` that the user may not read, and
  ``journalctl --user`` would show nothing. A drop-in
  (:data:`JOURNALD_DROPIN`) pins ``Storage=persistent`` so this cannot change
  under us.
* lingering: ``loginctl enable-linger`` needs logind, i.e. a booted system
  and the system D-Bus (packages ``dbus`` and ``libpam-systemd``); it starts
  ``user@<uid>.service`` at once, and the user bus appears at
  ``/run/user/<uid>/bus`` thanks to ``dbus-user-session``.
* Docker socket: the user gets access through a group whose gid is the
  socket's gid as seen inside the container (``stat -c %g``): an existing
  group with that gid is reused, otherwise ``hostdocker`` is created. No ACL
  or chmod on the host's socket. The user is put in that group *before*
  lingering starts its user manager, so user units inherit the group.
* ``run(user=True)`` uses ``docker exec --user <name>`` (Docker resolves the
  supplementary groups from the container's ``/etc/group``) with
  ``XDG_RUNTIME_DIR`` and ``DBUS_SESSION_BUS_ADDRESS`` set, which is all
  ``systemctl --user`` and ``journalctl --user`` need. No PAM session,
  ``su`` or shell is involved.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import shlex
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path

import docker
import docker.errors
from docker.models.containers import Container

from clawguard.targets._docker import ExecTimeout, exec_in

from . import _containers, _debian

#: Bump to rebuild the image when this module's build behaviour changes.
BUILDER_VERSION = "1"

IMAGE_REPO = "clawguard-testbed/systemd"
HASH_LABEL = "testbed.hash"
ROLE_LABEL = "testbed.role"
ROLE = "systemd-host"

SUITE = "bookworm"
VARIANT = "minbase"
MIRROR = _debian.MIRROR
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "dbus-user-session",
    "libpam-systemd",
    "python3",
    "python3-venv",
    "python3-pip",
    "openssh-client",
    "procps",
    "ca-certificates",
    "sudo",
    "pipx",  # docs/getting-started.md installs clawguard with it
)
DEFAULT_CACHE = _debian.DEFAULT_CACHE

#: Files added on top of the debootstrap rootfs: path inside the image -> content.
JOURNALD_DROPIN = "etc/systemd/journald.conf.d/50-clawguard-testbed.conf"
OVERLAY: dict[str, bytes] = {
    JOURNALD_DROPIN: b"# clawguard testbed: persistent storage is what gives users their own\n"
    b"# user-<uid>.journal, so that `journalctl --user` works for them.\n"
    b"[Journal]\nStorage=persistent\n",
}
IMPORT_CHANGES = ('CMD ["/sbin/init"]', "ENV container=docker", "ENV LANG=C.UTF-8")
STOP_SIGNAL = "SIGRTMIN+3"

DOCKER_SOCK = "/var/run/docker.sock"
SRC_MOUNT = "/src"
WHEELS_MOUNT = "/wheels"
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class SystemdHostError(RuntimeError):
    """The systemd test host could not be built, started or driven."""


def _say(message: str) -> None:
    print(f"[systemd-testbed] {message}", file=sys.stderr, flush=True)


class SystemdHost:
    """A Debian container booting systemd, with a lingering user and the Docker socket.

    Typical use::

        host = SystemdHost()
        host.up(repo=Path("."))          # builds/caches the image on first use
        code, out, err = host.run(["systemctl", "--user", "status"], user=True)
        host.down()                      # image and rootfs cache stay
    """

    def __init__(
        self,
        name: str = "clawguard-systemd",
        user: str = "claw",
        client: docker.DockerClient | None = None,
        *,
        cache_dir: Path = DEFAULT_CACHE,
        mirror: str = MIRROR,
    ) -> None:
        self.name = name
        self.user = user
        self._client = client
        self.cache_dir = cache_dir
        self.mirror = mirror
        self._uid: int | None = None

    # ------------------------------------------------------------------
    # Basics
    # ------------------------------------------------------------------

    @property
    def client(self) -> docker.DockerClient:
        """The Docker client (``docker.from_env()`` unless one was given)."""
        if self._client is None:
            self._client = docker.from_env(timeout=120)
        return self._client

    @property
    def rootfs_dir(self) -> Path:
        """Cached debootstrap output (complete whenever it exists)."""
        return self.cache_dir / f"{SUITE}-rootfs"

    def _rootfs_key(self) -> str:
        return _debian.rootfs_key(PACKAGES, suite=SUITE, variant=VARIANT, mirror=self.mirror)

    def image_hash(self) -> str:
        """Hash of every input of the image; its tag."""
        h = hashlib.sha256()
        h.update(BUILDER_VERSION.encode())
        h.update(self._rootfs_key().encode())
        for path in sorted(OVERLAY):
            h.update(json.dumps([path, hashlib.sha256(OVERLAY[path]).hexdigest()]).encode())
        h.update(json.dumps(IMPORT_CHANGES).encode())
        return h.hexdigest()[:16]

    @property
    def image(self) -> str:
        """The image reference ``clawguard-testbed/systemd:<hash>``."""
        return f"{IMAGE_REPO}:{self.image_hash()}"

    @property
    def uid(self) -> int:
        """The user's uid inside the container (known after :meth:`up`)."""
        if self._uid is None:
            code, out, err = self.run(["id", "-u", self.user])
            if code != 0:
                raise SystemdHostError(f"no user {self.user!r} in {self.name}: {err.strip()}")
            self._uid = int(out.strip())
        return self._uid

    @property
    def home(self) -> str:
        return f"/home/{self.user}"

    def user_env(self) -> dict[str, str]:
        """Environment under which ``systemctl --user``/``journalctl --user`` reach the user manager."""
        runtime = f"/run/user/{self.uid}"
        return {
            "HOME": self.home,
            "USER": self.user,
            "LOGNAME": self.user,
            "SHELL": "/bin/bash",
            "PATH": PATH_ENV,
            "XDG_RUNTIME_DIR": runtime,
            "DBUS_SESSION_BUS_ADDRESS": f"unix:path={runtime}/bus",
        }

    def container(self) -> Container | None:
        """The host container, running or not, if it exists."""
        return _containers.find(self.client, self.name)

    def _running(self) -> Container:
        return _containers.running(self.client, self.name, SystemdHostError)

    # ------------------------------------------------------------------
    # Image
    # ------------------------------------------------------------------

    def _image_exists(self, ref: str) -> bool:
        try:
            self.client.images.get(ref)
        except docker.errors.ImageNotFound:
            return False
        return True

    def build_image(self) -> str:
        """Return the image reference, building (debootstrap + ``docker import``) only what is missing."""
        ref = self.image
        if self._image_exists(ref):
            _say(f"image {ref} is cached")
            return ref
        started = time.monotonic()
        self._ensure_rootfs()
        self._import(ref)
        self._prune_old_images(keep=ref)
        _say(f"image {ref} built in {time.monotonic() - started:.1f}s")
        return ref

    def _ensure_rootfs(self) -> None:
        _debian.ensure_rootfs(
            self.rootfs_dir,
            PACKAGES,
            say=_say,
            error=SystemdHostError,
            suite=SUITE,
            variant=VARIANT,
            mirror=self.mirror,
        )

    def _import(self, ref: str) -> None:
        tar_path = self.cache_dir / f"import-{self.image_hash()}.tar"
        started = time.monotonic()
        try:
            _say(f"packing {self.rootfs_dir}")
            subprocess.run(
                [
                    "tar",
                    "--numeric-owner",
                    "--xattrs",
                    "--xattrs-include=*",
                    "--exclude=./var/cache/apt/archives/*.deb",
                    "-C",
                    str(self.rootfs_dir),
                    "-cf",
                    str(tar_path),
                    ".",
                ],
                check=True,
            )
            with tarfile.open(tar_path, mode="a") as tar:
                for path in sorted(OVERLAY):
                    data = OVERLAY[path]
                    info = tarfile.TarInfo(f"./{path}")
                    info.size = len(data)
                    info.mode = 0o644
                    info.mtime = 1_700_000_000
                    tar.addfile(info, io.BytesIO(data))
            repo, tag = ref.rsplit(":", 1)
            changes = [*IMPORT_CHANGES, f"LABEL {HASH_LABEL}={tag} {ROLE_LABEL}={ROLE}"]
            _say(f"docker import as {ref}")
            self.client.api.import_image_from_file(str(tar_path), repository=repo, tag=tag, changes=changes)
        finally:
            tar_path.unlink(missing_ok=True)
        if not self._image_exists(ref):
            raise SystemdHostError(f"docker import did not produce {ref}")
        _say(f"imported in {time.monotonic() - started:.1f}s")

    def _prune_old_images(self, keep: str) -> None:
        """Drop older builds' tags (an image still used by a container stays)."""
        for image in self.client.images.list(name=IMAGE_REPO):
            if keep in image.tags:
                continue
            for tag in image.tags:
                with contextlib.suppress(docker.errors.APIError):
                    self.client.images.remove(tag)

    # ------------------------------------------------------------------
    # Lifecycle
    # ------------------------------------------------------------------

    def up(self, repo: Path | None = None, timeout: float = 120.0, *, wheelhouse: Path | None = None) -> None:
        """Boot a fresh container (replacing any old one), then set up the lingering user.

        ``repo``, if given, is bind-mounted read-only at ``/src``; ``wheelhouse``
        (a directory of wheels, e.g. from ``pip wheel -w DIR .`` on the host) at
        ``/wheels``, for ``pip install --no-index --find-links /wheels clawguard``
        inside: pip cannot build from the read-only ``/src`` (it builds in
        tree), and the container may not trust the host's TLS setup for PyPI.
        Bind mounts keep host modes and owners: both must be readable by the
        user (a pytest ``tmp_path`` is 0700, for one).
        Returns once
        ``systemctl is-system-running`` says running/degraded and the user's
        ``user@<uid>.service`` is active with its bus socket in place.
        """
        image = self.build_image()
        if self.container() is not None:
            _say(f"replacing existing container {self.name}")
            self.down()
        volumes: dict[str, dict[str, str]] = {
            "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
            DOCKER_SOCK: {"bind": DOCKER_SOCK, "mode": "rw"},
        }
        if repo is not None:
            volumes[str(repo.resolve())] = {"bind": SRC_MOUNT, "mode": "ro"}
        if wheelhouse is not None:
            volumes[str(wheelhouse.resolve())] = {"bind": WHEELS_MOUNT, "mode": "ro"}
        started = time.monotonic()
        self.client.containers.run(
            image,
            detach=True,
            name=self.name,
            hostname=self.name,
            stop_signal=STOP_SIGNAL,
            cap_add=["ALL"],
            cap_drop=["SYS_RESOURCE"],
            security_opt=["seccomp=unconfined", "apparmor=unconfined"],
            cgroupns="host",
            tmpfs={
                "/run": "rw,nosuid,nodev,mode=755",
                "/run/lock": "rw,nosuid,nodev,noexec",
                "/tmp": "rw,nosuid,nodev",
            },
            volumes=volumes,
            environment={"container": "docker"},
            labels={ROLE_LABEL: ROLE},
        )
        self._uid = None
        state = self._wait_booted(timeout)
        _say(f"systemd is {state} after {time.monotonic() - started:.1f}s")
        self._setup_user(timeout)
        _say(f"user manager of {self.user} (uid {self.uid}) active after {time.monotonic() - started:.1f}s")

    def _wait_booted(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        state = "unknown"
        while time.monotonic() < deadline:
            ctr = self.container()
            if ctr is None or ctr.status == "exited":
                logs = ctr.logs(tail=30).decode(errors="replace") if ctr is not None else ""
                raise SystemdHostError(f"container {self.name} died while booting:\n{logs}")
            with contextlib.suppress(SystemdHostError, docker.errors.APIError):
                _, out, _ = self.run(["systemctl", "is-system-running"], timeout=10)
                state = out.strip()
                if state in ("running", "degraded"):
                    if state == "degraded":
                        _, failed, _ = self.run(["systemctl", "--failed", "--no-legend", "--plain"])
                        _say(f"systemd is degraded; failed units:\n{failed}")
                    return state
            time.sleep(0.25)
        raise SystemdHostError(f"systemd in {self.name} not up after {timeout}s (state: {state})")

    def _check(self, argv: list[str], user: bool = False, timeout: float = 60) -> str:
        code, out, err = self.run(argv, user=user, timeout=timeout)
        if code != 0:
            raise SystemdHostError(f"{argv} exited {code}: {(err or out).strip()}")
        return out

    def _setup_user(self, timeout: float) -> None:
        gid = int(self._check(["stat", "-c", "%g", DOCKER_SOCK]).strip())
        code, out, _ = self.run(["getent", "group", str(gid)])
        if code == 0:
            group = out.split(":", 1)[0]
        else:
            group = "hostdocker"
            self._check(["groupadd", "-g", str(gid), group])
        if self.run(["id", "-u", self.user])[0] != 0:
            self._check(["useradd", "--create-home", "--shell", "/bin/bash", "--user-group", self.user])
        self._check(["usermod", "-aG", group, self.user])
        self._uid = None
        uid = self.uid
        self._check(["loginctl", "enable-linger", self.user])
        deadline = time.monotonic() + timeout
        unit = f"user@{uid}.service"
        while time.monotonic() < deadline:
            active = self.run(["systemctl", "is-active", unit])[1].strip()
            if active == "active" and self.run(["test", "-S", f"/run/user/{uid}/bus"])[0] == 0:
                return
            if active == "failed":
                status = self.run(["systemctl", "status", "--no-pager", unit])[1]
                raise SystemdHostError(f"{unit} failed:\n{status}")
            time.sleep(0.25)
        raise SystemdHostError(f"{unit} not active after {timeout}s")

    def down(self, timeout: int = 20) -> None:
        """Stop systemd cleanly (SIGRTMIN+3) and remove the container; the image and rootfs cache stay."""
        ctr = self.container()
        if ctr is None:
            return
        with contextlib.suppress(docker.errors.APIError):
            ctr.stop(timeout=timeout)
        with contextlib.suppress(docker.errors.NotFound):
            ctr.remove(force=True, v=True)
        self._uid = None

    def is_up(self) -> bool:
        ctr = self.container()
        return ctr is not None and ctr.status == "running"

    # ------------------------------------------------------------------
    # Commands and files
    # ------------------------------------------------------------------

    def run(
        self,
        argv: list[str],
        user: bool = False,
        env: dict[str, str] | None = None,
        stdin: bytes | None = None,
        timeout: float = 300,
    ) -> tuple[int, str, str]:
        """Run ``argv`` (no shell) in the container as root, or as the user with a working user bus.

        Returns ``(exit code, stdout, stderr)``; raises :class:`SystemdHostError`
        when it does not finish within ``timeout`` seconds.
        """
        if not argv:
            raise ValueError("empty argv")
        environment: dict[str, str] = {"PATH": PATH_ENV}
        workdir = "/"
        if user:
            environment.update(self.user_env())
            workdir = self.home
        environment.update(env or {})
        ctr = self._running()
        code, out, err = _exec(
            self.client,
            ctr.id or self.name,
            argv,
            user=self.user if user else "root",
            environment=environment,
            workdir=workdir,
            stdin=stdin,
            timeout=timeout,
        )
        return code, out.decode(errors="replace"), err.decode(errors="replace")

    def put_file(self, path: str, data: bytes, mode: int = 0o644, user: bool = False) -> None:
        """Write ``data`` to absolute ``path``, creating parents; owned by the user if ``user``."""
        if not path.startswith("/"):
            raise ValueError(f"path must be absolute: {path!r}")
        parent, name = path.rsplit("/", 1)
        parent = parent or "/"
        self._check(["mkdir", "-p", parent], user=user)
        uid = self.uid if user else 0
        gid = int(self._check(["id", "-g", self.user]).strip()) if user else 0
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.gid = len(data), mode, uid, gid
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
        if not self._running().put_archive(parent, buf.getvalue()):
            raise SystemdHostError(f"could not write {path}")

    def shell_command(self, user: bool = True) -> list[str]:
        """A ``docker exec -it`` command line for an interactive shell (as the user by default)."""
        argv = ["docker", "exec", "-it"]
        if user:
            argv += ["-u", self.user, "-w", self.home]
            for key, value in self.user_env().items():
                argv += ["-e", f"{key}={value}"]
        return [*argv, self.name, "bash"]


def _exec(
    client: docker.DockerClient,
    container_id: str,
    argv: Sequence[str],
    *,
    user: str,
    environment: dict[str, str],
    workdir: str,
    stdin: bytes | None,
    timeout: float,
) -> tuple[int, bytes, bytes]:
    try:
        result = exec_in(
            client.api, container_id, argv, stdin, timeout, user=user, environment=environment, workdir=workdir
        )
    except ExecTimeout as exc:
        raise SystemdHostError(f"{list(argv)}: {exc}") from exc
    return result.code, result.stdout, result.stderr


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m testbed.systemd {build,up,down,shell-cmd}``."""
    p = argparse.ArgumentParser(
        prog="python -m testbed.systemd", description=(__doc__ or "systemd test host").splitlines()[0]
    )
    p.add_argument("--name", default="clawguard-systemd")
    p.add_argument("--user", default="claw")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="build/cache the image only")
    up = sub.add_parser("up", help="(re)create the container and wait for the user manager")
    up.add_argument("--repo", type=Path, help="bind-mount this source tree read-only at /src")
    up.add_argument("--wheelhouse", type=Path, help="bind-mount this directory of wheels read-only at /wheels")
    sub.add_parser("down", help="remove the container (keeps image and rootfs cache)")
    sh = sub.add_parser("shell-cmd", help="print a docker exec command for an interactive shell")
    sh.add_argument("--root", action="store_true", help="as root instead of the user")
    args = p.parse_args(argv)
    host = SystemdHost(args.name, args.user)
    try:
        if args.cmd == "build":
            print(host.build_image())
        elif args.cmd == "up":
            host.up(repo=args.repo, wheelhouse=args.wheelhouse)
        elif args.cmd == "down":
            host.down()
        else:
            print(shlex.join(host.shell_command(user=not args.root)))
    except SystemdHostError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
