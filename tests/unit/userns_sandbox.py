"""The sandbox of the unit tests without root: the same busybox root, entered in an
unprivileged user namespace, where the sandbox user's ownership is virtual.

Without root only one uid exists in a namespace a user makes (no newuidmap, no
/etc/subuid): the caller is root in it, and the sandbox user (998) cannot own a file
for real. So every command still runs the real clawguard scripts with the root's real
busybox, chrooted (``unshare --map-root-user --mount``, then chroot(8)), but who owns
what is kept in a table, ``/dev/clawguard-owners`` in the root: one line per change,
"INODE UID GID", the last line for an inode wins, and an inode in no line is root's.
The shell library ``/dev/clawguard-lib.sh`` (:data:`LIB`) is sourced first by every
``sh -c`` the target runs; it defines shell functions that shadow the applets that read
or set an owner, or make a file whose owner matters:

* ``stat -c``: busybox's, with ``%u`` and ``%g`` read from the table;
* ``chown``: writes the table (as the sandbox user: only its own files, to itself, as
  the kernel would allow);
* ``id``: the identity the exec was asked for (``user="998:998"``, else root);
* ``tar -x``, ``mkdir``, ``mktemp``: the real ones, then what they made is the caller's
  (a directory tar finds already there keeps its owner);
* ``find``: busybox's, whose ``-exec`` of one of these, or of ``sh -c``, gets the
  library too (busybox runs its applets in-process, so a wrapper in /bin would never
  be called: functions are the only way in).

``/dev/null`` is the host's, bind-mounted in the namespace; the table and the library
live beside it, in no path a restore looks at, and :func:`chroot_sandbox.snapshot`
leaves them out.

What this cannot be is a check of permissions: every command runs as the one mapped
uid, so the sandbox user can write root's directories and read root's 0600 files. The
tests about who may write what, and the races a hostile agent runs, need the real
chroot (root); the tests of the engine's flow (what is read, planned, written and
verified, in which order, and how often) run here the same as there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
MOUNT = shutil.which("mount") or "/usr/bin/mount"
HOST_SH = "/bin/sh"

TABLE = "dev/clawguard-owners"
LIB_PATH = "dev/clawguard-lib.sh"
ID_VARIABLE = "CLAWGUARD_FAKE_ID"

# The shell functions; see the module's docstring. Their variables are local (a script's
# own variables stay as they were) and they call busybox's applets by name, never each other
# but where said.
LIB = r"""# The unprivileged unit-test sandbox's shadows of the applets that read or set owners
# (tests/unit/userns_sandbox.py). Sourced first by every shell of the sandbox.
_cg_t=/dev/clawguard-owners
_cg_l=/dev/clawguard-lib.sh
_cg_u=${CLAWGUARD_FAKE_ID%%:*}
_cg_g=${CLAWGUARD_FAKE_ID#*:}

# _cg_sub TEXT FROM TO: TEXT with every FROM replaced by TO, in $_cg_r.
_cg_sub() {
  local rest=$1
  _cg_r=''
  while :; do
    case $rest in
      *"$2"*) _cg_r=$_cg_r${rest%%"$2"*}$3; rest=${rest#*"$2"} ;;
      *) _cg_r=$_cg_r$rest; return 0 ;;
    esac
  done
}

# _cg_own UID:GID [-L] PATH...: the table says PATH (followed with -L) is UID:GID's.
_cg_own() {
  local ids=$1 found
  shift
  case $ids in *:*) ;; *) echo "clawguard-fake: $ids: want UID:GID" >&2; return 1 ;; esac
  if [ "${1-}" = -L ]; then shift; [ "$#" -gt 0 ] || return 0; found=$(busybox stat -L -c %i -- "$@") || return 1
  else [ "$#" -gt 0 ] || return 0; found=$(busybox stat -c %i -- "$@") || return 1; fi
  printf '%s\n' "$found" | busybox awk -v u="${ids%%:*}" -v g="${ids#*:}" '{ print $1, u, g }' >>"$_cg_t"
}

stat() {
  local follow='' format='' out rc
  while :; do
    case ${1-} in
      -L) follow=-L; shift ;;
      -c) format=$2; shift 2 ;;
      --) shift; break ;;
      -*) echo "clawguard-fake: stat $1: not shadowed" >&2; return 1 ;;
      *) break ;;
    esac
  done
  if [ -z "$format" ]; then echo "clawguard-fake: stat without -c: not shadowed" >&2; return 1; fi
  _cg_sub "$format" %u @CGU@; _cg_sub "$_cg_r" %g @CGG@
  if [ -n "$follow" ]; then out=$(command stat -L -c "@CG%i@$_cg_r" -- "$@"); rc=$?
  else out=$(command stat -c "@CG%i@$_cg_r" -- "$@"); rc=$?; fi
  if [ -n "$out" ]; then
    printf '%s\n' "$out" | busybox awk -v t="$_cg_t" '
      BEGIN { while ((getline line < t) > 0) { split(line, w, " "); u[w[1]] = w[2]; g[w[1]] = w[3] } }
      /^@CG[0-9]+@/ {
        i = index(substr($0, 4), "@"); k = substr($0, 4, i - 1); s = substr($0, i + 4)
        gsub(/@CGU@/, (k in u) ? u[k] : 0, s); gsub(/@CGG@/, (k in g) ? g[k] : 0, s); print s; next
      }
      { print }'
  fi
  return "$rc"
}

chown() {
  local follow=-L ids mine
  while :; do
    case ${1-} in
      -h) follow=''; shift ;;
      --) shift; break ;;
      -*) echo "clawguard-fake: chown $1: not shadowed" >&2; return 1 ;;
      *) break ;;
    esac
  done
  ids=$1; shift
  if [ "$_cg_u" != 0 ]; then
    # As the kernel would have it: not root, so only one's own files, and to oneself.
    if [ "${ids%%:*}" != "$_cg_u" ]; then echo "chown: $ids: Operation not permitted" >&2; return 1; fi
    if [ -n "$follow" ]; then mine=$(stat -L -c %u -- "$@") || return 1; else mine=$(stat -c %u -- "$@") || return 1; fi
    if [ -n "$(printf '%s\n' "$mine" | busybox grep -vx "$_cg_u")" ]; then
      echo "chown: Operation not permitted" >&2; return 1
    fi
  fi
  if [ -n "$follow" ]; then _cg_own "$ids" -L "$@"; else _cg_own "$ids" "$@"; fi
}

id() {
  case ${1-} in
    -u) echo "$_cg_u" ;;
    -g) echo "$_cg_g" ;;
    '') echo "uid=$_cg_u gid=$_cg_g" ;;
    *) echo "clawguard-fake: id $1: not shadowed" >&2; return 1 ;;
  esac
}

mkdir() {
  command mkdir "$@" || return
  while :; do
    case ${1-} in
      --) shift; break ;;
      -m) shift 2 ;;
      -*) shift ;;
      *) break ;;
    esac
  done
  _cg_own "$_cg_u:$_cg_g" "$@"
}

mktemp() {
  local made
  made=$(command mktemp "$@") || return
  _cg_own "$_cg_u:$_cg_g" "$made" || return
  printf '%s\n' "$made"
}

# tar -x [-f FILE] [-C DIR]: busybox's (without restoring owners, which only one uid could
# have here), then every member it made is the caller's: unpacked once more into a private
# directory first, for the names (any byte, a newline too), and the directories that were
# there already kept as they were.
tar() {
  local dir=. file=- s rc
  case ${1-} in -x) ;; *) command tar "$@"; return ;; esac
  shift
  while [ "$#" -gt 0 ]; do
    case $1 in
      -f) file=$2; shift 2 ;;
      -C) dir=$2; shift 2 ;;
      *) echo "clawguard-fake: tar -x $1: not shadowed" >&2; return 2 ;;
    esac
  done
  case $dir in /*) ;; *) dir=$PWD/$dir ;; esac
  s=$(busybox mktemp -d /dev/clawguard-tar.XXXXXX) || return 2
  if [ "$file" = - ]; then busybox cat >"$s/stream" || { busybox rm -rf "$s"; return 2; }; file=$s/stream; fi
  busybox mkdir "$s/x" && command tar -x -o -f "$file" -C "$s/x" || { rc=$?; busybox rm -rf "$s"; return "$rc"; }
  (cd "$s/x" && busybox find . -mindepth 1 -type d -exec sh -c '
    d=${1%/}; shift
    for p do p=$d/${p#./}; if [ -d "$p" ] && [ ! -L "$p" ]; then busybox stat -c %i -- "$p"; fi; done' sh "$dir" {} +) >"$s/kept"
  command tar -x -o -f "$file" -C "$dir"; rc=$?
  if [ "$rc" = 0 ]; then
    (cd "$s/x" && busybox find . -mindepth 1 -exec sh -c '
      d=${1%/}; shift; n=$#
      for p do set -- "$@" "$d/${p#./}"; done
      shift "$n"; busybox stat -c %i -- "$@"' sh "$dir" {} +) >"$s/made"
    busybox awk -v u="$_cg_u" -v g="$_cg_g" 'NR == FNR { kept[$1] = 1; next } !($1 in kept) { print $1, u, g }' \
      "$s/kept" "$s/made" >>"$_cg_t"
  fi
  busybox rm -rf "$s"
  return "$rc"
}

find() {
  local n=$# a next=''
  for a do
    case $next in
      exec)
        next=''
        case $a in
          stat|tar|chown|id|mkdir|mktemp) set -- "$@" sh -c ". $_cg_l"'; "$0" "$@"' "$a"; continue ;;
          sh) next=sh ;;
        esac ;;
      sh) next=''; if [ "$a" = -c ]; then next=script; fi ;;
      script) next=''; set -- "$@" ". $_cg_l
$a"; continue ;;
    esac
    case $a in -exec|-ok) next=exec ;; esac
    set -- "$@" "$a"
  done
  shift "$n"
  command find "$@"
}
"""

SHADOWED = ("stat", "chown", "id", "mkdir", "mktemp", "tar", "find")

# Host side, in the new namespaces: the host's /dev/null over the root's (a plain file), then
# chroot(8). Arguments: mount, chroot, the root, the command.
_ENTER = '"$0" --bind /dev/null "$2/dev/null" && c=$1 r=$2 && shift 2 && exec "$c" "$r" "$@"'


def prepare(root: Path) -> None:
    """Make ``root`` (a busybox root, /dev empty) one for :func:`command`: a /dev/null to
    mount over, the library, an empty table."""
    dev = root / "dev"
    dev.mkdir(exist_ok=True)
    (dev / "null").touch()
    (dev / "null").chmod(0o666)  # as the pod's: everyone writes to it
    (root / LIB_PATH).write_text(LIB)
    (root / TABLE).touch()


def is_unprivileged(root: Path) -> bool:
    return (root / TABLE).exists()


def ids_of(root: Path, user: str | None) -> str:
    """ "UID:GID" for an exec's ``user`` (None: root; a name: from the root's /etc/passwd)."""
    if user is None:
        return "0:0"
    name, _, group = user.partition(":")
    if not name.isdigit():
        for line in (root / "etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name:
                name, group = fields[2], group or fields[3]
                break
        else:
            raise ValueError(f"no user {name!r} in {root}/etc/passwd")
    return f"{name}:{group or name}"


def command(root: Path, chroot: str, argv: Sequence[str]) -> list[str]:
    """The host command that runs ``argv`` in ``root``: every ``sh -c SCRIPT`` in it sources
    the library first, and a shadowed applet called directly is called through a shell."""
    argv = list(argv)
    if argv and argv[0] in SHADOWED:
        argv = ["sh", "-c", '"$0" "$@"', *argv]
    for i in range(len(argv) - 2):
        if argv[i] == "sh" and argv[i + 1] == "-c":
            argv[i + 2] = f". /{LIB_PATH}\n{argv[i + 2]}"
    return [UNSHARE, "--map-root-user", "--mount", HOST_SH, "-c", _ENTER, MOUNT, chroot, str(root), *argv]


# ------------------------------------------------------------------------ the table, host side


def _table(root: Path) -> dict[int, tuple[int, int]]:
    owners: dict[int, tuple[int, int]] = {}
    for line in (root / TABLE).read_text().splitlines():
        words = line.split()
        if len(words) == 3:
            owners[int(words[0])] = (int(words[1]), int(words[2]))
    return owners


def owner(root: Path, path: Path) -> tuple[int, int]:
    """Who owns ``path`` (not followed) in the unprivileged ``root``."""
    return _table(root).get(path.lstat().st_ino, (0, 0))


def chown(root: Path, path: Path, uid: int, gid: int) -> None:
    """Give ``path`` (not followed) to uid:gid in the unprivileged ``root``, as os.chown would."""
    with open(root / TABLE, "a") as table:
        table.write(f"{path.lstat().st_ino} {uid} {gid}\n")


_busy: dict[Path, int] = {}
_busy_lock = threading.Lock()


@contextlib.contextmanager
def running(root: Path) -> Iterator[None]:
    """Around each exec in ``root``: when the last one running ends, the table forgets the
    inodes that are gone (one freed by an rm could come back as a new file, root's)."""
    with _busy_lock:
        _busy[root] = _busy.get(root, 0) + 1
    try:
        yield
    finally:
        with _busy_lock:
            _busy[root] -= 1
            if not _busy[root]:
                del _busy[root]
                _forget_the_gone(root)


def _forget_the_gone(root: Path) -> None:
    alive = set()
    for top, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            with contextlib.suppress(OSError):
                alive.add((Path(top) / name).lstat().st_ino)
    alive.add(root.lstat().st_ino)
    kept = {ino: ids for ino, ids in _table(root).items() if ino in alive}
    (root / TABLE).write_text("".join(f"{ino} {uid} {gid}\n" for ino, (uid, gid) in kept.items()))
