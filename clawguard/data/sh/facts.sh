# A pod's facts (agent.probe). Arguments: the config directory and the data directory of
# NemoClaw's split layout, and the agent's command. Prints the user table (passwd.sh), the style
# (split when ~/.openclaw holds NemoClaw's symlinks or .openclaw-data exists), then the
# package.json nearest above what the command resolves to (up to three levels: npm links a
# package's bin file, at its root or in a subdirectory). Through tr: no NUL from a file can
# reach the reply, where a NUL ends the facts and starts an inspection (facts-and-inspect.sh).
# Each line `. ./NAME.sh` is replaced by NAME.sh when loaded (targets.base.shell_script): one script.
# shellcheck shell=sh source-path=SCRIPTDIR
{
. ./passwd.sh
echo '--style--'
style='flat'
for name in agents skills workspace; do
  if [ -L "$1/$name" ]; then style='split'; fi
done
if [ -d "$2" ]; then style='split'; fi
echo "$style"
echo '--package--'
if c=$(command -v "$3") && t=$(readlink -f "$c"); then
  d=${t%/*}
  for _ in 1 2 3; do
    if [ -f "$d/package.json" ]; then cat "$d/package.json"; break; fi
    d=${d%/*}
  done
fi
} | tr -d '\000'
