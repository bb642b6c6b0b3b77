"""Desired and observed state of single paths in a sandbox, and the difference.

Steps describe what they want as ``Entry`` objects; targets report what is there as
``Observed`` objects. Comparing them is pure and lives here so it can be tested
without any sandbox.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

EntryKind = Literal["file", "dir", "symlink", "absent"]
# Whether two contents of a file mean the same to the agent (desired, found): for files
# the agent rewrites in its own format (openclaw.json, exec-approvals.json).
Equivalence = Callable[[bytes, bytes], bool]
OwnerRef = str | int  # "sandbox", "root", "user:group", or a uid


@dataclass(frozen=True)
class Entry:
    """One path as a step wants it."""

    path: str
    kind: EntryKind
    mode: int | None = None
    owner: OwnerRef | None = None
    source: Path | None = None  # host file with the content
    content: bytes | None = None  # generated content, when there is no source
    link: str | None = None  # symlink target
    recursive_owner: bool = False  # every descendant must have ``owner`` too (chown -R)
    exact: bool = False  # a directory whose undeclared descendants are removed
    if_present: bool = False  # only kept in shape if it already exists (e.g. .config-hash)
    equivalent: Equivalence | None = None  # content that differs but means the same is not drift
    secret: bool | None = None  # None: a file nobody but its owner may read (mode ..00) is one
    why: str = ""  # for an "absent" entry: why it must not exist
    # Provenance, attached once by the step: the parameters that gave ``path`` and ``link``
    # ("dest", "links[1]"), so that an error names their key and line. None: the layout's.
    param: str | None = field(default=None, compare=False)
    link_param: str | None = field(default=None, compare=False)

    @property
    def private(self) -> bool:
        """A credential: its content must never reach a log line, nor be readable on the host."""
        if self.secret is not None:
            return self.secret
        return self.kind == "file" and self.mode is not None and not self.mode & 0o077

    @property
    def recursive(self) -> bool:
        return self.recursive_owner or self.exact

    def data(self) -> bytes:
        if self.content is not None:
            return self.content
        assert self.source is not None, f"{self.path}: a file entry needs content or a source"
        data = self.source.read_bytes()
        # The plan fixed the content when it was validated; an archive edited since
        # then is applied by the next plan (live re-sync), never half-validated.
        if "sha256" in self.__dict__ and hashlib.sha256(data).hexdigest() != self.sha256:
            raise SourceChanged(f"{self.source} changed after the plan was validated; it is applied once re-validated")
        return data

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data()).hexdigest()


class SourceChanged(Exception):
    """An archive file no longer has the content its plan validated."""


@dataclass(frozen=True)
class Observed:
    """One path as found inside the sandbox (from lstat: links are not followed)."""

    path: str
    kind: Literal["file", "dir", "symlink", "other"]
    mode: int
    uid: int
    gid: int
    size: int = 0
    sha256: str | None = None
    link: str | None = None


@dataclass
class Inspection:
    """What one inspect pass found."""

    found: dict[str, Observed] = field(default_factory=dict)
    # Paths whose nearest existing ancestor resolves somewhere else: writing there
    # would follow a symlink the plan did not declare.
    unsafe: dict[str, str] = field(default_factory=dict)
    # Contents read for entries with an ``equivalent``, where the hash alone said "differs".
    contents: dict[str, bytes] = field(default_factory=dict)
    # The directory that holds each path, or its nearest existing ancestor, when it is reached
    # without a symlink: who owns it and who may write in it decide who writes the path.
    parents: dict[str, Observed] = field(default_factory=dict)

    def descendants(self, root: str) -> Iterable[Observed]:
        prefix = root.rstrip("/") + "/"
        return (obs for path, obs in self.found.items() if path.startswith(prefix))


@dataclass(frozen=True)
class Ids:
    uid: int
    gid: int


@dataclass
class Drift:
    """What is wrong with one entry, and what applying it needs."""

    entry: Entry
    problems: list[str]
    write: bool = False  # the content/link/dir must be (re)written
    unsafe: bool = False  # a parent is an undeclared symlink: never write here
    remove: list[str] = field(default_factory=list)  # paths to delete first


def shown(path: str) -> str:
    """A path for a message or a report line: as it is, but with control characters escaped and
    bytes that are not UTF-8 (os.fsdecode's surrogates) as \\xNN. The agent names its own files:
    a name must neither forge a line of output nor drive the terminal, nor make printing fail."""
    if path.isprintable():
        return path
    out = []
    for char in path:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif not char.isprintable():
            out.append(repr(char)[1:-1])
        else:
            out.append(char)
    return "".join(out)


def compare(
    entry: Entry,
    inspection: Inspection,
    ids: Ids | None,
    declared: frozenset[str],
) -> Drift | None:
    """Return the drift of ``entry``, or None when it is already as wanted."""
    problems: list[str] = []
    drift = Drift(entry, problems)
    if entry.path in inspection.unsafe:
        problems.append(f"a parent resolves to {shown(inspection.unsafe[entry.path])} (undeclared symlink)")
        drift.unsafe = True
        return drift
    seen = inspection.found.get(entry.path)
    if entry.kind == "absent":
        if seen is None:
            return None
        problems.append(f"must not exist: {entry.why}" if entry.why else "must not exist")
        drift.remove.append(entry.path)
        return drift
    if seen is None:
        if entry.if_present:
            return None
        problems.append("missing")
        drift.write = True
        return drift
    if seen.kind != entry.kind:
        problems.append(f"is a {seen.kind}, want a {entry.kind}")
        drift.write = True
        drift.remove.append(entry.path)
        return drift
    if entry.kind == "file" and seen.sha256 != entry.sha256 and not _equivalent(entry, inspection):
        problems.append("content differs")
        drift.write = True
        drift.remove.append(entry.path)
    if entry.kind == "symlink" and seen.link != entry.link:
        problems.append(f"points to {shown(seen.link or '')}, want {shown(entry.link or '')}")
        drift.write = True
        drift.remove.append(entry.path)
    if entry.mode is not None and entry.kind != "symlink" and seen.mode != entry.mode:
        problems.append(f"mode {seen.mode:04o}, want {entry.mode:04o}")
    if ids is not None and (seen.uid, seen.gid) != (ids.uid, ids.gid):
        problems.append(f"owner {seen.uid}:{seen.gid}, want {ids.uid}:{ids.gid}")
    if entry.kind == "dir":
        below = list(inspection.descendants(entry.path))
        if entry.exact:
            extra = sorted(o.path for o in below if o.path not in declared)
            # Removing a directory removes what is inside it: list only the tops.
            tops = [p for p in extra if not any(p.startswith(q + "/") for q in extra)]
            if tops:
                problems.append("unexpected: " + ", ".join(map(shown, tops)))
                drift.remove.extend(tops)
        if entry.recursive_owner and ids is not None:
            wrong = [o.path for o in below if (o.uid, o.gid) != (ids.uid, ids.gid)]
            if wrong:
                problems.append(f"owner wrong on {len(wrong)} path(s) below, e.g. {shown(wrong[0])}")
    return drift if problems else None


def _equivalent(entry: Entry, inspection: Inspection) -> bool:
    found = inspection.contents.get(entry.path)
    return entry.equivalent is not None and found is not None and entry.equivalent(entry.data(), found)


def needs_content(entry: Entry, inspection: Inspection) -> bool:
    """Whether ``entry``'s drift depends on the content found, not only its hash."""
    seen = inspection.found.get(entry.path)
    return (
        entry.equivalent is not None
        and seen is not None
        and seen.kind == "file"
        and seen.sha256 != entry.sha256
        and entry.path not in inspection.contents
    )


def declared_paths(entries: Iterable[Entry]) -> frozenset[str]:
    return frozenset(e.path for e in entries)
