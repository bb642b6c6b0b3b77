#!/bin/sh
exec bash /sandbox/.openclaw/proxmox.sh status
