#!/usr/bin/env bash
# The default test suite: lint, then pytest without the tests marked slow (run those with: bash scripts/test.sh -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ] && [ -x .venv/bin/python ]; then
    # shellcheck disable=SC1091
    source .venv/bin/activate
fi
export MPLCONFIGDIR="${MPLCONFIGDIR:-$(mktemp -d)}"
ruff check .
ruff format --check .
exec python -m pytest -q -ra "$@"
