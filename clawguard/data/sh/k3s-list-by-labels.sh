# Locates a pod by its kubelet labels (targets.k3s). Arguments: ctr, address, namespace, pod
# filter, kubelet filter. Prints the pod's container IDs, a line "--labelled--", then
# "--tasks--" and the task table; when the pod has none, every kubelet-labelled container ID
# instead, after "--labelled--" (whether the marker search may be tried: see K3sTarget.locate).
# Exits 3 when ctr fails.
# shellcheck shell=sh

ours=$("$1" --address "$2" -n "$3" containers ls -q "$4") || exit 3
echo "$ours"
echo --labelled--
if [ -z "$ours" ]; then "$1" --address "$2" -n "$3" containers ls -q "$5" || exit 3; exit 0; fi
echo --tasks--
"$1" --address "$2" -n "$3" tasks ls || exit 3
