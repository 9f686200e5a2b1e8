"""Atomic outputs: permissions like open() / os.mkdir under the umask, cleanup on failure, and the real writers."""

from __future__ import annotations

import gzip
import json
import os
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import monai_car.utils.atomic as atomic_module
from monai_car.utils import (
    atomic_dir,
    atomic_file,
    make_staging_dir,
    replace_dir,
    save_checkpoint,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)

EXPECTED = {0o022: (0o644, 0o755), 0o077: (0o600, 0o700)}  # umask -> (file mode, folder mode)


@pytest.fixture(params=sorted(EXPECTED), ids=lambda u: f"umask{u:03o}")
def modes(request):
    """Run the test under umask 0022 and 0077 (restored afterwards); yields the expected (file, folder) modes."""
    old = os.umask(request.param)
    try:
        yield EXPECTED[request.param]
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _check_tree(root: Path, file_mode: int, dir_mode: int) -> int:
    """Assert the modes of ``root`` and everything below it; returns the number of files checked."""
    assert _mode(root) == dir_mode, root
    count = 0
    for p in root.rglob("*"):
        assert not p.name.startswith("."), f"left-over temporary {p}"
        assert _mode(p) == (dir_mode if p.is_dir() else file_mode), p
        count += not p.is_dir()
    return count


# --- the helpers ---------------------------------------------------------------------------------------------------


def test_atomic_file_permissions_follow_the_umask(tmp_path, modes):
    file_mode, dir_mode = modes
    target = tmp_path / "new" / "out.txt"
    with atomic_file(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".out.txt.tmp-") and tmp.exists()
        assert not target.exists()
        tmp.write_text("hello")
    assert target.read_text() == "hello" and _names(target.parent) == ["out.txt"]
    assert _mode(target) == file_mode and _mode(target.parent) == dir_mode  # the created parent too
    ref = tmp_path / "by_open.txt"
    ref.write_text("x")
    assert _mode(ref) == file_mode  # same as open()


def test_atomic_dir_permissions_follow_the_umask(tmp_path, modes):
    file_mode, dir_mode = modes
    target = tmp_path / "ds"
    with atomic_dir(target) as stage:
        assert stage.parent == tmp_path and stage.name.startswith(".ds.tmp-") and _names(stage) == []
        (stage / "sub").mkdir()
        (stage / "sub" / "a.txt").write_text("a")
        write_text_atomic(stage / "b.txt", "b")
    assert _names(tmp_path) == ["ds"]
    assert _check_tree(target, file_mode, dir_mode) == 2
    assert _mode(make_staging_dir(tmp_path / "other")) == dir_mode


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_file_failure_leaves_nothing(tmp_path, error):
    target = tmp_path / "out.bin"
    with pytest.raises(error):
        with atomic_file(target) as tmp:
            tmp.write_bytes(b"partial")
            raise error("boom")
    assert _names(tmp_path) == []


def test_existing_file_is_replaced_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_text("new, half written")
            raise RuntimeError("boom")
    assert target.read_text() == "old" and _names(tmp_path) == ["out.txt"]
    with atomic_file(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"  # untouched until the block ends
    assert target.read_text() == "new" and _names(tmp_path) == ["out.txt"]


def test_failed_rename_removes_the_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "out.txt"
    target.write_text("old")

    def no_replace(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(atomic_module.os, "replace", no_replace)
    with pytest.raises(OSError, match="rename failed"):
        write_text_atomic(target, "new")
    assert target.read_text() == "old" and _names(tmp_path) == ["out.txt"]


def test_existing_folder_is_replaced_only_on_success(tmp_path):
    target = tmp_path / "ds"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as stage:
            (stage / "new.txt").write_text("new")
            raise RuntimeError("boom")
    assert _names(tmp_path) == ["ds"] and _names(target) == ["old.txt"]
    with atomic_dir(target) as stage:
        (stage / "new.txt").write_text("new")
    assert _names(tmp_path) == ["ds"] and _names(target) == ["new.txt"]  # replaced as a whole


def test_replace_dir_puts_the_old_folder_back_when_the_move_fails(tmp_path, monkeypatch):
    target, src = tmp_path / "ds", tmp_path / "src"
    target.mkdir()
    (target / "old.txt").write_text("old")
    src.mkdir()
    real_replace, calls = os.replace, []

    def second_replace_fails(a, b):
        calls.append((a, b))
        if len(calls) == 2:
            raise OSError("rename failed")
        real_replace(a, b)

    monkeypatch.setattr(atomic_module.os, "replace", second_replace_fails)
    with pytest.raises(OSError, match="rename failed"):
        replace_dir(src, target)
    assert len(calls) == 3 and _names(tmp_path) == ["ds", "src"] and _names(target) == ["old.txt"]


def test_suffix_reaches_writers_that_read_it(tmp_path):
    target = tmp_path / "mask.nii.gz"
    with atomic_file(target, suffix=".nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz")
        nib.save(nib.Nifti1Image(np.ones((2, 3, 4), np.uint8), np.eye(4)), str(tmp))
    assert gzip.decompress(target.read_bytes())  # nibabel compressed it: it saw the .gz
    assert nib.load(target).shape == (2, 3, 4) and _names(tmp_path) == ["mask.nii.gz"]


def test_long_names_get_a_shortened_temp_name(tmp_path):
    target = tmp_path / ("n" * 250 + ".txt")
    with atomic_file(target, suffix=".txt") as tmp:
        assert len(tmp.name) <= 255 and tmp.name.endswith(".txt")
        tmp.write_text("x")
    assert target.read_text() == "x"
    with atomic_dir(tmp_path / ("d" * 255)) as stage:
        assert len(stage.name) <= 255
    assert (tmp_path / ("d" * 255)).is_dir()


def test_one_call_writers(tmp_path):
    assert write_bytes_atomic(tmp_path / "a.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert write_text_atomic(str(tmp_path / "b.txt"), "h\u00e9\n") == tmp_path / "b.txt"
    assert (tmp_path / "b.txt").read_bytes() == "h\u00e9\n".encode()
    write_json_atomic(tmp_path / "c.json", {"x": [1, 2]}, indent=1)
    assert (tmp_path / "c.json").read_text() == json.dumps({"x": [1, 2]}, indent=1) + "\n"
    with pytest.raises(ValueError, match="JSON compliant"):
        write_json_atomic(tmp_path / "d.json", {"x": float("nan")})
    assert not (tmp_path / "d.json").exists()
    write_json_atomic(tmp_path / "d.json", {"x": float("nan")}, allow_nan=True)
    assert json.loads((tmp_path / "d.json").read_text())["x"] != 0
    assert _names(tmp_path) == ["a.bin", "b.txt", "c.json", "d.json"]


def test_input_validation(tmp_path):
    with pytest.raises(TypeError, match="str or os.PathLike"):
        with atomic_file(3):
            pass
    for bad in ("", "/", "..", tmp_path / ".."):
        with pytest.raises(ValueError, match="must name a file or folder"):
            with atomic_file(bad):
                pass
    with pytest.raises(ValueError, match="NUL"):
        write_text_atomic(tmp_path / "a\0b", "x")
    with pytest.raises(ValueError, match="separators"):
        with atomic_file(tmp_path / "x", suffix="/y"):
            pass
    with pytest.raises(TypeError, match="suffix must be a str"):
        with atomic_file(tmp_path / "x", suffix=None):
            pass
    with pytest.raises(IsADirectoryError, match="is a folder"):
        with atomic_file(tmp_path):
            pass
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        with atomic_dir(tmp_path / "file"):
            pass
    with pytest.raises(TypeError, match=r"\(path, text\)"):
        write_text_atomic("some text", tmp_path / "t.txt")  # arguments swapped
    with pytest.raises(TypeError, match="bytes-like"):
        write_bytes_atomic(tmp_path / "b.bin", "text")
    with pytest.raises(NotADirectoryError):
        replace_dir(tmp_path / "file", tmp_path / "dst")
    assert _names(tmp_path) == ["file"]


# --- the real outputs ----------------------------------------------------------------------------------------------


def test_checkpoint_permissions(tmp_path, modes):
    path = save_checkpoint(tmp_path / "ckpt.pt", {"net": torch.nn.Linear(2, 1)})
    assert _mode(path) == modes[0] and _names(tmp_path) == ["ckpt.pt"]


def test_checkpoint_saver_permissions(tmp_path, modes):
    from ignite.engine import Engine

    from monai_car.handlers import AtomicCheckpointSaver

    engine = Engine(lambda e, b: None)
    saver = AtomicCheckpointSaver(str(tmp_path), {"net": torch.nn.Linear(2, 1)}, save_final=True)
    saver.attach(engine)
    engine.run([0], max_epochs=1)
    names = _names(tmp_path)
    assert len(names) == 1 and not names[0].startswith(".")
    assert _mode(tmp_path / names[0]) == modes[0]  # ignite alone would give 0644 whatever the umask


def test_figure_permissions(tmp_path, modes):
    from monai_car.visualize import new_figure, save_figure_atomic

    path = save_figure_atomic(new_figure(1, 1), tmp_path / "pics" / "f.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert _mode(path) == modes[0] and _mode(path.parent) == modes[1] and _names(path.parent) == ["f.png"]


def test_bimodal_figure_and_summary_permissions(tmp_path, modes):
    import matplotlib.pyplot as plt

    from experiments.bimodal_plots import save_figure
    from experiments.bimodal_summary import write_json_atomic as bimodal_json

    fig, _ = plt.subplots(figsize=(1, 1))
    assert _mode(save_figure(fig, tmp_path / "f.png")) == modes[0]
    assert _mode(bimodal_json({"a": 1}, tmp_path / "s.json")) == modes[0]  # (obj, path) order kept
    assert _names(tmp_path) == ["f.png", "s.json"]


def test_sample_set_permissions(tmp_path, modes):
    from monai_car.handlers import write_sample_set

    g = torch.Generator().manual_seed(0)
    samples = torch.softmax(torch.randn(3, 2, 8, 8, generator=g), dim=1)
    out = write_sample_set(tmp_path / "out", "case_a", torch.rand(1, 8, 8, generator=g), samples, samples.mean(0))
    assert out == tmp_path / "out" / "case_a" and _names(out.parent) == ["case_a"]
    assert _check_tree(out, *modes) >= 5  # the case folder (mkdtemp made it 0700) and every file in it


def test_lesion_sampler_outputs_permissions(tmp_path, modes):
    from monai_car.data.sample_set_io import save_nifti_atomic
    from monai_car.inferers.lesion_sampler import SUMMARY_COLUMNS
    from monai_car.utils.atomic import write_csv_atomic

    save_nifti_atomic(tmp_path / "m.nii.gz", np.zeros((2, 2, 2), np.float32), np.eye(4))
    write_csv_atomic(tmp_path / "s.csv", [dict.fromkeys(SUMMARY_COLUMNS, 1)], SUMMARY_COLUMNS)
    assert nib.load(tmp_path / "m.nii.gz").shape == (2, 2, 2)
    assert (tmp_path / "s.csv").read_text().splitlines()[0] == ",".join(SUMMARY_COLUMNS)
    assert _check_tree(tmp_path, modes[0], _mode(tmp_path)) == 2


def test_evaluation_report_text_permissions(tmp_path, modes):
    from monai_car.handlers import write_text_atomic as report_text

    assert _mode(report_text(tmp_path / "report.md", "# r\n")) == modes[0]  # (path, text) order kept


def test_demo_dataset_folder_permissions(tmp_path, modes):
    from monai_car.data._demo_cache import publish_build

    def build(stage: Path) -> None:
        (stage / "images").mkdir()
        (stage / "images" / "a.txt").write_text("a")

    folder = publish_build(tmp_path / "demo", {"v": 1}, build)
    assert _names(tmp_path) == ["demo"] and _check_tree(folder, *modes) == 2


def test_preprocessing_output_permissions(tmp_path, modes):
    from preprocessing.output import staged_output, write_json, write_nifti

    out = tmp_path / "ds"
    with staged_output(out) as stage:
        write_nifti(np.zeros((4, 4, 1), np.float32), np.eye(4), stage / "images" / "p" / "a.nii.gz")
        write_json({"a": 1}, stage / "datalist.json")
    assert _names(tmp_path) == ["ds"] and _check_tree(out, *modes) == 2
    assert nib.load(out / "images" / "p" / "a.nii.gz").shape == (4, 4, 1)
