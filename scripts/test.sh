#!/usr/bin/env bash
# The full test suite on a fresh machine: host set-up (Docker engine), venv,
# lint, types, then unit and integration tests against the real testbed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh
bash scripts/venv.sh
.venv/bin/ruff check clawguard testbed tests bench
.venv/bin/ruff format --check clawguard testbed tests bench
.venv/bin/mypy clawguard testbed
exec .venv/bin/pytest -ra "$@"
