#!/bin/sh
# /opt/openshell/bin/ssh-relay in every test-bed sandbox: the in-sandbox end of
# `openshell ssh-proxy`. Run as root through `ctr task exec -i` or `docker exec -i`,
# it connects its stdin/stdout to the sandbox's listening sshd (see sandbox-init),
# as OpenShell's gateway relays the ssh stream to its in-pod supervisor.
# socat in the Debian image; busybox nc in the stand-in image.
READY=/var/lib/openshell/ssh-ready
port=$(cat "$READY" 2>/dev/null)
if [ -z "$port" ]; then
	echo "openshell: the sandbox's SSH server is not ready ($READY missing)" >&2
	exit 255
fi
if command -v socat >/dev/null 2>&1; then
	exec socat STDIO "TCP:127.0.0.1:$port"
fi
exec nc 127.0.0.1 "$port"
