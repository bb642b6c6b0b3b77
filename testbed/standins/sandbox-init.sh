#!/bin/sh
# Main command of every test-bed sandbox (pod or Docker container), under tini
# (PID 1, reaps orphans):  tini -- sandbox-init [--host-key-file]
#
# It plays the SSH part of OpenShell's in-pod supervisor: that supervisor embeds an
# SSH server whose Ed25519 host key is generated in memory at every pod start; no
# key file exists in the pod, and the authenticated `openshell ssh-proxy` relay is
# the only way in. Here: a fresh key in a temporary file on /run (a tmpfs), a
# listening sshd on 127.0.0.1:$PORT inside the sandbox's own network namespace,
# then the key files are deleted. sshd runs with -r (no re-exec per connection):
# OpenSSH 9.2 would otherwise re-read the deleted key in every re-exec'd child
# ("Unable to load host key"). So `find / -name 'ssh_host_*'` finds nothing, every
# connection gets the same key for the sandbox's lifetime, and a new sandbox has a
# new key. `openshell ssh-proxy` reaches the listener through ssh-relay.
#
# --host-key-file keeps the key at /etc/ssh/ssh_host_ed25519_key (+ .pub) instead,
# in the sandbox's own writable layer, for clawguard's `host_key: pin` mode.
#
# First, in a real-agent sandbox whose OpenClaw install has staged plugin runtime
# deps (2026.4.24; see testbed/_agents.py): each staged install root is put into the
# flat layout's ~/.openclaw/plugin-runtime-deps/, owned by the sandbox user, so every
# new pod starts with them as if the image had been built with them (its gateway
# would otherwise run npm for them, which fails offline). The root directory and its
# manifest are copied (the gateway writes there: a lock, the manifest, its copies of
# the plugins); node_modules, which it only reads, is a symlink into the read-only
# install, because copying its ~9,500 files took 4-9 s per pod start, and over a
# minute on a loaded 2-core machine. Done before sshd listens, so a sandbox that is
# ready has them.
#
# When sshd listens, the port is written to $READY (on the writable layer, so the
# test bed sees it from outside too). Then this becomes `sleep infinity`, as
# NemoClaw's pods do: the OpenClaw gateway is NOT started (NemoClaw #2042).
PORT=2222
READY=/var/lib/openshell/ssh-ready
SSHD_LOG=/var/log/openshell-sshd.log
KEY=/etc/ssh/ssh_host_ed25519_key

STAGED_DEPS=/usr/local/lib/clawguard-testbed-plugin-runtime-deps # _agents.STAGED_RUNTIME_DEPS
STATE=/sandbox/.openclaw

keep_file=0
[ "${1:-}" = --host-key-file ] && keep_file=1

# Only the flat layout's ~/.openclaw (owned by the sandbox user; the split one is root's).
if [ -d "$STAGED_DEPS" ] && [ -d "$STATE" ] && owner=$(stat -c %u:%g "$STATE") && [ "${owner%%:*}" != 0 ]; then
	mkdir -p "$STATE/plugin-runtime-deps" && chown "$owner" "$STATE/plugin-runtime-deps"
	for src in "$STAGED_DEPS"/*/; do
		[ -d "$src" ] || continue
		dst=$STATE/plugin-runtime-deps/$(basename "$src")
		[ -e "$dst" ] && continue # a container restarted in place keeps what its gateway wrote
		rm -rf "$dst.tmp"
		ok=1
		mkdir "$dst.tmp" || ok=0
		for entry in "$src".* "$src"*; do
			name=${entry##*/}
			case $name in . | .. | '.*' | '*') continue ;; esac
			if [ "$name" = node_modules ]; then
				ln -s "${entry%/}" "$dst.tmp/node_modules" || ok=0
			else
				cp -R "$entry" "$dst.tmp/" || ok=0
			fi
		done
		if [ "$ok" = 1 ] && chown -R "$owner" "$dst.tmp" && mv "$dst.tmp" "$dst"; then :; else
			echo "sandbox-init: staging $src in $dst failed" >&2
			rm -rf "$dst.tmp"
		fi
	done
fi

mkdir -p /run/sshd /var/lib/openshell /var/log && chmod 0755 /run/sshd
rm -f "$READY"
if [ "$keep_file" = 1 ]; then
	if [ ! -s "$KEY" ]; then
		rm -f "$KEY" "$KEY.pub"
		ssh-keygen -q -t ed25519 -N '' -C 'openshell-sandbox-host-key' -f "$KEY" </dev/null >/dev/null ||
			echo "sandbox-init: ssh-keygen failed" >&2
	fi
	hostkey=$KEY
	keydir=
else
	keydir=$(mktemp -d /run/openshell-ssh.XXXXXX) || exit 1
	hostkey=$keydir/hostkey
	ssh-keygen -q -t ed25519 -N '' -C 'openshell-sandbox-host-key' -f "$hostkey" </dev/null >/dev/null ||
		echo "sandbox-init: ssh-keygen failed" >&2
fi
/usr/sbin/sshd -r -f /etc/ssh/sshd_config -h "$hostkey" -o "ListenAddress=127.0.0.1:$PORT" -E "$SSHD_LOG" ||
	echo "sandbox-init: sshd failed to start; see $SSHD_LOG" >&2
# sshd forks into the background before it binds: wait for LISTEN (state 0A) on 127.0.0.1:PORT.
hexport=$(printf '%04X' "$PORT")
i=0
while ! grep -q " 0100007F:$hexport 00000000:0000 0A " /proc/net/tcp && [ "$i" -lt 200 ]; do
	i=$((i + 1))
	sleep 0.025
done
[ -n "$keydir" ] && rm -rf "$keydir"
if grep -q " 0100007F:$hexport 00000000:0000 0A " /proc/net/tcp; then
	echo "$PORT" >"$READY"
else
	echo "sandbox-init: sshd is not listening on 127.0.0.1:$PORT; see $SSHD_LOG" >&2
fi
exec sleep infinity
