"""Reading and writing a sandbox's files with nothing but an exec into it.

Any target that can run a command inside the sandbox (with stdin) gets inspection,
batched writes and user lookup from this module.

Who writes. The agent in the sandbox is not trusted, and it owns most of what is
restored: between any check and any write it can rename a directory it owns and put a
symlink to anything in its place. So nothing root does follows a path the agent can change.
``Write`` splits every batch by who may make each change, judged from the read: what lies in
a directory the sandbox user owns is written by the sandbox user, in an exec as its uid (a
swapped path then leads nowhere the agent could not go itself); root writes only in a
directory that root owns and nobody else may write, entered first and checked right there
(``pwd -P`` is the path itself: no symlink was followed; owner and mode of ``.``), acting on
the one name in it; a directory's own owner and mode are changed by entering it the same
way. Anything else is refused, naming the path. The scripts are constants (package
data, clawguard/data/sh, checked by shellcheck): paths travel as separate arguments,
never inside the script text, so nothing the user writes is ever parsed by a shell.
They use only POSIX sh (``cd -P``, ``pwd -P``) plus ``stat -c``, ``sha256sum``,
``find -exec {} +``, ``readlink -n``, ``tar``, ``od``, ``id``, ``mktemp -d``, ``mv``, ``mkdir``,
``rmdir``, ``rm``, ``chown -h`` and ``chmod``, which busybox and GNU coreutils both provide.

Names. Linux allows any byte but "/" and NUL in a name, and the agent writes what it
likes (``memory/notes\\2024.md``, a newline, a tab, bytes that are not UTF-8), so no
reply is ever split on lines or tabs:

* Every reply of the inspector is a stream of NUL-terminated fields. A field is text
  the script prints itself (a tag, a count, a list of indices), a name printed with
  ``printf '%s\\0'``, or the whole output of one ``stat``, ``sha256sum`` or
  ``readlink``, which cannot hold a NUL. No name can hold one either, so nothing in
  a name can be taken for a boundary.
* ``stat`` prints no names at all (``%f %u %g %s``): its lines follow the names of
  the batch, in order, and it must succeed for every one of them.
* ``sha256sum`` prints a name per line, raw (busybox) or escaped behind a leading
  backslash (GNU coreutils); the reader knows the names it asked for and reads each
  line as exactly the next one's (:func:`parse_sha256sum`).
* A path that is not valid UTF-8 cannot travel as an argument: Docker's exec API
  carries argv as JSON strings. :func:`path_arg` sends it as ``%`` and ``printf %b``
  octal escapes, which the scripts decode inside the sandbox; every other path is
  sent as itself (it starts with ``/``, so the two cannot be confused). File
  contents, names and link targets in tar streams are bytes, and need nothing.

A reply that does not parse is a :class:`ProtocolError`; it and a failed command
(:class:`SandboxCommandFailed`) are TargetErrors, which every caller handles.

Cost. A read is one exec whose number of processes does not grow with the number
of paths; on a new pod it is the exec that reads the pod's facts too (``PreRead``), and
it brings the content of the files judged by their meaning (openclaw.json) along.
Paths are sent grouped by parent directory and each distinct parent is resolved once,
with shell builtins only (``[ -d ]``, ``cd -P``, ``$PWD``); a path whose parent is
missing is missing, without a look at it; the directories that hold the paths (or their
nearest existing ancestors) are described by one more ``stat``, for ``Write``. One ``find``
walks every recursive root and gives its names to one ``stat`` and one ``sha256sum`` per
batch (one batch unless ARG_MAX splits it); a path below a recursive root is left to that
walk, not named again, or every file of the tree would be hashed twice. Every other path
is kept in a variable of its own and described 256 at a time, so the cost per path stays
flat (appending each to one argument list would copy the whole list every time). Only a
symlink costs a process of its own (``readlink``), and a path that is not valid UTF-8
one more (decoding it).

Measured on a fresh stand-in pod with the reference archive (196 files, 5.3 MB): with a
few processes per path it cost 0.56 CPU-seconds in the pod to inspect and 0.42 to write
and verify; as above, 0.01 and 0.20. Hashing its trees' files twice cost 0.15 CPU-seconds
per read in busybox, against 0.04. Appending 4000 paths to one argument list cost 7.4
CPU-seconds in busybox sh, against 0.13 for describing them 256 at a time.

Verification is a full second read. It joins the batch's last exec (root's part runs
first, then the sandbox user's; as the sandbox user only when it can read every path back,
else in one more exec as root), and the read-back is the same inspector as the first read:
after tar, chown and chmod are done, every planned path is stat'ed and every file hashed
again by the pod's own tools, so a short write, a name tar mangled, or a file the agent
replaced meanwhile is seen. Nothing is taken on trust from the write, because that would save
little: hashing is cheap (sha256sum reads those 5.3 MB in about 40 ms of CPU, busybox's or
GNU's); what makes a read dear is processes per path, which it does not start.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .entries import Entry, Ids, Inspection, Observed, shown
from .errors import TargetError
from .targets.base import ExecResult, shell_script

# Runs argv inside the sandbox (as root, or as the sandbox user: SandboxFS), with optional stdin.
Exec = Callable[[Sequence[str], bytes | None], ExecResult]

# The scripts are package data, in clawguard/data/sh: each file says its arguments and output.
# describe PATH... (lib-describe.sh): the inspector's records; also the inspector's first argument.
DESCRIBE = shell_script("lib-describe.sh")
# The inspector (inspect.sh): path arguments (inspect_args) in, NUL-terminated records out.
INSPECT_SCRIPT = shell_script("inspect.sh")
# A batch of writes as root or as the sandbox user, then the read-back (apply.sh).
APPLY_SCRIPT = shell_script("apply.sh")
# Paths in, a tar stream of them out (read.sh).
READ_SCRIPT = shell_script("read.sh")
# The sandbox's /etc/passwd and /etc/group (passwd.sh).
PASSWD_SCRIPT = shell_script("passwd.sh")

_KINDS = {0o100000: "file", 0o040000: "dir", 0o120000: "symlink"}


class SandboxCommandFailed(TargetError):
    """A command inside the sandbox failed or gave no usable answer; the message says which,
    with its stderr tail."""


class ProtocolError(SandboxCommandFailed):
    """The sandbox answered with something the scripts never print (a userland unlike busybox
    and GNU coreutils, or a reply cut short)."""


# Bytes of a non-UTF-8 path that path_arg leaves as they are; any other becomes an escape.
_PLAIN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/._-")


def path_arg(path: str) -> str:
    """``path`` as an argument of the scripts: itself when it is valid UTF-8 (any such string
    survives Docker's JSON argv), else ``%`` and ``printf %b`` octal escapes of its bytes."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "%" + "".join(chr(b) if b in _PLAIN else f"\\0{b:03o}" for b in os.fsencode(path))
    return path


_SPEC_RANK = {"P:": 0, "C:": 1, "R:": 2}


def inspect_args(entries: Iterable[Entry], *, contents: bool = False) -> list[str]:
    """The inspector's path arguments, one per path, grouped by parent directory (in the
    order the parents first appear) so that it resolves each parent once. With
    ``contents``, a file whose drift is judged by its content (``Entry.equivalent``) is
    read in the same exec: it is small, and a fresh pod's copy differs from the archive's.

    A plain path below a recursive one is left out: the walk of the recursive one
    describes it (naming it too would hash every file of a tree twice). What the walk does
    not reach, below a symlink or a path that is no directory, is then missing, and the
    write that follows removes that symlink or path before it writes below it."""
    kinds: dict[str, str] = {}
    for entry in entries:  # a path named twice gets the most it was asked for: R, then C, then P
        kind = "R:" if entry.recursive else "C:" if contents and entry.equivalent is not None else "P:"
        kinds[entry.path] = max(kinds.get(entry.path, "P:"), kind, key=_SPEC_RANK.__getitem__)
    walked = {path for path, kind in kinds.items() if kind == "R:"}
    by_parent: dict[str, list[str]] = {}
    for path, kind in kinds.items():
        if kind == "P:" and walked and _below(path, walked):
            continue
        parent = path.rsplit("/", 1)[0] or "/"
        by_parent.setdefault(parent, []).append(kind + path_arg(path))
    return [spec for specs in by_parent.values() for spec in specs]


def _below(path: str, roots: set[str]) -> bool:
    while (path := path.rsplit("/", 1)[0]) and path not in roots:
        pass
    return bool(path)


def parse_inspection(output: bytes) -> Inspection:
    """The inspector's reply as an Inspection. Raises ProtocolError for anything it never prints."""
    result = Inspection()
    if not output:
        return result
    contents: dict[str, bytes] = {}
    fields = output.split(b"\0")
    if fields.pop() != b"":
        raise ProtocolError(f"the inspector's reply is cut short: ...{_shown(output[-80:])}")
    reader = _Fields(fields)
    while not reader.done():
        tag = reader.next()
        if tag == b"U":
            resolved, path = reader.next(), reader.next()
            result.unsafe[os.fsdecode(path)] = os.fsdecode(resolved)
        elif tag == b"B":
            _read_batch(reader, result.found)
        elif tag == b"D":
            _read_batch(reader, result.parents)
        elif tag == b"C":
            name, dump, status = os.fsdecode(reader.next()), reader.next(), reader.next()
            if status == b"0":
                contents[name] = _undump(dump)
        else:
            raise ProtocolError(f"unexpected record from the inspector: {_shown(tag)}")
    for name, data in contents.items():
        seen = result.found.get(name)
        # Read after it was hashed: only the same bytes count (a file the agent rewrote
        # in between stays unread, and so counts as different).
        if seen is not None and seen.sha256 == hashlib.sha256(data).hexdigest():
            result.contents[name] = data
    return result


def _undump(dump: bytes) -> bytes:
    """The bytes of an ``od -An -v -tx1`` dump. Raises ProtocolError for anything else."""
    try:
        return bytes.fromhex(dump.decode("ascii"))
    except ValueError:
        raise ProtocolError(f"od printed something that is not a hex dump: {_shown(dump)}") from None


class _Fields:
    """The NUL-terminated fields of a reply, read in order."""

    def __init__(self, fields: list[bytes]) -> None:
        self._fields = fields
        self._at = 0

    def done(self) -> bool:
        return self._at >= len(self._fields)

    def next(self) -> bytes:
        if self.done():
            raise ProtocolError("the inspector's reply ends in the middle of a record")
        self._at += 1
        return self._fields[self._at - 1]

    def number(self) -> int:
        text = self.next()
        if not text.isdigit():
            raise ProtocolError(f"the inspector sent {_shown(text)} where a number belongs")
        return int(text)


def _read_batch(reader: _Fields, into: dict[str, Observed]) -> None:
    count = reader.number()
    names = [reader.next() for _ in range(count)]
    lines = reader.next().split(b"\n")
    if len(lines) != count + 1 or lines[-1] != b"":
        raise ProtocolError(f"stat described {len(lines) - 1} line(s) for {count} path(s)")
    observed: list[Observed] = []
    for name, line in zip(names, lines, strict=False):
        words = line.split(b" ")
        if len(words) != 4 or not all(w.isalnum() for w in words):
            raise ProtocolError(f"bad stat line from the inspector: {_shown(line)}")
        try:
            raw, uid, gid, size = int(words[0], 16), int(words[1]), int(words[2]), int(words[3])
        except ValueError:
            raise ProtocolError(f"bad stat line from the inspector: {_shown(line)}") from None
        kind = _KINDS.get(raw & 0o170000, "other")
        observed.append(Observed(os.fsdecode(name), kind, raw & 0o7777, uid, gid, size))  # type: ignore[arg-type]
    links: dict[int, str] = {}
    while (tag := reader.next()) == b"L":
        index = reader.number()
        if not 1 <= index <= count:
            raise ProtocolError(f"the inspector sent a link target for path {index} of {count}")
        links[index - 1] = os.fsdecode(reader.next())
    if tag != b"H":
        raise ProtocolError(f"unexpected record in the inspector's batch: {_shown(tag)}")
    words = reader.next().split()
    if not all(w.isdigit() and 1 <= int(w) <= count for w in words):
        raise ProtocolError(f"the inspector's list of hashed files is not one of its batch: {_shown(b' '.join(words))}")
    indices = [int(w) - 1 for w in words]
    hashes = dict(zip(indices, parse_sha256sum(reader.next(), [names[i] for i in indices]), strict=True))
    for index, obs in enumerate(observed):
        if index in hashes or index in links:
            obs = Observed(
                obs.path, obs.kind, obs.mode, obs.uid, obs.gid, obs.size, hashes.get(index), links.get(index)
            )
        into[obs.path] = obs


_HEX = frozenset(b"0123456789abcdef")
_ESCAPES = {ord("\\"): ord("\\"), ord("n"): ord("\n"), ord("r"): ord("\r")}


def parse_sha256sum(output: bytes, names: Sequence[bytes]) -> list[str]:
    """The digests in the output of ``sha256sum -- NAMES...``, in order.

    Each record is ``<64 hex>  <name>`` and a newline. busybox prints the name as it
    is, newlines included; GNU coreutils escapes a name that holds a backslash, a
    newline or a carriage return, and then starts the record with a backslash. As
    the names asked for are known, each record is read as exactly the next name's:
    nothing in a name can pass for the start of another record. Raises ProtocolError
    for any other output.
    """
    digests: list[str] = []
    at = 0
    for name in names:
        escaped = output[at : at + 1] == b"\\"
        at += escaped
        digest = output[at : at + 64]
        if len(digest) != 64 or not set(digest) <= _HEX or output[at + 64 : at + 66] not in (b"  ", b" *"):
            raise ProtocolError(f"bad sha256sum record from the inspector: {_shown(output[at : at + 80])}")
        at += 66
        if escaped:
            end = output.find(b"\n", at)
            if end < 0:
                raise ProtocolError("sha256sum's output is cut short")
            said, at = _unescape(output[at:end]), end + 1
        else:
            said, at = output[at : at + len(name)], at + len(name)
            if output[at : at + 1] != b"\n":
                raise ProtocolError(f"sha256sum's record goes on after its name: {_shown(output[at : at + 40])}")
            at += 1
        if said != name:
            raise ProtocolError(f"sha256sum answered for {_shown(said)}, not for {_shown(name)}")
        digests.append(digest.decode())
    if at != len(output):
        raise ProtocolError(f"sha256sum printed more than it was asked: {_shown(output[at : at + 80])}")
    return digests


def _unescape(text: bytes) -> bytes:
    out = bytearray()
    index = 0
    while index < len(text):
        byte = text[index]
        if byte == ord("\\"):
            escaped = _ESCAPES.get(text[index + 1]) if index + 1 < len(text) else None
            if escaped is None:
                raise ProtocolError(f"an escape sha256sum never prints: {_shown(text)}")
            out.append(escaped)
            index += 2
        else:
            out.append(byte)
            index += 1
    return bytes(out)


def _shown(data: bytes) -> str:
    """Bytes from the sandbox, for a message: printable, and short."""
    text = repr(data[:120])[2:-1]
    return text + ("..." if len(data) > 120 else "")


_DEFAULT_MODES = {"dir": 0o755, "file": 0o644}


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def _depth(path: str) -> int:
    return path.rstrip("/").count("/")


def _mode_arg(mode: int) -> str:
    # Five digits: GNU chmod keeps a directory's setgid bit (NemoClaw's flat layout sets it)
    # unless the mode has an extra leading zero; busybox reads it the same.
    return f"0{mode:04o}"


@dataclass
class _Plan:
    """Who does what of a Write: the sandbox user itself, or root in a checked directory."""

    agent_remove: list[str] = field(default_factory=list)
    agent_members: list[tuple[Entry, Ids]] = field(default_factory=list)
    agent_own: dict[str, Ids] = field(default_factory=dict)
    agent_mode: dict[str, int] = field(default_factory=dict)
    root_remove: dict[str, bool] = field(default_factory=dict)  # path: its directory must be root's alone
    root_mkdir: list[str] = field(default_factory=list)  # directories on the way to a root member
    root_members: list[tuple[Entry, Ids | None]] = field(default_factory=list)
    root_own: dict[str, Ids] = field(default_factory=dict)
    root_mode: dict[str, int] = field(default_factory=dict)
    root_dirs: dict[str, tuple[Ids | None, int | None]] = field(default_factory=dict)  # entered, then chown/chmod .
    root_trees: dict[str, Ids] = field(default_factory=dict)  # entered, then given away below and itself
    refused: dict[str, str] = field(default_factory=dict)


@dataclass
class Write:
    """One batch of changes: deletions, new contents (tar streams), owner and mode fix-ups;
    and who does each, decided from the read it was planned from (``seen``: who owns the
    directory that holds each path) for the sandbox user ``agent``.

    * What the agent may do itself is done by the agent: every change in a directory it owns
      (removals, new files, its own files' modes), in an exec as its uid. Whatever it has
      swapped by then, that exec can do no more than the agent could. Its files are created
      as its own, so they need no owner fix-up (but for a group other than its own).
    * Root works only in a directory that no one else may write: each operation first enters
      the directory that holds its path and checks there that it is where it should be (no
      symlink followed, nothing swapped) and that root owns it and nobody else may write in it;
      then it acts on the one name, relative to that directory, which nothing can change now.
      New contents are unpacked into a private directory first and moved into place.
    * A directory's own owner and mode are changed by entering it (and checking it) and acting
      on ``.``, wherever it lies; a recursive owner the same way, directory by directory
      (``give``). Removal by root, where the agent could not remove something itself, only
      unlinks names in directories entered and checked the same way.
    * Anything else is refused before any exec (``refused``): an entry another user must own in
      a directory the agent can write, or a directory neither the agent's nor root's alone.

    Without ``agent`` (no way to run as the sandbox user), every change is root's, and
    refused wherever root cannot make it safely.
    """

    remove: list[str]
    members: list[tuple[Entry, Ids | None]]
    fixups: list[tuple[Entry, Ids | None]]
    agent: Ids | None = None
    seen: Inspection = field(default_factory=Inspection)
    _plan: _Plan | None = field(default=None, init=False, repr=False, compare=False)

    # ----------------------------------------------------------------------------- plan

    def _where(self, path: str) -> tuple[str, str, Observed | None]:
        """Who may write in the directory that will hold ``path``, with that directory and
        what the read saw of it: "agent" (the sandbox user owns it), "root" (root owns it and
        nobody else may write in it, or it is sticky), "other", or "unknown" (not read: root's rule applies, and
        its check decides). A directory still to be made is judged by its nearest existing
        ancestor, which holds whatever is made below it."""
        directory = _parent(path)
        while True:
            seen = self.seen.parents.get(directory) or self.seen.found.get(directory)
            if seen is not None and seen.kind == "dir":
                break
            if directory == "/":
                return "unknown", directory, None
            directory = _parent(directory)
        if self.agent is not None and seen.uid == self.agent.uid:
            return "agent", directory, seen
        # Root's and nobody else may write, or sticky (NemoClaw's split ~/.openclaw is root's,
        # 1777): a name root owns there cannot be renamed or removed by the agent.
        if seen.uid == 0 and (not seen.mode & 0o022 or seen.mode & 0o1000):
            return "root", directory, seen
        return "other", directory, seen

    def _refuse(self, plan: _Plan, path: str, why: str) -> None:
        plan.refused.setdefault(path, f"refused: {shown(path)}: {why}")

    def _other(self, directory: str, seen: Observed | None) -> str:
        owner = f"{seen.uid}:{seen.gid}, mode {seen.mode:04o}" if seen else "unknown"
        return (
            f"{shown(directory)} ({owner}) is neither the sandbox user's nor a root-owned directory "
            "nobody else may write: nothing can be written there safely"
        )

    def _foreign_dir(self, path: str) -> bool:
        """Whether removing ``path`` takes a directory the agent does not own (it could not
        remove what is in it)."""
        agent = self.agent
        below = [self.seen.found.get(path), *self.seen.descendants(path)]
        return any(o is not None and o.kind == "dir" and (agent is None or o.uid != agent.uid) for o in below)

    def _planned(self) -> _Plan:
        if self._plan is not None:
            return self._plan
        plan = _Plan()
        for path in self.remove:
            place, directory, seen = self._where(path)
            if place == "agent":
                if self._foreign_dir(path):
                    plan.root_remove[path] = False
                else:
                    plan.agent_remove.append(path)
            elif place in ("root", "unknown"):
                plan.root_remove[path] = True
            else:
                self._refuse(plan, path, self._other(directory, seen))
        written = {entry.path for entry, _ in self.members}
        for entry, ids in self.members:
            self._plan_member(plan, entry, ids)
        for entry, ids in self.fixups:
            if entry.path not in written and entry.kind != "absent":
                self._plan_fixup(plan, entry, ids)
        self._plan = plan
        return plan

    def _plan_member(self, plan: _Plan, entry: Entry, ids: Ids | None) -> None:
        agent = self.agent
        place, directory, seen = self._where(entry.path)
        if place == "agent" and agent is not None:
            if ids is not None and ids.uid != agent.uid:
                self._refuse(
                    plan,
                    entry.path,
                    f"to be owned by {ids.uid}:{ids.gid} in {shown(directory)}, a directory the sandbox user "
                    "can write: it cannot be written there safely",
                )
                return
            plan.agent_members.append((entry, ids or agent))
            if ids is not None and ids.gid != agent.gid:
                plan.agent_own[entry.path] = ids
            if entry.mode is not None and entry.kind != "symlink":
                plan.agent_mode[entry.path] = entry.mode
        elif place in ("root", "unknown"):
            made = {e.path for e, _ in self.members}
            way = _parent(entry.path)
            missing: list[str] = []
            while place == "root" and way != directory and way != "/":
                if way not in made and way not in plan.root_mkdir:
                    missing.append(way)
                way = _parent(way)
            for path in reversed(missing):  # made as tar would have: root's, 0755
                plan.root_mkdir.append(path)
                plan.root_mode[path] = 0o755
            plan.root_members.append((entry, ids))
            if ids is not None and (ids.uid, ids.gid) != (0, 0):  # root's own: made by root already
                plan.root_own[entry.path] = ids
            if entry.kind != "symlink":
                plan.root_mode[entry.path] = entry.mode if entry.mode is not None else _DEFAULT_MODES[entry.kind]
        else:
            self._refuse(plan, entry.path, self._other(directory, seen))

    def _plan_fixup(self, plan: _Plan, entry: Entry, ids: Ids | None) -> None:
        agent = self.agent
        seen = self.seen.found.get(entry.path)
        if seen is None:
            return
        own = ids is not None and (seen.uid, seen.gid) != (ids.uid, ids.gid)
        mode = entry.mode if entry.mode is not None and entry.kind != "symlink" and seen.mode != entry.mode else None
        tree = (
            entry.recursive_owner
            and ids is not None
            and any((o.uid, o.gid) != (ids.uid, ids.gid) for o in self.seen.descendants(entry.path))
        )
        if not (own or mode is not None or tree):
            return
        place, directory, parent = self._where(entry.path)
        agents = agent is not None and seen.uid == agent.uid and (ids is None or ids.uid == agent.uid)
        if place == "agent" and agents and not tree:
            if own and ids is not None:
                plan.agent_own[entry.path] = ids
            if mode is not None:
                plan.agent_mode[entry.path] = mode
        elif seen.kind == "dir":  # entered and checked, then changed as "."
            if tree and ids is not None:
                plan.root_trees[entry.path] = ids
                own = False
            if own or mode is not None:
                plan.root_dirs[entry.path] = (ids if own else None, mode)
        elif place == "agent" and agent is not None:
            if ids is not None and ids.uid != agent.uid:
                self._refuse(
                    plan,
                    entry.path,
                    f"to be owned by {ids.uid}:{ids.gid} in {shown(directory)}, a directory the sandbox user "
                    "can write: it cannot be changed there safely",
                )
                return
            # Someone else's file in the agent's directory: the agent writes it anew, as its own.
            plan.agent_remove.append(entry.path)
            self._plan_member(plan, entry, ids)
        elif place in ("root", "unknown"):
            if own and ids is not None:
                plan.root_own[entry.path] = ids
            if mode is not None:
                plan.root_mode[entry.path] = mode
        else:
            self._refuse(plan, entry.path, self._other(directory, parent))

    # --------------------------------------------------------------------------- answers

    @property
    def refused(self) -> dict[str, str]:
        """What cannot be written safely, by path, with the reason (a "refused: PATH: ..." line)."""
        return self._planned().refused

    def root_paths(self) -> list[str]:
        """Every path root acts on (removes, makes, moves into place, chowns or chmods)."""
        plan = self._planned()
        paths = {
            *plan.root_remove,
            *plan.root_mkdir,
            *(entry.path for entry, _ in plan.root_members),
            *plan.root_own,
            *plan.root_mode,
            *plan.root_dirs,
            *plan.root_trees,
        }
        return sorted(paths)

    @property
    def needs_root(self) -> bool:
        return bool(self.root_paths())

    def agent_args(self) -> list[str]:
        """The sandbox user's operations (APPLY_SCRIPT's agent role): removals, the tar stream,
        then one chown per owner and one chmod per mode."""
        plan = self._planned()
        ops: list[str] = []
        for path in plan.agent_remove:
            ops += ["rm", path_arg(path)]
        if plan.agent_members:
            ops.append("tar")
        owners: dict[str, list[str]] = {}
        for path, ids in plan.agent_own.items():
            owners.setdefault(f"{ids.uid}:{ids.gid}", []).append(path_arg(path))
        modes: dict[str, list[str]] = {}
        for path, mode in plan.agent_mode.items():
            modes.setdefault(_mode_arg(mode), []).append(path_arg(path))
        for op, groups in (("own", owners), ("mode", modes)):
            for value, paths in groups.items():
                ops += [op, value, str(len(paths)), *paths]
        return ops

    def agent_stream(self) -> bytes | None:
        plan = self._planned()
        return build_tar(plan.agent_members) if plan.agent_members else None

    def root_args(self) -> list[str]:
        """Root's operations (APPLY_SCRIPT's root role), each in a block that enters and
        checks the directory holding its path: removals, then new directories and contents
        (shallow first), then owners and modes (deep first: a directory is given away after
        what is in it)."""
        plan = self._planned()
        steps: list[tuple[str, str, list[str]]] = []  # (block, directory, operation)
        for path in sorted(plan.root_remove, key=lambda p: (_parent(p), p)):
            steps.append(("in" if plan.root_remove[path] else "at", _parent(path), ["rm", path_arg(path)]))
        made = [(path, "mkdir") for path in plan.root_mkdir] + [(e.path, "put") for e, _ in plan.root_members]
        for path, verb in sorted(made, key=lambda item: (_depth(item[0]), _parent(item[0]), item[0])):
            steps.append(("in", _parent(path), [verb, path_arg(path)]))
        fixes: list[tuple[str, int, str, list[str]]] = []  # (path, order, block, operation)
        for path, ids in plan.root_trees.items():
            fixes.append((path, 0, "at", ["tree", f"{ids.uid}:{ids.gid}", path_arg(path)]))
        for path, (owner, mode) in plan.root_dirs.items():
            own_arg = f"{owner.uid}:{owner.gid}" if owner else "-"
            fixes.append(
                (path, 1, "at", ["dir", own_arg, _mode_arg(mode) if mode is not None else "-", path_arg(path)])
            )
        for path, ids in plan.root_own.items():
            fixes.append((path, 2, "in", ["own", f"{ids.uid}:{ids.gid}", path_arg(path)]))
        for path, mode in plan.root_mode.items():
            fixes.append((path, 3, "in", ["mode", _mode_arg(mode), path_arg(path)]))
        for path, _, block, fix in sorted(fixes, key=lambda f: (-_depth(f[0]), _parent(f[0]), f[0], f[1])):
            steps.append((block, _parent(path), fix))
        ops: list[str] = ["tar"] if plan.root_members else []
        current: tuple[str, str] | None = None
        for block, directory, operation in steps:
            if (block, directory) != current:
                ops += [block, path_arg(directory)]
                current = (block, directory)
            ops += operation
        return ops if steps else []

    def root_stream(self) -> bytes | None:
        plan = self._planned()
        return build_tar(plan.root_members) if plan.root_members else None

    def agent_reads(self, verify: Iterable[Entry]) -> bool:
        """Whether the sandbox user can read back every path of ``verify`` once this write is
        done (stat each, hash each file, walk each tree, search each directory on the way):
        then the read-back joins the agent's exec instead of costing one more as root."""
        agent = self.agent
        if agent is None:
            return False
        plan = self._planned()
        gone = [*plan.agent_remove, *plan.root_remove]
        after: dict[str, tuple[str, int, int, int]] = {
            path: (o.kind, o.uid, o.gid, o.mode)
            for path, o in {**self.seen.parents, **self.seen.found}.items()
            if not any(path == g or path.startswith(g + "/") for g in gone)
        }
        for entry, ids in plan.root_members:
            after[entry.path] = (entry.kind, ids.uid if ids else 0, ids.gid if ids else 0, 0o644)
        for entry, ids in plan.agent_members:
            after[entry.path] = (entry.kind, ids.uid, ids.gid, 0o644)
        for path in plan.root_mkdir:
            after[path] = ("dir", 0, 0, 0o755)
        changes: list[tuple[str, Ids | None, int | None]] = [
            *((p, i, None) for p, i in {**plan.root_own, **plan.agent_own}.items()),
            *((p, None, m) for p, m in {**plan.root_mode, **plan.agent_mode}.items()),
            *((p, i, m) for p, (i, m) in plan.root_dirs.items()),
        ]
        for path, ids, mode in changes:
            kind, uid, gid, old = after.get(path, ("other", 0, 0, 0))
            after[path] = (kind, ids.uid if ids else uid, ids.gid if ids else gid, old if mode is None else mode)
        for root, ids in plan.root_trees.items():
            for path, (kind, _, _, mode) in list(after.items()):
                if path == root or path.startswith(root + "/"):
                    after[path] = (kind, ids.uid, ids.gid, mode)

        def can(path: str, need: int) -> bool:
            kind, uid, gid, mode = after.get(path, ("missing", 0, 0, 0))
            if kind in ("missing", "symlink", "other"):
                return True
            bits = (mode >> 6 if uid == agent.uid else mode >> 3 if gid == agent.gid else mode) & 7
            wanted = need if kind == "dir" else 4
            return bits & wanted == wanted

        for entry in verify:
            if not can(_parent(entry.path), 1) or not can(entry.path, 5):
                return False
            if entry.recursive and not all(
                can(path, 5) for path in after if path.startswith(entry.path.rstrip("/") + "/")
            ):
                return False
        return True


def build_tar(members: Sequence[tuple[Entry, Ids | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry, ids in members:
            info = tarfile.TarInfo(entry.path.lstrip("/"))
            # Numeric ids only: a name would be looked up in the wrong /etc/passwd.
            info.uname = info.gname = ""
            info.uid, info.gid = (ids.uid, ids.gid) if ids else (0, 0)
            info.mode = entry.mode if entry.mode is not None else (0o755 if entry.kind == "dir" else 0o644)
            info.mtime = 0
            if entry.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif entry.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = entry.link or ""
                tar.addfile(info)
            else:
                data = entry.data()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass(frozen=True)
class UserTable:
    """The sandbox's own users and groups, read from its /etc/passwd and /etc/group."""

    users: dict[str, tuple[int, int]]
    groups: dict[str, int]
    homes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> UserTable:
        passwd, _, group = text.partition("--clawguard--")
        users: dict[str, tuple[int, int]] = {}
        homes: dict[str, str] = {}
        for line in passwd.splitlines():
            fields = line.split(":")
            if len(fields) >= 4 and fields[2].isdigit() and fields[3].isdigit():
                users.setdefault(fields[0], (int(fields[2]), int(fields[3])))
                if len(fields) >= 6 and fields[5].startswith("/"):
                    homes.setdefault(fields[0], fields[5])
        groups: dict[str, int] = {}
        for line in group.splitlines():
            fields = line.split(":")
            if len(fields) >= 3 and fields[2].isdigit():
                groups.setdefault(fields[0], int(fields[2]))
        return cls(users, groups, homes)

    def home(self, owner: str | int, default: str = "/sandbox") -> str:
        """The home directory of ``owner`` (a name or a uid), from the sandbox's /etc/passwd."""
        name = str(owner).partition(":")[0]
        if name.isdigit():
            name = next((user for user, (uid, _) in self.users.items() if uid == int(name)), name)
        return self.homes.get(name, default)

    def resolve(self, owner: str | int) -> Ids:
        """Turn an owner reference into ids, or raise LookupError with the reason."""
        if isinstance(owner, int):
            for uid, gid in self.users.values():
                if uid == owner:
                    return Ids(uid, gid)
            raise LookupError(f"uid {owner} does not exist in the sandbox's /etc/passwd")
        user, _, group = owner.partition(":")
        if user.isdigit():
            ids = self.resolve(int(user))
        elif user in self.users:
            ids = Ids(*self.users[user])
        else:
            raise LookupError(f"user {user!r} does not exist in the sandbox's /etc/passwd")
        if group:
            if group.isdigit():
                return Ids(ids.uid, int(group))
            if group not in self.groups:
                raise LookupError(f"group {group!r} does not exist in the sandbox's /etc/group")
            return Ids(ids.uid, self.groups[group])
        return ids


class PreRead:
    """An inspection made in an exec that had other work (the pod's facts), kept for the
    one ``SandboxFS.inspect`` that asks for exactly the same arguments: the read a restore
    starts with, moments later and before anything is written. Given out once."""

    def __init__(self, args: Sequence[str], inspection: Inspection) -> None:
        self.args = list(args)
        self._inspection: Inspection | None = inspection

    def take(self, args: Sequence[str]) -> Inspection | None:
        if self._inspection is None or list(args) != self.args:
            return None
        inspection, self._inspection = self._inspection, None
        return inspection


class SandboxFS:
    """Inspect and write one live sandbox through an exec function (as root, or as whoever the
    target runs commands as), and, with ``as_agent``, one that runs them as the sandbox user
    ``agent``: then what the agent may change itself is written as the agent (Write)."""

    def __init__(
        self,
        run: Exec,
        preread: PreRead | None = None,
        *,
        as_agent: Exec | None = None,
        agent: Ids | None = None,
        root: bool = True,
    ) -> None:
        self._run = run
        self._preread = preread
        self._as_agent = as_agent
        self.agent = agent if as_agent is not None else None  # the sandbox user's ids: Write plans for it
        self.root = root  # False: ``run`` can never be root (Target.runs_as_root), so no root batch is sent
        self.read_with_facts = False  # an inspect answered by the pre-read: its exec had the facts' work too

    def writing_as(self, agent: Ids | None, as_agent: Exec | None, *, root: bool = True) -> SandboxFS:
        """This SandboxFS, now writing what the sandbox user ``agent`` may change as that user,
        through ``as_agent``; ``root``: whether ``run`` runs as root."""
        self._as_agent = as_agent
        self.agent = agent if as_agent is not None else None
        self.root = root
        return self

    def _check(self, what: str, argv: Sequence[str], stdin: bytes | None = None, run: Exec | None = None) -> bytes:
        result = (run or self._run)(argv, stdin)
        if result.code != 0:
            text = result.stderr.decode(errors="replace").strip()[-400:] or f"exit status {result.code}"
            raise SandboxCommandFailed(f"{what} failed inside the sandbox: {text}")
        return result.stdout

    def _inspection(self, what: str, output: bytes) -> Inspection:
        try:
            return parse_inspection(output)
        except ProtocolError as exc:
            raise ProtocolError(f"{what}: {exc}") from None

    def inspect(self, entries: Iterable[Entry], *, contents: bool = False) -> Inspection:
        """Describe ``entries``' paths as they are, in one exec; with ``contents``, also read
        the files judged by their content (inspect_args)."""
        args = inspect_args(entries, contents=contents)
        if not args:
            return Inspection()
        if self._preread is not None and (inspection := self._preread.take(args)) is not None:
            self.read_with_facts = True
            return inspection
        output = self._check("inspecting files", ["sh", "-c", INSPECT_SCRIPT, "sh", DESCRIBE, *args])
        return self._inspection("inspecting files", output)

    def read_files(self, paths: Sequence[str]) -> dict[str, bytes]:
        """The contents of regular files, in one exec (a tar stream: any name survives)."""
        if not paths:
            return {}
        stream = self._check("reading files", ["sh", "-c", READ_SCRIPT, "sh", *map(path_arg, paths)])
        contents: dict[str, bytes] = {}
        wanted = set(paths)
        try:
            with tarfile.open(fileobj=io.BytesIO(stream), mode="r:") as tar:
                for info in tar:
                    path = "/" + info.name.strip("/")
                    handle = tar.extractfile(info) if info.isfile() and path in wanted else None
                    if handle is not None:
                        contents[path] = handle.read()
        except (tarfile.TarError, EOFError) as exc:
            raise ProtocolError(f"reading files: not a tar stream ({exc})") from None
        return contents

    def apply(self, write: Write, verify: Iterable[Entry]) -> Inspection:
        """Apply ``write``, then inspect ``verify`` again: root's part first (if any), in one
        exec, then the sandbox user's, in one more; the read-back joins the last of them (as
        the sandbox user only when it can read every path back, else as root in one more).

        Raises WriteRefused for anything the write refuses, NeedsRoot when root's part cannot
        be run here (a target that is never root), and SandboxCommandFailed when an exec fails
        (a check refused inside the sandbox included: its message names the path)."""
        verify = list(verify)
        if write.refused:
            raise WriteRefused("; ".join(write.refused.values()))
        root_ops, agent_ops = write.root_args(), write.agent_args()
        if root_ops and not self.root:
            raise needs_root(write.root_paths())
        if agent_ops and self._as_agent is None:
            raise SandboxCommandFailed("writing files: no way to run commands as the sandbox user here")
        checks = inspect_args(verify)
        readback = ["--inspect", DESCRIBE, *checks] if checks else []
        output = b""
        if root_ops:
            tail = [] if agent_ops else readback
            argv = ["sh", "-c", APPLY_SCRIPT, "sh", "root", *root_ops, *tail]
            output = self._check("writing files as root", argv, write.root_stream())
        if agent_ops:
            as_agent = write.agent_reads(verify)
            argv = ["sh", "-c", APPLY_SCRIPT, "sh", "agent", *agent_ops, *(readback if as_agent else [])]
            output = self._check("writing files as the sandbox user", argv, write.agent_stream(), self._as_agent)
            if not as_agent and checks:
                output = self._check("reading files back", ["sh", "-c", INSPECT_SCRIPT, "sh", DESCRIBE, *checks])
        elif not root_ops and checks:
            output = self._check("reading files back", ["sh", "-c", INSPECT_SCRIPT, "sh", DESCRIBE, *checks])
        return self._inspection("writing files", output)


class WriteRefused(SandboxCommandFailed):
    """A write that cannot be made safely (Write.refused): nothing of it was done."""


class NeedsRoot(SandboxCommandFailed):
    """A write needs root, and the target runs every command as the sandbox user."""


def needs_root(paths: Sequence[str]) -> NeedsRoot:
    """The error for a write whose ``paths`` need root, on a target that is never root."""
    shown_paths = ", ".join(map(shown, paths[:8])) + (f" and {len(paths) - 8} more" if len(paths) > 8 else "")
    return NeedsRoot(
        f"{shown_paths} need root (owned by root or another user, or in a directory only root may "
        "write), and this target runs every command as the sandbox user: not written"
    )
