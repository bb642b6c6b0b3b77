# Runs a command for as long as clawguard is attached (targets._cluster_events). Arguments:
# the command (`ctr ... events`); its output is the command's. Docker never ends an exec whose
# client went away, so a daemon that exited (or was SIGKILLed) would leave `ctr events` running
# in the cluster for good. The exec's stdin is our connection: when it closes, cat sees EOF and
# the watcher ends the command. (An asynchronous list's stdin is /dev/null, hence fd 3.)
# shellcheck shell=sh

exec 3<&0
"$@" </dev/null &
child=$!
(cat >/dev/null; kill "$child") <&3 >/dev/null 2>&1 &
exec 3<&-
wait "$child"
