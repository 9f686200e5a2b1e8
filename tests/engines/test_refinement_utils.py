"""Stage-2 helpers: reading the iteration's output out in one go."""

from __future__ import annotations

import math

import pytest
import torch

from monai_car.engines.refinement_utils import as_floats


def test_as_floats_reads_every_value_in_order_without_item(monkeypatch):
    values = {
        "loss": torch.tensor(0.1234567, dtype=torch.float32),
        "acc": torch.tensor([0.75]),
        "flag": torch.tensor(True),
        "count": torch.tensor(7),
        "none": None,
        "lr": 2e-4,
        "cases": 8,
    }
    expected = {"loss": 0.1234567, "acc": 0.75, "flag": 1.0, "count": 7.0, "lr": 2e-4, "cases": 8.0}
    expected_loss = torch.tensor(0.1234567, dtype=torch.float32).item()  # the float32 value, exactly
    monkeypatch.setattr(torch.Tensor, "item", lambda self: pytest.fail("as_floats called .item()"))
    out = as_floats(values)
    assert list(out) == list(values)  # the keys in the given order
    assert out["loss"] == expected_loss
    assert all(out[k] == v for k, v in expected.items() if k != "loss")
    assert math.isnan(out["none"]) and all(type(v) is float for v in out.values())


def test_as_floats_names_a_tensor_with_several_elements():
    with pytest.raises(ValueError, match="loss_d.*one-element"):
        as_floats({"loss": 1.0, "loss_d": torch.zeros(2)})
    assert as_floats({}) == {}
