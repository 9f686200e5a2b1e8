from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

# keep matplotlib / pylidc caches out of $HOME during tests
os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="mpl-monai-car-"))

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"


@pytest.fixture(autouse=True)
def _torch_threads():
    """Tests run on 2 CPU cores: keep torch from oversubscribing them."""
    torch.set_num_threads(2)
    yield
