# contents PATH...: for each regular file, C <path> <od's hex dump of it> <od's exit status>
# (NUL-terminated fields). Hex, because a file may hold NULs; od is POSIX, in busybox and GNU
# coreutils. A file gone since it was described gives a non-zero status instead of failing the read.
# shellcheck shell=sh

contents() {
  for p do
    printf 'C\0%s\0' "$p"
    od -An -v -tx1 -- "$p" 2>/dev/null
    printf '\0%s\0' "$?"
  done
}
