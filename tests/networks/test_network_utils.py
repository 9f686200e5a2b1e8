from __future__ import annotations

import pytest
import torch

from monai_car.networks.utils import check_network_input


def test_check_network_input_names_the_network_and_the_expected_shape():
    check_network_input(torch.rand(2, 3, 8, 8), 3, 2, "Net")
    check_network_input(torch.rand(1, 1, 4, 4, 4, dtype=torch.float64), 1, 3, "Net")
    with pytest.raises(ValueError, match=r"Net expects input of shape \(B, 3, \*2 spatial dims\), got \(2, 1, 8, 8\)"):
        check_network_input(torch.rand(2, 1, 8, 8), 3, 2, "Net")
    with pytest.raises(ValueError, match="expects input of shape"):
        check_network_input(torch.rand(2, 3, 8), 3, 2, "Net")
    with pytest.raises(TypeError, match="Net expects a torch.Tensor, got ndarray"):
        check_network_input(torch.rand(2, 3, 8, 8).numpy(), 3, 2, "Net")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Net expects a floating point input, got torch.int64"):
        check_network_input(torch.ones(2, 3, 8, 8, dtype=torch.long), 3, 2, "Net")
