from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="mpl-"))

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from ignite.engine import Engine  # noqa: E402
from monai.data import MetaTensor, list_data_collate  # noqa: E402
from monai.transforms import LoadImage  # noqa: E402

import monai_car.data.sample_set_io as ssio  # noqa: E402
from monai_car.handlers import SAMPLE_SET_FILES, SampleSetWriter, write_sample_set  # noqa: E402
from monai_car.utils import CarKeys  # noqa: E402


def _affine(dims: int = 3) -> np.ndarray:
    c, s = math.cos(0.3), math.sin(0.3)
    a = np.eye(4)
    a[:3, :3] = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.diag([0.7, 0.8, 2.5])
    a[:3, 3] = (-120.5, 33.0, -210.25)
    return a


def _loaded_image(tmp_path: Path, shape) -> MetaTensor:
    p = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random(shape, dtype=np.float32), _affine()), p)
    return LoadImage(image_only=True, ensure_channel_first=True)(str(p))


def _probs(shape, seed=0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    samples = torch.softmax(4 * torch.randn(*shape, generator=g), dim=1)  # (S, K, *spatial)
    return samples, samples.mean(0)


def test_writes_every_file_with_the_input_affine_2d(tmp_path):
    image = _loaded_image(tmp_path, (16, 12))
    samples, cal = _probs((6, 2, 16, 12))
    labels = (torch.rand(4, 16, 12, generator=torch.Generator().manual_seed(1)) > 0.5).to(torch.uint8)
    out = write_sample_set(tmp_path / "out", "case_a", image, samples, cal, labels=labels, seed=7, metrics={"x": 1})
    assert out == tmp_path / "out" / "case_a"
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["files"]) == set(SAMPLE_SET_FILES)
    for name, rel in manifest["files"].items():
        img = nib.load(out / rel)
        np.testing.assert_allclose(img.affine, _affine(), atol=1e-5, err_msg=name)
        assert list(img.shape) == manifest["shapes"][name]
    smp = np.asarray(nib.load(out / "samples.nii.gz").dataobj)
    assert smp.shape == (16, 12, 6) and smp.dtype == np.uint8  # sample axis = 3rd axis for 2D
    np.testing.assert_array_equal(smp, samples.argmax(1).permute(1, 2, 0).numpy())
    mean = nib.load(out / "sample_mean.nii.gz").get_fdata()
    np.testing.assert_allclose(mean, samples[:, 1].mean(0).numpy(), atol=1e-6)
    np.testing.assert_allclose(nib.load(out / "calibration_probs.nii.gz").get_fdata(), cal[1].numpy(), atol=1e-6)
    var = nib.load(out / "sample_variance.nii.gz").get_fdata()
    np.testing.assert_allclose(var, samples[:, 1].var(0, unbiased=False).numpy(), atol=1e-6)
    assert np.asarray(nib.load(out / "labels.nii.gz").dataobj).shape == (16, 12, 4)
    assert manifest["case_id"] == "case_a" and manifest["num_samples"] == 6 and manifest["seed"] == 7
    assert manifest["spacing"] == pytest.approx([0.7, 0.8]) and manifest["affine_source"] == "image meta 'affine'"
    assert 0.0 <= manifest["metrics"]["hm_iou"] <= 1.0 and manifest["metrics"]["ged"] >= 0.0
    assert manifest["metrics"]["x"] == 1.0 and manifest["montage"] == "montage.png"
    assert (out / "montage.png").stat().st_size > 1000


def test_3d_volume_sample_axis_and_multiclass_layout(tmp_path):
    samples, cal = _probs((3, 4, 6, 5, 4))
    out = write_sample_set(tmp_path, "vol", np.zeros((1, 6, 5, 4), np.float32), samples, cal, affine=_affine())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["shapes"]["samples"] == [6, 5, 4, 3]  # sample axis = 4th axis for 3D
    assert manifest["shapes"]["sample_mean"] == [6, 5, 4, 4]  # K > 2: every class, last axis
    assert manifest["shapes"]["entropy_calibration"] == [6, 5, 4] and manifest["metrics"] == {}
    np.testing.assert_allclose(nib.load(out / "mutual_information.nii.gz").affine, _affine(), atol=1e-5)
    assert manifest["spacing"] == pytest.approx([0.7, 0.8, 2.5])


def test_2d_affine_argument_and_identity_fallback(tmp_path, caplog):
    samples, cal = _probs((2, 2, 4, 4))
    a2 = np.array([[0.5, 0.0, 10.0], [0.0, 0.6, -3.0], [0.0, 0.0, 1.0]])
    out = write_sample_set(tmp_path, "c", np.zeros((4, 4)), samples, cal, affine=a2, montage=False)
    expected = np.array([[0.5, 0, 0, 10.0], [0, 0.6, 0, -3.0], [0, 0, 1, 0], [0, 0, 0, 1]])
    np.testing.assert_allclose(nib.load(out / "entropy_sample_mean.nii.gz").affine, expected)
    out = write_sample_set(tmp_path, "d", torch.zeros(1, 4, 4), samples, cal, montage=False)
    assert json.loads((out / "manifest.json").read_text())["affine_source"] == "identity"
    assert "identity affine" in caplog.text


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_existing_case_folder_is_replaced_as_a_whole(tmp_path):
    samples, cal = _probs((4, 2, 8, 8))
    write_sample_set(tmp_path, "c", np.zeros((8, 8)), samples, cal, labels=np.zeros((4, 8, 8)), montage=True)
    (tmp_path / "c" / "stray.txt").write_text("old")
    write_sample_set(tmp_path, "c", np.zeros((8, 8)), samples[:2], cal, montage=False)
    assert "montage.png" not in _names(tmp_path / "c") and "stray.txt" not in _names(tmp_path / "c")
    assert "labels.nii.gz" not in _names(tmp_path / "c")
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["num_samples"] == 2
    assert _names(tmp_path) == {"c"}  # no temporary or old folder left


def test_failure_leaves_no_partial_output_and_keeps_the_old_folder(tmp_path, monkeypatch):
    samples, cal = _probs((2, 2, 8, 8))
    write_sample_set(tmp_path, "c", np.zeros((8, 8)), samples, cal, seed=1, montage=False)
    calls = []

    def failing_save(path, data, affine):
        calls.append(path)
        if len(calls) % 3 == 0:  # the third file of each case fails
            raise OSError("disk full")
        nib.save(nib.Nifti1Image(data, affine), str(path))

    monkeypatch.setattr(ssio, "save_nifti", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_sample_set(tmp_path, "c", np.zeros((8, 8)), samples, cal, seed=2, montage=False)
    with pytest.raises(OSError, match="disk full"):
        write_sample_set(tmp_path, "new", np.zeros((8, 8)), samples, cal, montage=False)
    assert len(calls) == 6 and _names(tmp_path) == {"c"}
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["seed"] == 1


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"case_id": "../x"}, ValueError, "cannot name a case folder"),
        ({"case_id": ".hidden"}, ValueError, "cannot name a case folder"),
        ({"samples": torch.randn(2, 2, 8, 8) * 5}, ValueError, "apply softmax"),
        ({"samples": torch.full((2, 2, 8, 8), float("nan"))}, ValueError, "NaN"),
        ({"samples": torch.rand(2, 8, 8)}, ValueError, r"must be \(S, K, \*spatial\)"),
        ({"calibration_probs": torch.rand(2, 8, 9)}, ValueError, r"calibration_probs .* must be \(K, \*spatial\)"),
        ({"image": torch.zeros(1, 8, 9)}, ValueError, "image"),
        ({"labels": torch.full((4, 8, 8), 3)}, ValueError, r"integer classes in \[0, 1\]"),
        ({"affine": np.zeros((4, 4))}, ValueError, "invertible"),
        ({"affine": np.eye(5)}, ValueError, "4x4"),
        ({"metrics": {"ged": "high"}}, TypeError, "must be a number"),
        ({"num_montage_samples": 0}, ValueError, "num_montage_samples"),
        ({"image": [0.0]}, TypeError, "numpy array"),
    ],
)
def test_bad_inputs(tmp_path, kwargs, error, message):
    samples, cal = _probs((2, 2, 8, 8))
    args = {"case_id": "c", "image": np.zeros((8, 8)), "samples": samples, "calibration_probs": cal, **kwargs}
    with pytest.raises(error, match=message):
        write_sample_set(tmp_path, montage=False, **args)
    assert not (tmp_path / "c").exists()


def _batch(tmp_path: Path, names: list[str], with_labels: bool) -> dict:
    items = []
    for i, name in enumerate(names):
        samples, cal = _probs((3, 2, 8, 8), seed=i)
        item = {
            CarKeys.IMAGE: MetaTensor(torch.rand(1, 8, 8), affine=torch.as_tensor(_affine())),
            CarKeys.SAMPLES: samples,
            CarKeys.CALIBRATION: cal,
            CarKeys.CASE_ID: name,
        }
        if with_labels:
            item[CarKeys.LABEL] = torch.zeros(4, 8, 8, dtype=torch.uint8)
        items.append(item)
    return list_data_collate(items)


def test_handler_writes_each_case_of_each_iteration(tmp_path):
    batches = [_batch(tmp_path, ["a", "b"], True), _batch(tmp_path, ["c", "d"], True)]

    def step(engine, batch):
        return {k: batch[k] for k in (CarKeys.SAMPLES, CarKeys.CALIBRATION)}  # image, labels, ids from the batch

    engine = Engine(step)
    writer = SampleSetWriter(tmp_path / "sets", seed=3, montage=False)
    writer.attach(engine)
    engine.run(batches, max_epochs=1)
    assert _names(tmp_path / "sets") == {"a", "b", "c", "d"}
    manifest = json.loads((tmp_path / "sets" / "d" / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["num_graders"] == 4 and "ged" in manifest["metrics"]
    np.testing.assert_allclose(nib.load(tmp_path / "sets" / "d" / "samples.nii.gz").affine, _affine(), atol=1e-5)
    expected = batches[1][CarKeys.SAMPLES][1].argmax(1).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "sets" / "d" / "samples.nii.gz").dataobj), expected)


def test_handler_with_decollated_outputs_and_case_cap(tmp_path):
    from monai.data import decollate_batch

    batch = _batch(tmp_path, ["a", "b", "c"], False)
    engine = Engine(lambda e, b: decollate_batch(b))
    writer = SampleSetWriter(tmp_path / "sets", batch_transform=lambda b: None, montage=False, max_cases_per_epoch=2)
    writer.attach(engine)
    engine.run([batch], max_epochs=2)
    assert _names(tmp_path / "sets") == {"a", "b"}
    assert writer.written == [tmp_path / "sets" / "a", tmp_path / "sets" / "b"]  # the last epoch's cases
    np.testing.assert_allclose(nib.load(tmp_path / "sets" / "a" / "image.nii.gz").affine, _affine(), atol=1e-5)


def test_handler_missing_key_is_a_clear_error(tmp_path):
    batch = _batch(tmp_path, ["a"], False)
    del batch[CarKeys.SAMPLES]
    engine = Engine(lambda e, b: {})
    SampleSetWriter(tmp_path / "sets").attach(engine)
    with pytest.raises(KeyError, match="lacks.*samples"):
        engine.run([batch], max_epochs=1)
    with pytest.raises(ValueError, match="max_cases_per_epoch"):
        SampleSetWriter(tmp_path, max_cases_per_epoch=-1)


def test_handler_uses_a_complete_output_alone_and_ignores_skipped_batches(tmp_path):
    from monai.data import decollate_batch

    batches = [_batch(tmp_path, ["a", "bad", "c"], True), _batch(tmp_path, ["x", "y"], True)]

    def step(engine, batch):
        if engine.state.iteration == 2:
            return {"skipped_batch": 2}  # every case of the batch was skipped (CAREvaluator's convention)
        items = decollate_batch(batch, detach=False)
        return list_data_collate([items[0], items[2]])  # case "bad" was skipped: 2 cases out, 3 in the batch

    engine = Engine(step)
    SampleSetWriter(tmp_path / "sets", montage=False).attach(engine)
    engine.run(batches, max_epochs=1)
    assert _names(tmp_path / "sets") == {"a", "c"}
    np.testing.assert_allclose(nib.load(tmp_path / "sets" / "c" / "samples.nii.gz").affine, _affine(), atol=1e-5)


def test_handler_takes_the_affine_from_the_batch_when_the_output_has_plain_tensors(tmp_path):
    batch = _batch(tmp_path, ["a", "b"], False)

    def step(engine, b):
        return {**b, CarKeys.IMAGE: b[CarKeys.IMAGE].as_tensor()}

    engine = Engine(step)
    SampleSetWriter(tmp_path / "sets", montage=False).attach(engine)
    engine.run([batch], max_epochs=1)
    manifest = json.loads((tmp_path / "sets" / "b" / "manifest.json").read_text())
    assert manifest["affine_source"] == "image meta 'affine'"
    np.testing.assert_allclose(manifest["affine"], _affine(), atol=1e-6)
