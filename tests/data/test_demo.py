"""The embedded demo data set: counts, masks against the shipped asset, determinism, atomic caching."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from monai.transforms import LoadImage

from monai_car.data import ensure_demo_dataset, load_car_datalist, load_demo_nodules
from monai_car.data.demo_render import LUNG_HU, render_ct

SPLITS = ("training", "validation", "test")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return ensure_demo_dataset(tmp_path_factory.mktemp("cache"))


def _items(folder):
    doc = json.loads((folder / "datalist.json").read_text())
    return doc, [i for s in SPLITS for i in doc[s]]


def test_counts_and_splits(demo):
    doc, items = _items(demo)
    nodules = load_demo_nodules()
    graders = [n.num_graders for n in nodules]
    counts = json.loads((demo / "summary.json").read_text())["counts"]
    assert counts["nodules"] == len(nodules) == 97
    assert counts["nodules_by_num_graders"] == {str(g): graders.count(g) for g in range(1, 5)}
    assert all(graders.count(g) > 0 for g in range(1, 5))
    marked = sum(int(n.masks.any(axis=(0, 1, 2)).sum()) for n in nodules)
    assert len(items) == counts["slices"] == marked == 415
    patients = {s: {i["patient_id"] for i in doc[s]} for s in SPLITS}
    assert all(patients[s] for s in SPLITS)
    assert not (patients["training"] & patients["validation"] or patients["training"] & patients["test"])
    assert not patients["validation"] & patients["test"]
    assert "SYNTHETIC CT" in doc["description"] and "REAL grader masks" in doc["description"]
    for split in SPLITS:
        cases = load_car_datalist(demo, split)
        assert len(cases) == len(doc[split]) and all(len(c["labels"]) == 4 for c in cases)
    resolved = load_decathlon_datalist(demo / "datalist.json", data_list_key="validation", base_dir=demo)
    assert all(i["image"].startswith(str(demo)) and i["labels"][3].startswith(str(demo)) for i in resolved)
    image = LoadImage(image_only=True)(load_car_datalist(demo, "test")[0]["image"])
    assert tuple(image.shape) == (128, 128) and float(image.min()) >= 0 and float(image.max()) <= 1


def test_labels_are_the_real_masks_at_the_right_place(demo):
    """Map every label voxel through its affine back to the scan pixel and compare with the asset's masks."""
    _, items = _items(demo)
    nodules = {n.nodule_id: n for n in load_demo_nodules()}
    for item in items:
        n = nodules[item["nodule_id"]]
        k = int(item["image"].rsplit("_k", 1)[1][:3])
        kk = k - n.offset[2]
        assert item["slice_z"] == pytest.approx(n.slice_z[kk]) and item["num_graders"] == n.num_graders
        img = nib.load(demo / item["image"])
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        i, j = np.indices(img.shape)
        ras = img.affine[:3, :3] @ np.stack([i.ravel(), j.ravel(), np.zeros(i.size)]) + img.affine[:3, 3:4]
        origin = -255.5 * n.pixel_spacing  # the documented synthetic in-plane origin (LPS)
        col = np.rint((-ras[0] - origin) / n.pixel_spacing).astype(int) - n.offset[1]
        row = np.rint((-ras[1] - origin) / n.pixel_spacing).astype(int) - n.offset[0]
        assert np.allclose(ras[2], n.slice_z[kk])
        inside = (row >= 0) & (row < n.masks.shape[1]) & (col >= 0) & (col < n.masks.shape[2])
        for r, path in enumerate(item["labels"]):
            label = np.asarray(nib.load(demo / path).dataobj).ravel()
            want = np.zeros(label.shape, dtype=bool)
            if r < n.num_graders:
                want[inside] = n.masks[r, row[inside], col[inside], kk]
            np.testing.assert_array_equal(label.astype(bool), want, err_msg=f"{path}")


def test_nodule_density_follows_agreement(demo):
    _, items = _items(demo)
    all_four, background = [], []
    for item in items[::3]:
        image = np.asarray(nib.load(demo / item["image"]).dataobj)
        votes = sum(np.asarray(nib.load(demo / p).dataobj, dtype=int) for p in item["labels"])
        if (votes == 4).any():
            all_four.append(image[votes == 4].mean())
        background.append(np.median(image[votes == 0]))
    lung = (LUNG_HU + 1000) / 1400
    assert abs(np.median(background) - lung) < 0.03
    assert np.median(all_four) > lung + 0.3


def test_deterministic_idempotent_and_cached(demo, tmp_path, monkeypatch):
    _, items = _items(demo)
    stamp = (demo / "datalist.json").stat().st_mtime_ns
    assert ensure_demo_dataset(demo.parent) == demo
    assert (demo / "datalist.json").stat().st_mtime_ns == stamp  # reused, not rewritten
    monkeypatch.setenv("MONAI_CAR_CACHE", str(tmp_path))
    again = ensure_demo_dataset()
    assert again == tmp_path / "demo_lidc_v1"
    assert _items(again)[1] == items
    for item in items[::7]:
        for rel in [item["image"], *item["labels"]]:
            np.testing.assert_array_equal(nib.load(again / rel).dataobj, nib.load(demo / rel).dataobj)


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    import monai_car.data.demo as demo_module

    def broken(*args, **kwargs):
        raise RuntimeError("renderer failed")

    monkeypatch.setattr(demo_module, "render_ct", broken)
    with pytest.raises(RuntimeError, match="renderer failed"):
        ensure_demo_dataset(tmp_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="at least 64"):
        ensure_demo_dataset(tmp_path, crop_size=32)


def test_render_is_seeded():
    agreement = np.zeros((32, 32, 3), np.float32)
    agreement[12:20, 12:20, 1] = 1.0
    a = render_ct(agreement, 20.0, (0.7, 0.7, 1.25), np.random.default_rng(5), avoid=[((16, 16, 1), 3.0)])
    b = render_ct(agreement, 20.0, (0.7, 0.7, 1.25), np.random.default_rng(5), avoid=[((16, 16, 1), 3.0)])
    c = render_ct(agreement, 20.0, (0.7, 0.7, 1.25), np.random.default_rng(6), avoid=[((16, 16, 1), 3.0)])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a[14:18, 14:18, 1].mean() > a[..., 0].mean() + 400
    with pytest.raises(ValueError, match="agreement"):
        render_ct(np.zeros((4, 4)), 0.0, (1, 1, 1), np.random.default_rng(0))
