# Locates a pod by its marker file (targets.k3s). Arguments: state dir, namespace, marker path,
# then (the fallback of `auto`) ctr, address and the kubelet-label filter. Prints the rootfs of
# each running container that holds the marker, then (with the fallback's arguments) a line
# "--labelled--" and every kubelet-labelled container ID. Reads /proc/mounts (one line per
# container) rather than walking every rootfs (`find /run/k3s`). The labelled
# containers are listed after the mounts: one that a kubelet made while we looked shows.
# shellcheck shell=sh

grep -o "$1/io.containerd.runtime.v2.task/$2/[0-9a-f]\{64\}/rootfs" /proc/mounts | sort -u |
while read -r rootfs; do
  if [ -e "$rootfs$3" ]; then echo "$rootfs"; fi
done
[ -n "${4:-}" ] || exit 0
echo --labelled--
"$4" --address "$5" -n "$2" containers ls -q "$6" || exit 3
