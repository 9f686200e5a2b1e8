from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_car.data.sample_set import check_case_id, resolve_affine
from monai_car.data.sample_set_io import atomic_case_dir


def test_check_case_id():
    assert check_case_id("LIDC-IDRI-0001_n0_z-12.5") == "LIDC-IDRI-0001_n0_z-12.5"
    for bad in ("", ".", "..", "a/b", "a\\b", " a", "x\0"):
        with pytest.raises(ValueError, match="cannot name a case folder"):
            check_case_id(bad)
    with pytest.raises(ValueError, match="must be a string"):
        check_case_id(3)


def test_resolve_affine_order():
    a = np.diag([2.0, 3.0, 4.0, 1.0])
    image = MetaTensor(torch.zeros(1, 4, 4), affine=torch.as_tensor(a))
    out, source = resolve_affine(image, None, 2)
    np.testing.assert_allclose(out, a)
    assert source == "image meta 'affine'"
    a2 = torch.tensor([[[2.0, 0.0, 5.0], [0.0, 3.0, -1.0], [0.0, 0.0, 1.0]]])  # a batched 2D affine of one case
    out, source = resolve_affine(image, a2, 2)
    np.testing.assert_allclose(out, [[2, 0, 0, 5], [0, 3, 0, -1], [0, 0, 1, 0], [0, 0, 0, 1]])
    assert source == "affine argument"
    with pytest.raises(ValueError, match="last row"):
        resolve_affine(image, np.diag([2.0, 2.0, 2.0]), 2)

    class Meta:
        meta = {"original_affine": a}

    assert resolve_affine(Meta(), None, 2)[1] == "image meta 'original_affine'"
    np.testing.assert_array_equal(resolve_affine(np.zeros((4, 4)), None, 2)[0], np.eye(4))


def test_atomic_case_dir(tmp_path):
    with atomic_case_dir(tmp_path, "c") as tmp:
        (tmp / "f.txt").write_text("1")
        assert not (tmp_path / "c").exists()
    assert (tmp_path / "c" / "f.txt").read_text() == "1"
    with pytest.raises(RuntimeError):
        with atomic_case_dir(tmp_path, "c") as tmp:
            (tmp / "f.txt").write_text("2")
            raise RuntimeError("boom")
    assert (tmp_path / "c" / "f.txt").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["c"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        with atomic_case_dir(tmp_path, "file"):
            pass
