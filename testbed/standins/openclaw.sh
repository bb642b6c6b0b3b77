#!/bin/sh
# openclaw: the clawguard test bed's stand-in for the OpenClaw CLI (POSIX sh, busybox tools).
# Installed in the sandbox image as npm would: /usr/local/bin/openclaw -> ../lib/node_modules/openclaw/openclaw.sh.
#
#   openclaw gateway run      the gateway, in the foreground. Start it like NemoClaw does:
#                             nohup openclaw gateway run > /tmp/gateway.log 2>&1 &
#   openclaw gateway status   probe http://127.0.0.1:<port>/ and print the answer
#   openclaw gateway stop     SIGTERM the running gateway
#   openclaw --version
#
# What the gateway does (the parts clawguard restores and checks):
# * reads ~/.openclaw/openclaw.json for gateway.port (default 18789);
# * reads ~/.openclaw/exec-approvals.json once, at start (through the symlink into
#   ~/.openclaw-data if it is one). Missing or unreadable: exec falls back to deny and
#   it logs "exec denied: allowlist miss". Otherwise exec is allowed when
#   defaults.security is "full" or "allowlist";
# * hashes ~/.openclaw/workspace/SOUL.md (sha256) at start;
# * appends "gateway started at <epoch>" to ~/.openclaw-data/workspace/MEMORY.md;
# * Telegram: resumes from ~/.openclaw-data/telegram/update-offset-default.json
#   ({"offset": N}), then every second increments the offset and writes the file
#   (atomically: temp file and rename);
#   when that fails it logs the EACCES error of NemoClaw #975 and records the failure;
# * answers HTTP on 127.0.0.1:<port> (busybox httpd + this script as CGI) with 200
#   and a JSON status body, and GET /health with {"ok":true,"status":"live"}.
# A second `gateway run` while one is up exits 1: "gateway already running".
# It does not watch openclaw.json for changes (the real one reloads).
set -u

VERSION="0.0.0-clawguard-testbed"
SANDBOX_HOME=${OPENCLAW_SANDBOX_HOME:-/sandbox}
CONF_DIR=$SANDBOX_HOME/.openclaw
DATA_DIR=$SANDBOX_HOME/.openclaw-data
CONFIG=$CONF_DIR/openclaw.json
APPROVALS=$CONF_DIR/exec-approvals.json
SOUL=$CONF_DIR/workspace/SOUL.md
MEMORY=$DATA_DIR/workspace/MEMORY.md
OFFSET_FILE=$DATA_DIR/telegram/update-offset-default.json
POLL_INTERVAL=${OPENCLAW_TELEGRAM_POLL_INTERVAL:-1}
DEFAULT_PORT=18789
RUN_ROOT=${TMPDIR:-/tmp}
RUN_DIR=$RUN_ROOT/openclaw-gateway-$(id -u)
PID_FILE=$RUN_DIR/gateway.pid
STATUS_FILE=$RUN_DIR/status.json
SELF=/usr/local/bin/openclaw

log() { # log SUBSYSTEM MESSAGE...
	sub=$1
	shift
	printf '%s [%s] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$sub" "$*"
}

# json_get FILE PATH: the scalar at dotted PATH (e.g. gateway.port), strings unquoted.
# Exit 1 if the file does not parse (unbalanced) or PATH is absent.
json_get() {
	awk -v want="$2" '
	BEGIN { RS = "\001" }
	{
		s = $0; n = length(s); d = 0; found = 0; bad = 0
		for (i = 1; i <= n; i++) {
			c = substr(s, i, 1)
			if (index(" \t\r\n:", c)) continue
			if (c == "{" || c == "[") { d++; typ[d] = c; wantkey[d] = (c == "{"); idx[d] = 0; key[d] = (c == "[") ? "0" : ""; continue }
			if (c == "}" || c == "]") { if (d == 0) { bad = 1; break } d--; continue }
			if (c == ",") { if (typ[d] == "[") { idx[d]++; key[d] = idx[d] } else wantkey[d] = 1; continue }
			if (c == "\"") {
				v = ""
				for (i++; i <= n; i++) {
					c = substr(s, i, 1)
					if (c == "\\") { i++; v = v substr(s, i, 1); continue }
					if (c == "\"") break
					v = v c
				}
				if (d > 0 && typ[d] == "{" && wantkey[d]) { key[d] = v; wantkey[d] = 0; continue }
			} else {
				v = ""
				for (; i <= n; i++) { c = substr(s, i, 1); if (index(",}] \t\r\n", c)) { i--; break } v = v c }
			}
			p = ""
			for (k = 1; k <= d; k++) p = (k == 1) ? key[k] : p "." key[k]
			if (p == want && !found) { print v; found = 1 }
		}
	}
	END { exit (bad || d != 0 || !found) }' "$1" 2>/dev/null
}

is_number() { case $1 in '' | *[!0-9]*) return 1 ;; esac }

alive() { # alive PID: running and not a zombie (not yet reaped)
	[ -r "/proc/$1/stat" ] || return 1
	state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
	[ -n "$state" ] && [ "$state" != Z ]
}

is_gateway() { # is_gateway PID
	alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q 'openclaw gateway run'
}

running_gateway() { # print the PID of a running gateway of any user
	for f in "$RUN_ROOT"/openclaw-gateway-*/gateway.pid; do
		p=$(cat "$f" 2>/dev/null) || continue
		if is_number "$p" && [ "$p" != "$$" ] && is_gateway "$p"; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

config_port() {
	port=$DEFAULT_PORT
	if [ -r "$CONFIG" ]; then
		p=$(json_get "$CONFIG" gateway.port) && is_number "$p" && port=$p
	fi
	echo "$port"
}

read_errno() { # read_errno PATH: why open(PATH) for reading fails, the way node says it
	if [ -e "$1" ]; then echo "EACCES: permission denied"; else echo "ENOENT: no such file or directory"; fi
}

write_errno() { # write_errno PATH: why open(PATH) for writing fails
	if [ -e "$1" ] || [ -d "$(dirname "$1")" ]; then echo "EACCES: permission denied"; else echo "ENOENT: no such file or directory"; fi
}

# ---------------------------------------------------------------- CGI mode

cgi() {
	pid=$(cat "$PID_FILE" 2>/dev/null || true)
	if is_number "${pid:-}" && is_gateway "$pid" && [ -r "$STATUS_FILE" ]; then
		printf 'Content-Type: application/json\r\nCache-Control: no-store\r\n\r\n'
		cat "$STATUS_FILE"
	else
		printf 'Status: 503 Service Unavailable\r\nContent-Type: application/json\r\n\r\n'
		printf '{"status":"unavailable"}\n'
	fi
}

# ------------------------------------------------------------ gateway run

write_status() {
	if [ -n "$soul_sha" ]; then soul_json="\"$soul_sha\""; else soul_json=null; fi
	printf '{"status":"ok","exec":"%s","exec_security":"%s","telegram_offset_written":%s,"telegram_offset":%s,"soul_sha256":%s,"started_at":%s,"pid":%s}\n' \
		"$exec_policy" "$security" "$offset_written" "$offset" "$soul_json" "$started_at" "$$" >"$STATUS_FILE.tmp" &&
		mv -f "$STATUS_FILE.tmp" "$STATUS_FILE"
}

poll_telegram() {
	offset=$((offset + 1))
	# Temp file and rename: a reader (a capture) never sees a half-written offset.
	if { printf '{"offset":%d}\n' "$offset" >"$OFFSET_FILE.tmp" && mv -f "$OFFSET_FILE.tmp" "$OFFSET_FILE"; } 2>/dev/null; then
		offset_written=true
	else
		offset_written=false
		log telegram "failed to persist update offset: Error: $(write_errno "$OFFSET_FILE"), open '$OFFSET_FILE'"
	fi
	write_status
}

shutdown() { # shutdown SIGNAL EXIT_CODE
	log gateway "received $1; shutting down"
	kill "$httpd_pid" "$watchdog_pid" 2>/dev/null
	[ "$(cat "$PID_FILE" 2>/dev/null)" = "$$" ] && rm -f "$PID_FILE" "$STATUS_FILE"
	exit "$2"
}

gateway_run() {
	started_at=$(date +%s)
	port=$(config_port)
	if [ ! -r "$CONFIG" ]; then
		log gateway "config $CONFIG not readable; using defaults"
	fi
	if old=$(running_gateway); then
		log gateway "error: gateway already running (pid $old, port $port)"
		exit 1
	fi
	if ! mkdir -p "$RUN_DIR" 2>/dev/null; then
		log gateway "error: cannot create $RUN_DIR"
		exit 1
	fi

	# exec approvals: read once, at start.
	security=deny
	if [ -r "$APPROVALS" ]; then
		where=$APPROVALS
		[ -L "$APPROVALS" ] && where="$APPROVALS -> $(readlink -f "$APPROVALS")"
		if sec=$(json_get "$APPROVALS" defaults.security); then
			security=$sec
			log exec-approvals "loaded $where: defaults.security=$security"
		else
			log exec-approvals "warning: $where has no defaults.security (or is not JSON); falling back to deny"
		fi
	else
		log exec-approvals "cannot read $APPROVALS ($(read_errno "$APPROVALS")); exec security falls back to deny"
		security=missing
	fi
	case $security in
	full | allowlist) exec_policy=allowed ;;
	*) exec_policy=denied ;;
	esac
	if [ "$security" = missing ]; then
		log tools "exec denied: allowlist miss"
	elif [ "$exec_policy" = denied ]; then
		log tools "exec denied: security=$security"
	else
		log tools "exec allowed (security=$security)"
	fi

	# SOUL.md goes into the system prompt; remember which one we loaded.
	soul_sha=
	if [ -r "$SOUL" ]; then
		soul_sha=$(sha256sum <"$SOUL" | cut -d' ' -f1)
		log agent "loaded SOUL.md from $SOUL (sha256 $soul_sha)"
	else
		log agent "SOUL.md missing at $SOUL; using the default persona"
	fi

	# Telegram offset: resume where the last run stopped, if it could save it.
	offset=0
	offset_written=false
	if [ -e "$OFFSET_FILE" ]; then
		if o=$(json_get "$OFFSET_FILE" offset) && is_number "$o"; then
			offset=$o
			log telegram "resuming from stored update offset $offset"
		else
			log telegram "warning: cannot read $OFFSET_FILE; starting from offset 0 (updates will be replayed)"
		fi
	else
		log telegram "no stored update offset; starting from 0"
	fi

	echo $$ >"$PID_FILE.tmp" && mv -f "$PID_FILE.tmp" "$PID_FILE"
	write_status

	httpd_pid=
	watchdog_pid=
	trap 'shutdown SIGTERM 143' TERM
	trap 'shutdown SIGINT 130' INT
	trap 'shutdown SIGHUP 129' HUP

	mkdir -p "$RUN_DIR/www/cgi-bin"
	ln -sf "$SELF" "$RUN_DIR/www/cgi-bin/index.cgi"
	# GET /health, like every real OpenClaw since 2026.3 (served while this httpd lives).
	printf '{"ok":true,"status":"live"}\n' >"$RUN_DIR/www/health"
	httpd -f -p "127.0.0.1:$port" -h "$RUN_DIR/www" &
	httpd_pid=$!
	i=0
	# Ready when our own CGI answers (another server on the port would not say our pid).
	while ! wget -q -O - "http://127.0.0.1:$port/" 2>/dev/null | grep -q "\"pid\":$$}"; do
		if ! alive "$httpd_pid"; then
			log gateway "error: gateway already running (port $port busy)"
			rm -f "$PID_FILE" "$STATUS_FILE"
			exit 1
		fi
		i=$((i + 1))
		if [ "$i" -ge 100 ]; then
			log gateway "error: HTTP server on 127.0.0.1:$port did not answer"
			shutdown startup-timeout 1
		fi
		sleep 0.05
	done
	# If this shell is SIGKILLed its trap cannot run: take the HTTP server down anyway, as
	# a real gateway's /health dies with it. A process of its own (not a subshell, whose
	# command line would be ours and die in the same `pkill -f "openclaw gateway run"`).
	# (Alive: running and not a zombie, as alive() says.)
	sh -c 'while [ -r "/proc/$1/stat" ] && [ "$(sed "s/^.*) //" "/proc/$1/stat" | cut -c1)" != Z ]; do
		sleep 1
	done
	kill "$2" 2>/dev/null' gateway-watchdog "$$" "$httpd_pid" </dev/null >/dev/null 2>&1 &
	watchdog_pid=$!

	nl=
	[ -s "$MEMORY" ] && [ "$(tail -c 1 "$MEMORY" | wc -l)" -eq 0 ] && nl='\n'
	if ! { printf "${nl}gateway started at %s\n" "$started_at" >>"$MEMORY"; } 2>/dev/null; then
		log agent "warning: cannot append to $MEMORY ($(write_errno "$MEMORY"))"
	fi
	log gateway "listening on http://127.0.0.1:$port (pid $$, exec $exec_policy)"
	log telegram "polling for updates every ${POLL_INTERVAL}s"

	while :; do
		poll_telegram
		sleep "$POLL_INTERVAL" &
		wait $! 2>/dev/null
	done
}

gateway_status() {
	port=$(config_port)
	if body=$(timeout 5 wget -q -O - "http://127.0.0.1:$port/" 2>/dev/null); then
		printf '%s\n' "$body"
	else
		echo "gateway not reachable on 127.0.0.1:$port" >&2
		return 1
	fi
}

gateway_stop() {
	if pid=$(running_gateway); then
		kill "$pid" && echo "stopped gateway (pid $pid)"
	else
		echo "gateway is not running" >&2
		return 1
	fi
}

unsupported() {
	echo "openclaw $*: not supported by the clawguard testbed stand-in" >&2
	exit 2
}

if [ -n "${GATEWAY_INTERFACE:-}" ]; then
	cgi
	exit 0
fi

case "${1:-} ${2:-}" in
"gateway run") gateway_run ;;
"gateway status") gateway_status ;;
"gateway stop") gateway_stop ;;
"--version "* | "-V "*) echo "openclaw $VERSION" ;;
*) unsupported "$@" ;;
esac
