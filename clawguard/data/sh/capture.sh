# The capture of the agent's persisted paths (persist.capture), as the sandbox user. Arguments:
# the node command, persist.SNAPSHOT_JS, the known fingerprints (all, files: "" when there is no
# manifest), the known databases (JSON), the volatile tables (JSON), the count of path
# exclusions, the count of name exclusions, the exclusions (paths relative to /, as find's
# -path patterns; then -name patterns), then the include patterns (absolute paths or globs).
#
# 1. Expands the include patterns (the shell's pathname expansion only: their text is never
#    evaluated; matches are kept as positional parameters and reach find and tar through
#    references such as "${7}", so a name may hold any byte, a newline included).
# 2. Lists every entry of the set with stat (excluded subtrees pruned; a directory by its
#    mode and owner, its times move with every -wal that comes and goes), and prints
#    "clawguard-fingerprint ALL FILES" on stderr: ALL digests every line, FILES all but the
#    databases' own (their size, times and -wal). ALL as known: "clawguard-unchanged", and
#    nothing more is done.
# 3. FILES as known (only databases changed): Node.js compares their rows with the known
#    ones; the same: their lines, "clawguard-unchanged", done.
# 4. Otherwise: a snapshot of every database (their lines on stderr), then on stdout a tar
#    stream of every other entry, one of the directory of each database named directly, and
#    one of the snapshots, under their own names. Journals never travel. Nothing matched:
#    nothing printed.
# Exit 3: the stage or the tar stream failed; 5: a snapshot failed (its error on stderr).
# shellcheck shell=sh

cd / || exit 3
# shellcheck disable=SC2034  # node is used by the find command in $snapshot, which is eval'd
node=$1 js=$2 known_all=$3 known_files=$4 known_dbs=$5 volatile=$6 np=$7 nn=$8; shift 8
n=$#; i=0; k=0; prune=''; tops=''; dirs=''; last=''
IFS=''
for arg do
  i=$((i + 1))
  if [ "$i" -le "$np" ]; then set -- "$@" "$arg"; k=$((k + 1)); prune="$prune -o -path \"\${$k}\""; continue; fi
  if [ "$i" -le $((np + nn)) ]; then set -- "$@" "$arg"; k=$((k + 1)); prune="$prune -o -name \"\${$k}\""; continue; fi
  for path in $arg; do
    [ -L "$path" ] || [ -e "$path" ] || continue
    set -- "$@" "${path#/}"; k=$((k + 1)); tops="$tops \"\${$k}\""
    if [ -f "$path" ] && [ ! -L "$path" ] && [ "${path%.sqlite}" != "$path" ]; then
      dir=${path%/*}; dir=${dir#/}
      if [ -n "$dir" ] && [ "$dir" != "$last" ]; then
        set -- "$@" "$dir"; k=$((k + 1)); dirs="$dirs \"\${$k}\""; last=$dir
      fi
    fi
  done
done
IFS=' '
set -f
shift "$n"
[ -n "$tops" ] || exit 0
skip=''
[ -z "$prune" ] || skip="\\( ${prune# -o } \\) -prune -o"
entry='%y|%z|%i|%s|%f|%u|%g|%n'
list=$(eval "find $tops $skip -name '*.sqlite-wal' -exec stat -c 'S $entry' {} + -o -name '*.sqlite' \
  -exec stat -c 'S $entry' {} + -exec stat -c 'D %n' {} + -o -type d -exec stat -c 'F %f|%u|%g|%n' {} + \
  -o ! -name '*.sqlite-shm' ! -name '*.sqlite-journal' -exec stat -c 'F $entry' {} +" 2>/dev/null)
all=$(printf '%s\n' "$list" | sha256sum); all=${all%% *}
files=$(printf '%s\n' "$list" | grep -v '^S ' | sha256sum); files=${files%% *}
printf 'clawguard-fingerprint %s %s\n' "$all" "$files" >&2
if [ "$all" = "$known_all" ]; then printf 'clawguard-unchanged\n' >&2; exit 0; fi
dbs=''
case $list in "D "*|*"
D "*) dbs=1 ;; esac
if [ -n "$dbs" ]; then
  stage=$(mktemp -d "${TMPDIR:-/tmp}/clawguard.XXXXXX") || exit 3
  trap 'rm -rf "$stage"' EXIT
  printf '%s' "$js" >"$stage/snapshot.js" && printf '%s' "$known_dbs" >"$stage/known.json" &&
    printf '%s' "$volatile" >"$stage/volatile.json" || exit 3
  snapshot="find $tops $skip -type f -name '*.sqlite' -exec \"\$node\" --no-warnings \"\$stage/snapshot.js\" \
    \"\$mode\" \"\$stage\" {} +"
  if [ "$files" = "$known_files" ]; then
    mode=check
    if eval "$snapshot" 2>"$stage/err"; then
      cat "$stage/dbs" >&2 2>/dev/null; printf 'clawguard-unchanged\n' >&2; exit 0
    fi
    rm -f "$stage/dbs"
  fi
  # shellcheck disable=SC2034  # mode is used by the find command in $snapshot, which is eval'd
  mode=snapshot
  if ! eval "$snapshot" 2>"$stage/err"; then cat "$stage/err" >&2; printf 'clawguard: snapshot failed\n' >&2; exit 5; fi
  cat "$stage/dbs" >&2
fi
# GNU tar reads escapes (a backslash) in the names it is given, unless told not to; busybox does not.
plain=''
case $(tar --version 2>/dev/null) in *GNU*) plain=--no-unquote ;; esac
eval "find $tops $skip \\( -type f -name '*.sqlite' -o -name '*.sqlite-wal' -o -name '*.sqlite-shm' \
  -o -name '*.sqlite-journal' \\) -o -exec tar -c -f - $plain --no-recursion {} +" || exit 3
if [ -n "$dirs" ]; then eval "tar -c -f - $plain --no-recursion $dirs" || exit 3; fi
[ -n "$dbs" ] && [ -d "$stage/root" ] || exit 0
cd "$stage/root" || exit 3
set +f
set --
for top in * .[!.]* ..?*; do [ -e "$top" ] && set -- "$@" "$top"; done
[ "$#" -eq 0 ] || find "$@" -type f -name '*.sqlite' -exec tar -c -f - $plain --no-recursion {} + || exit 3
