"""The default plan: the archive's layout is the plan (docs/archive.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .archive import check_inside, check_name
from .config import SandboxConfig
from .errors import ArchiveError
from .layout import Layout
from .steps import REGISTRY, Origin, Step
from .steps.base import join

KNOWN = ("exec-approvals.json", "openclaw.json", "SOUL.md", "credentials/", "scripts/", "skills/")


def derive_steps(sandbox: SandboxConfig, layout: Layout) -> list[Step]:
    """Steps in restore order: exec-approvals and the telegram directory's owner come
    first, because a gateway that starts without them is broken until restarted."""
    archive = sandbox.archive
    names = set(os.listdir(archive))
    for name in sorted(names):
        if not name.startswith("."):
            # Before a name reaches a message or a step label: it must be printable.
            check_name(archive, name)
    unknown = sorted(
        n for n in names if not n.startswith(".") and not n.startswith("README") and _top(archive, n) not in KNOWN
    )
    if unknown:
        raise ArchiveError(
            f"unexpected {', '.join(unknown)}: the archive layout knows {', '.join(KNOWN)} "
            "(use an explicit plan: for anything else)",
            file=archive,
        )

    for name in sorted(names):
        if _top(archive, name) in KNOWN:
            # skills -> /etc would otherwise read as "skills/passwd is not a directory".
            check_inside(archive, name)

    steps: list[Step] = []

    def add(kind: str, origin: str, **values: Any) -> None:
        cls = REGISTRY[kind]
        params = {name: spec.default for name, spec in cls.params.items()}
        params.update(values)
        steps.append(cls(params, Origin(f"archive: {origin}", str(archive))))

    if "exec-approvals.json" in names:
        add("exec_approvals", "exec-approvals.json")
    add("chown", "telegram directory", name="telegram", path=layout.telegram_dir)
    if "openclaw.json" in names:
        add("config", "openclaw.json")
    if "credentials" in names:
        # Split: the agent's own. Flat: NemoClaw runs the gateway as a user of the sandbox
        # group and resets this tree to 2770/660 at every start (#4538): the same here.
        file_mode, dir_mode = (0o600, 0o700) if layout.style == "split" else (0o660, 0o2770)
        add(
            "tree",
            "credentials/",
            name="credentials",
            source="credentials",
            dest=join(layout.data_dir, "credentials"),
            file_mode=file_mode,
            dir_mode=dir_mode,
            exact=False,
            secret=True,
        )
    for script in _children(archive, "scripts", want_dirs=False):
        links = [join(layout.config_dir, script)] if layout.script_links else []
        add(
            "file",
            f"scripts/{script}",
            source=f"scripts/{script}",
            dest=join(layout.data_dir, script),
            mode=0o755,
            links=links,
        )
    for skill in _children(archive, "skills", want_dirs=True):
        add("tree", f"skills/{skill}", source=f"skills/{skill}", dest=join(layout.data_dir, "skills", skill))
    if "SOUL.md" in names:
        add("soul", "SOUL.md")
    return steps


def _top(archive: Path, name: str) -> str:
    return name + "/" if os.path.isdir(os.path.join(archive, name)) else name


def _children(archive: Path, folder: str, *, want_dirs: bool) -> list[str]:
    base = os.path.join(archive, folder)
    if not os.path.isdir(base):
        return []
    result = []
    for name in sorted(os.listdir(base)):
        if name.startswith("."):
            continue
        path = os.path.join(base, name)
        check_name(archive, f"{folder}/{name}")
        check_inside(archive, f"{folder}/{name}")
        if want_dirs and os.path.islink(path):
            raise ArchiveError(
                f"{folder}/{name}: is a symlink; a skill must be a real directory in the archive", file=archive
            )
        if os.path.isdir(path) != want_dirs:
            what = "a directory per skill" if want_dirs else "plain files (no directories)"
            raise ArchiveError(f"{folder}/{name}: {folder}/ must hold {what}", file=archive)
        result.append(name)
    return result
