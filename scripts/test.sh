#!/usr/bin/env bash
# Install everything (scripts/install.sh) and run the whole test suite.  Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
VENV=${FAIRSEQ_RELA_VENV:-.venv}
exec "$VENV/bin/python" -m pytest "$@"
