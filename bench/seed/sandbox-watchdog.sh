#!/usr/bin/env bash
# The seed's watchdog (seed 000, "What broke" 1), as written there, with three
# changes for the benchmark: the cluster, sandbox and restore script are
# parameters; LAST_CONTAINER can start at the current pod; and it prints a
# timestamp when it notices a new pod, when the restore script returns and when
# the gateway start returns, so the bench can time each phase.
#
#   CLUSTER=openshell-cluster-bench SANDBOX=bench-assistant GATEWAY=bench \
#   SETUP=/path/sandbox-symlink-setup.sh LAST_CONTAINER=<id> sandbox-watchdog.sh
set -u
CLUSTER=${CLUSTER:-openshell-cluster-nemoclaw}
SANDBOX=${SANDBOX:-my-assistant}
GATEWAY=${GATEWAY:-nemoclaw}
SETUP=${SETUP:-/home/openclaw/sandbox-symlink-setup.sh}
LAST_CONTAINER=${LAST_CONTAINER:-}
INTERVAL=${INTERVAL:-15}

while true; do
    CURRENT=$(docker exec "$CLUSTER" find /run/k3s \
        -name "openclaw.json" -path "*/sandbox*" 2>/dev/null \
        | head -1 | grep -oP "[a-f0-9]{64}" || true)
    if [ -n "$CURRENT" ] && [ "$CURRENT" != "$LAST_CONTAINER" ]; then
        echo "detected $CURRENT $(date +%s.%N)"
        "$SETUP"
        echo "restored $? $(date +%s.%N)"
        sleep 3
        # start gateway via openshell SSH proxy
        ssh -T -o "ProxyCommand=openshell ssh-proxy --gateway-name $GATEWAY --name $SANDBOX" \
            -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
            "sandbox@openshell-$SANDBOX" 'nohup openclaw gateway run > /tmp/gateway.log 2>&1 < /dev/null &' \
            < /dev/null
        echo "gateway-started $? $(date +%s.%N)"
        LAST_CONTAINER="$CURRENT"
    fi
    sleep "$INTERVAL"
done
