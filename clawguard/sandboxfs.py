"""Reading and writing a sandbox's files with nothing but an exec into it.

Any target that can run a command inside the sandbox (with stdin) gets inspection,
batched writes and user lookup from this module. The scripts are constants: paths
travel as separate arguments, never inside the script text, so nothing the user
writes is ever parsed by a shell. They use only POSIX sh plus ``stat -c``,
``sha256sum``, ``find -exec {} +``, ``readlink -n``, ``tar`` and ``od``, which busybox
and GNU coreutils both provide.

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
missing is missing, without a look at it. One ``find`` walks every recursive root and
gives its names to one ``stat`` and one ``sha256sum`` per batch (one batch unless
ARG_MAX splits it); a path below a recursive root is left to that walk, not named
again. Every other path is kept in a variable of its own and described 256 at a time,
so the cost per path stays flat (appending each to the argument list copied the whole
list every time: 4000 paths took 7.4 CPU-seconds in busybox sh, now 0.13). Only a
symlink costs a process of its own (``readlink``), and a path that is not valid UTF-8
one more (decoding it). On a fresh stand-in pod, the reference archive (196 files,
5.3 MB) took 0.56 CPU-seconds in the pod to inspect and 0.42 to write and verify with
a few processes per path; then 0.01 and 0.20; and its trees' files were hashed twice
per read until they were left to the walk (0.15 CPU-seconds per read in busybox, now
0.04).

Verification stays a full second read. The write and its read-back are one exec,
and the read-back is the same inspector as the first read: after tar, chown and
chmod are done, every planned path is stat'ed and every file hashed again by the
pod's own tools, so a short write, a name tar mangled, or a file the agent replaced
meanwhile is seen. Nothing is taken on trust from the write, because that would save
little: hashing is not what a read costs (sha256sum reads those 5.3 MB in about
40 ms of CPU, busybox's or GNU's); processes per path were.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .entries import Entry, Ids, Inspection, Observed
from .errors import TargetError
from .targets.base import ExecResult

# Runs argv inside the sandbox as root, with optional stdin.
Exec = Callable[[Sequence[str], bytes | None], ExecResult]

# path ARG: sets $p to the path that ARG carries: ARG itself when it starts with "/",
# else (after a "%") the bytes its printf %b escapes make (see path_arg). The "."
# keeps the command substitution from eating a trailing newline of the name.
_PATH_FUNCTION = r"""
path() {
  case $1 in
    /*) p=$1 ;;
    %*) p=$(printf '%b.' "${1#%}") || exit 3; p=${p%.} ;;
    *) echo "clawguard: not a path argument" >&2; exit 3 ;;
  esac
}
"""

# describe PATH...: one batch record (NUL-terminated fields) for absolute paths that exist:
#   B <n> <name>... <stat's n lines "hexmode uid gid size", in the names' order>
#   L <index> <target>                              for each symlink, then
#   H <indices of the regular files> <sha256sum's output for them, in that order>
# It runs in the inspector's shell, and in each shell `find -exec` starts, whose script
# is this text (the inspector's first argument).
DESCRIBE = r"""
describe() {
  [ "$#" -gt 0 ] || return 0
  printf 'B\0%s\0' "$#"
  printf '%s\0' "$@"
  stat -c '%f %u %g %s' -- "$@" || exit 3
  printf '\0'
  i=0; refs=''; idx=''
  for p do
    i=$((i + 1))
    if [ -L "$p" ]; then
      printf 'L\0%s\0' "$i"; readlink -n -- "$p" || exit 3; printf '\0'
    elif [ -f "$p" ]; then
      refs="$refs \"\${$i}\""; idx="$idx $i"
    fi
  done
  printf 'H\0%s\0' "$idx"
  if [ -n "$refs" ]; then eval "sha256sum -- $refs" || exit 3; fi
  printf '\0'
}
"""

# contents PATH...: for each regular file, C <path> <od's hex dump of it> <od's exit status>.
# Hex, because a file may hold NULs; od is POSIX, in busybox and GNU coreutils. A file
# gone since it was described gives a non-zero status instead of failing the read.
CONTENTS = r"""
contents() {
  for p do
    printf 'C\0%s\0' "$p"
    od -An -v -tx1 -- "$p" 2>/dev/null
    printf '\0%s\0' "$?"
  done
}
"""

# Arguments: the DESCRIBE text, then one per path: "P:" (the path itself), "R:" (it
# and everything below it) or "C:" (the path itself, and its content when it is a
# regular file), then the path as path_arg sends it. Paths with the same parent must be
# adjacent (inspect_args): each distinct parent is resolved once.
# Output: describe's batches, contents' records, and for each path whose nearest existing
# ancestor is reached through a symlink, U <resolved> <path>.
INSPECT_SCRIPT = (
    _PATH_FUNCTION
    + DESCRIBE
    + CONTENTS
    + r"""
set -f
unset CDPATH
D=$1; shift
k=0; c=0; last=''; roots=''; paths=''; texts=''
for spec do
  path "${spec#??}"
  d=${p%/*}; d=${d:-/}
  if [ "$d" != "$last" ]; then
    last=$d; missing=''
    while [ ! -d "$d" ]; do d=${d%/*}; d=${d:-/}; missing=1; done
    if cd -P "$d" 2>/dev/null; then r=$PWD; else r=''; fi
    if [ "$r" = "$d" ]; then unsafe=''; else unsafe=1; fi
  fi
  if [ -n "$unsafe" ]; then printf 'U\0%s\0%s\0' "$r" "$p"; continue; fi
  if [ -n "$missing" ] || { [ ! -L "$p" ] && [ ! -e "$p" ]; }; then continue; fi
  k=$((k + 1)); eval "v$k=\$p"
  case $spec in
    R*) if [ -d "$p" ] && [ ! -L "$p" ]; then roots="$roots \"\$v$k\""; continue; fi ;;
    C*) if [ -f "$p" ] && [ ! -L "$p" ]; then texts="$texts \"\$v$k\""; fi ;;
  esac
  paths="$paths \"\$v$k\""; c=$((c + 1))
  if [ "$c" -ge 256 ]; then eval "describe $paths"; paths=''; c=0; fi
done
cd / || exit 3
if [ -n "$roots" ]; then
  eval "find $roots -exec sh -c \"\$D\"'
describe \"\$@\"' sh {} +" || exit 3
fi
eval "describe $paths"
eval "contents $texts"
"""
)

# Arguments: a list of operations, run in order, then "--inspect" and the inspector's
# arguments, so that one exec both writes and reads back. "tar" reads a tar stream
# from stdin and extracts it at /; the others are: rm PATH, ownr UID:GID PATH, and
# own UID:GID N PATH... / mode OCTAL N PATH... for N paths at once (one chown or
# chmod for many paths: a process per path costs more than the tar stream). Paths are
# path_arg's. The eval only ever sees references like "${3}", never a path. The first
# failure exits with status 4.
APPLY_SCRIPT = (
    _PATH_FUNCTION
    + r"""
while [ $# -gt 0 ]; do
  op=$1; shift
  case $op in
    --inspect) break ;;
    rm) path "$1"; rm -rf -- "$p" || exit 4; shift ;;
    tar) tar -x -f - -C / || exit 4 ;;
    ownr) path "$2"; chown -R -h "$1" "$p" || exit 4; shift 2 ;;
    own|mode)
      arg=$1; n=$2; shift 2; refs=''; i=1
      while [ "$i" -le "$n" ]; do
        eval "a=\${$i}"
        case $a in
          /*) refs="$refs \"\${$i}\"" ;;
          *) path "$a"
             if [ "$op" = own ]; then chown -h "$arg" "$p" || exit 4; else chmod "$arg" "$p" || exit 4; fi ;;
        esac
        i=$((i + 1))
      done
      if [ -z "$refs" ]; then :
      elif [ "$op" = own ]; then eval "chown -h \"\$arg\" $refs" || exit 4
      else eval "chmod \"\$arg\" $refs" || exit 4; fi
      shift "$n" ;;
    *) echo "clawguard: unknown operation $op" >&2; exit 4 ;;
  esac
done
"""
    + INSPECT_SCRIPT
)

# Arguments: paths (path_arg's). Prints a tar stream of them, named relative to /.
READ_SCRIPT = (
    _PATH_FUNCTION
    + r"""
cd / || exit 3
for a do shift; path "$a"; set -- "$@" "${p#/}"; done
exec tar -c -f - -- "$@"
"""
)

PASSWD_SCRIPT = "cat /etc/passwd; echo '--clawguard--'; cat /etc/group 2>/dev/null || true"

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
    describes it (naming it too hashed every file of a tree twice). What the walk does
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
            _read_batch(reader, result)
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


def _read_batch(reader: _Fields, result: Inspection) -> None:
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
        result.found[obs.path] = obs


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


@dataclass
class Write:
    """One batch of changes for the apply script: deletions, a tar stream, fix-ups."""

    remove: list[str]
    members: list[tuple[Entry, Ids | None]]
    fixups: list[tuple[Entry, Ids | None]]

    def args(self) -> list[str]:
        ops: list[str] = []
        for path in self.remove:
            ops += ["rm", path_arg(path)]
        if self.members:
            ops.append("tar")
        # tar may not restore owners or modes the same way everywhere (busybox,
        # GNU, umask): set them explicitly afterwards, one command per owner and
        # per mode. Recursive owners go first, so a path's own owner wins.
        owners: dict[str, list[str]] = {}
        modes: dict[str, list[str]] = {}
        recursive: list[str] = []
        for entry, ids in self.fixups:
            if ids is not None:
                if entry.recursive_owner:
                    recursive += ["ownr", f"{ids.uid}:{ids.gid}", path_arg(entry.path)]
                else:
                    owners.setdefault(f"{ids.uid}:{ids.gid}", []).append(path_arg(entry.path))
            if entry.mode is not None and entry.kind != "symlink":
                # Five digits: GNU chmod keeps a directory's setgid bit (NemoClaw's flat layout
                # sets it) unless the mode has an extra leading zero; busybox reads it the same.
                modes.setdefault(f"0{entry.mode:04o}", []).append(path_arg(entry.path))
        ops += recursive
        for op, groups in (("own", owners), ("mode", modes)):
            for value, paths in groups.items():
                ops += [op, value, str(len(paths)), *paths]
        return ops

    def stream(self) -> bytes | None:
        if not self.members:
            return None
        return build_tar(self.members)


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
    """Inspect and write one live sandbox through an exec function."""

    def __init__(self, run: Exec, preread: PreRead | None = None) -> None:
        self._run = run
        self._preread = preread
        self.read_with_facts = False  # an inspect answered by the pre-read: its exec had the facts' work too

    def _check(self, what: str, argv: Sequence[str], stdin: bytes | None = None) -> bytes:
        result = self._run(argv, stdin)
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
        """Apply ``write``, then inspect ``verify`` again, in one exec."""
        argv = ["sh", "-c", APPLY_SCRIPT, "sh", *write.args(), "--inspect", DESCRIBE, *inspect_args(verify)]
        return self._inspection("writing files", self._check("writing files", argv, write.stream()))
