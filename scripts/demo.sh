#!/usr/bin/env bash
# clawguard's main job, on the built-in testbed: the daemon watches a sandbox;
# its pod restarts and every hand-placed file is gone; clawguard notices, restores
# and verifies from inside, starts the gateway over the SSH proxy and confirms it
# is healthy.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
bash scripts/venv.sh
PATH="$PWD/.venv/bin:$PATH"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
inside() { python -m testbed exec my-assistant -- "$@"; }

work=$(mktemp -d)
daemon_pid=
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
export XDG_STATE_HOME="$work/state"

step "Start the OpenShell testbed (Docker + real containerd) with sandbox my-assistant"
python -m testbed up
python -m testbed status | grep -q '"my-assistant"' || python -m testbed add my-assistant
python -m testbed install-openshell "$PWD/.venv/bin" >/dev/null   # the openshell CLI stand-in

cat >"$work/config.yaml" <<YAML
version: 1
daemon: {persist_interval: 5}   # capture the agent's own state every 5 s (default 60)
sandboxes:
  my-assistant:
    target:
      kind: k3s
      cluster: openshell-cluster-nemoclaw
    archive: $PWD/restore-archive
    user: sandbox
YAML
export CLAWGUARD_CONFIG="$work/config.yaml"

step "clawguard plan"
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
until healthy; do sleep 0.5; done
clawguard status

step "The agent writes to its memory; clawguard captures it"
python -m testbed exec --user sandbox my-assistant -- \
  sh -c 'echo "the user prefers short answers" >> /sandbox/.openclaw-data/workspace/MEMORY.md'
written=$(date +%s)
captured() {
  clawguard status --json | python3 -c '
import json, sys
s = json.load(sys.stdin)["sandboxes"][0]
sys.exit(0 if (s.get("persist") or {}).get("last_capture_at", 0) > float(sys.argv[1]) else 1)' "$1"
}
until captured "$written"; do sleep 0.5; done
echo "captured"

step "The pod restarts: new container ID, empty overlay, no gateway"
new_id=$(python -m testbed restart my-assistant)
echo "new pod: ${new_id:0:12}"
until healthy "$new_id"; do sleep 0.2; done
grep -E 'event=(sandbox\.detected|restore\.step|restore\.done|gateway\.)' "$work/daemon.log" | tail -n 14 | cut -c1-160

step "clawguard status"
clawguard status

step "From inside the sandbox, as the agent sees it"
inside sh -c 'ls -l /sandbox/.openclaw/exec-approvals.json; ls -ld /sandbox/.openclaw-data/telegram; ls /sandbox/.openclaw-data/skills/'
echo "gateway: $(python -m testbed gateway-status my-assistant)"
echo "the agent's memory, brought back:"
inside tail -n 3 /sandbox/.openclaw-data/workspace/MEMORY.md

echo
echo "The testbed is still running: python -m testbed status | down"
