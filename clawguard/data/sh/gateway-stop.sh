# Stops the gateway (gateway.Gateway, the built-in stop). Arguments: the port, the seconds
# before SIGKILL. Runs as root in the pod. Finds the processes listening on the port (from
# /proc/net/tcp*: no ss or lsof needed), the `openclaw` launcher above them and everything below
# them, SIGTERMs them all, waits, SIGKILLs what is left. Exit 0 once nothing listens on the port.
# A pod's root has no CAP_SYS_PTRACE, so another user's sockets may be unreadable: then the
# listener is the process titled like a gateway (`openclaw-gateway`, or a bare `openclaw` in
# 2026.6, or `openclaw gateway run`). Exit 2 when something listens but none of that finds it,
# 1 when it still listens after SIGKILL.
# shellcheck shell=sh

port=$(printf '%04X' "$1") grace=$2
sockets() { # the inodes of the sockets listening on the port
  awk -v p=":$port" '$4 == "0A" && toupper(substr($2, length($2) - 4)) == p { print $10 }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
listeners() {
  inodes=$(sockets)
  [ -n "$inodes" ] || return 0
  found=$(for fd in /proc/[0-9]*/fd/*; do
    link=$(readlink "$fd" 2>/dev/null) || continue
    for inode in $inodes; do
      if [ "$link" = "socket:[$inode]" ]; then p=${fd#/proc/}; echo "${p%%/*}"; fi
    done
  done | sort -u)
  if [ -z "$found" ]; then
    found=$(for cmdline in /proc/[0-9]*/cmdline; do
      title=$(tr '\0' ' ' <"$cmdline" 2>/dev/null | sed 's/ *$//')
      # (split in two, or this script's own command line would match)
      case $title in
        openclaw-gateway* | openclaw | *"openclaw gateway"" run"*) p=${cmdline#/proc/}; echo "${p%%/*}" ;;
      esac
    done)
  fi
  echo "$found"
}
parents() { # "pid ppid" per process
  for stat in /proc/[0-9]*/stat; do
    read -r line <"$stat" 2>/dev/null && echo "$line"
  done | sed -n 's/^\([0-9]*\) (.*) [A-Za-z] \([0-9]*\) .*/\1 \2/p'
}
family() { # the pids given, the openclaw launchers above them, everything below them
  table=$(parents)
  set -- "$@"
  all=" $* "
  for pid in "$@"; do
    up=$(echo "$table" | awk -v p="$pid" '$1 == p { print $2 }')
    while [ -n "$up" ] && [ "$up" -gt 1 ] && tr '\0' ' ' <"/proc/$up/cmdline" 2>/dev/null | grep -q '^openclaw'; do
      all="$all$up "
      up=$(echo "$table" | awk -v p="$up" '$1 == p { print $2 }')
    done
  done
  changed=1
  while [ "$changed" = 1 ]; do
    changed=0
    for child in $(echo "$table" | awk -v s="$all" 'index(s, " " $2 " ") { print $1 }'); do
      case $all in *" $child "*) ;; *) all="$all$child "; changed=1 ;; esac
    done
  done
  # shellcheck disable=SC2086  # split on purpose: one line, one space between the pids
  echo $all
}
pids=$(listeners)
if [ -z "$pids" ]; then
  [ -z "$(sockets)" ] && exit 0  # nothing listens: stopped already
  echo "cannot tell which process serves port $1" >&2
  exit 2
fi
# shellcheck disable=SC2086  # a list of pids: one argument per pid, on purpose
victims=$(family $pids)
# shellcheck disable=SC2086  # a list of pids: one argument per pid, on purpose
kill -TERM $victims 2>/dev/null
i=0
while [ "$i" -lt $((grace * 5)) ]; do
  alive=''
  for pid in $victims; do [ -d "/proc/$pid" ] && alive="$alive $pid"; done
  [ -z "$alive" ] && [ -z "$(listeners)" ] && exit 0
  sleep 0.2
  i=$((i + 1))
done
left=$(listeners)
# shellcheck disable=SC2086,SC2046  # lists of pids: one argument per pid, on purpose
kill -KILL $victims $([ -n "$left" ] && family $left) 2>/dev/null
sleep 0.5
[ -z "$(listeners)" ] || { echo "still listening on port $1 after SIGKILL" >&2; exit 1; }
