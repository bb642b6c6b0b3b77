#!/usr/bin/env bash
# Prepare a Debian 12 (bookworm) host, as root, for clawguard's tests and its
# test bed (python -m testbed): install the Debian packages it needs
# and make sure a Docker daemon answers. Idempotent and fast when already done.
set -euo pipefail

PACKAGES=(
  docker.io        # dockerd + docker CLI (+ docker-init used by the cluster container)
  containerd       # containerd, containerd-shim-runc-v2 and ctr, copied into the cluster image
  runc             # OCI runtime, copied into the cluster image
  busybox-static   # static busybox for the cluster and sandbox images
  openssh-client
  openssh-server
  tar
  procps           # pgrep/pkill for the testbed's sandbox image
  ca-certificates
  zsh              # the completion test loads clawguard's zsh completion
  shellcheck       # scripts/test.sh checks the shell clawguard runs in pods (clawguard/data/sh)
)
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/dockerd.log}
DOCKERD_PIDFILE=${DOCKERD_PIDFILE:-/var/run/docker.pid}
DOCKERD_WAIT=60

log() { printf 'setup-host: %s\n' "$*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
  log "must run as root"
  exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  if [[ $status != "install ok installed" ]]; then
    missing+=("$pkg")
  fi
done

# npm fetches Node and the real OpenClaw for the test bed's real-agent sandboxes
# (testbed/_agents.py). Any npm will do: keep one that is already there (e.g.
# NodeSource's nodejs, which conflicts with Debian's npm package).
if ! command -v npm >/dev/null 2>&1; then
  missing+=(npm)
fi
# debootstrap builds the Debian root filesystems of the systemd host and the real-agent sandboxes.
if ! command -v debootstrap >/dev/null 2>&1 && [[ ! -x /usr/sbin/debootstrap ]]; then
  missing+=(debootstrap)
fi

if ((${#missing[@]})); then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  log "Debian packages already installed"
fi

docker_ok() { docker info >/dev/null 2>&1; }

if docker_ok; then
  log "dockerd is running"
  exit 0
fi

started=0
if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
  if systemctl start docker >/dev/null 2>&1; then
    started=1
    log "started docker via systemd"
  fi
fi
dockerd_alive() {
  local pid
  pid=$(cat "$DOCKERD_PIDFILE" 2>/dev/null || true)
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null
}
if ((started == 0)) && ! dockerd_alive; then
  log "starting dockerd in the background (log: $DOCKERD_LOG)"
  setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
fi

for ((i = 0; i < DOCKERD_WAIT * 2; i++)); do
  if docker_ok; then
    log "dockerd is ready"
    exit 0
  fi
  sleep 0.5
done

log "dockerd did not answer within ${DOCKERD_WAIT}s; last lines of $DOCKERD_LOG:"
tail -n 20 "$DOCKERD_LOG" >&2 2>/dev/null || true
exit 1
