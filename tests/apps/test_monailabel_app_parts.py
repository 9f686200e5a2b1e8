"""Parts of the MONAI Label app without a server: its settings, the bundle and model loading, the channel pasting and
the ``.seg.nrrd`` writer. Runs in the environment of ``scripts/setup_label.sh``; elsewhere it skips."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("monailabel", reason="MONAI Label is not installed: run `bash scripts/test_label.sh` (label env)")
nrrd = pytest.importorskip("nrrd")

from label_fixtures import APP_DIR, write_untrained_model  # noqa: E402

from monai_car.utils import GEOMETRY_KEY, save_checkpoint  # noqa: E402

pytestmark = pytest.mark.monailabel

if str(APP_DIR) not in sys.path:  # MONAI Label imports the app's package `lib` from the app folder
    sys.path.insert(0, str(APP_DIR))

from lib.bundle import MODEL_PATH_ENV, REPO_ROOT, CARAppSettings, CARBundle  # noqa: E402
from lib.errors import CARRequestError  # noqa: E402
from lib.outputs import channel_colors, channel_names, lesion_box, paste_max, write_seg_nrrd  # noqa: E402

TINY = {"crop_size": 32, "f_channels": [4, 8], "f_convs_per_block": [1, 1], "g_channels": [4, 8, 16], "noise_dim": 4}


def test_settings_default_to_the_checkout_and_read_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(MODEL_PATH_ENV, raising=False)
    settings = CARAppSettings.from_conf({"models": "car"}, tmp_path)
    assert settings.bundle_dir == REPO_ROOT / "bundles" / "lidc_car"
    assert settings.model_path == REPO_ROOT / "runs" / "lidc_car" / "models" / "model.pt"
    assert settings.lesions_csv == tmp_path / "lesions.csv" and settings.num_samples == 16 and settings.seed == 0
    monkeypatch.setenv(MODEL_PATH_ENV, str(tmp_path / "env.pt"))
    assert CARAppSettings.from_conf({}, tmp_path).model_path == tmp_path / "env.pt"
    conf = {"model_path": str(tmp_path / "conf.pt"), "num_samples": "100", "lesions_frame": "ras"}
    settings = CARAppSettings.from_conf(conf, tmp_path)
    assert settings.model_path == tmp_path / "conf.pt" and settings.num_samples == 100
    assert settings.lesions_frame == "RAS"


@pytest.mark.parametrize(
    "conf, message",
    [
        ({"models": "deepedit"}, "one model, 'car'"),
        ({"bundle_path": "/nonexistent"}, "no configs/inference.json"),
        ({"bundle_overrides": "{crop_size: 32}"}, "JSON object"),
        ({"bundle_overrides": "[1]"}, "JSON object"),
        ({"lesions_frame": "XYZ"}, "LPS or RAS"),
        ({"num_samples": "0"}, "num_samples"),
        ({"num_samples": "many"}, "num_samples"),
    ],
)
def test_unusable_options_stop_the_app_naming_them(tmp_path, conf, message):
    with pytest.raises(ValueError, match=message):
        CARAppSettings.from_conf(conf, tmp_path)


def test_an_override_must_name_a_config_key(tmp_path):
    settings = CARAppSettings.from_conf({"bundle_overrides": json.dumps({"crop_sise": 32})}, tmp_path)
    with pytest.raises(ValueError, match="crop_sise"):
        CARBundle(settings)


def test_a_model_of_other_settings_answers_503_naming_them_and_overrides_load_it(tmp_path):
    tiny = tmp_path / "tiny.pt"
    overridden = CARBundle(CARAppSettings.from_conf({"bundle_overrides": json.dumps(TINY)}, tmp_path))
    network = overridden.build_network()
    save_checkpoint(tiny, {"model": network, GEOMETRY_KEY: overridden.geometry()})
    default = CARBundle(CARAppSettings.from_conf({"model_path": str(tiny)}, tmp_path))
    with pytest.raises(CARRequestError, match="crop_size: trained with 32") as excinfo:
        default.network("cpu")
    assert excinfo.value.status_code == 503 and "bundle_overrides" in str(excinfo.value)
    loaded = CARBundle(
        CARAppSettings.from_conf({"model_path": str(tiny), "bundle_overrides": json.dumps(TINY)}, tmp_path)
    )
    net = loaded.network("cpu")
    assert loaded.crop_size == 32 and net is loaded.network("cpu")  # cached
    for name, value in network.state_dict().items():
        torch.testing.assert_close(net.state_dict()[name], value)
    missing = CARBundle(CARAppSettings.from_conf({"model_path": str(tmp_path / "none.pt")}, tmp_path))
    with pytest.raises(CARRequestError, match="quickstart") as excinfo:
        missing.network("cpu")
    assert excinfo.value.status_code == 503


def test_a_changed_model_file_is_loaded_again(tmp_path):
    path = write_untrained_model(tmp_path / "model.pt", seed=0)
    bundle = CARBundle(CARAppSettings.from_conf({"model_path": str(path)}, tmp_path))
    first = bundle.network("cpu")
    version = bundle.model_version()
    write_untrained_model(path, seed=1)
    second = bundle.network("cpu")
    assert second is not first and bundle.model_version() != version
    name = next(iter(first.state_dict()))
    assert not torch.equal(first.state_dict()[name], second.state_dict()[name])


def _affine(direction: np.ndarray, origin: list[float]) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = direction
    a[:3, 3] = origin
    return a


@pytest.mark.parametrize("shift", [0.0, 0.5])
def test_pasting_copies_every_source_voxel_once_on_a_permuted_lattice(shift):
    # the target: a CT with permuted, flipped axes; the source: a slab on the same lattice (shifted by `shift` voxel)
    target_affine = _affine(np.array([[0.0, 0.8, 0.0], [-0.8, 0.0, 0.0], [0.0, 0.0, 2.0]]), [-20.0, 30.0, -40.0])
    ras_grid = np.diag([0.8, 0.8, 2.0])  # the slab in RAS order, as the bundle cuts it
    start = target_affine[:3, :3] @ np.array([10.0 + shift, 12.0 + shift, 3.0]) + target_affine[:3, 3]
    source_affine = _affine(ras_grid, list(start))
    rng = np.random.default_rng(0)
    source = rng.integers(1, 1000, size=(2, 6, 7, 4)).astype(np.uint16)
    target = np.zeros((2, 30, 32, 10), dtype=np.uint16)
    written = paste_max(target, target_affine, source, source_affine)
    assert written == 6 * 7 * 4
    assert sorted(target[0][target[0] > 0].tolist()) == sorted(source[0].ravel().tolist())  # each voxel once
    # where each source voxel went: its world position, at most half a voxel away (rounded half up)
    to_target = np.linalg.inv(target_affine) @ source_affine
    for index in [(0, 0, 0), (5, 6, 3), (2, 3, 1)]:
        position = to_target[:3, :3] @ np.array(index, dtype=float) + to_target[:3, 3]
        hits = np.argwhere(target[1] == source[(1, *index)])
        assert len(hits) >= 1 and np.abs(hits - position).max(axis=1).min() <= 0.5 + 1e-6
    lo, hi = lesion_box(target.shape[1:], target_affine, [(source.shape[1:], source_affine)])
    occupied = np.argwhere(target[0] > 0)
    np.testing.assert_array_equal(lo, occupied.min(axis=0))
    np.testing.assert_array_equal(hi, occupied.max(axis=0) + 1)


def test_pasting_keeps_the_maximum_where_slabs_overlap():
    affine = np.eye(4)
    target = np.zeros((1, 5, 5, 1), dtype=np.uint16)
    paste_max(target, affine, np.full((1, 3, 3, 1), 4, dtype=np.uint16), _affine(np.eye(3), [0.0, 0.0, 0.0]))
    paste_max(target, affine, np.full((1, 3, 3, 1), 2, dtype=np.uint16), _affine(np.eye(3), [2.0, 2.0, 0.0]))
    assert target[0, 2, 2, 0] == 4 and target[0, 4, 4, 0] == 2 and target[0, 0, 4, 0] == 0
    with pytest.raises(ValueError, match="same C"):
        paste_max(target, affine, np.zeros((2, 3, 3, 1), dtype=np.uint16), affine)


def test_the_seg_nrrd_has_the_affines_columns_names_and_layers(tmp_path):
    direction = np.array([[0.0, 0.7, 0.0], [-0.7, 0.0, 0.0], [0.0, 0.0, 1.5]])  # not symmetric: rows != columns
    affine = _affine(direction, [5.0, -3.0, 11.0])
    channels = np.arange(2 * 3 * 4 * 5, dtype=np.uint16).reshape(2, 3, 4, 5)
    path = write_seg_nrrd(tmp_path / "r.seg.nrrd", channels, affine, ["a", "b"], [(1, 0, 0), (0, 1, 0)], (7, 8, 9))
    data, header = nrrd.read(str(path), index_order="F")
    np.testing.assert_array_equal(data, channels)
    directions = np.asarray(header["space directions"], dtype=float)[1:]
    lps = np.diag([-1.0, -1.0, 1.0])
    for axis in range(3):  # NRRD: one row per voxel axis, the world step along it (LPS)
        np.testing.assert_allclose(directions[axis], lps @ affine[:3, axis], atol=1e-6)
    np.testing.assert_allclose(header["space origin"], lps @ affine[:3, 3], atol=1e-6)
    assert [header["Segment0_Name"], header["Segment1_Name"]] == ["a", "b"]
    assert header["Segment1_Layer"] == "1" and header["Segment1_LabelValue"] == "1"
    assert header["Segmentation_ReferenceImageExtentOffset"] == "7 8 9"
    assert [p.name for p in tmp_path.iterdir()] == ["r.seg.nrrd"]  # no temporary file left
    for bad, message in [
        ({"names": ["a"]}, "one name and colour"),
        ({"names": ["a", "b\nc"]}, "one-line"),
        ({"path": tmp_path / "r.nrrd"}, "seg.nrrd"),
        ({"channels": channels.astype(np.float32)}, "uint8/uint16"),
    ]:
        kwargs = {"path": tmp_path / "s.seg.nrrd", "channels": channels, "affine": affine, "names": ["a", "b"],
                  "colors": [(1, 0, 0), (0, 1, 0)], **bad}  # fmt: skip
        with pytest.raises(ValueError, match=message):
            write_seg_nrrd(**kwargs)
    assert not (tmp_path / "s.seg.nrrd").exists()


def test_channel_names_and_colours_follow_the_number_of_samples():
    assert channel_names(2) == ["consensus", "sample_01", "sample_02", "entropy_mnats", "mutual_information_mnats"]
    names = channel_names(100)
    assert names[1] == "sample_001" and names[100] == "sample_100" and len(names) == 103 == len(channel_colors(100))
    assert len(set(channel_colors(16)[1:17])) == 16
    with pytest.raises(ValueError, match="positive"):
        channel_names(0)
