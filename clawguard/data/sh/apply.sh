# A batch of writes, then the read-back (sandboxfs.SandboxFS.apply). Arguments: the role, "agent"
# or "root"; its operations (Write.agent_args, Write.root_args); then "--inspect" and the
# inspector's arguments (inspect.sh), so that the batch's last exec both writes and reads back.
# Paths are path_arg's. Output: the inspector's, when there is a read-back; nothing else. The
# first failure exits with status 4.
#
# agent: run as the sandbox user (refused as root): whatever it follows, it can do no more than
# the agent itself could. root: every operation works in a directory entered first ("in DIR":
# root-owned and writable by nobody else, so nothing in it can be swapped; "at DIR": only
# checked to be where it should be, for what is safe anywhere that holds: entering a
# directory to chown or chmod it, "dir"; giving a tree away, "tree"; removing names, "rm").
# In an "in" block: rm, mkdir, put (move a member of the tar stream, unpacked first into a
# private directory, into place), own UID:GID, mode OCTAL, each on one name of it.
# Each line `. ./NAME.sh` is replaced by NAME.sh when loaded (targets.base.shell_script): one script.
# shellcheck shell=sh source-path=SCRIPTDIR
. ./lib-path.sh
. ./lib-root.sh
. ./lib-agent.sh

set -f
unset CDPATH
role=$1; shift
if [ "$role" = root ]; then
  umask 077
  stage=''
  trap 'if [ -n "$stage" ]; then rm -rf -- "$stage"; fi' EXIT
  ops check "$@"
  ops "do" "$@"
  cd / || exit 4
elif [ "$role" = agent ] && [ "$(id -u)" != 0 ]; then
  agent_ops "$@"
else
  echo "clawguard: refused: the sandbox user's writes must not run as root" >&2; exit 4
fi
while [ "$#" -gt 0 ]; do a=$1; shift; if [ "$a" = --inspect ]; then break; fi; done
if [ "$#" -eq 0 ]; then exit 0; fi  # nothing to read back here
. ./inspect.sh
