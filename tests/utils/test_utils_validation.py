from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_car.utils.validation import (
    as_numpy,
    as_plain_tensor,
    check_bool,
    check_non_negative_int,
    check_positive_int,
    check_probabilities,
    check_validation_schedule,
)


def test_as_numpy_unwraps_meta_tensors_and_rejects_lists():
    out = as_numpy(MetaTensor(torch.ones(2)), "x")
    assert isinstance(out, np.ndarray) and out.tolist() == [1.0, 1.0]
    assert as_numpy(torch.ones(2, requires_grad=True), "x").tolist() == [1.0, 1.0]
    with pytest.raises(TypeError, match="x must be a torch.Tensor or numpy array, got list"):
        as_numpy([1], "x")


def test_as_plain_tensor_drops_metadata_without_copying():
    t = torch.arange(3.0)
    mt = MetaTensor(t, meta={"affine": torch.eye(4)})
    plain = as_plain_tensor(mt, "x")
    assert type(plain) is torch.Tensor and plain.data_ptr() == mt.data_ptr()
    assert as_plain_tensor(t, "x") is t
    with pytest.raises(TypeError, match="y must be a torch.Tensor, got ndarray"):
        as_plain_tensor(np.zeros(2), "y")


@pytest.mark.parametrize("bad", [0, -1, True, 1.0, "2", None])
def test_check_positive_int_rejects_non_positive_and_non_ints(bad):
    with pytest.raises(ValueError, match=r"num_samples must be a positive int, got"):
        check_positive_int(bad, "num_samples")


def test_check_ints_accept_numpy_integers_and_zero_where_allowed():
    assert check_positive_int(np.int64(3), "n") == 3 and type(check_positive_int(np.int64(3), "n")) is int
    assert check_non_negative_int(0, "n") == 0
    for bad in (-1, False, 0.5):
        with pytest.raises(ValueError, match="n must be a non-negative int"):
            check_non_negative_int(bad, "n")


def test_check_probabilities_keeps_the_kind_and_names_the_problem():
    p = torch.full((2, 3), 0.5)
    assert check_probabilities(MetaTensor(p), "p").__class__ is torch.Tensor
    a = np.full((2, 3), 0.25, dtype=np.float32)
    assert check_probabilities(a, "p", ndims=(2,)) is a
    with pytest.raises(ValueError, match=r"p must be \(S, K\) probabilities with \(3,\) dims"):
        check_probabilities(a, "p", ndims=(3,), layout="(S, K)")
    with pytest.raises(ValueError, match="floating-point"):
        check_probabilities(np.ones((2, 2), dtype=np.int64), "p")
    with pytest.raises(ValueError, match="NaN or inf"):
        check_probabilities(torch.tensor([0.5, float("nan")]), "p")
    with pytest.raises(ValueError, match=r"values in \[0, 1.5\]; apply softmax"):
        check_probabilities(np.array([0.0, 1.5]), "p")
    assert check_probabilities(np.array([-5e-5, 1 + 5e-5]), "p").shape == (2,)  # float rounding of a softmax
    assert check_probabilities(np.array([-3.0, 2.0]), "logits", check_range=False).shape == (2,)
    with pytest.raises(ValueError, match="no empty axis"):
        check_probabilities(np.zeros((0, 2)), "p")
    with pytest.raises(TypeError, match="p must be a torch.Tensor or numpy array"):
        check_probabilities([0.5], "p")


def test_validation_schedule_refuses_a_run_shorter_than_one_interval():
    check_validation_schedule(4, 2)
    check_validation_schedule(2, 2)
    with pytest.raises(ValueError, match=r"stage2#max_epochs \(1\) is shorter than stage2#val_interval \(2\).*"
                       r"Set --stage2#val_interval 1 or less, or --stage2#max_epochs 2 or more"):  # fmt: skip
        check_validation_schedule(1, 2, "stage2")
    with pytest.raises(ValueError, match="val_interval must be a positive int"):
        check_validation_schedule(3, 0)


def test_check_bool_reads_the_words_the_command_line_passes():
    for value in (True, "true", "True", "YES", "1", 1, np.bool_(True)):
        assert check_bool(value, "resume") is True
    for value in (False, "false", "no", " 0 ", 0):
        assert check_bool(value, "resume") is False
    for bad in ("maybe", 2, None, "", 1.0):
        with pytest.raises(ValueError, match="resume must be true or false"):
            check_bool(bad, "resume")
