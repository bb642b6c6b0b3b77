"""The reference restore archive: 9 skills, about 200 files, about 5 MB.

It is built from a fixed seed, so every run restores the same bytes, in
clawguard's default layout (docs/archive.md): the seed's nine skills (proxmox,
vmware-esxi and seven NemoClaw management skills), its two scripts, credentials,
SOUL.md, exec-approvals.json and openclaw.json.

``ReferenceArchive.layout`` says where each file lands in the sandbox, with
mode and owner: the baseline's per-file script and the tar-stream limit are
generated from it, so all three methods write the same files.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

SKILLS = (
    "proxmox",
    "vmware-esxi",
    "nemoclaw-status",
    "nemoclaw-policy",
    "nemoclaw-logs",
    "nemoclaw-network",
    "nemoclaw-skills",
    "nemoclaw-backup",
    "nemoclaw-config",
)
TARGET_BYTES = 5 * 1024 * 1024
SEED = 6  # fixed: every run generates the same archive

CONFIG_DIR = "/sandbox/.openclaw"
DATA_DIR = "/sandbox/.openclaw-data"
TELEGRAM_DIR = f"{DATA_DIR}/telegram"

# Per skill: (relative path, executable, weight). Weights share the skill's bytes;
# two large assets per skill carry most of the 5 MB, like bundled references do.
_SKILL_FILES: tuple[tuple[str, bool, float], ...] = (
    ("SKILL.md", False, 1.0),
    ("README.md", False, 1.0),
    ("CHANGELOG.md", False, 0.5),
    ("scripts/run.sh", True, 0.8),
    ("scripts/check.sh", True, 0.6),
    ("scripts/collect.sh", True, 0.6),
    ("scripts/report.py", True, 1.2),
    ("scripts/helpers.sh", False, 0.5),
    ("lib/__init__.py", False, 0.1),
    ("lib/client.py", False, 2.0),
    ("lib/models.py", False, 1.5),
    ("lib/format.py", False, 1.0),
    ("references/api.md", False, 3.0),
    ("references/errors.md", False, 1.5),
    ("references/examples.md", False, 2.0),
    ("references/glossary.md", False, 0.8),
    ("templates/summary.md.tmpl", False, 0.4),
    ("templates/alert.txt.tmpl", False, 0.3),
    ("assets/schema.json", False, 1.5),
    ("assets/bundle.bin", False, 28.0),
    ("assets/reference.tar", False, 20.0),
)
_VOCABULARY = (
    "proxmox node vm lxc storage pool backup snapshot cluster quorum esxi host datastore "
    "vcenter sandbox gateway policy telegram agent skill token endpoint request response "
    "status health check restore archive verify owner mode symlink credential network proxy"
)
_WORDS = _VOCABULARY.split()


@dataclass(frozen=True)
class FileSpec:
    source: Path  # host file
    dest: str  # path in the sandbox
    mode: int
    owner: str  # "sandbox" or "root"


@dataclass(frozen=True)
class DirSpec:
    dest: str
    mode: int
    owner: str


@dataclass(frozen=True)
class LinkSpec:
    dest: str
    target: str


@dataclass
class ReferenceArchive:
    root: Path
    files: list[FileSpec] = field(default_factory=list)
    dirs: list[DirSpec] = field(default_factory=list)
    links: list[LinkSpec] = field(default_factory=list)
    chown_recursive: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(f.source.stat().st_size for f in self.files)

    def describe(self) -> dict[str, object]:
        return {
            "path": str(self.root),
            "skills": len(SKILLS),
            "files": len(self.files),
            "bytes": self.total_bytes,
            "directories": len(self.dirs),
            "symlinks": len(self.links),
        }

    def tar_stream(self, uid: int) -> bytes:
        """The archive's files, directories and links at their sandbox paths, as one tar.

        What the one-tar-stream limit sends: the same bytes, modes and owners.
        """
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:

            def ids(owner: str) -> int:
                return uid if owner == "sandbox" else 0

            for d in self.dirs:
                info = tarfile.TarInfo(d.dest.lstrip("/"))
                info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, d.mode, ids(d.owner), ids(d.owner)
                tar.addfile(info)
            for f in self.files:
                data = f.source.read_bytes()
                info = tarfile.TarInfo(f.dest.lstrip("/"))
                info.size, info.mode, info.uid, info.gid = len(data), f.mode, ids(f.owner), ids(f.owner)
                tar.addfile(info, io.BytesIO(data))
            for link in self.links:
                info = tarfile.TarInfo(link.dest.lstrip("/"))
                info.type, info.linkname = tarfile.SYMTYPE, link.target
                tar.addfile(info)
        return buf.getvalue()


def _text(rng: random.Random, size: int, comment: str) -> bytes:
    lines = [comment]
    total = len(comment) + 1
    while total < size:
        line = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 14)))
        lines.append(line)
        total += len(line) + 1
    return ("\n".join(lines) + "\n").encode()[:size]


def _content(rng: random.Random, rel: str, size: int) -> bytes:
    if rel.endswith((".bin", ".tar")):
        return rng.randbytes(size)
    if rel.endswith(".json"):
        body = {"type": "object", "properties": {w: {"type": "string"} for w in rng.sample(_WORDS, 12)}}
        return json.dumps(body, indent=2).encode().ljust(size, b" ")  # trailing blanks: still valid JSON
    if rel.endswith(".sh"):
        return _text(rng, size, "#!/bin/sh\n# " + rel)
    if rel.endswith(".py"):
        return _text(rng, size, "#!/usr/bin/env python3\n# " + rel)
    return _text(rng, size, "# " + rel)


def build(dest: Path, *, target_bytes: int = TARGET_BYTES) -> ReferenceArchive:
    """Write the reference archive into ``dest`` (replaced if it exists)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    rng = random.Random(SEED)
    archive = ReferenceArchive(dest)

    def write(rel: str, data: bytes, mode: int) -> Path:
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chmod(path, mode)
        return path

    # exec-approvals.json: a real file in the data dir, linked from the config dir.
    approvals = {
        "version": 1,
        "defaults": {"security": "full", "ask": "off"},
        "agents": {"*": {"allowlist": [{"pattern": "bash /sandbox/.openclaw/proxmox.sh *"}]}},
    }
    src = write("exec-approvals.json", json.dumps(approvals, indent=2).encode() + b"\n", 0o644)
    archive.files.append(FileSpec(src, f"{DATA_DIR}/exec-approvals.json", 0o644, "sandbox"))
    archive.links.append(LinkSpec(f"{CONFIG_DIR}/exec-approvals.json", f"{DATA_DIR}/exec-approvals.json"))
    # The telegram directory, owned by the sandbox user.
    archive.chown_recursive.append(TELEGRAM_DIR)
    # openclaw.json: root, read-only.
    config = {"gateway": {"port": 18789, "mode": "local"}, "channels": {"telegram": {"enabled": True}}}
    src = write("openclaw.json", json.dumps(config, indent=2).encode() + b"\n", 0o644)
    archive.files.append(FileSpec(src, f"{CONFIG_DIR}/openclaw.json", 0o444, "root"))
    # credentials/: 0600 files in a 0700 directory.
    archive.dirs.append(DirSpec(f"{DATA_DIR}/credentials", 0o700, "sandbox"))
    for name in ("proxmox.env", "esxi.env"):
        token = rng.randbytes(16).hex()
        src = write(f"credentials/{name}", f"API_USER=bench@pve\nAPI_TOKEN={token}\n".encode(), 0o600)
        archive.files.append(FileSpec(src, f"{DATA_DIR}/credentials/{name}", 0o600, "sandbox"))
    # scripts/: 0755 in the data dir, linked from the config dir.
    for name in ("proxmox.sh", "esxi-soap.py"):
        src = write(f"scripts/{name}", _content(rng, name, 6000), 0o755)
        archive.files.append(FileSpec(src, f"{DATA_DIR}/{name}", 0o755, "sandbox"))
        archive.links.append(LinkSpec(f"{CONFIG_DIR}/{name}", f"{DATA_DIR}/{name}"))
    # SOUL.md in the workspace.
    src = write("SOUL.md", _content(rng, "SOUL.md", 8000), 0o644)
    archive.files.append(FileSpec(src, f"{DATA_DIR}/workspace/SOUL.md", 0o644, "sandbox"))
    # skills/: the bulk of the bytes.
    fixed = sum(f.source.stat().st_size for f in archive.files)
    per_skill = (target_bytes - fixed) / len(SKILLS)
    weight = sum(w for _, _, w in _SKILL_FILES)
    for skill in SKILLS:
        base = f"{DATA_DIR}/skills/{skill}"
        archive.dirs.append(DirSpec(base, 0o755, "sandbox"))
        made: set[str] = set()
        for rel, executable, share in _SKILL_FILES:
            size = max(64, int(per_skill * share / weight * rng.uniform(0.9, 1.1)))
            mode = 0o755 if executable else 0o644
            src = write(f"skills/{skill}/{rel}", _content(rng, rel, size), mode)
            sub = os.path.dirname(rel)
            if sub and sub not in made:
                made.add(sub)
                archive.dirs.append(DirSpec(f"{base}/{sub}", 0o755, "sandbox"))
            archive.files.append(FileSpec(src, f"{base}/{rel}", mode, "sandbox"))
    return archive
