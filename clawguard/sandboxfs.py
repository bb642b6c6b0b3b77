"""Reading and writing a sandbox's files with nothing but an exec into it.

Any target that can run a command inside the sandbox (with stdin) gets inspection,
batched writes and user lookup from this module. Both scripts are constants: paths
travel as separate arguments, never inside the script text, so nothing the user
writes is ever parsed by a shell. They use only POSIX sh plus ``stat -c``,
``sha256sum``, ``find``, ``readlink`` and ``tar``, which busybox and coreutils
both provide.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .entries import Entry, Ids, Inspection, Observed
from .targets.base import ExecResult

# Runs argv inside the sandbox as root, with optional stdin.
Exec = Callable[[Sequence[str], bytes | None], ExecResult]

# Arguments: one per path, "P:/path" (the path itself) or "R:/path" (and all below).
# Output, one record per line, tab-separated, the path last:
#   U <resolved> <path>   the nearest existing ancestor is reached through a symlink
#   S <hexmode> <uid> <gid> <size> <path>
#   H <sha256> <path>     for regular files
#   L <target> <path>     for symlinks
INSPECT_SCRIPT = r"""
set -f
IFS='
'
tab=$(printf '\t')
list=''
for spec in "$@"; do
  p=${spec#?:}
  d=$p
  while :; do d=$(dirname -- "$d"); [ -d "$d" ] && break; done
  r=$(cd -P -- "$d" 2>/dev/null && pwd -P)
  if [ "$r" != "$d" ]; then printf 'U\t%s\t%s\n' "$r" "$p"; continue; fi
  if [ -L "$p" ] || [ -e "$p" ]; then
    case $spec in
      R:*) if [ -d "$p" ] && [ ! -L "$p" ]; then list="$list$(find "$p")
"; else list="$list$p
"; fi ;;
      *) list="$list$p
" ;;
    esac
  fi
done
[ -n "$list" ] || exit 0
stat -c "S$tab%f$tab%u$tab%g$tab%s$tab%n" $list || exit 3
files=''
for p in $list; do
  if [ -L "$p" ]; then printf 'L\t%s\t%s\n' "$(readlink "$p")" "$p"
  elif [ -f "$p" ]; then files="$files$p
"
  fi
done
[ -z "$files" ] || sha256sum $files | sed 's/^\([0-9a-f]*\)  /H\t\1\t/' || exit 3
"""

# Arguments: a list of operations, run in order, then "--inspect" and the inspector's
# arguments, so that one exec both writes and reads back. "tar" reads a tar stream
# from stdin and extracts it at /; the others are: rm PATH, ownr UID:GID PATH, and
# own UID:GID N PATH... / mode OCTAL N PATH... for N paths at once (one chown or
# chmod for many paths: a process per path costs more than the tar stream). The
# eval only ever sees references like "${3}", never a path. The first failure
# exits with status 4.
APPLY_SCRIPT = (
    r"""
many() { # many N: the references "${1}" ... "${N}", for eval
  refs=''; i=1
  while [ "$i" -le "$1" ]; do refs="$refs \"\${$i}\""; i=$((i + 1)); done
}
while [ $# -gt 0 ]; do
  op=$1; shift
  case $op in
    --inspect) break ;;
    rm) rm -rf "$1" || exit 4; shift ;;
    tar) tar -x -f - -C / || exit 4 ;;
    ownr) chown -R -h "$1" "$2" || exit 4; shift 2 ;;
    own|mode)
      arg=$1; n=$2; shift 2; many "$n"
      if [ "$op" = own ]; then eval "chown -h \"\$arg\" $refs" || exit 4
      else eval "chmod \"\$arg\" $refs" || exit 4; fi
      shift "$n" ;;
    *) echo "clawguard: unknown operation $op" >&2; exit 4 ;;
  esac
done
"""
    + INSPECT_SCRIPT
)

PASSWD_SCRIPT = "cat /etc/passwd; echo '--clawguard--'; cat /etc/group 2>/dev/null || true"

_KINDS = {0o100000: "file", 0o040000: "dir", 0o120000: "symlink"}


class ProtocolError(Exception):
    """The sandbox answered with something the scripts never print."""


def inspect_args(entries: Iterable[Entry]) -> list[str]:
    seen: dict[str, bool] = {}
    for entry in entries:
        seen[entry.path] = seen.get(entry.path, False) or entry.recursive
    return [("R:" if recursive else "P:") + path for path, recursive in seen.items()]


def parse_inspection(output: str) -> Inspection:
    result = Inspection()
    hashes: dict[str, str] = {}
    links: dict[str, str] = {}
    for line in output.splitlines():
        if not line:
            continue
        tag, _, rest = line.partition("\t")
        if tag == "U":
            resolved, _, path = rest.partition("\t")
            result.unsafe[path] = resolved
        elif tag == "S":
            fields = rest.split("\t", 4)
            if len(fields) != 5:
                raise ProtocolError(f"bad stat record: {line!r}")
            hexmode, uid, gid, size, path = fields
            raw = int(hexmode, 16)
            result.found[path] = Observed(
                path=path,
                kind=_KINDS.get(raw & 0o170000, "other"),  # type: ignore[arg-type]
                mode=raw & 0o7777,
                uid=int(uid),
                gid=int(gid),
                size=int(size),
            )
        elif tag == "H":
            digest, _, path = rest.partition("\t")
            hashes[path] = digest
        elif tag == "L":
            target, _, path = rest.partition("\t")
            links[path] = target
        else:
            raise ProtocolError(f"unexpected line from the inspector: {line!r}")
    for path, obs in list(result.found.items()):
        if path in hashes or path in links:
            result.found[path] = Observed(
                obs.path, obs.kind, obs.mode, obs.uid, obs.gid, obs.size, hashes.get(path), links.get(path)
            )
    return result


@dataclass
class Write:
    """One batch of changes for the apply script: deletions, a tar stream, fix-ups."""

    remove: list[str]
    members: list[tuple[Entry, Ids | None]]
    fixups: list[tuple[Entry, Ids | None]]

    def args(self) -> list[str]:
        ops: list[str] = []
        for path in self.remove:
            ops += ["rm", path]
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
                    recursive += ["ownr", f"{ids.uid}:{ids.gid}", entry.path]
                else:
                    owners.setdefault(f"{ids.uid}:{ids.gid}", []).append(entry.path)
            if entry.mode is not None and entry.kind != "symlink":
                # Five digits: GNU chmod keeps a directory's setgid bit (NemoClaw's flat layout
                # sets it) unless the mode has an extra leading zero; busybox reads it the same.
                modes.setdefault(f"0{entry.mode:04o}", []).append(entry.path)
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


class SandboxFS:
    """Inspect and write one live sandbox through an exec function."""

    def __init__(self, run: Exec) -> None:
        self._run = run

    def _check(self, what: str, argv: Sequence[str], stdin: bytes | None = None) -> str:
        result = self._run(argv, stdin)
        if result.code != 0:
            text = result.stderr.decode(errors="replace").strip()[-400:] or f"exit status {result.code}"
            raise SandboxCommandFailed(f"{what} failed inside the sandbox: {text}")
        return result.stdout.decode("utf-8", errors="surrogateescape")

    def users(self) -> UserTable:
        return UserTable.parse(self._check("reading /etc/passwd", ["sh", "-c", PASSWD_SCRIPT]))

    def users_and_inspect(self, entries: Iterable[Entry]) -> tuple[UserTable, Inspection]:
        """The user table and an inspection, in one exec (a restore's whole read side)."""
        argv = ["sh", "-c", PASSWD_SCRIPT + "; echo '--inspect--'\n" + INSPECT_SCRIPT, "sh", *inspect_args(entries)]
        users, _, inspection = self._check("reading the sandbox", argv).partition("--inspect--\n")
        return UserTable.parse(users), parse_inspection(inspection)

    def inspect(self, entries: Iterable[Entry]) -> Inspection:
        args = inspect_args(entries)
        if not args:
            return Inspection()
        return parse_inspection(self._check("inspecting files", ["sh", "-c", INSPECT_SCRIPT, "sh", *args]))

    def read_files(self, paths: Sequence[str]) -> dict[str, bytes]:
        """The contents of regular files, in one exec (a tar stream: any name survives)."""
        if not paths:
            return {}
        argv = ["sh", "-c", 'cd / && exec tar -c -f - "$@"', "sh", *(p.lstrip("/") for p in paths)]
        result = self._run(argv, None)
        if result.code != 0:
            text = result.stderr.decode(errors="replace").strip()[-400:] or f"exit status {result.code}"
            raise SandboxCommandFailed(f"reading files failed inside the sandbox: {text}")
        contents: dict[str, bytes] = {}
        wanted = set(paths)
        try:
            with tarfile.open(fileobj=io.BytesIO(result.stdout), mode="r:") as tar:
                for info in tar:
                    path = "/" + info.name.strip("/")
                    handle = tar.extractfile(info) if info.isfile() and path in wanted else None
                    if handle is not None:
                        contents[path] = handle.read()
        except (tarfile.TarError, EOFError) as exc:
            raise SandboxCommandFailed(f"reading files: not a tar stream ({exc})") from None
        return contents

    def apply(self, write: Write, verify: Iterable[Entry]) -> Inspection:
        """Apply ``write``, then inspect ``verify`` again, in one exec."""
        argv = ["sh", "-c", APPLY_SCRIPT, "sh", *write.args(), "--inspect", *inspect_args(verify)]
        return parse_inspection(self._check("writing files", argv, write.stream()))


class SandboxCommandFailed(Exception):
    """A command inside the sandbox exited non-zero; the message holds its stderr tail."""
