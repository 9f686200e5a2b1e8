#!/usr/bin/env bash
# The README's main job: set up, then run the demo (see README "Quick start").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
source .venv/bin/activate
export MPLCONFIGDIR="${MPLCONFIGDIR:-$(mktemp -d)}"
python -m monai_car.demo_sampling --out outputs/demo_sampling
