"""The MONAI Label app (apps/monailabel_car) through its HTTP API, on a server started on 127.0.0.1.

Runs in the environment of ``scripts/setup_label.sh`` (``bash scripts/test_label.sh``); elsewhere it skips. The server
gets a tiny studies folder: two synthetic CTs with a nodule (one on a permuted, flipped voxel grid), a corrupt file, the
lesion CSV, and an untrained seeded CARNet with the LIDC bundle's inference geometry (see ``write_untrained_model``).
Expected values are computed here from the bundle's predictor and numpy, not with the app's code.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("monailabel", reason="MONAI Label is not installed: run `bash scripts/test_label.sh` (label env)")
nrrd = pytest.importorskip("nrrd")
requests = pytest.importorskip("requests")

from label_fixtures import (  # noqa: E402
    StudySpec,
    bundle_network,
    monailabel_server,
    split_multipart,
    write_lesions_csv,
    write_study,
    write_untrained_model,
)

from monai_car.inferers import Lesion, LesionSampleSetPredictor, reorient  # noqa: E402
from monai_car.utils import load_network_weights  # noqa: E402

pytestmark = pytest.mark.monailabel

S = 8  # the server's default --conf num_samples
CROP = 48  # the bundle's inference crop_size
HALF_EXTENT_MM = 15.0  # LesionSampleSetPredictor's z half extent for lesions of unknown size
PERMUTED = np.array([[0.0, 0.8, 0.0, -20.0], [-0.8, 0.0, 0.0, 30.0], [0.0, 0.0, 2.0, -40.0], [0.0, 0.0, 0.0, 1.0]])
FLIPPED = np.array([[-0.7, 0.0, 0.0, 10.0], [0.0, -0.7, 0.0, 20.0], [0.0, 0.0, 1.5, -30.0], [0.0, 0.0, 0.0, 1.0]])
# a large soft-tissue mass (bright: by construction of the model the more uncertain study) and a faint small nodule
STUDY_A = StudySpec(PERMUTED, (56, 60, 24), (30, 28, 12), radius_mm=16.0, nodule_hu=40.0, seed=1)
STUDY_B = StudySpec(FLIPPED, (64, 64, 30), (33, 30, 15), radius_mm=3.0, nodule_hu=-500.0, seed=2)
STUDIES = {"study_a": STUDY_A, "study_b": STUDY_B}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("monailabel_car")
    studies = root / "studies"
    for name, spec in STUDIES.items():
        write_study(studies / f"{name}.nii.gz", spec)
    (studies / "corrupt.nii.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"\x00not a nifti" * 20)
    rows = {name: spec.nodule_world() for name, spec in STUDIES.items()}
    write_lesions_csv(studies / "lesions.csv", {**rows, "corrupt": np.zeros(3)})
    model = write_untrained_model(root / "models" / "model.pt")
    conf = {"model_path": str(model), "num_samples": str(S)}
    with monailabel_server(studies, conf, root / "server.log") as url:
        session = requests.Session()
        session.trust_env = False  # 127.0.0.1 only, never through a proxy
        yield SimpleNamespace(url=url, root=root, studies=studies, model=model, session=session)
        session.close()


def _infer(server, model: str, image: str, params: dict, files: dict | None = None):
    return server.session.post(
        f"{server.url}/infer/{model}", params={"image": image}, data={"params": json.dumps(params)}, files=files,
        timeout=600,
    )  # fmt: skip


def _result(server, response, tmp_path: Path) -> tuple[dict, np.ndarray, dict]:
    assert response.status_code == 200, f"{response.status_code}: {response.text[:2000]}"
    params, payload, name = split_multipart(response)
    assert name.endswith(".seg.nrrd")
    path = tmp_path / name
    path.write_bytes(payload)
    data, header = nrrd.read(str(path), index_order="F")
    return params, data, header


def _ras_affine(header: dict) -> np.ndarray:
    """The voxel-to-RAS affine of a 4D ``list, domain, domain, domain`` NRRD in LPS space."""
    assert header["space"] == "left-posterior-superior"
    assert list(header["kinds"]) == ["list", "domain", "domain", "domain"]
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = lps_to_ras @ np.asarray(header["space directions"], dtype=float)[1:].T
    affine[:3, 3] = lps_to_ras @ np.asarray(header["space origin"], dtype=float)
    return affine


def _names(header: dict) -> list[str]:
    names = []
    while f"Segment{len(names)}_Name" in header:
        assert header[f"Segment{len(names)}_Layer"] == str(len(names))
        names.append(header[f"Segment{len(names)}_Name"])
    return names


def _expected_names(num_samples: int) -> list[str]:
    samples = [f"sample_{k:02d}" for k in range(1, num_samples + 1)]
    return ["consensus", *samples, "entropy_mnats", "mutual_information_mnats"]


def _entropy(p: np.ndarray, axis: int) -> np.ndarray:
    return -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=axis)


def _maps(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(hard foreground (S, ...), entropy of the mean, mutual information)`` of samples ``(S, K, ...)``, numpy."""
    mean = samples.mean(axis=0)
    entropy = _entropy(mean, 0)
    mutual_information = np.maximum(entropy - _entropy(samples, 1).mean(axis=0), 0.0)
    return samples[:, 1] > samples[:, 0], entropy, mutual_information


def _bundle_sample_set(server, study: str, center_ras: np.ndarray, num_samples: int, seed: int = 0):
    """The lesion's sample set from the bundle's predictor in this process (the model file the server loads)."""
    network, geometry = bundle_network(seed=123)  # weights replaced below
    load_network_weights(server.model, network, geometry=geometry)
    predictor = LesionSampleSetPredictor(
        network, num_samples=num_samples, crop_size=CROP, hu_window=(-1000.0, 400.0), batch_size=8, seed=seed,
        montage=False,
    )  # fmt: skip
    image = nib.load(str(server.studies / f"{study}.nii.gz"))
    volume, affine = reorient(np.asarray(image.dataobj, dtype=np.float32), image.affine, "RAS")
    return predictor.predict_lesion(volume, affine, Lesion("x", np.asarray(center_ras, dtype=float))).sample_set


def test_info_lists_the_car_tasks_strategy_and_scoring(server):
    info = server.session.get(f"{server.url}/info/", timeout=60).json()
    assert info["models"]["car"]["type"] == "deepgrow" and info["models"]["car"]["dimension"] == 3
    assert info["models"]["car_lesions"]["type"] == "segmentation"
    assert info["models"]["car"]["config"]["num_samples"] == S
    assert {"car_uncertainty", "random", "first"} <= set(info["strategies"])
    assert set(info["scoring"]) == {"car_uncertainty"}
    assert info["datastore"]["total"] == 3 and info["labels"] == ["lesion"]


def test_a_click_returns_named_channels_on_the_ct_grid_and_the_lesion_numbers(server, tmp_path):
    click = [int(v) for v in STUDY_A.nodule_voxel]
    params, data, header = _result(server, _infer(server, "car", "study_a", {"foreground": [click]}), tmp_path)
    names = _expected_names(S)
    assert _names(header) == names and params["channels"] == names
    assert data.dtype == np.uint16 and data.shape[0] == len(names)
    # the slab: CROP x CROP around the click in-plane (the study's in-plane axes are permuted and flipped), and the
    # slices within HALF_EXTENT_MM of it (slice spacing 2 mm)
    n = math.ceil(HALF_EXTENT_MM / 2.0)
    z0, z1 = max(click[2] - n, 0), min(click[2] + n + 1, STUDY_A.shape[2])
    assert data.shape[1:] == (CROP, CROP, z1 - z0)
    offset = np.array([int(v) for v in header["Segmentation_ReferenceImageExtentOffset"].split()])
    assert offset.tolist() == params["grid"]["offset_voxel"] and offset[2] == z0
    assert np.all(np.abs(offset[:2] + (CROP - 1) / 2 - np.array(click[:2])) <= 0.5)
    expected_affine = STUDY_A.affine.copy()
    expected_affine[:3, 3] = STUDY_A.affine[:3, :3] @ offset + STUDY_A.affine[:3, 3]
    np.testing.assert_allclose(_ras_affine(header), expected_affine, atol=1e-4)
    # binary outlines, uncertainty in milli-nats (at most 1000 ln 2)
    assert set(np.unique(data[: S + 1])) <= {0, 1} and data[S + 1 :].max() <= round(1000 * math.log(2))
    # the JSON numbers, recomputed from the returned file (the slab lies inside the CT, so no voxel is cut off)
    (lesion,) = params["lesions"]
    counts = data[1 : S + 1].reshape(S, -1).sum(axis=1)
    volumes = counts * abs(np.linalg.det(STUDY_A.affine[:3, :3]))
    for key, value in {"mean": volumes.mean(), "std": volumes.std(), "p05": np.percentile(volumes, 5),
                       "p95": np.percentile(volumes, 95)}.items():  # fmt: skip
        assert lesion["volume_mm3"][key] == pytest.approx(value, rel=1e-5), key
    assert lesion["presence_frequency"] == pytest.approx(float((counts > 0).mean()))
    region = data[1 : S + 1].any(axis=0)
    assert lesion["region_voxels"] == int(region.sum()) > 0
    assert lesion["mean_entropy_nats"] == pytest.approx(data[S + 1][region].mean() / 1000, abs=6e-4)
    assert lesion["mean_mutual_information_nats"] == pytest.approx(data[S + 2][region].mean() / 1000, abs=6e-4)
    assert params["study_mean_mutual_information_nats"] == lesion["mean_mutual_information_nats"]
    np.testing.assert_allclose(lesion["center_voxel"], click, atol=1e-4)
    assert params["num_samples"] == S and params["seed"] == 0 and params["lesion_source"] == "foreground"
    assert params["latencies"]["total"] > 0
    # seeded: the same request gives the same outlines, another seed other ones
    again = _result(server, _infer(server, "car", "study_a", {"foreground": [click]}), tmp_path)[1]
    other = _result(server, _infer(server, "car", "study_a", {"foreground": [click], "seed": 7}), tmp_path)[1]
    np.testing.assert_array_equal(again, data)
    assert (other[1 : S + 1] != data[1 : S + 1]).any()


def test_the_channels_are_the_bundle_predictors_voxel_for_voxel(server, tmp_path):
    # a world point half a voxel off a voxel centre in-plane: the 48-voxel slab is then an exact sub-grid of the CT
    center = STUDY_A.affine @ np.array([*(np.array(STUDY_A.nodule_voxel[:2]) + 0.5), STUDY_A.nodule_voxel[2], 1.0])
    lesion = {"lesion_id": "w1", "x": center[0], "y": center[1], "z": center[2]}
    params, data, header = _result(
        server, _infer(server, "car", "study_a", {"lesions": [lesion], "lesions_frame": "RAS"}), tmp_path
    )
    assert params["lesion_source"] == "lesions" and params["lesions"][0]["lesion_id"] == "w1"
    sample_set = _bundle_sample_set(server, "study_a", center[:3], S)
    hard, entropy, mutual_information = _maps(sample_set.samples)
    expected = np.concatenate(
        [
            (sample_set.samples.mean(axis=0)[1] >= 0.5)[None],  # 1 - p(background) >= 0.5 for two classes
            hard,
            np.rint(entropy * 1000)[None],
            np.rint(mutual_information * 1000)[None],
        ]
    ).astype(np.uint16)
    # where each slab voxel lies in the CT, hence in the returned file
    to_ct = np.linalg.inv(STUDY_A.affine) @ sample_set.affine
    slab_voxels = np.indices(expected.shape[1:]).reshape(3, -1).astype(float)
    ct = to_ct[:3, :3] @ slab_voxels + to_ct[:3, 3:4]
    assert np.abs(ct - np.rint(ct)).max() < 1e-4  # on the lattice
    offset = np.array(params["grid"]["offset_voxel"])
    index = np.rint(ct).astype(int) - offset[:, None]
    scattered = np.zeros_like(data)
    scattered[:, index[0], index[1], index[2]] = expected.reshape(expected.shape[0], -1)
    assert data.shape[1:] == expected.shape[1:]
    np.testing.assert_array_equal(data[: S + 1], scattered[: S + 1])
    assert np.abs(data[S + 1 :].astype(int) - scattered[S + 1 :].astype(int)).max() <= 1


def test_full_grid_returns_the_cts_own_grid(server, tmp_path):
    click = [int(v) for v in STUDY_B.nodule_voxel]
    request = {"foreground": [click], "num_samples": 2}
    cropped, crop_data, _ = _result(server, _infer(server, "car", "study_b", request), tmp_path)
    params, data, header = _result(server, _infer(server, "car", "study_b", {**request, "full_grid": True}), tmp_path)
    assert data.shape == (2 + 3, *STUDY_B.shape) and params["grid"]["full_grid"] is True
    np.testing.assert_allclose(_ras_affine(header), STUDY_B.affine, atol=1e-4)
    assert header["Segmentation_ReferenceImageExtentOffset"] == "0 0 0"
    lo = np.array(cropped["grid"]["offset_voxel"])
    hi = lo + np.array(crop_data.shape[1:])
    np.testing.assert_array_equal(data[:, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], crop_data)
    outside = data.copy()
    outside[:, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 0
    assert not outside.any()


def test_scoring_stores_the_mutual_information_and_the_most_uncertain_study_comes_first(server):
    answer = server.session.post(f"{server.url}/scoring/car_uncertainty", params={"run_sync": True}, timeout=600)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert set(result["scored"]) == set(STUDIES) and "cannot be read" in result["without_score"]["corrupt"]
    # each study's score, computed here: the mean mutual information over the voxels some sample draws
    expected = {}
    for name, spec in STUDIES.items():
        hard, _, mutual_information = _maps(_bundle_sample_set(server, name, spec.nodule_world(), S).samples)
        region = hard.any(axis=0)
        expected[name] = float(mutual_information[region].mean())
    for name, value in expected.items():
        assert result["scored"][name] == pytest.approx(value, rel=1e-4), name
        info = server.session.get(f"{server.url}/datastore/image/info", params={"image": name}, timeout=60).json()
        assert info["car_mutual_information"] == pytest.approx(value, rel=1e-4)
        assert info["car_lesions"][0]["lesion_id"] == "n1"
    most, least = sorted(expected, key=expected.get, reverse=True)
    assert expected[most] > 1.3 * expected[least]  # apart by construction (see write_untrained_model)
    served = [
        server.session.post(f"{server.url}/activelearning/car_uncertainty", json={}, timeout=60).json()["id"]
        for _ in range(3)
    ]
    assert served == [most, least, "corrupt"]  # then the ones just served go to the back
    again = server.session.post(f"{server.url}/scoring/car_uncertainty", params={"run_sync": True}, timeout=600)
    assert sorted(again.json()["skipped"]) == sorted([*STUDIES, "corrupt"])  # same model, S, seed, CSV: not rerun


def test_bad_requests_get_http_errors_and_the_server_keeps_serving(server, tmp_path):
    good = {"foreground": [list(STUDY_A.nodule_voxel)], "num_samples": 2}
    cases = [
        ("nope", {"foreground": [[1, 1, 1]]}, 404, "not in the datastore"),
        ("study_a", {"foreground": [[500, 1, 1]]}, 422, "lies outside"),
        ("study_a", {"foreground": [[1.0, 2.0]]}, 422, "3 numbers"),
        ("study_a", {**good, "num_samples": 0}, 422, "num_samples"),
        ("study_a", {**good, "seed": "x"}, 422, "bad request parameter"),
        ("corrupt", {"foreground": [[1, 1, 1]]}, 422, "cannot be read as a CT volume"),
        ("study_a", {"lesions": [{"x": 9000.0, "y": 0.0, "z": 0.0}]}, 422, "outside the volume"),
    ]
    for image, params, status, message in cases:
        response = _infer(server, "car", image, params)
        assert response.status_code == status and message in response.json()["detail"], (image, response.text)
        assert _infer(server, "car", "study_a", good).status_code == 200
    # a missing model: a 503 naming the fix; the server serves again once the file is back
    parked = server.root / "parked.pt"
    shutil.move(server.model, parked)
    try:
        for response in (
            _infer(server, "car", "study_a", good),
            server.session.post(f"{server.url}/scoring/car_uncertainty", params={"run_sync": True}, timeout=60),
        ):
            assert response.status_code == 503, response.text
            assert "does not exist" in response.json()["detail"] and "quickstart" in response.json()["detail"]
    finally:
        shutil.move(parked, server.model)
    assert _infer(server, "car", "study_a", good).status_code == 200
    unknown = server.session.post(f"{server.url}/activelearning/nope", json={}, timeout=60)
    assert unknown.status_code == 400 and "nope" in unknown.json()["detail"]
    assert server.session.get(f"{server.url}/info/", timeout=60).status_code == 200


def test_the_lesion_csv_and_an_uploaded_mask_name_the_lesions(server, tmp_path):
    # 3D Slicer's "Run" button: no point, lesions from the CSV; Slicer asks for .nrrd / uint8, gets the .seg.nrrd
    slicer = {"result_extension": ".nrrd", "result_dtype": "uint8", "label": "lesion", "num_samples": 2}
    params, data, _ = _result(server, _infer(server, "car_lesions", "study_b", slicer), tmp_path)
    assert params["lesion_source"] == "csv" and [lesion["lesion_id"] for lesion in params["lesions"]] == ["n1"]
    np.testing.assert_allclose(params["lesions"][0]["center_voxel"], STUDY_B.nodule_voxel, atol=1e-3)
    assert params["ignored_result_format"] == {"result_extension": ".nrrd", "result_dtype": "uint8"}
    # a lesion mask on the CT's grid, uploaded as the 'label' file: one lesion per connected component
    mask = np.zeros(STUDY_A.shape, dtype=np.uint8)
    x, y, z = STUDY_A.nodule_voxel
    mask[x - 2 : x + 3, y - 2 : y + 3, z - 1 : z + 2] = 1
    mask_path = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(mask, STUDY_A.affine), str(mask_path))
    files = {"label": ("mask.nii.gz", mask_path.read_bytes(), "application/octet-stream")}
    params, _, _ = _result(server, _infer(server, "car", "study_a", {"num_samples": 2}, files), tmp_path)
    assert params["lesion_source"] == "mask" and len(params["lesions"]) == 1
    np.testing.assert_allclose(params["lesions"][0]["center_voxel"], STUDY_A.nodule_voxel, atol=1e-3)
    # a path given as the 'label' parameter (not an upload) is not read: the study's CSV rows are used
    params = _result(server, _infer(server, "car", "study_a", {"num_samples": 2, "label": str(mask_path)}), tmp_path)[0]
    assert params["lesion_source"] == "csv"
    # a mask on another grid is refused
    nib.save(nib.Nifti1Image(mask, STUDY_B.affine), str(mask_path))
    files = {"label": ("mask.nii.gz", mask_path.read_bytes(), "application/octet-stream")}
    response = _infer(server, "car", "study_a", {"num_samples": 2}, files)
    assert response.status_code == 422 and "voxel grid" in response.json()["detail"]
