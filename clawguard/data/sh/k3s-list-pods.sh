# Lists the pods of a cluster (targets.k3s discovery). Arguments: ctr, address, namespace,
# filter. Prints `ctr containers info` (JSON) of every matching container, then a line
# "--tasks--" and the task table. Exits 3 when the task table cannot be listed.
# shellcheck shell=sh

for id in $("$1" --address "$2" -n "$3" containers ls -q "$4"); do
  "$1" --address "$2" -n "$3" containers info "$id" 2>/dev/null
done
echo --tasks--
"$1" --address "$2" -n "$3" tasks ls || exit 3
