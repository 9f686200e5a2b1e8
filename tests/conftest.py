from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

# keep matplotlib / pylidc caches out of $HOME during tests
os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="mpl-monai-car-"))

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"

# the research package ``experiments/`` at the repository root is not installed with monai_car: import it from the
# checkout (appended, so an installed monai_car still comes first)
if str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))


@pytest.fixture(autouse=True)
def _torch_threads():
    """Tests run on 2 CPU cores: keep torch from oversubscribing them."""
    torch.set_num_threads(2)
    yield
