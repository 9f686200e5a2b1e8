"""The black box F is conditioned on: a frozen module or a MONAI bundle on disk, its one-hot prediction concatenated
to the image exactly as a precomputed prediction folder would give it."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from monai_car.networks import BlackBoxOneHot, CalibrationConvNet, load_bundle_network


def _segmenter(classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, classes, 1))


def test_one_hot_of_the_argmax_wider_than_the_black_box_and_frozen():
    net = _segmenter(3)
    bb = BlackBoxOneHot(net, num_classes=5)
    x = torch.rand(2, 3, 8, 12)
    out = bb(x)
    net.eval()
    expected = torch.nn.functional.one_hot(net(x).argmax(1), 5).movedim(-1, 1).float()
    assert torch.equal(out, expected) and out.shape == (2, 5, 8, 12)
    assert out[:, 3:].sum() == 0  # channels the black box cannot predict stay empty
    bb.train()
    assert not bb.network.training  # stays in eval mode: batch norm statistics never change
    assert all(not p.requires_grad for p in bb.parameters())
    with pytest.raises(ValueError, match="more than num_classes"):
        BlackBoxOneHot(_segmenter(6), num_classes=5)(x)
    with pytest.raises(ValueError, match="num_classes"):
        BlackBoxOneHot(net, num_classes=1)
    with pytest.raises(TypeError, match="torch.nn.Module or a bundle path"):
        BlackBoxOneHot(3, num_classes=5)


def test_f_with_a_black_box_module_equals_f_on_the_precomputed_one_hot_input():
    bb_net = _segmenter(4)
    with_bb = CalibrationConvNet(in_channels=3, out_channels=4, hidden_channels=8, num_blocks=2, black_box=bb_net)
    plain = CalibrationConvNet(in_channels=3 + 4, out_channels=4, hidden_channels=8, num_blocks=2)
    state = {k: v for k, v in with_bb.state_dict().items() if not k.startswith("black_box.")}
    plain.load_state_dict(state, strict=True)  # the same F, its first convolution taking image + one-hot
    with_bb.eval()
    plain.eval()
    x = torch.rand(2, 3, 8, 8)
    one_hot = BlackBoxOneHot(bb_net, 4)(x)
    assert torch.allclose(with_bb(x), plain(torch.cat([x, one_hot], dim=1)), atol=1e-6)
    with pytest.raises(ValueError, match=r"\(B, 3,"):
        with_bb(torch.cat([x, one_hot], dim=1))  # with a black box, F takes the image alone
    loss = with_bb(x).sum()
    loss.backward()
    assert all(p.grad is None for p in with_bb.black_box.parameters())


def _write_bundle(root, weights: bool = True) -> nn.Module:
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    net_def = {
        "_target_": "monai.networks.nets.BasicUNet",
        "spatial_dims": 2,
        "in_channels": 3,
        "out_channels": 4,
        "features": [4, 4, 8, 8, 16, 4],
    }
    (root / "configs" / "inference.json").write_text(json.dumps({"network_def": net_def}))
    from monai.networks.nets import BasicUNet

    torch.manual_seed(3)
    net = BasicUNet(spatial_dims=2, in_channels=3, out_channels=4, features=(4, 4, 8, 8, 16, 4))
    if weights:
        torch.save(net.state_dict(), root / "models" / "model.pt")
    return net.eval()


def test_a_monai_bundle_on_disk_is_built_loaded_and_run_frozen(tmp_path):
    original = _write_bundle(tmp_path / "bb")
    loaded = load_bundle_network(tmp_path / "bb")
    x = torch.rand(1, 3, 32, 32)  # BasicUNet's instance norm needs more than 1 pixel at the bottom
    assert torch.allclose(loaded(x), original(x), atol=1e-6) and not loaded.training
    f = CalibrationConvNet(in_channels=3, out_channels=6, hidden_channels=4, num_blocks=1, black_box=tmp_path / "bb")
    assert f(x).shape == (1, 6, 32, 32)
    expected = torch.nn.functional.one_hot(original(x).argmax(1), 6).movedim(-1, 1).float()
    assert torch.equal(f.black_box(x), expected)


def test_bundle_errors_name_the_missing_piece(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_bundle_network(tmp_path / "nowhere")
    _write_bundle(tmp_path / "bb", weights=False)
    with pytest.raises(FileNotFoundError, match="models/model.pt"):
        load_bundle_network(tmp_path / "bb")
    with pytest.raises(KeyError, match="network_key"):
        load_bundle_network(tmp_path / "bb", network_key="net", weights=None)
    with pytest.raises(FileNotFoundError, match="config_file"):
        load_bundle_network(tmp_path / "bb", config_file="configs/other.json")
