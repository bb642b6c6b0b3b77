# Reads files (sandboxfs.SandboxFS.read_files). Arguments: paths (path_arg's). Prints a tar
# stream of them, named relative to /.
# Each line `. ./NAME.sh` is replaced by NAME.sh when loaded (targets.base.shell_script): one script.
# shellcheck shell=sh source-path=SCRIPTDIR
. ./lib-path.sh

cd / || exit 3
for a do shift; path "$a"; set -- "$@" "${p#/}"; done
exec tar -c -f - -- "$@"
