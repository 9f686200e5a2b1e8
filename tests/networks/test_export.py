from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import zipfile

import pytest
import torch
from torch import nn

from monai_car.networks import (
    EXPORT_FORMAT,
    METADATA_FILE,
    CalibrationConvNet,
    CalibrationSegNet,
    CARNet,
    CARSampler,
    RefinementUNet,
    export_carnet,
    load_exported_carnet,
)

NOISE_DIM = 4


def _trained_like(net: CARNet, spatial_size: tuple[int, ...]) -> CARNet:
    """Move batch-norm running statistics away from their init (a training-mode pass), so eval mode matters."""
    net.train()
    with torch.no_grad():
        net.sample(2 * torch.rand((3, net.calibration_net.in_channels) + spatial_size) + 0.5, 2)
    return net


def _net2d(seed: int = 0) -> CARNet:
    torch.manual_seed(seed)
    f = CalibrationSegNet(2, 1, 2, channels=(4, 8), convs_per_block=(1, 1))
    g = RefinementUNet(2, 3, 2, channels=(4, 8, 8, 8, 8), noise_dim=NOISE_DIM)  # 4 levels: sizes 16*n, n >= 2
    return _trained_like(CARNet(f, g), (32, 32))


def _reference(net: CARNet, x: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    was_training = net.training
    net.eval()
    with torch.no_grad():
        out = net(x), net.sample(x, noise.shape[1], noise=noise)
    net.train(was_training)
    return out


@pytest.fixture(scope="module")
def exported_2d(tmp_path_factory):
    """A 2D CARNet (left in training mode) exported with the example B=2, S=3, 32x32."""
    torch.set_num_threads(2)
    net = _net2d()
    folder = tmp_path_factory.mktemp("export2d")
    path = export_carnet(net, folder / "carnet.pt2", (1, 32, 32), num_samples=3, metadata={"bundle": "lidc_car"})
    return net, path


def test_sampler_equals_carnet_sample():
    net = _net2d().eval()
    x, noise = torch.rand(2, 1, 32, 48), torch.randn(2, 3, NOISE_DIM)
    with torch.no_grad():
        probs, samples = CARSampler(net)(x, noise)
    ref_probs, ref_samples = _reference(net, x, noise)
    assert samples.shape == (2, 3, 2, 32, 48)
    torch.testing.assert_close(probs, ref_probs, rtol=0, atol=1e-6)
    torch.testing.assert_close(samples, ref_samples, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="noise must be"):
        CARSampler(net)(x, torch.randn(2, 3, NOISE_DIM + 1))
    with pytest.raises(ValueError, match="batch size"):
        CARSampler(net)(x, torch.randn(3, 3, NOISE_DIM))
    with pytest.raises(TypeError, match="CARNet"):
        CARSampler(net.calibration_net)


def test_exported_file_runs_in_a_torch_only_process(exported_2d, tmp_path):
    """Load with only torch (no monai_car, no MONAI), with batch, samples and spatial size unlike the example."""
    net, path = exported_2d
    torch.manual_seed(1)
    cases = [(torch.rand(3, 1, 48, 64), torch.randn(3, 5, NOISE_DIM)), (torch.rand(1, 1, 32, 32), torch.randn(1, 1, 4))]
    torch.save(cases, tmp_path / "inputs.pt")
    code = textwrap.dedent(
        f"""
        import json, sys
        import torch
        extra = {{{METADATA_FILE!r}: ""}}
        program = torch.export.load({str(path)!r}, extra_files=extra).module()
        meta = json.loads(extra[{METADATA_FILE!r}])
        cases = torch.load({str(tmp_path / "inputs.pt")!r})
        outputs = [program(x, z) for x, z in cases]
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("monai_car", "monai"))
        assert not loaded, loaded
        torch.save({{"outputs": outputs, "meta": meta}}, {str(tmp_path / "outputs.pt")!r})
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = torch.load(tmp_path / "outputs.pt")
    assert got["meta"]["format"] == EXPORT_FORMAT and got["meta"]["noise_dim"] == NOISE_DIM
    for (x, z), (probs, samples) in zip(cases, got["outputs"]):
        ref_probs, ref_samples = _reference(net, x, z)
        assert samples.shape == (x.shape[0], z.shape[1], 2) + x.shape[2:]
        assert not samples.requires_grad
        torch.testing.assert_close(probs, ref_probs, rtol=0, atol=1e-5)
        torch.testing.assert_close(samples, ref_samples, rtol=0, atol=1e-5)


def test_exported_program_runs_g_noise_free_work_once_per_image(exported_2d):
    """The program's convolutions: F's and G's encoder (with the first up block and the skip halves) on the ``B``
    image rows, only G's noise-dependent decoder on the ``B * S`` sample rows (a per-draw program would run G's whole
    encoder on ``B * S`` rows)."""
    _, path = exported_2d
    program = torch.export.load(path)
    rows = []
    for node in program.graph.nodes:
        if node.op == "call_function" and "conv" in str(node.target):
            rows.append(str(node.args[0].meta["val"].shape[0]))
    batch = rows[0]  # F's first convolution sees the images
    per_image = [r for r in rows if r == batch]
    per_sample = [r for r in rows if r != batch]
    g = _net2d().refinement_net
    # F: 2 levels of encoder + decoder; G: stem + 4 down blocks + first up block + 3 skip halves on B rows
    g_shared = 1 + len(g.down) + 1 + 1 + (len(g.up) - 1)
    assert len(per_image) >= g_shared
    # on B * S rows: per later up block its transposed conv and the up-half convolution; the head
    assert len(per_sample) == 2 * (len(g.up) - 1) + 1
    assert all(r != batch and batch in r for r in per_sample)


def test_load_exported_carnet_metadata_and_guards(exported_2d):
    net, path = exported_2d
    assert net.training and all(p.requires_grad for p in net.parameters()), "export must restore the network's flags"
    program, meta = load_exported_carnet(path)
    assert meta["format"] == EXPORT_FORMAT and meta["format_version"] == 1
    assert meta["noise_dim"] == NOISE_DIM and meta["num_classes"] == 2 and meta["in_channels"] == 1
    assert meta["spatial_dims"] == 2 and meta["image_shape"] == [1, 32, 32] and meta["num_samples"] == 3
    assert meta["dynamic_batch"] and meta["dynamic_spatial"]
    assert meta["spatial_multiple"] == 16 and meta["min_spatial_size"] == 32
    assert meta["bundle"] == "lidc_car" and meta["torch_version"] == torch.__version__
    import monai_car

    assert meta["monai_car_version"] == monai_car.__version__

    x, noise = torch.rand(2, 1, 64, 32), torch.randn(2, 7, NOISE_DIM)
    probs, samples = program(x, noise)
    assert not probs.requires_grad and not samples.requires_grad
    ref_probs, ref_samples = _reference(net, x, noise)
    torch.testing.assert_close(probs, ref_probs, rtol=0, atol=1e-5)
    torch.testing.assert_close(samples, ref_samples, rtol=0, atol=1e-5)
    # the program's own guards reject what the export cannot serve
    with pytest.raises(AssertionError):
        program(torch.rand(1, 1, 40, 32), torch.randn(1, 2, NOISE_DIM))  # not a multiple of 16
    with pytest.raises(AssertionError):
        program(torch.rand(1, 1, 16, 16), torch.randn(1, 2, NOISE_DIM))  # below the minimum size
    with pytest.raises(AssertionError):
        program(torch.rand(1, 1, 32, 32), torch.randn(1, 2, NOISE_DIM + 1))
    with pytest.raises(AssertionError):
        program(torch.rand(1, 1, 32, 32), torch.randn(2, 2, NOISE_DIM))


def test_export_file_is_published_atomically(exported_2d, tmp_path):
    _, path = exported_2d
    reference = tmp_path / "made_by_open"
    reference.write_bytes(b"")
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(reference.stat().st_mode)  # 0644 under umask 0022
    assert sorted(p.name for p in path.parent.iterdir()) == ["carnet.pt2"]
    with zipfile.ZipFile(path) as archive:
        assert any(n.endswith(f"/extra/{METADATA_FILE}") for n in archive.namelist())


def test_export_3d_dynamic_with_shallower_generator(tmp_path):
    """3D export; a 2-level G gives sizes that are multiples of 4 (at least 8)."""
    torch.manual_seed(3)
    f = CalibrationSegNet(3, 1, 2, channels=(4,), convs_per_block=(1,))
    g = RefinementUNet(3, 3, 2, channels=(4, 8, 8), noise_dim=NOISE_DIM)
    net = _trained_like(CARNet(f, g), (8, 8, 8))
    path = export_carnet(net, tmp_path / "carnet3d.pt2", (1, 8, 8, 8), num_samples=2)
    program, meta = load_exported_carnet(path)
    assert meta["spatial_dims"] == 3 and meta["spatial_multiple"] == 4 and meta["min_spatial_size"] == 8
    x, noise = torch.rand(3, 1, 12, 20, 8), torch.randn(3, 4, NOISE_DIM)
    probs, samples = program(x, noise)
    ref_probs, ref_samples = _reference(net, x, noise)
    assert samples.shape == (3, 4, 2, 12, 20, 8)
    torch.testing.assert_close(probs, ref_probs, rtol=0, atol=1e-5)
    torch.testing.assert_close(samples, ref_samples, rtol=0, atol=1e-5)


def test_static_export_accepts_only_its_shapes(tmp_path):
    """Everything fixed: B = 1, S = num_samples and a spatial size that is no multiple of G's 4."""
    torch.manual_seed(4)
    f = CalibrationConvNet(2, 1, 2, hidden_channels=4, num_blocks=2)
    g = RefinementUNet(2, 3, 2, channels=(4, 8, 8), noise_dim=NOISE_DIM)
    net = _trained_like(CARNet(f, g), (38, 30))
    path = export_carnet(
        net, str(tmp_path / "static.pt2"), (1, 38, 30), num_samples=2, dynamic_batch=False, dynamic_spatial=False
    )
    program, meta = load_exported_carnet(path)
    assert not meta["dynamic_batch"] and not meta["dynamic_spatial"]
    assert meta["spatial_multiple"] is None and meta["min_spatial_size"] is None
    x, noise = torch.rand(1, 1, 38, 30), torch.randn(1, 2, NOISE_DIM)
    probs, samples = program(x, noise)
    ref_probs, ref_samples = _reference(net, x, noise)
    torch.testing.assert_close(probs, ref_probs, rtol=0, atol=1e-5)
    torch.testing.assert_close(samples, ref_samples, rtol=0, atol=1e-5)
    for bad_x, bad_noise in [
        (torch.rand(2, 1, 38, 30), torch.randn(2, 2, NOISE_DIM)),
        (x, torch.randn(1, 3, NOISE_DIM)),
        (torch.rand(1, 1, 48, 48), noise),
    ]:
        with pytest.raises(AssertionError):
            program(bad_x, bad_noise)


def test_failed_save_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "carnet.pt2"
    path.write_bytes(b"previous export")

    def broken_save(program, f, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch.export, "export", lambda *args, **kwargs: object())
    monkeypatch.setattr(torch.export, "save", broken_save)
    net = _net2d()
    with pytest.raises(OSError, match="disk full"):
        export_carnet(net, path, (1, 32, 32))
    assert path.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["carnet.pt2"]


class _OtherCalibration(nn.Module):
    """A calibration net of a type whose size constraints the exporter does not know."""

    out_channels = 2

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.conv(x), dim=1)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"network": nn.Linear(2, 2)}, TypeError, "CARNet"),
        ({"path": "model.pt"}, ValueError, r"\.pt2"),
        ({"path": "missing_folder/model.pt2"}, ValueError, "folder"),
        ({"image_shape": (1, 32)}, ValueError, "2 spatial dims"),
        ({"image_shape": (1, 32, 32, 32)}, ValueError, "2 spatial dims"),
        ({"image_shape": (3, 32, 32)}, ValueError, "channels"),
        ({"image_shape": (1, 32, 0)}, ValueError, "positive integers"),
        ({"num_samples": 0}, ValueError, "num_samples"),
        ({"num_samples": 2.0}, ValueError, "num_samples"),
        ({"metadata": {"noise_dim": 3}}, ValueError, "set by the exporter"),
        ({"metadata": {"bad": object()}}, TypeError, "JSON"),
        ({"image_shape": (1, 40, 32)}, ValueError, "multiple of 16"),
        ({"image_shape": (1, 16, 16)}, ValueError, ">= 32"),
    ],
)
def test_export_validates_inputs(tmp_path, kwargs, error, match):
    args = {"network": _net2d(), "path": tmp_path / "model.pt2", "image_shape": (1, 32, 32), **kwargs}
    if isinstance(args["path"], str):
        args["path"] = tmp_path / args["path"]
    with pytest.raises(error, match=match):
        export_carnet(**args)
    assert not any(tmp_path.iterdir())


def test_dynamic_spatial_needs_known_subnetworks(tmp_path):
    net = CARNet(_OtherCalibration(), RefinementUNet(2, 3, 2, channels=(4, 8), noise_dim=NOISE_DIM))
    with pytest.raises(ValueError, match="dynamic_spatial=False"):
        export_carnet(net, tmp_path / "model.pt2", (1, 32, 32), dynamic_spatial=True)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no exported CARNet"):
        load_exported_carnet(tmp_path / "absent.pt2")
    garbage = tmp_path / "garbage.pt2"
    garbage.write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match="not a zip"):
        load_exported_carnet(garbage)
    checkpoint = tmp_path / "checkpoint.pt2"
    torch.save({"state_dict": nn.Linear(2, 2).state_dict()}, checkpoint)
    with pytest.raises(ValueError, match="not a torch.export archive"):
        load_exported_carnet(checkpoint)
    program = torch.export.export(nn.Linear(2, 2).eval(), (torch.rand(2, 2),))
    plain = tmp_path / "plain.pt2"
    torch.export.save(program, plain)
    with pytest.raises(ValueError, match="without CARNet metadata"):
        load_exported_carnet(plain)
    other = tmp_path / "other.pt2"
    torch.export.save(program, other, extra_files={METADATA_FILE: json.dumps({"format": "something else"})})
    with pytest.raises(ValueError, match="not a CARNet export"):
        load_exported_carnet(other)
