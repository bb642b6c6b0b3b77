# describe PATH...: one batch record (NUL-terminated fields) for absolute paths that exist:
#   B <n> <name>... <stat's n lines "hexmode uid gid size", in the names' order>
# (D instead of B when $tag says so: the directories that hold the paths asked for)
#   L <index> <target>                              for each symlink, then
#   H <indices of the regular files> <sha256sum's output for them, in that order>
# Exits 3 when stat, readlink or sha256sum fails. It runs in the inspector's shell, and in
# each shell `find -exec` starts, whose script is this text (the inspector's first argument).
# shellcheck shell=sh

describe() {
  [ "$#" -gt 0 ] || return 0
  printf '%s\0%s\0' "${tag:-B}" "$#"
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
