# agent_ops OP...: the sandbox user's operations (apply.sh's agent role), up to "--inspect", on
# whole paths: rm PATH; tar (a tar stream on stdin, extracted at /); own UID:GID N PATH... and
# mode OCTAL N PATH... for N paths at once (one chown or chmod for many paths: a process per path
# costs more than the tar stream). The eval only ever sees references like "${3}", never a path.
# The first failure exits with status 4.
# shellcheck shell=sh

agent_ops() {
  while [ "$#" -gt 0 ]; do
    op=$1; shift
    case $op in
      --inspect) break ;;
      rm)
        path "$1"
        # shellcheck disable=SC2154  # p: set by path (lib-path.sh)
        rm -rf -- "$p" || exit 4; shift ;;
      tar) tar -x -f - -C / || exit 4 ;;
      own|mode)
        arg=$1; n=$2; shift 2; refs=''; i=1
        while [ "$i" -le "$n" ]; do
          eval "a=\${$i}"
          # shellcheck disable=SC2154  # a: set by the eval
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
}
