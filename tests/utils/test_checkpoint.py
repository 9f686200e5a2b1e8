from __future__ import annotations

import os

import pytest
import torch

from monai_car.utils.checkpoint import CheckpointKeyError, load_checkpoint, save_checkpoint


def test_save_and_strict_load(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    path = save_checkpoint(tmp_path / "sub" / "ckpt.pt", {"net": net, "opt": opt})
    assert path.is_file() and os.listdir(path.parent) == ["ckpt.pt"]
    target = torch.nn.Linear(3, 2)
    assert load_checkpoint(path, {"net": target, "opt": torch.optim.SGD(target.parameters(), lr=0.1)}) == {
        "missing": [],
        "unexpected": [],
    }
    assert torch.equal(target.weight, net.weight)
    with pytest.raises(CheckpointKeyError, match=r"missing entries \[\], unexpected entries \['opt'\]"):
        load_checkpoint(path, {"net": target})
    with pytest.warns(UserWarning, match="ignoring \\['opt'\\]"):
        report = load_checkpoint(path, {"net": target}, strict=False)
    assert report == {"missing": [], "unexpected": ["opt"]}
    two = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2))
    with pytest.raises(CheckpointKeyError, match="parameter groups of sizes \\[4\\] but the checkpoint has \\[2\\]"):
        load_checkpoint(path, {"net": torch.nn.Linear(3, 2), "opt": torch.optim.SGD(two.parameters(), lr=0.1)})


def test_single_bare_state_dict_and_bad_files(tmp_path):
    net = torch.nn.Linear(2, 2)
    torch.save(net.state_dict(), tmp_path / "bare.pt")
    target = torch.nn.Linear(2, 2)
    load_checkpoint(tmp_path / "bare.pt", {"model": target})
    assert torch.equal(target.bias, net.bias)
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read as a torch checkpoint"):
        load_checkpoint(tmp_path / "junk.pt", {"model": target})
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt", {"model": target})


def test_failed_save_leaves_no_file(tmp_path):
    class Bad:
        def state_dict(self):
            return {"f": lambda: 0}

    (tmp_path / "c.pt").write_bytes(b"old")
    with pytest.raises(Exception, match="pickle"):
        save_checkpoint(tmp_path / "c.pt", {"bad": Bad()})
    assert os.listdir(tmp_path) == ["c.pt"] and (tmp_path / "c.pt").read_bytes() == b"old"
    with pytest.raises(TypeError, match="no state_dict"):
        save_checkpoint(tmp_path / "d.pt", {"x": 1})


def test_epoch_checkpoints_are_found_by_prefix_newest_last(tmp_path):
    from monai_car.utils.checkpoint import epoch_checkpoint_name, epoch_checkpoints, latest_epoch_checkpoint

    assert epoch_checkpoint_name(3, "stage2") == "stage2_checkpoint_epoch=3.pt"
    assert epoch_checkpoint_name(3) == "checkpoint_epoch=3.pt"
    for name in (
        "stage2_checkpoint_epoch=2.pt",
        "stage2_checkpoint_epoch=10.pt",
        "stage1_checkpoint_epoch=30.pt",
        "checkpoint_epoch=7.pt",
        ".stage2_checkpoint_epoch=11.pt.tmp-0a1b2c3d",  # what a killed atomic write leaves
        "stage2_checkpoint_epoch=x.pt",
        "stage2_checkpoint_iteration=40.pt",
    ):
        (tmp_path / name).write_bytes(b"")
    assert epoch_checkpoints(tmp_path, "stage2") == [
        (2, tmp_path / "stage2_checkpoint_epoch=2.pt"),
        (10, tmp_path / "stage2_checkpoint_epoch=10.pt"),
    ]
    assert latest_epoch_checkpoint(tmp_path, "stage1") == (30, tmp_path / "stage1_checkpoint_epoch=30.pt")
    assert latest_epoch_checkpoint(tmp_path) == (7, tmp_path / "checkpoint_epoch=7.pt")  # no prefix: only unprefixed
    assert latest_epoch_checkpoint(tmp_path, "stage3") is None
    assert epoch_checkpoints(tmp_path / "absent", "stage2") == []


def test_read_checkpoint_returns_the_content_or_a_clear_error(tmp_path):
    from monai_car.utils.checkpoint import read_checkpoint

    path = save_checkpoint(tmp_path / "c.pt", {"net": torch.nn.Linear(2, 1)})
    for mmap in (False, True):
        assert set(read_checkpoint(path, mmap=mmap)["net"]) == {"weight", "bias"}
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointKeyError, match="holds a list"):
        read_checkpoint(tmp_path / "list.pt")
