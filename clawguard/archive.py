"""Host-side checks on the restore archive. Nothing here touches a sandbox."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import ArchiveError

_BAD_NAME = re.compile(r"[\x00-\x1f\x7f\udc80-\udcff]")


@dataclass(frozen=True)
class TreeItem:
    rel: str  # relative to the tree's root, "" for the root itself
    kind: str  # "file", "dir" or "symlink"
    path: Path
    mode: int
    link: str | None = None


def shown(name: str) -> str:
    """A file name quoted for a message: undecodable bytes as \\xNN, control characters
    escaped, so a name can neither garble the message nor drive the user's terminal."""
    out = []
    for char in name:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (os.fsdecode's surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or code == 0x7F:
            out.append(repr(char)[1:-1])
        else:
            out.append(char)
    return "'" + "".join(out) + "'"


def check_name(archive: Path, rel: str, key: str | None = None) -> None:
    if _BAD_NAME.search(rel):
        raise ArchiveError(f"{shown(rel)}: names must be UTF-8 without control characters", file=archive, key=key)


def _inside(archive: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(archive.resolve())
    except ValueError:
        return False
    return True


def check_inside(archive: Path, rel: str, key: str | None = None) -> None:
    """``rel`` must resolve inside the archive: a symlink out would copy any host file."""
    if not _inside(archive, archive / rel):
        raise ArchiveError(f"{rel}: is a symlink pointing outside the archive", file=archive, key=key)


def source_file(archive: Path, rel: str, key: str | None = None) -> Path:
    """The archive file at ``rel``: it must exist, be a regular file and stay inside."""
    check_name(archive, rel, key)
    path = archive / rel
    if not path.exists() and not path.is_symlink():
        raise ArchiveError(f"{rel}: no such file in the archive", file=archive, key=key)
    check_inside(archive, rel, key)
    if not path.is_file():
        raise ArchiveError(f"{rel}: expected a regular file", file=archive, key=key)
    if not os.access(path, os.R_OK):
        raise ArchiveError(f"{rel}: not readable", file=archive, key=key)
    return path


def walk_tree(archive: Path, rel: str, key: str | None = None) -> list[TreeItem]:
    """Everything under the archive directory ``rel``, sorted, parents first.

    Symlinks inside the tree are kept as symlinks, but only when they are relative
    and stay inside the tree: the sandbox must never get a link into the host's
    idea of the filesystem.
    """
    check_name(archive, rel, key)
    root = archive / rel
    if root.is_symlink():
        check_inside(archive, rel, key)
        raise ArchiveError(
            f"{rel}: is a symlink; a tree must be a real directory in the archive", file=archive, key=key
        )
    if not root.is_dir():
        raise ArchiveError(f"{rel}: expected a directory", file=archive, key=key)
    if not _inside(archive, root):
        raise ArchiveError(f"{rel}: resolves outside the archive", file=archive, key=key)
    items = [TreeItem("", "dir", root, stat.S_IMODE(root.stat().st_mode))]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(dirnames) + sorted(filenames):
            path = base / name
            inner = path.relative_to(root).as_posix()
            check_name(archive, f"{rel}/{inner}", key)
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                link = os.readlink(path)
                target = (path.parent / link).resolve()
                if os.path.isabs(link) or not _inside(root, target):
                    raise ArchiveError(
                        f"{rel}/{inner}: symlink to {link!r} points outside {rel}/", file=archive, key=key
                    )
                items.append(TreeItem(inner, "symlink", path, 0o777, link))
                if name in dirnames:
                    dirnames.remove(name)  # os.walk does not follow it anyway
            elif stat.S_ISDIR(info.st_mode):
                items.append(TreeItem(inner, "dir", path, stat.S_IMODE(info.st_mode)))
            elif stat.S_ISREG(info.st_mode):
                items.append(TreeItem(inner, "file", path, stat.S_IMODE(info.st_mode)))
            else:
                raise ArchiveError(f"{rel}/{inner}: not a regular file, directory or symlink", file=archive, key=key)
    return items
