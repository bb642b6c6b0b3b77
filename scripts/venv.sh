#!/usr/bin/env bash
# Create .venv (if needed) and install clawguard with its test extras into it.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e '.[test]'
# The test bed (testbed/), the tests and the benchmark are not part of clawguard's
# wheel: the development venv finds them in this checkout.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
printf '%s\n' "$PWD" >"$site/clawguard-dev-checkout.pth"
