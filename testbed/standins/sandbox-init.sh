#!/bin/sh
# Main command of every test-bed sandbox pod, under tini (PID 1, reaps orphans):
# tini -- /usr/local/bin/sandbox-init
# Like an OpenShell pod, each new pod gets its own SSH host key, generated here,
# in the pod's own overlay, so a restarted pod presents a different key. Then it
# becomes `sleep infinity`, as NemoClaw's pods do: the OpenClaw gateway is NOT
# started (NemoClaw #2042). There is no sshd daemon: `openshell ssh-proxy` runs
# `sshd -i` per connection with `ctr task exec`.
mkdir -p /run/sshd && chmod 0755 /run/sshd
if [ ! -s /etc/ssh/ssh_host_ed25519_key ]; then
	rm -f /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key.pub
	ssh-keygen -q -t ed25519 -N '' -C 'openshell-sandbox-host-key' \
		-f /etc/ssh/ssh_host_ed25519_key </dev/null >/dev/null ||
		echo "sandbox-init: ssh-keygen failed" >&2
fi
exec sleep infinity
