"""Image builders for the test bed.

Two images are produced, both from files generated here or copied from the
host's Debian packages (nothing is downloaded):

* the *cluster* image: a root filesystem holding containerd, its runc shim,
  ``ctr``, ``runc``, their shared libraries and a static busybox. It is turned
  into a Docker image with ``docker import``.
* the *sandbox* image: an OCI image layout (``oci-layout``, ``index.json``,
  ``blobs/sha256/...``) built here with :mod:`tarfile` and :mod:`hashlib`. It
  mirrors NemoClaw's sandbox layout and is imported into the cluster's
  containerd with ``ctr -n k8s.io images import``. One image per sandbox uid.
  The same root filesystem is also imported into Docker with ``docker import``
  (:func:`sandbox_changes`) for generation 2's plain Docker sandboxes.
  Besides busybox it holds Debian's OpenSSH server (``sshd``, ``ssh-keygen``,
  ``sftp-server`` and their libraries), ``dash`` as ``/bin/sh`` (as in Debian),
  ``bash``, procps' ``pgrep``/``pkill``, coreutils' ``nohup`` and the
  stand-ins of :mod:`testbed.standins`: ``/usr/local/bin/openclaw``
  (the gateway), ``/usr/local/bin/wget`` (busybox wget without its ``-T``
  segfault), ``/usr/local/bin/sandbox-init`` (which generates the pod's
  SSH host key, starts sshd listening on 127.0.0.1:2222 and then becomes
  ``sleep infinity``) and ``/opt/openshell/bin/ssh-relay`` (busybox ``nc`` to
  that sshd, for ``openshell ssh-proxy``). The pod's PID 1 is
  ``tini`` (Debian's static ``tini``, shipped with docker.io) running
  sandbox-init: like OpenShell's in-pod supervisor it reaps orphans, so ssh
  sessions and killed gateways leave no zombies.

Builds are deterministic: same inputs give byte-identical tarballs, so image
digests double as cache keys.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import standins

#: Bump to invalidate every cached image when the builders change behaviour.
#: (It is part of the cluster image's key: bumping it recreates clusters.)
BUILDER_VERSION = "3"
#: Bump to invalidate only the sandbox images.
SANDBOX_BUILDER_VERSION = "3"

SANDBOX_REPO = "clawguard-testbed/sandbox"
CLUSTER_REPO = "clawguard-testbed/cluster"
HASH_LABEL = "testbed.hash"
ROLE_LABEL = "testbed.role"

CONTAINERD_ROOT = "/var/lib/containerd"
CONTAINERD_STATE = "/run/k3s/containerd"
CONTAINERD_SOCK = "/run/k3s/containerd/containerd.sock"
CONTAINERD_CONFIG = "/etc/clawguard-testbed/containerd.toml"
ENTRYPOINT = "/usr/local/bin/testbed-entrypoint"

PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SANDBOX_UID = 998

# Subdirectories of ~/.openclaw-data that NemoClaw symlinks from ~/.openclaw.
OPENCLAW_DATA_DIRS = (
    "agents",
    "extensions",
    "workspace",
    "skills",
    "hooks",
    "identity",
    "devices",
    "canvas",
    "cron",
)
OPENCLAW_JSON = b'{\n  "gateway": {\n    "port": 18789\n  }\n}\n'

# Host files copied into the cluster image (path inside image == host path).
CLUSTER_BINARIES = (
    "/usr/bin/containerd",
    "/usr/bin/containerd-shim-runc-v2",
    "/usr/bin/ctr",
    "/usr/sbin/runc",
)
BUSYBOX = "/bin/busybox"

FIXED_MTIME = 1_700_000_000  # deterministic tar headers

# Host files copied into the sandbox image (path inside image == host path).
SANDBOX_BINARIES = (
    "/usr/sbin/sshd",
    "/usr/bin/ssh-keygen",
    "/usr/lib/openssh/sftp-server",
    "/usr/bin/pgrep",
    "/usr/bin/nohup",  # busybox-static has no nohup applet
    # /bin/sh is dash, as in Debian (and NemoClaw's Debian-based image): busybox
    # ash runs its own applets before PATH, so it would bypass /usr/local/bin/wget.
    "/bin/dash",
    "/bin/bash",
)
SANDBOX_SYMLINKS = {"/usr/bin/pkill": "pgrep", "/bin/sh": "dash"}

#: sandbox-init makes the pod's SSH host key, starts a listening sshd, then `exec sleep infinity`.
SANDBOX_INIT = "/usr/local/bin/sandbox-init"
#: The in-sandbox end of `openshell ssh-proxy` (in every sandbox image).
SSH_RELAY = "/opt/openshell/bin/ssh-relay"
#: sandbox-init writes sshd's port here once it listens (on the writable layer).
SSH_READY = "/var/lib/openshell/ssh-ready"
SSH_PORT = 2222
#: sandbox-init's flag that keeps the host key as a file (/etc/ssh/ssh_host_ed25519_key).
HOST_KEY_FILE_FLAG = "--host-key-file"
TINI = "/usr/bin/tini"
TINI_SOURCE = "/usr/bin/tini-static"
OPENCLAW_BIN = "/usr/local/bin/openclaw"
# Installed where `npm install -g openclaw` puts the real one, with its package.json, so that
# what clawguard learns from the install is learned the same way on the stand-in.
OPENCLAW_PACKAGE = "/usr/local/lib/node_modules/openclaw"
WGET_WRAPPER = "/usr/local/bin/wget"  # shadows busybox's /bin/wget (PATH order)
SSHD = "/usr/sbin/sshd"
SSHD_CONFIG = "/etc/ssh/sshd_config"
SSH_HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"
SSH_HOST_PUBKEY = SSH_HOST_KEY + ".pub"


def pod_command(init: str = SANDBOX_INIT, host_key_file: bool = True, *, tini: str = TINI) -> list[str]:
    """A sandbox's main command. PID 1 = tini, which reaps orphans (sleep would not)."""
    return [tini, "--", init, *([HOST_KEY_FILE_FLAG] if host_key_file else [])]


#: THE SWITCH for stand-in sandboxes' SSH host key: True keeps it as a file at
#: /etc/ssh/ssh_host_ed25519_key(.pub) by default (what clawguard's ``host_key: pin``
#: reads); False makes stand-in sandboxes like OpenShell's and the real-agent ones (the
#: key only in sshd's memory). Real-agent sandboxes default to False. Either can be
#: chosen per sandbox with ``host_key_file=``. (Re-exported as testbed.STANDIN_HOST_KEY_FILE.)
STANDIN_HOST_KEY_FILE = False

#: The stand-in image's default command.
POD_COMMAND = pod_command(SANDBOX_INIT, STANDIN_HOST_KEY_FILE)

_DEBIAN_HINT = (
    "install the Debian packages docker.io, containerd, runc, busybox-static, openssh-server and procps "
    "(run scripts/setup-host.sh as root)"
)


class ImageBuildError(RuntimeError):
    """An image could not be assembled from the host's files."""


# --------------------------------------------------------------------------
# Generic helpers
# --------------------------------------------------------------------------


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _require_file(path: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise ImageBuildError(f"{path} not found on this host; {_DEBIAN_HINT}")
    return p


def file_fingerprint(path: str) -> str:
    """Cheap identity of a host file: resolved path, size and mtime."""
    p = Path(path).resolve()
    st = p.stat()
    return f"{p}:{st.st_size}:{st.st_mtime_ns}"


def busybox_applets(busybox: str = BUSYBOX) -> list[str]:
    """Applet names of the host's static busybox (``busybox --list``)."""
    _require_file(busybox)
    return list(_busybox_applets(busybox, file_fingerprint(busybox)))


@functools.lru_cache(maxsize=8)
def _busybox_applets(busybox: str, fingerprint: str) -> tuple[str, ...]:
    out = subprocess.run([busybox, "--list"], check=True, capture_output=True, text=True).stdout
    return tuple(sorted({a for a in out.split() if a and "/" not in a and a != "busybox"}))


def shared_libs(binary: str) -> list[str]:
    """Shared libraries (absolute paths, incl. the ELF interpreter) per ``ldd``."""
    _require_file(binary)
    return list(_shared_libs(binary, file_fingerprint(binary)))


@functools.lru_cache(maxsize=64)
def _shared_libs(binary: str, fingerprint: str) -> tuple[str, ...]:
    proc = subprocess.run(["ldd", binary], capture_output=True, text=True)
    if proc.returncode != 0:
        if "not a dynamic executable" in proc.stdout + proc.stderr:
            return ()
        raise ImageBuildError(f"ldd {binary} failed: {proc.stderr.strip()}")
    libs: list[str] = []
    for line in proc.stdout.splitlines():
        parts = line.split()
        if "=>" in parts:
            idx = parts.index("=>")
            if idx + 1 < len(parts) and parts[idx + 1].startswith("/"):
                libs.append(parts[idx + 1])
        elif parts and parts[0].startswith("/"):
            libs.append(parts[0])
    return tuple(libs)


# --------------------------------------------------------------------------
# Deterministic tar writer
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One member of a generated root filesystem."""

    path: str  # absolute path inside the image
    kind: str  # "dir" | "file" | "symlink"
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    data: bytes = b""
    source: str | None = None  # host file to copy (kind == "file")
    target: str = ""  # symlink target


@dataclass
class RootFS:
    """An in-memory description of a root filesystem."""

    entries: dict[str, Entry] = field(default_factory=dict)

    def _parents(self, path: str) -> None:
        parent = os.path.dirname(path)
        if parent in ("", "/") or parent in self.entries:
            return
        self._parents(parent)
        self.entries[parent] = Entry(parent, "dir", 0o755)

    def add(self, entry: Entry) -> None:
        if not entry.path.startswith("/") or entry.path == "/":
            raise ValueError(f"bad image path {entry.path!r}")
        self._parents(entry.path)
        self.entries[entry.path] = entry

    def dir(self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        self.add(Entry(path, "dir", mode, uid, gid))

    def file(self, path: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
        self.add(Entry(path, "file", mode, uid, gid, data=data))

    def copy(self, path: str, source: str, mode: int | None = None) -> None:
        src = _require_file(source)
        m = mode if mode is not None else (src.stat().st_mode & 0o7777)
        self.add(Entry(path, "file", m, source=str(src.resolve())))

    def symlink(self, path: str, target: str, uid: int = 0, gid: int = 0) -> None:
        self.add(Entry(path, "symlink", 0o777, uid, gid, target=target))

    def sorted_entries(self) -> Iterator[Entry]:
        for key in sorted(self.entries):
            yield self.entries[key]

    def digest_inputs(self) -> str:
        """Hash of everything that determines the tarball's bytes."""
        h = hashlib.sha256()
        for e in self.sorted_entries():
            src = file_fingerprint(e.source) if e.source else sha256_hex(e.data)
            h.update(json.dumps([e.path, e.kind, e.mode, e.uid, e.gid, src, e.target]).encode())
        return h.hexdigest()

    def write_tar(self, fileobj: io.BufferedIOBase | io.BytesIO) -> None:
        with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for e in self.sorted_entries():
                info = tarfile.TarInfo(e.path.lstrip("/"))
                info.mode = e.mode
                info.uid, info.gid = e.uid, e.gid
                info.uname = info.gname = ""
                info.mtime = FIXED_MTIME
                if e.kind == "dir":
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif e.kind == "symlink":
                    info.type = tarfile.SYMTYPE
                    info.linkname = e.target
                    tar.addfile(info)
                elif e.source is not None:
                    info.size = os.path.getsize(e.source)
                    with open(e.source, "rb") as fh:
                        tar.addfile(info, fh)
                else:
                    info.size = len(e.data)
                    tar.addfile(info, io.BytesIO(e.data))


def _busybox_tree(fs: RootFS, applets: Iterable[str]) -> None:
    fs.copy("/bin/busybox", BUSYBOX, 0o755)
    for applet in applets:
        fs.symlink(f"/bin/{applet}", "busybox")


def _binaries_with_libs(fs: RootFS, binaries: Iterable[str]) -> None:
    """Copy host ``binaries`` and every shared library ``ldd`` lists for them."""
    seen: set[str] = set()
    for binary in binaries:
        fs.copy(binary, _require_file(binary).as_posix(), 0o755)
        for lib in shared_libs(binary):
            if lib in seen:
                continue
            seen.add(lib)
            fs.copy(lib, lib, 0o755)


def _base_dirs(fs: RootFS) -> None:
    for d in ("/dev", "/proc", "/sys", "/run", "/etc", "/usr/local/bin", "/var"):
        fs.dir(d)
    fs.dir("/root", 0o700)
    fs.dir("/tmp", 0o1777)
    fs.dir("/var/tmp", 0o1777)
    fs.symlink("/usr/bin/env", "/bin/busybox")
    fs.file("/etc/hosts", b"127.0.0.1\tlocalhost\n::1\tlocalhost\n")
    fs.file("/etc/nsswitch.conf", b"passwd: files\ngroup: files\nhosts: files dns\n")


# --------------------------------------------------------------------------
# Sandbox image (OCI layout)
# --------------------------------------------------------------------------


def sandbox_ref(uid: int) -> str:
    return f"{SANDBOX_REPO}:uid-{uid}"


def sandbox_rootfs(uid: int, applets: Iterable[str] | None = None) -> RootFS:
    """NemoClaw-like sandbox root filesystem for sandbox user ``uid``.

    Users: ``root``, ``sandbox`` (``uid``:``uid``, home ``/sandbox``, shell
    ``/bin/sh``, *empty* password in ``/etc/shadow`` so sshd's "none" method
    logs it in), ``sshd`` (privilege separation) and ``nobody``.
    """
    if not 1 <= uid < 65534:
        raise ValueError(f"sandbox uid must be in 1..65533, got {uid}")
    sshd_uid = 105 if uid != 105 else 106
    fs = RootFS()
    _base_dirs(fs)
    _busybox_tree(fs, busybox_applets() if applets is None else applets)
    fs.file("/etc/nsswitch.conf", b"passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n")
    fs.file(
        "/etc/passwd",
        (
            "root:x:0:0:root:/root:/bin/sh\n"
            f"sshd:x:{sshd_uid}:65534::/run/sshd:/usr/sbin/nologin\n"
            f"sandbox:x:{uid}:{uid}:OpenShell sandbox:/sandbox:/bin/sh\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
        ).encode(),
    )
    fs.file(
        "/etc/group",
        f"root:x:0:\nsandbox:x:{uid}:\nnogroup:x:65534:\n".encode(),
    )
    fs.file(
        "/etc/shadow",
        b"root:*:19700:0:99999:7:::\n"
        b"sshd:*:19700:0:99999:7:::\n"
        b"sandbox::19700:0:99999:7:::\n"
        b"nobody:*:19700:0:99999:7:::\n",
        0o640,
    )
    # OpenSSH server, listening on 127.0.0.1 inside the pod (sandbox-init), reached
    # by `openshell ssh-proxy` through ssh-relay (busybox nc).
    _binaries_with_libs(fs, SANDBOX_BINARIES)
    for link, target in SANDBOX_SYMLINKS.items():
        fs.symlink(link, target)
    fs.file(SSHD_CONFIG, standins.read(standins.SSHD_CONFIG))
    fs.dir("/run/sshd", 0o755)  # /run is a tmpfs in the pod: sandbox-init makes it again
    fs.dir("/var/empty", 0o755)
    fs.copy(TINI, TINI_SOURCE, 0o755)
    fs.file(SANDBOX_INIT, standins.read(standins.SANDBOX_INIT), 0o755)
    fs.file(SSH_RELAY, standins.read(standins.SSH_RELAY), 0o755)
    fs.dir("/var/lib/openshell", 0o755)
    fs.dir("/var/log", 0o755)
    fs.file(f"{OPENCLAW_PACKAGE}/openclaw.sh", standins.read(standins.OPENCLAW), 0o755)
    fs.file(f"{OPENCLAW_PACKAGE}/package.json", standins.openclaw_package_json())
    fs.symlink(OPENCLAW_BIN, "../lib/node_modules/openclaw/openclaw.sh")
    fs.file(WGET_WRAPPER, standins.read(standins.WGET), 0o755)
    fs.dir("/sandbox", 0o755, uid, uid)
    fs.dir("/sandbox/.openclaw", 0o755, 0, 0)
    fs.file("/sandbox/.openclaw/openclaw.json", OPENCLAW_JSON, 0o444, 0, 0)
    fs.dir("/sandbox/.openclaw-data", 0o755, uid, uid)
    for sub in OPENCLAW_DATA_DIRS:
        fs.dir(f"/sandbox/.openclaw-data/{sub}", 0o755, uid, uid)
        fs.symlink(f"/sandbox/.openclaw/{sub}", f"/sandbox/.openclaw-data/{sub}")
    # The bug clawguard works around: telegram/ is root-owned.
    fs.dir("/sandbox/.openclaw-data/telegram", 0o755, 0, 0)
    fs.symlink("/sandbox/.openclaw/telegram", "/sandbox/.openclaw-data/telegram")
    return fs


@dataclass(frozen=True)
class OCIImage:
    ref: str
    manifest_digest: str  # "sha256:..."
    tarball: bytes  # OCI image layout as an (uncompressed) tar archive


def _blob(data: bytes) -> tuple[str, int]:
    return "sha256:" + sha256_hex(data), len(data)


def build_oci_layout(ref: str, fs: RootFS, *, cmd: list[str], env: list[str]) -> OCIImage:
    """Build a single-layer OCI image layout tarball for ``fs``."""
    raw = io.BytesIO()
    fs.write_tar(raw)
    layer_tar = raw.getvalue()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, compresslevel=1) as zf:  # speed over size
        zf.write(layer_tar)
    layer_gz = gz.getvalue()
    diff_id = "sha256:" + sha256_hex(layer_tar)
    layer_digest, layer_size = _blob(layer_gz)

    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": {"Env": env, "Cmd": cmd, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "testbed", "comment": ref}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_digest, config_size = _blob(config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest,
                "size": layer_size,
            }
        ],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    manifest_digest, manifest_size = _blob(manifest_bytes)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": ref,
                    "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1],
                },
            }
        ],
    }
    files: list[tuple[str, bytes]] = [
        ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
        ("index.json", json.dumps(index, sort_keys=True).encode()),
    ]
    for digest, data in sorted(
        [
            (layer_digest, layer_gz),
            (config_digest, config_bytes),
            (manifest_digest, manifest_bytes),
        ]
    ):
        files.append((f"blobs/sha256/{digest.split(':', 1)[1]}", data))

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dname in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(dname)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, FIXED_MTIME
            tar.addfile(info)
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, FIXED_MTIME
            tar.addfile(info, io.BytesIO(data))
    return OCIImage(ref=ref, manifest_digest=manifest_digest, tarball=out.getvalue())


def sandbox_image_key(uid: int) -> str:
    """Content hash of the sandbox image inputs for ``uid`` (cache key)."""
    fs = sandbox_rootfs(uid)
    return sha256_hex(f"{BUILDER_VERSION}:{SANDBOX_BUILDER_VERSION}:{uid}:{fs.digest_inputs()}".encode())


def build_sandbox_image(uid: int = DEFAULT_SANDBOX_UID) -> OCIImage:
    fs = sandbox_rootfs(uid)
    return build_oci_layout(
        sandbox_ref(uid),
        fs,
        cmd=POD_COMMAND,
        env=[f"PATH={PATH_ENV}"],
    )


def sandbox_changes(key: str) -> list[str]:
    """Dockerfile instructions for ``docker import`` of :func:`sandbox_rootfs`: the
    same sandbox as the OCI image, for generation 2's plain Docker containers."""
    return [
        f"ENV PATH={PATH_ENV}",
        f'LABEL {HASH_LABEL}="{key}"',
        f'LABEL {ROLE_LABEL}="sandbox"',
        f"CMD {json.dumps(POD_COMMAND)}",
    ]


# --------------------------------------------------------------------------
# Cluster image (docker import)
# --------------------------------------------------------------------------

CONTAINERD_TOML = f"""\
# Generated by testbed: containerd without CRI (there is no kubelet).
version = 2
root = "{CONTAINERD_ROOT}"
state = "{CONTAINERD_STATE}"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "{CONTAINERD_SOCK}"

[ttrpc]
  address = "{CONTAINERD_SOCK}.ttrpc"

[plugins."io.containerd.service.v1.diff-service"]
  default = ["walking"]
""".encode()

ENTRYPOINT_SH = f"""\
#!/bin/sh
# Generated by testbed: start containerd like k3s does for OpenShell.
set -e
mkdir -p {CONTAINERD_STATE} {CONTAINERD_ROOT} /run/containerd
exec containerd --config {CONTAINERD_CONFIG} \\
  --root {CONTAINERD_ROOT} --state {CONTAINERD_STATE} --address {CONTAINERD_SOCK} "$@"
""".encode()


def cluster_rootfs(applets: Iterable[str] | None = None) -> RootFS:
    fs = RootFS()
    _base_dirs(fs)
    _busybox_tree(fs, busybox_applets() if applets is None else applets)
    fs.file("/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    fs.file("/etc/group", b"root:x:0:\n")
    fs.dir(CONTAINERD_ROOT, 0o711)
    fs.dir("/run/k3s", 0o755)
    fs.file(CONTAINERD_CONFIG, CONTAINERD_TOML)
    fs.file(ENTRYPOINT, ENTRYPOINT_SH, 0o755)
    _binaries_with_libs(fs, CLUSTER_BINARIES)
    return fs


def cluster_image_key(fs: RootFS) -> str:
    return sha256_hex(f"{BUILDER_VERSION}:cluster:{fs.digest_inputs()}".encode())


def cluster_changes(key: str) -> list[str]:
    """Dockerfile instructions applied by ``docker import``."""
    return [
        f"ENV PATH={PATH_ENV}",
        f"ENV CONTAINERD_ADDRESS={CONTAINERD_SOCK}",
        f'LABEL {HASH_LABEL}="{key}"',
        f'LABEL {ROLE_LABEL}="cluster"',
        f'CMD ["{ENTRYPOINT}"]',
    ]


def write_rootfs_tar(fs: RootFS, dest: Path) -> None:
    tmp = dest.with_suffix(".partial")
    with open(tmp, "wb") as fh:
        fs.write_tar(fh)
    shutil.move(str(tmp), dest)
