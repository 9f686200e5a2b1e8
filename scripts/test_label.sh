#!/usr/bin/env bash
# The MONAI Label app's tests (marked monailabel) in the label environment of scripts/setup_label.sh, time-bounded.
# Usage: bash scripts/test_label.sh [pytest args]   (LABEL_VENV: the environment, default .venv-label;
# LABEL_TEST_TIMEOUT: seconds for the whole run, default 900)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${LABEL_VENV:-.venv-label}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "no label environment in $VENV: run bash scripts/setup_label.sh first" >&2
    exit 2
fi
export MPLCONFIGDIR="${MPLCONFIGDIR:-$(mktemp -d)}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
exec timeout --kill-after=30 "${LABEL_TEST_TIMEOUT:-900}" \
    "$VENV/bin/python" -m pytest -q -ra -p no:cacheprovider -m monailabel --timeout=600 tests/apps "$@"
