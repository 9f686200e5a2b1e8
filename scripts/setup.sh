#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install monai-car into it.
# torch is installed FIRST and pinned to the CPU wheel 2.13.0: an unpinned torch pulls a CUDA build of several GB.
# On a GPU machine, install the CUDA torch you want first, then run: pip install -e ".[test]".
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
python -m pip install -q --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test]"
python -c "import torch, monai, monai_car; print(f'torch {torch.__version__}, monai {monai.__version__}, monai_car {monai_car.__version__}')"
