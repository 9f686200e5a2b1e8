#!/usr/bin/env bash
# Build the MONAI Label environment (.venv-label by default) for the app in apps/monailabel_car.
#
# MONAI Label 0.8.5 (the last release) cannot share the main environment: its dependencies pydicom-seg and
# numpymaxflow need numpy < 2 (and pydicom-seg pydicom < 3), while the main environment has numpy 2. It resolves with
# monai 1.6.1 and numpy 1.26.4 on Python <= 3.12. Its metadata also asks for sam2 (-> torchvision, hydra) and MONAI's
# torchvision / mlflow / openslide extras, which would pull a CUDA torch of several GB. So:
#   1. torch==2.13.0 first (the CPU wheel; on a GPU machine install the CUDA torch you want before running this);
#   2. monailabel itself with --no-deps;
#   3. the dependencies the server and this app import, listed below, under a constraints file that pins torch, numpy
#      and monai (sam2, torchvision, numpymaxflow (scribbles only), ninja, mlflow and openslide are left out);
#   4. monai-car (editable, with its test extra) under the same constraints.
# Usage: bash scripts/setup_label.sh [venv folder]      (PYTHON=python3.11 to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv-label}"
PY="${PYTHON:-python3}"
MONAILABEL_VERSION="0.8.5"

"$PY" - <<'EOF'
import sys
if not (3, 9) <= sys.version_info[:2] <= (3, 12):
    sys.exit(f"MONAI Label 0.8.5 needs Python 3.9-3.12, this is {sys.version.split()[0]}: "
             "set PYTHON to such an interpreter (e.g. PYTHON=python3.11).")
EOF
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip

constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
cat >"$constraints" <<'EOF'
torch==2.13.0
numpy==1.26.4
monai==1.6.1
pydicom>=2.4.4,<3
setuptools<81
EOF

"$VENV/bin/python" -c "import torch" 2>/dev/null || "${PIP[@]}" install -q -c "$constraints" "torch==2.13.0"
"${PIP[@]}" install -q --no-deps "monailabel==$MONAILABEL_VERSION"
# What monailabel's server, its endpoints and this app import (monailabel's own requirements minus sam2, numpymaxflow,
# ninja and the torchvision / mlflow / openslide / lmdb / gdown extras of monai).
"${PIP[@]}" install -q -c "$constraints" \
    "monai[fire,ignite,itk,nibabel,pillow,psutil,skimage,tensorboard,tqdm]==1.6.1" \
    "numpy==1.26.4" \
    "uvicorn>=0.29.0" "pydantic>=2.7.0" "pydantic-settings>=2.2.1" "python-dotenv>=1.0.1" "fastapi>=0.110.2" \
    "python-multipart>=0.0.9" "httpx>=0.27.0" "schedule>=1.2.1" "dicomweb-client[gcp]>=0.59.1" "timeloop>=1.0.2" \
    "expiringdict>=1.2.2" "expiring_dict>=1.1.0" "cachetools>=5.3.3" "watchdog>=4.0.0" "pydicom>=2.4.4" \
    "pydicom-seg>=0.4.1" "pynetdicom>=2.0.2" "pynrrd>=1.0.0" "girder-client>=3.2.3" "einops>=0.7.0" \
    "pyyaml>=6.0.1" "filelock>=3.11.0" "passlib>=1.7.4" "pyjwt>=2.8.0" "bcrypt>=4.1.2" "shapely>=2.0.4" \
    "requests>=2.31.0" "requests-toolbelt>=1.0.0" "urllib3>=2.2.1" "scikit-learn" "scipy" "google-auth>=2.29.0"
"${PIP[@]}" install -q -c "$constraints" -e ".[test]"

"$VENV/bin/python" - <<'EOF'
import importlib.util

import monai
import monailabel
import numpy
import pydicom
import torch

import monai_car

for name in ("sam2", "torchvision"):
    if importlib.util.find_spec(name) is not None:
        raise SystemExit(f"{name} got installed into the label environment; it must not be (it pulls a CUDA torch).")
if not torch.__version__.startswith("2.13.0") or not numpy.__version__.startswith("1."):
    raise SystemExit(f"wrong versions in the label environment: torch {torch.__version__}, numpy {numpy.__version__}")
import monailabel.app  # noqa: F401  (the server's module: every endpoint's import resolves)

print(
    f"label env: monailabel {monailabel.__version__}, monai {monai.__version__}, torch {torch.__version__}, "
    f"numpy {numpy.__version__}, pydicom {pydicom.__version__}, monai_car {monai_car.__version__}"
)
EOF
