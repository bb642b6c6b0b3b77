# The root role's tools (apply.sh). Each acts in the current directory, which `go` made a
# directory reached without a symlink, on names in it ("./name"), never on a path that is
# resolved again: whatever the agent renames above it afterwards, the shell stays where it is.
# Every refusal or failure exits with status 4 (refuse: with "clawguard: refused: PATH WHY").
# shellcheck shell=sh

refuse() {
  printf 'clawguard: refused: %s %s\n' "$1" "$2" >&2
  exit 4
}
# go DIR PATH [locked]: enter DIR (PATH itself, or a name in the current directory), then check
# on the directory entered that it is PATH: no symlink was followed on the way and nothing was
# swapped. With "locked", also that root owns it and that nobody else may write in it, or that
# it is sticky (NemoClaw's split layout keeps ~/.openclaw root's, 1777): then no name root owns
# in it can be renamed or removed but by root. In a sticky one $sticky is set, and only what
# root owns there is chmodded (another's entry could be swapped for a link between check and act).
go() {
  cd -P "$1" 2>/dev/null || refuse "$2" "is not a directory (a symlink or swapped path?)"
  here=$(pwd -P && echo .) || refuse "$2" "cannot be checked"
  [ "${here%?.}" = "$2" ] || refuse "$2" "is not where it was read (a symlink or swapped path?)"
  sticky=''
  if [ -n "${3:-}" ]; then
    s=$(stat -c '%u %f' .) || refuse "$2" "cannot be checked"
    [ "${s%% *}" = 0 ] || refuse "$2" "is not a root-owned directory the agent cannot write (a symlink or swapped path?)"
    if [ $((0x${s#* } & 18)) != 0 ]; then
      [ $((0x${s#* } & 512)) != 0 ] ||
        refuse "$2" "is not a root-owned directory the agent cannot write (a symlink or swapped path?)"
      sticky=1
    fi
  fi
}
# wipe NAME PATH: remove NAME (which is PATH) from the current directory and everything below
# it; a directory is entered and checked (go) before what is in it is removed. Only names are
# unlinked, in directories that are where they should be: nothing outside is reached.
wipe() {
  if [ -d "$1" ] && [ ! -L "$1" ]; then
    ( go "$1" "$2"; w=$2; set +f; set --
      for c in ./* ./.[!.]* ./..?*; do
        if [ -d "$c" ] && [ ! -L "$c" ]; then wipe "$c" "$w/${c#./}"
        elif [ -e "$c" ] || [ -L "$c" ]; then set -- "$@" "$c"; fi
      done
      [ "$#" -eq 0 ] || rm -f -- "$@" || exit 4 ) || exit 4
    rmdir -- "$1" || exit 4
  elif [ -e "$1" ] || [ -L "$1" ]; then
    rm -f -- "$1" || exit 4
  fi
}
# give PATH: the current directory is PATH (checked). Give everything below it, then itself, to
# $ids, never following a symlink: each directory is entered and checked like this one; anything
# else is given only where nobody but root may write (there nothing can be swapped for a link to
# another file), or left as it is when it is $ids's already.
give() {
  s=$(stat -c '%u %f' .) || exit 4
  locked=''; if [ "${s%% *}" = 0 ] && [ $((0x${s#* } & 18)) = 0 ]; then locked=1; fi
  g=$1; set +f; set --
  for c in ./* ./.[!.]* ./..?*; do
    if [ -d "$c" ] && [ ! -L "$c" ]; then
      ( go "$c" "$g/${c#./}"; give "$g/${c#./}" ) || exit 4
    elif [ -e "$c" ] || [ -L "$c" ]; then
      if [ -n "$locked" ]; then set -- "$@" "$c"
      elif [ "$(stat -c %u:%g -- "$c")" != "$ids" ]; then
        refuse "$g/${c#./}" "is someone else's, in a directory the agent can write: it cannot be given away safely"
      fi
    fi
  done
  [ "$#" -eq 0 ] || chown -h -- "$ids" "$@" || exit 4
  chown -- "$ids" . || exit 4
}
# ops check|do OP...: the root role's operations, up to "--inspect". "check" enters every
# directory they work in that exists already and checks it (go), touching nothing, so that a
# refusal leaves the whole batch undone; "do" checks again and does them.
ops() {
  mode=$1; shift
  while [ "$#" -gt 0 ]; do
    op=$1; shift
    case $op in
      --inspect) break ;;
      tar) if [ "$mode" = "do" ]; then stage=$(mktemp -d) && tar -x -f - -C "$stage" || exit 4; fi ;;
      in|at)
        path "$1"; shift
        # shellcheck disable=SC2154  # p: set by path (lib-path.sh)
        dir=$p; lock=''
        if [ "$op" = in ]; then lock=1; fi
        # (A directory that is a symlink now is one this batch replaces: checked when entered.)
        if [ "$mode" = "do" ] || { [ -d "$dir" ] && [ ! -L "$dir" ]; }; then go "$dir" "$dir" "$lock"; fi ;;
      rm|mkdir|put|own|mode|dir|tree)
        case $op in
          own|tree) ids=$1; shift ;;
          mode) m=$1; shift ;;
          dir) ids=$1; m=$2; shift 2 ;;
        esac
        path "$1"; shift
        if [ "$mode" = check ]; then
          case $op in dir|tree) if [ -d "$p" ] && [ ! -L "$p" ]; then go "$p" "$p"; fi ;; esac
          continue
        fi
        q=${p%/*}
        if [ "${q:-/}" != "$dir" ]; then echo "clawguard: $p is not in $dir" >&2; exit 4; fi
        case $op in mkdir|put|own|mode)
          if [ -z "$lock" ]; then echo "clawguard: $op outside a checked root directory" >&2; exit 4; fi ;;
        esac
        n=./${p##*/}
        case $op in
          rm) wipe "$n" "$p" ;;
          mkdir) if [ ! -d "$n" ] || [ -L "$n" ]; then rm -f -- "$n" && mkdir -- "$n" || exit 4; fi ;;
          put)
            if [ -d "$stage$p" ] && [ ! -L "$stage$p" ]; then
              if [ ! -d "$n" ] || [ -L "$n" ]; then rm -f -- "$n" && mkdir -- "$n" || exit 4; fi
            else
              if [ -d "$n" ] && [ ! -L "$n" ]; then wipe "$n" "$p"; else rm -f -- "$n" || exit 4; fi
              mv -f -- "$stage$p" "$n" || exit 4
            fi ;;
          own) chown -h -- "$ids" "$n" || exit 4 ;;
          mode)
            if [ -n "$sticky" ] && [ ! -L "$n" ] && [ "$(stat -c %u -- "$n")" != 0 ]; then
              refuse "$p" "is not root's, in a directory others may write: its mode cannot be set safely"
            fi
            if [ ! -L "$n" ]; then chmod -- "$m" "$n" || exit 4; fi ;;
          dir)
            ( go "$n" "$p"
              if [ "$ids" != - ]; then chown -- "$ids" . || exit 4; fi
              if [ "$m" != - ]; then chmod -- "$m" . || exit 4; fi ) || exit 4 ;;
          tree) ( go "$n" "$p"; give "$p" ) || exit 4 ;;
        esac ;;
      *) echo "clawguard: unknown operation $op" >&2; exit 4 ;;
    esac
  done
}
