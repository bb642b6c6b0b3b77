#!/bin/sh
# Talks to the Proxmox API through the Caddy proxy, which injects the API token.
set -eu
. /sandbox/.openclaw-data/credentials/proxmox.env
case "${1:-status}" in
  status) curl -fsS "https://${PROXMOX_PROXY_HOST}/api2/json/cluster/resources" ;;
  *) echo "usage: proxmox.sh status" >&2; exit 2 ;;
esac
