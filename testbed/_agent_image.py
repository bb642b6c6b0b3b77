"""Sandbox images for the *real* OpenClaw: a Debian userland with NemoClaw's layout.

NemoClaw's sandbox image is Debian (``node:22-slim``) with OpenClaw installed by
``npm install -g``. The test bed builds the same from three parts:

Base layer (shared by every real-agent sandbox)
    ``debootstrap --variant=minbase bookworm`` plus :data:`AGENT_PACKAGES` (bash,
    procps, curl, ca-certificates, openssh-server, tini, socat; GNU coreutils,
    dash as ``/bin/sh``), cached in ``/var/cache/clawguard-testbed/agent-bookworm-rootfs``
    (see :mod:`testbed._debian`), packed once into one uncompressed layer. The host
    keys openssh-server's postinst made, apt's lists and .debs, and /dev, /proc,
    /sys, /run, /tmp contents are left out. About 150 MB.
Top layer (per sandbox uid and layout; a few KB)
    ``/etc/passwd``, ``group``, ``shadow``, ``gshadow`` with the ``sandbox`` user
    (uid = gid = the sandbox uid, home ``/sandbox``, shell ``/bin/bash``, empty
    password: OpenShell's SSH accepts auth "none"), ``sshd_config``,
    ``/opt/openshell/bin/sandbox-init`` and ``ssh-relay`` (see
    :mod:`testbed.standins`), and ``/sandbox`` in NemoClaw's layout of the era
    (:func:`sandbox_tree`): ``"split"`` or ``"flat"``.
The agent (per OpenClaw version)
    not in the image: the cached install of :mod:`testbed._agents` is bind-mounted
    read-only at ``/usr/local``, so the sandbox sees root-owned, read-only
    ``/usr/local/bin/node``, ``/usr/local/bin/openclaw`` and
    ``/usr/local/lib/node_modules/openclaw`` at NemoClaw's paths.

Why a bind mount and not image layers: the four installs are 0.5-1.3 GB each.
As layers they would be packed, copied into the cluster container, imported
and unpacked by containerd, and again by Docker, for every version: minutes and
gigabytes per CI run. A bind mount costs nothing and every sandbox of a version
shares one copy. The difference a restore could notice: ``/usr/local`` is a
separate read-only mount (even root cannot write it), and it is not in the pod's
overlay rootfs as seen from the cluster container
(``/run/k3s/containerd/.../rootfs/usr/local`` is empty there).
Generation 1 pods get it with ``ctr run --mount
type=bind,src=<install>/usr-local,dst=/usr/local,options=rbind:ro``; the cluster
container bind-mounts the host's ``/var/cache/clawguard-testbed/agents``
read-only at the same path. Generation 2 containers get ``-v
<install>/usr-local:/usr/local:ro``.

Images: one archive format for both containerd and Docker: an OCI image layout
(``oci-layout``, ``index.json``, ``blobs/sha256/...``; what ``ctr images import``
reads) that also carries Docker's ``manifest.json`` (what ``docker load``
reads). The base image ``clawguard-testbed/agent-base:<key>`` is imported once
(the archive lives in the bind-mounted cache, so the cluster imports it in
place). Each ``clawguard-testbed/agent:<layout>-uid-<uid>`` archive then holds
only its own config and top layer, and names the base layer by digest: both
containerd (content store) and Docker (``docker load`` skips layers it has)
already have it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _debian, standins
from ._agents import AGENT_CACHE, layout_for
from ._images import (
    FIXED_MTIME,
    HASH_LABEL,
    OPENCLAW_DATA_DIRS,
    PATH_ENV,
    ROLE_LABEL,
    SSH_RELAY,
    SSHD_CONFIG,
    ImageBuildError,
    RootFS,
    pod_command,
    sha256_hex,
)

#: Bump when the images change, to rebuild the base archive and every agent image.
AGENT_IMAGE_BUILDER_VERSION = "1"

AGENT_PACKAGES = ("bash", "procps", "curl", "ca-certificates", "openssh-server", "tini", "socat")
ROOTFS_DIR = _debian.DEFAULT_CACHE / "agent-bookworm-rootfs"
IMAGES_DIR = AGENT_CACHE / "images"
BASE_REPO = "clawguard-testbed/agent-base"
AGENT_REPO = "clawguard-testbed/agent"
AGENT_ROLE = "agent-sandbox"

#: Where the real-agent image keeps the test bed's own supervisor pieces.
AGENT_INIT = "/opt/openshell/bin/sandbox-init"
#: The Telegram Bot API stand-in (``node TELEGRAM PORT LOG [UPDATE_ID...]``), outside /usr/local (the agent's mount).
TELEGRAM = "/usr/lib/clawguard-testbed/telegram.js"
AGENT_TINI = "/usr/bin/tini"
#: Where the cached OpenClaw install is bind-mounted (read-only).
AGENT_MOUNT = "/usr/local"

LAYOUTS = ("split", "flat")
#: ~/.openclaw subdirectories of NemoClaw's flat layout (PR #2227), each sandbox:sandbox 2770.
FLAT_DIRS = (
    "agents",
    "extensions",
    "workspace",
    "skills",
    "hooks",
    "identity",
    "devices",
    "canvas",
    "cron",
    "credentials",
    "telegram",
    "logs",
)
#: A gateway config every tested OpenClaw version accepts (`openclaw config validate`).
REAL_OPENCLAW_JSON = (
    json.dumps({"gateway": {"mode": "local", "port": 18789, "bind": "loopback", "auth": {"mode": "none"}}}, indent=2)
    + "\n"
).encode()

_BASE_EXCLUDES = (
    "./dev/*",
    "./proc/*",
    "./sys/*",
    "./run/*",
    "./tmp/*",
    "./var/tmp/*",
    "./var/cache/apt/*.bin",
    "./var/cache/apt/archives/*.deb",
    "./var/lib/apt/lists/*",
    "./etc/ssh/ssh_host_*",
)
_LAYER_MEDIA = "application/vnd.oci.image.layer.v1.tar"


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    return layout


def agent_ref(uid: int, layout: str) -> str:
    return f"{AGENT_REPO}:{layout}-uid-{uid}"


# --------------------------------------------------------------------------
# The /sandbox tree of each era
# --------------------------------------------------------------------------


def sandbox_tree(fs: RootFS, uid: int, layout: str, openclaw_json: bytes = REAL_OPENCLAW_JSON) -> None:
    """Add NemoClaw's ``/sandbox`` for ``layout`` to ``fs`` (sandbox user ``uid``:``uid``).

    ``split`` (NemoClaw March 2026, PRs #555/#588): ``/sandbox/.openclaw`` is
    root-owned, mode 1777, holding ``openclaw.json`` (root, 0444) and root-owned
    symlinks ``agents``, ``extensions``, ``workspace``, ``skills``, ``hooks``,
    ``identity``, ``devices``, ``canvas``, ``cron`` -> ``/sandbox/.openclaw-data/<same>``
    (directories owned by sandbox), plus the seed's bug: a root-owned
    ``.openclaw-data/telegram`` behind the symlink ``.openclaw/telegram``.

    ``flat`` (NemoClaw PR #2227, from OpenClaw 2026.4.24): one writable
    ``/sandbox/.openclaw``, sandbox:sandbox 2770 (setgid), with :data:`FLAT_DIRS`
    (sandbox 2770) and ``openclaw.json`` (sandbox, 0660); no ``.openclaw-data``.
    """
    check_layout(layout)
    fs.dir("/sandbox", 0o755, uid, uid)
    if layout == "split":
        fs.dir("/sandbox/.openclaw", 0o1777, 0, 0)
        fs.file("/sandbox/.openclaw/openclaw.json", openclaw_json, 0o444, 0, 0)
        fs.dir("/sandbox/.openclaw-data", 0o755, uid, uid)
        for sub in OPENCLAW_DATA_DIRS:
            fs.dir(f"/sandbox/.openclaw-data/{sub}", 0o755, uid, uid)
            fs.symlink(f"/sandbox/.openclaw/{sub}", f"/sandbox/.openclaw-data/{sub}")
        fs.dir("/sandbox/.openclaw-data/telegram", 0o755, 0, 0)
        fs.symlink("/sandbox/.openclaw/telegram", "/sandbox/.openclaw-data/telegram")
    else:
        fs.dir("/sandbox/.openclaw", 0o2770, uid, uid)
        fs.file("/sandbox/.openclaw/openclaw.json", openclaw_json, 0o660, uid, uid)
        for sub in FLAT_DIRS:
            fs.dir(f"/sandbox/.openclaw/{sub}", 0o2770, uid, uid)


# --------------------------------------------------------------------------
# Base layer
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class BaseImage:
    ref: str
    key: str
    archive: Path  # OCI layout + docker manifest.json, with the layer
    diff_id: str  # "sha256:..." of the uncompressed layer (= its digest)
    size: int
    rootfs: Path


def base_key() -> str:
    data = json.dumps(
        [AGENT_IMAGE_BUILDER_VERSION, _debian.rootfs_key(AGENT_PACKAGES), list(_BASE_EXCLUDES)], sort_keys=True
    )
    return sha256_hex(data.encode())[:16]


def ensure_base(say: Callable[[str], None] = lambda _msg: None) -> BaseImage:
    """The base image archive (debootstrap and pack unless cached)."""
    rootfs = _debian.ensure_rootfs(ROOTFS_DIR, AGENT_PACKAGES, say=say, error=ImageBuildError)
    key = base_key()
    ref = f"{BASE_REPO}:{key}"
    archive = IMAGES_DIR / f"agent-base-{key}.tar"
    meta = archive.with_suffix(".json")
    if archive.is_file() and meta.is_file():
        info = json.loads(meta.read_text())
        return BaseImage(ref, key, archive, str(info["diff_id"]), int(info["size"]), rootfs)
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    tmp = IMAGES_DIR / f".agent-base-{key}.{os.getpid()}"
    layer = tmp.with_suffix(".layer.tar")
    try:
        argv = ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--sort=name"]
        argv += [f"--exclude={pattern}" for pattern in _BASE_EXCLUDES]
        argv += ["-C", str(rootfs), "-cf", str(layer), "."]
        subprocess.run(argv, check=True)
        digest = hashlib.sha256()
        with layer.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        diff_id = "sha256:" + digest.hexdigest()
        size = layer.stat().st_size
        config = _config(ref, [diff_id], key, cmd=pod_command(AGENT_INIT, False, tini=AGENT_TINI))
        write_archive(tmp, ref, config, [_Layer(diff_id, size, path=layer)])
        tmp.rename(archive)
        meta.write_text(json.dumps({"diff_id": diff_id, "size": size, "ref": ref}))
        remove_stale_archives(keep=archive)
    finally:
        for leftover in (tmp, layer):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
    say(f"packed the agent base layer ({size / 1e6:.0f} MB) in {time.monotonic() - started:.1f}s")
    return BaseImage(ref, key, archive, diff_id, size, rootfs)


# --------------------------------------------------------------------------
# Top layer and the per-uid, per-layout image
# --------------------------------------------------------------------------


def _users(rootfs: Path, uid: int) -> dict[str, tuple[bytes, int, int]]:
    """passwd, group, shadow, gshadow of the base plus the sandbox user: path -> (data, mode, gid)."""
    passwd = (rootfs / "etc/passwd").read_text()
    group = (rootfs / "etc/group").read_text()
    for line in passwd.splitlines():
        fields = line.split(":")
        if len(fields) > 3 and (fields[0] == "sandbox" or fields[2] == str(uid)):
            raise ValueError(f"uid {uid} is taken in the Debian base image ({fields[0]}); choose another")
    for line in group.splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[2] == str(uid):
            raise ValueError(f"gid {uid} is taken in the Debian base image ({fields[0]}); choose another uid")
    shadow_gid = next((int(f[2]) for f in (ln.split(":") for ln in group.splitlines()) if f[0] == "shadow"), 0)
    out: dict[str, tuple[bytes, int, int]] = {
        # useradd -r -g sandbox -d /sandbox -s /bin/bash sandbox (NemoClaw's Dockerfile)
        "/etc/passwd": ((passwd + f"sandbox:x:{uid}:{uid}::/sandbox:/bin/bash\n").encode(), 0o644, 0),
        "/etc/group": ((group + f"sandbox:x:{uid}:\n").encode(), 0o644, 0),
        # Empty password: sshd's "none" method logs the user in (OpenShell accepts auth none).
        "/etc/shadow": (((rootfs / "etc/shadow").read_text() + "sandbox::19700:0:99999:7:::\n").encode(), 0o640, 0),
    }
    out["/etc/shadow"] = (out["/etc/shadow"][0], 0o640, shadow_gid)
    gshadow = rootfs / "etc/gshadow"
    if gshadow.is_file():
        out["/etc/gshadow"] = ((gshadow.read_text() + "sandbox:!::\n").encode(), 0o640, shadow_gid)
    return out


def agent_top(base: BaseImage, uid: int, layout: str) -> RootFS:
    """The top layer of the real-agent image for sandbox user ``uid`` and ``layout``."""
    if not 1 <= uid <= 65533:
        raise ValueError(f"sandbox uid must be in 1..65533, got {uid}")
    fs = RootFS()
    for path, (data, mode, gid) in _users(base.rootfs, uid).items():
        fs.file(path, data, mode, 0, gid)
    fs.file(SSHD_CONFIG, standins.read(standins.SSHD_CONFIG))
    fs.file(AGENT_INIT, standins.read(standins.SANDBOX_INIT), 0o755)
    fs.file(SSH_RELAY, standins.read(standins.SSH_RELAY), 0o755)
    fs.file(TELEGRAM, standins.read(standins.TELEGRAM), 0o644)
    fs.dir("/var/lib/openshell", 0o755)
    sandbox_tree(fs, uid, layout)
    return fs


@dataclass(frozen=True)
class AgentImage:
    ref: str
    key: str
    base: BaseImage
    config: dict[str, Any]
    top: bytes  # uncompressed top layer

    def archive_bytes(self) -> bytes:
        """The image archive without the base layer's blob (import :class:`BaseImage` first)."""
        buf = io.BytesIO()
        diff_id = "sha256:" + sha256_hex(self.top)
        layers = [
            _Layer(self.base.diff_id, self.base.size, omit=True),
            _Layer(diff_id, len(self.top), data=self.top),
        ]
        _write_archive_to(buf, self.ref, self.config, layers)
        return buf.getvalue()


def agent_image(uid: int, layout: str, say: Callable[[str], None] = lambda _msg: None) -> AgentImage:
    """The image for ``uid`` and ``layout`` (building the base if needed)."""
    check_layout(layout)
    base = ensure_base(say)
    try:
        fs = agent_top(base, uid, layout)
    except (ValueError, FileNotFoundError) as exc:
        raise ImageBuildError(str(exc)) from exc
    raw = io.BytesIO()
    fs.write_tar(raw)
    top = raw.getvalue()
    ref = agent_ref(uid, layout)
    key = sha256_hex(f"{base.key}:{fs.digest_inputs()}:{sha256_hex(top)}".encode())[:32]
    diff_ids = [base.diff_id, "sha256:" + sha256_hex(top)]
    config = _config(ref, diff_ids, key, cmd=pod_command(AGENT_INIT, False, tini=AGENT_TINI))
    return AgentImage(ref, key, base, config, top)


def resolve_layout(agent: str, layout: str | None) -> str:
    """``layout`` if given (checked), else the era's layout for ``agent``."""
    return check_layout(layout) if layout is not None else layout_for(agent)


# --------------------------------------------------------------------------
# Archive writer (OCI layout + docker manifest.json)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layer:
    diff_id: str  # = digest: layers are uncompressed
    size: int
    path: Path | None = None  # a layer tar, or an archive holding blobs/sha256/<hex>
    data: bytes | None = None
    omit: bool = False  # name it, but leave its blob out (the importer has it)


def _config(ref: str, diff_ids: Sequence[str], key: str, *, cmd: list[str]) -> dict[str, Any]:
    return {
        "architecture": "amd64",
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": {
            "Env": [f"PATH={PATH_ENV}"],
            "Cmd": cmd,
            "WorkingDir": "/",
            "Labels": {HASH_LABEL: key, ROLE_LABEL: AGENT_ROLE},
        },
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "testbed", "comment": ref} for _ in diff_ids],
    }


def write_archive(dest: Path, ref: str, config: dict[str, Any], layers: Sequence[_Layer]) -> None:
    with dest.open("wb") as fh:
        _write_archive_to(fh, ref, config, layers)


def _write_archive_to(fh: Any, ref: str, config: dict[str, Any], layers: Sequence[_Layer]) -> None:
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_digest = "sha256:" + sha256_hex(config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": len(config_bytes),
        },
        "layers": [{"mediaType": _LAYER_MEDIA, "digest": layer.diff_id, "size": layer.size} for layer in layers],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    manifest_digest = "sha256:" + sha256_hex(manifest_bytes)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest_bytes),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": ref,
                    "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1],
                },
            }
        ],
    }

    def blob_name(digest: str) -> str:
        return "blobs/sha256/" + digest.split(":", 1)[1]

    docker_manifest = [
        {"Config": blob_name(config_digest), "RepoTags": [ref], "Layers": [blob_name(x.diff_id) for x in layers]}
    ]
    with tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, FIXED_MTIME
            tar.addfile(info, io.BytesIO(data))

        for dname in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(dname)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, FIXED_MTIME
            tar.addfile(info)
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", json.dumps(index, sort_keys=True).encode())
        add("manifest.json", json.dumps(docker_manifest).encode())
        add(blob_name(config_digest), config_bytes)
        add(blob_name(manifest_digest), manifest_bytes)
        for layer in layers:
            if layer.omit:
                continue
            info = tarfile.TarInfo(blob_name(layer.diff_id))
            info.size, info.mode, info.mtime = layer.size, 0o644, FIXED_MTIME
            if layer.data is not None:
                tar.addfile(info, io.BytesIO(layer.data))
            elif layer.path is not None:
                with layer.path.open("rb") as src:
                    tar.addfile(info, src)
            else:
                raise ImageBuildError(f"layer {layer.diff_id} has no content")


def remove_stale_archives(keep: Path) -> None:
    """Delete the base archives of older builds (``keep`` is the current one)."""
    for old in IMAGES_DIR.glob("agent-base-*"):
        if old.name.split(".")[0] != keep.name.split(".")[0]:
            with contextlib.suppress(OSError):
                old.unlink()
