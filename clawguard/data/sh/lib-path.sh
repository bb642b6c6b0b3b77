# path ARG: sets $p to the path that ARG carries: ARG itself when it starts with "/",
# else (after a "%") the bytes its printf %b escapes make (sandboxfs.path_arg). The "."
# keeps the command substitution from eating a trailing newline of the name.
# Exits 3 for an argument that is neither.
# shellcheck shell=sh

path() {
  case $1 in
    /*) p=$1 ;;
    %*) p=$(printf '%b.' "${1#%}") || exit 3; p=${p%.} ;;
    *) echo "clawguard: not a path argument" >&2; exit 3 ;;
  esac
}
