#!/usr/bin/env bash
# clawguard's main job, on the built-in testbed: a sandbox pod restarts, its
# hand-placed files are gone, `clawguard restore` brings them back and verifies
# them from inside the sandbox.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
bash scripts/venv.sh
PATH="$PWD/.venv/bin:$PATH"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
inside() { python -m clawguard.testbed exec my-assistant -- "$@"; }

step "Start the OpenShell testbed (Docker + real containerd) with sandbox my-assistant"
python -m clawguard.testbed up
python -m clawguard.testbed status | grep -q '"my-assistant"' || python -m clawguard.testbed add my-assistant

config=$(mktemp --suffix=.yaml)
trap 'rm -f "$config"' EXIT
cat >"$config" <<YAML
version: 1
sandboxes:
  my-assistant:
    target:
      kind: k3s
      cluster: openshell-cluster-nemoclaw
    archive: $PWD/restore-archive
    user: sandbox
YAML

step "The pod restarts: new container ID, empty overlay"
python -m clawguard.testbed restart my-assistant
inside sh -c 'ls -la /sandbox/.openclaw-data/ /sandbox/.openclaw-data/skills/; ls -l /sandbox/.openclaw/exec-approvals.json || true'

step "clawguard plan"
clawguard --config "$config" plan

step "clawguard restore"
clawguard --config "$config" restore

step "From inside the sandbox, as the agent"
inside sh -c 'ls -la /sandbox/.openclaw/exec-approvals.json /sandbox/.openclaw-data/ /sandbox/.openclaw-data/skills/'
python -m clawguard.testbed exec --user sandbox my-assistant -- \
  sh -c 'echo 1 > /sandbox/.openclaw-data/telegram/update-offset-default.json && echo "telegram offset writable by the sandbox user"'

step "clawguard restore again: nothing to change"
clawguard --config "$config" restore

echo
echo "The testbed is still running: python -m clawguard.testbed status | down"
