#!/usr/bin/env bash
# clawguard's main job, on the built-in testbed with the real OpenClaw (the latest
# version NemoClaw can run, from npm). By default on OpenShell 0.1.x, the current
# generation: a stand-in gateway serving OpenShell's own gRPC API (mTLS), which
# clawguard reaches only through the official SDK, with no Docker socket. The
# daemon watches the sandbox; it is re-created and every hand-placed file is gone;
# clawguard notices, restores and verifies from inside as the sandbox user, starts
# the agent's gateway through the API and confirms /health is live. The agent's own
# CLI, inside the sandbox, judges the result.
#
#   scripts/demo.sh                  # OpenShell 0.1.x (generation 3), through the gateway API
#   scripts/demo.sh --generation 1   # the seeds' k3s-in-Docker cluster, over the SSH proxy
set -euo pipefail
cd "$(dirname "$0")/.."
GENERATION=3
while (($#)); do
  case $1 in
    --generation) GENERATION=${2:?--generation needs 1 or 3}; shift 2 ;;
    --generation=*) GENERATION=${1#*=}; shift ;;
    -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case $GENERATION in 1 | 3) ;; *) echo "demo: --generation is 1 or 3" >&2; exit 2 ;; esac
if [[ $(id -u) -ne 0 ]]; then  # Docker and the testbed's set-up need root
  command -v sudo >/dev/null || { echo "demo: run as root (sudo is not installed)" >&2; exit 1; }
  exec sudo --preserve-env=CLAWGUARD_DEMO_AGENT "$0" --generation "$GENERATION"
fi
bash scripts/setup-host.sh
bash scripts/venv.sh
PATH="$PWD/.venv/bin:$PATH"
AGENT=${CLAWGUARD_DEMO_AGENT:-$(python -c 'import testbed; print(testbed.LATEST_AGENT)')}
# The stand-in OpenShell 0.1.x gateway's home: what ~/.config is to the OpenShell CLI.
OPENSHELL_HOME=${CLAWGUARD_DEMO_OPENSHELL_HOME:-/var/lib/clawguard-testbed/openshell-home}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
gw() { python -m testbed gateway "$1" --home "$OPENSHELL_HOME" --name openshell "${@:2}"; }
if ((GENERATION == 3)); then
  inside() { gw exec my-assistant -- "$@"; }  # ExecSandbox: as the sandbox user, always
  agent_cli() { inside openclaw "$@"; }
else
  inside() { python -m testbed exec --user sandbox my-assistant -- "$@"; }
  agent_cli() { python -m testbed openclaw my-assistant -- "$@"; }
fi
# wait_for WHAT SECONDS COMMAND...: every wait has a limit and says what it waited for.
wait_for() {
  local what=$1 limit=$2 start=$SECONDS
  shift 2
  until "$@"; do
    if ((SECONDS - start > limit)); then
      echo "demo: gave up after ${limit}s waiting for $what (daemon log: $work/daemon.log)" >&2
      tail -n 20 "$work/daemon.log" >&2
      exit 1
    fi
    sleep 0.5
  done
  echo "($what: $((SECONDS - start))s)"
}

work=$(mktemp -d)
daemon_pid=
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
export XDG_STATE_HOME="$work/state"

if ((GENERATION == 3)); then
  step "Install OpenClaw $AGENT from npm (cached after the first run); start the OpenShell 0.1.x gateway stand-in"
  python -m testbed build --agent "$AGENT" >/dev/null
  gw up
  gw delete my-assistant >/dev/null 2>&1 || true
  gw create my-assistant --agent "$AGENT" >/dev/null
  # clawguard finds the gateway as the OpenShell CLI and SDK do: $XDG_CONFIG_HOME/openshell.
  export XDG_CONFIG_HOME=$OPENSHELL_HOME
  export DOCKER_HOST=unix:///nonexistent/docker.sock # this target needs no Docker: prove it
  target='{kind: openshell, gateway: openshell}' # OpenShell 0.1.x, only through the gateway's gRPC API
else
  step "Install OpenClaw $AGENT from npm (cached after the first run) and start the OpenShell testbed"
  python -m testbed build --agent "$AGENT" >/dev/null
  python -m testbed up
  python -m testbed rm my-assistant
  python -m testbed add my-assistant --agent "$AGENT" >/dev/null
  python -m testbed install-openshell "$PWD/.venv/bin" >/dev/null # the openshell CLI stand-in (ssh-proxy)
  target='{kind: k3s, cluster: openshell-cluster-nemoclaw}'
fi
agent_cli --version
cat >"$work/config.yaml" <<YAML
version: 1
daemon: {persist_interval: 5}   # capture the agent's own state every 5 s (default 60)
sandboxes:
  my-assistant:
    target: $target
    archive: $PWD/restore-archive
YAML
export CLAWGUARD_CONFIG="$work/config.yaml"

step "clawguard check (the agent in the pod validates openclaw.json), then the plan made for this pod"
clawguard check
clawguard plan

step "clawguard run (the daemon; systemd would run it with 'clawguard install-service')"
clawguard run >"$work/daemon.log" 2>&1 &
daemon_pid=$!
# Healthy gateway on the pod whose container ID starts with $1 (any pod when empty).
healthy() {
  clawguard status --json | python3 -c '
import json, sys
s = json.load(sys.stdin)["sandboxes"][0]
ok = (s.get("gateway") or {}).get("healthy") and str(s.get("container_id", "")).startswith(sys.argv[1])
sys.exit(0 if ok else 1)' "${1:-}"
}
wait_for "the first restore and a live gateway" 300 healthy
clawguard status

step "The agent writes to its memory; clawguard captures it"
inside sh -c 'echo "the user prefers short answers" >> /sandbox/.openclaw/workspace/MEMORY.md'
written=$(date +%s)
captured() {
  clawguard status --json | python3 -c '
import json, sys
s = json.load(sys.stdin)["sandboxes"][0]
sys.exit(0 if (s.get("persist") or {}).get("last_capture_at", 0) > float(sys.argv[1]) else 1)' "$1"
}
wait_for "a capture of the agent's state" 60 captured "$written"

old_id=$(clawguard status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["sandboxes"][0]["container_id"])')
if ((GENERATION == 3)); then
  step "The sandbox is deleted and created again (a new id): everything placed in it is gone, no gateway"
  gw recreate my-assistant >/dev/null
else
  step "The pod restarts: new container ID, empty overlay, no gateway"
  python -m testbed restart my-assistant >/dev/null
fi
# Healthy again, on another instance than before.
replaced() { ! healthy "$old_id" && healthy; }
wait_for "the new sandbox restored and its gateway live" 300 replaced
grep -E 'event=(sandbox\.(detected|facts)|restore\.(done|persisted)|gateway\.)' "$work/daemon.log" | tail -n 8 | cut -c1-170

step "clawguard status"
clawguard status

step "From inside the sandbox, as the agent sees it (the agent's own CLI)"
agent_cli config validate
agent_cli skills list --json 2>&1 | python3 -c '
import json, sys
text = sys.stdin.read()
print("skills:", ", ".join(sorted(s["name"] for s in json.loads(text[text.index("{"):])["skills"] if s.get("source") == "openclaw-managed")))'
agent_cli approvals get --json | python3 -c '
import json, sys
a = json.load(sys.stdin)
print("exec approvals:", a["path"], "security =", a["file"]["defaults"]["security"])'
echo "gateway: $(inside curl -s http://127.0.0.1:18789/health)"
echo "the agent's memory, brought back:"
inside tail -n 2 /sandbox/.openclaw/workspace/MEMORY.md

echo
if ((GENERATION == 3)); then
  echo "The gateway stand-in is still running: python -m testbed gateway status|destroy --home $OPENSHELL_HOME"
else
  echo "The testbed is still running: python -m testbed status | down"
fi
