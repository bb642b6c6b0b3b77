#!/usr/bin/env bash
# The full test suite on a fresh machine: host set-up (Docker engine), venv,
# lint, types, then unit and integration tests against the real testbed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then  # Docker, debootstrap and the testbed's set-up need root
  command -v sudo >/dev/null || { echo "test: run as root (sudo is not installed)" >&2; exit 1; }
  exec sudo --preserve-env=CI,CLAWGUARD_KEEP_TESTBED "$0" "$@"
fi
bash scripts/setup-host.sh
bash scripts/venv.sh
.venv/bin/ruff check clawguard testbed tests bench
.venv/bin/ruff format --check clawguard testbed tests bench
.venv/bin/mypy clawguard testbed
shellcheck -x clawguard/data/sh/*.sh  # -x: a script's `. ./part.sh` lines are checked with it
exec .venv/bin/pytest -ra "$@"
