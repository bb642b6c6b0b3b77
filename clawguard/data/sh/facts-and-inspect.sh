# A pod's facts and a first read in one exec (agent.probe). Arguments: facts.sh's three, then
# the inspector's (inspect.sh). Output: the facts, a NUL, an inspection.
# Each line `. ./NAME.sh` is replaced by NAME.sh when loaded (targets.base.shell_script): one script.
# shellcheck shell=sh source-path=SCRIPTDIR
. ./facts.sh
printf '\0'
shift 3
. ./inspect.sh
