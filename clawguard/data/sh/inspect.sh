# The inspector (sandboxfs.SandboxFS.inspect). Arguments: the text of lib-describe.sh, then one
# per path: "P:" (the path itself), "R:" (it and everything below it) or "C:" (the path itself,
# and its content when it is a regular file), then the path as path_arg sends it. Paths with the
# same parent must be adjacent (sandboxfs.inspect_args): each distinct parent is resolved once.
# Output: describe's batches, contents' records, and for each path whose nearest existing
# ancestor is reached through a symlink, U <resolved> <path>; then a D batch: each nearest
# existing ancestor that is reached without one (who may write there decides who writes, Write).
# Exits 3 when a path cannot be described.
# Each line `. ./NAME.sh` is replaced by NAME.sh when loaded (targets.base.shell_script): one script.
# shellcheck shell=sh source-path=SCRIPTDIR
. ./lib-path.sh
. ./lib-describe.sh
. ./lib-contents.sh

set -f
unset CDPATH
# shellcheck disable=SC2034  # D is used by the find command below, inside the string it evals
D=$1; shift
k=0; c=0; j=0; last=''; roots=''; paths=''; texts=''; dirs=''
for spec do
  path "${spec#??}"
  d=${p%/*}; d=${d:-/}
  if [ "$d" != "$last" ]; then
    last=$d; missing=''
    while [ ! -d "$d" ]; do d=${d%/*}; d=${d:-/}; missing=1; done
    if cd -P "$d" 2>/dev/null; then r=$PWD; else r=''; fi
    if [ "$r" = "$d" ]; then
      unsafe=''; j=$((j + 1)); eval "w$j=\$d"; dirs="$dirs \"\$w$j\""
    else unsafe=1; fi
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
tag=D; eval "describe $dirs"; tag=B
eval "contents $texts"
