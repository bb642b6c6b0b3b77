#!/usr/bin/env bash
# Create .venv (if needed) and install clawguard with its test extras into it.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e '.[test]'
