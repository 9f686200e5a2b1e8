from __future__ import annotations

import pytest
import torch

from monai_car.utils.distributed import (
    all_reduce_mean,
    get_rank,
    get_world_size,
    init_distributed,
    is_distributed,
    is_main_process,
    unwrap_module,
    wrap_ddp,
)


def test_single_process_fallbacks(monkeypatch):
    assert (get_rank(), get_world_size(), is_distributed(), is_main_process()) == (0, 1, False, True)
    net = torch.nn.Linear(1, 1)
    assert wrap_ddp(net, "cpu") is net and unwrap_module(torch.nn.DataParallel(net)) is net
    assert all_reduce_mean(torch.tensor(2.5)) == 2.5 and all_reduce_mean(3) == 3.0
    with pytest.raises(ValueError, match="scalar"):
        all_reduce_mean(torch.ones(2))
    with pytest.raises(TypeError, match="nn.Module"):
        wrap_ddp("net", "cpu")
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        init_distributed()
