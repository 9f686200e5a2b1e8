"""Smoke test of the benchmark suite: the tiny paths run, write their JSON, and the implementations agree.

No timing is asserted: only that the fields are there and that every reference gives the numbers of the
implementation it is compared with.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    """Import a benchmark script as a module (they import their siblings by name, as when run as scripts)."""
    monkeypatch.syspath_prepend(str(BENCH_DIR))
    return importlib.import_module


def test_metrics_reference_equals_vectorised(bench):
    m = bench("bench_metrics")
    samples, labels = m.make_masks(num_images=8, num_samples=8, num_graders=4, size=32, seed=3)
    assert not samples[7].any() and not labels[7].any()  # one image without a lesion: IoU = 1 convention
    ref_ged, ref_hm = m.reference_metrics(samples, labels)
    vec_ged, vec_hm = m.vectorised_metrics(torch.from_numpy(samples), torch.from_numpy(labels))
    np.testing.assert_allclose(vec_ged.double().numpy(), ref_ged, atol=1e-5)
    np.testing.assert_allclose(vec_hm.double().numpy(), ref_hm, atol=1e-5)
    assert ref_ged[7] == pytest.approx(0.0) and ref_hm[7] == pytest.approx(1.0)


def test_uncropped_reference_gives_the_library_numbers(bench):
    """The benchmark's "before" of the foreground crop (pair counts over the whole image) equals the library."""
    m = bench("bench_metrics")
    samples, labels = m.make_masks(num_images=8, num_samples=8, num_graders=4, size=32, seed=5)
    s_t, y_t = torch.from_numpy(samples), torch.from_numpy(labels)
    lib_ged, lib_hm = m.vectorised_metrics(s_t, y_t)
    full_ged, full_hm = m.uncropped_metrics(s_t, y_t)
    assert torch.equal(lib_ged, full_ged) and torch.equal(lib_hm, full_hm)


def test_metrics_tiny_run_writes_json(bench, tmp_path):
    m = bench("bench_metrics")
    m.main(["--tiny", "--no-memory", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "metrics_cpu_tiny.json").read_text())
    assert data["benchmark"] == "metrics" and data["mode"] == "tiny"
    assert {"date_utc", "cpu", "torch_threads", "torch"} <= set(data["environment"])
    for case in data["cases"]:
        assert case["max_abs_diff_ged"] < 1e-5 and case["max_abs_diff_hm_iou"] < 1e-5
        assert case["max_abs_diff_ged_uncropped"] < 1e-5 and case["max_abs_diff_hm_iou_uncropped"] < 1e-5
        for name in ("per_pair_loop", "vectorised", "vectorised_uncropped"):
            v = case["variants"][name]
            assert {"median_s", "seconds_per_image", "speedup_vs_loop"} <= set(v)
            assert v["median_s"] > 0


def test_sampling_tiny_run_writes_json_and_agrees(bench, tmp_path):
    s = bench("bench_sampling")
    variants = "batched,batched_full_pass,batched_bf16"
    s.main(["--tiny", "--out", str(tmp_path), "--variants", variants, "--repeats", "1"])
    data = json.loads((tmp_path / "sampling_cpu_tiny.json").read_text())
    assert data["benchmark"] == "sampling" and len(data["cases"]) == 2
    for case in data["cases"]:
        assert set(case["variants"]) == {"loop", "batched", "batched_full_pass", "batched_bf16"}
        for name in ("batched", "batched_full_pass"):  # fp32: the same numbers as the per-draw loop
            assert case["variants"][name]["max_abs_diff_vs_loop"] < 1e-5
        assert case["variants"]["batched_bf16"]["max_abs_diff_vs_loop"] < 0.1
        assert all(v["samples_per_s"] > 0 for v in case["variants"].values())
    probed = data["cases"][0]["variants"]["batched"]  # one peak-memory probe in a fresh process
    assert probed["peak_mib"] >= probed["setup_mib"] > 0


def _stage2_nets(train: bool):
    from monai_car.networks import CalibrationSegNet, CARDiscriminator, CARNet, RefinementUNet

    torch.manual_seed(1)
    f = CalibrationSegNet(2, 1, 2, channels=(4, 8), convs_per_block=(1, 1))
    net = CARNet(f, RefinementUNet(2, 3, 2, channels=(4, 8, 8, 8, 8)))
    net.calibration_net.eval()
    net.refinement_net.train(train)
    return net, CARDiscriminator(2, 3, channels=(8, 16))


@pytest.mark.parametrize("train,chunk", [(False, 2), (True, 5)])
def test_two_pass_generator_step_gives_the_single_pass_gradient(bench, train, chunk):
    from monai_car.losses import CalibrationLoss, generator_adversarial_loss

    t = bench("bench_training")  # the library's two passes (monai_car.engines.two_pass), as the benchmark runs them
    x, z = torch.rand(2, 1, 32, 32), torch.randn(2, 5, 8)
    net, disc = _stage2_nets(train)
    with torch.no_grad():
        probs = net(x)
    torch.manual_seed(5)
    samples = net.sample(x, 5, calibration_probs=probs, noise=z)
    xs = x.unsqueeze(1).expand(2, 5, 1, 32, 32).reshape(10, 1, 32, 32)
    disc.requires_grad_(False)
    fake = torch.cat([xs, samples.reshape(10, 2, 32, 32)], dim=1)
    loss = 10 * generator_adversarial_loss(disc(fake)) + 5 * CalibrationLoss()(samples, probs)
    loss.backward()
    expected = [q.grad.clone() for q in net.refinement_net.parameters()]

    net2, disc2 = _stage2_nets(train)
    torch.manual_seed(5)
    out, losses = t.two_pass_generator_step(net2, disc2, x, probs, 5, chunk, noise=z)
    assert out.shape == samples.shape and not out.requires_grad
    assert losses["total"] == pytest.approx(float(loss.detach()), rel=1e-5)
    for q, g in zip(net2.refinement_net.parameters(), expected):
        torch.testing.assert_close(q.grad, g, atol=1e-5, rtol=1e-4)
    assert all(q.grad is None for q in disc2.parameters())


def test_report_renders_from_results(bench, tmp_path):
    m, r = bench("bench_metrics"), bench("report")
    m.main(["--tiny", "--no-memory", "--out", str(tmp_path)])
    (tmp_path / "metrics_cpu_tiny.json").rename(tmp_path / "metrics_cpu_quick.json")
    out = r.main(["--results", str(tmp_path), "--output", str(tmp_path / "BENCHMARKS.md")])
    text = out.read_text()
    assert "## Metrics" in text and "vectorised" in text and "## Machines" in text
    assert "### 3. Adopted: the metrics count pairs" in text and "vectorised_uncropped" in text  # before / after


def test_training_tiny_run_writes_json(bench, tmp_path):
    t = bench("bench_training")
    t.main(["--tiny", "--no-memory", "--out", str(tmp_path), "--variants", "engine,two_pass", "--repeats", "1"])
    data = json.loads((tmp_path / "training_cpu_tiny.json").read_text())
    assert data["benchmark"] == "training" and data["mode"] == "tiny"
    (entry,) = data["stage2"]
    assert {"baseline", "engine", "two_pass"} <= set(entry["variants"])
    assert all(v["median_s"] > 0 and v["speedup_vs_baseline"] > 0 for v in entry["variants"].values())
    assert data["stage1"]["variants"]["baseline"]["median_s"] > 0


def test_preprocessing_module_gives_the_plain_pylidc_crops(bench):
    pytest.importorskip("pylidc")
    p = bench("bench_preprocessing")
    ids = p.scan_ids()
    sample = [ids[0], ids[len(ids) // 2]]
    reference = [p.scan_crops(i) for i in sample]
    keys = ("annotations", "nodules", "large_clusters", "slices", "foreground")
    assert sum(r["nodules"] for r in reference) > 0
    try:
        module = p.module_crops(sample)
    except ImportError:
        pytest.skip("preprocessing.pylidc_index is not there")
    assert [{k: r[k] for k in keys} for r in reference] == [{k: m[k] for k in keys} for m in module]


def test_report_from_the_stored_results_names_the_gpu_and_the_targets(bench, tmp_path):
    r = bench("report")
    results = r.load_results(BENCH_DIR / "results")
    if ("training", "cuda") not in results or ("training", "cpu") not in results:
        pytest.skip("no stored CPU + GPU results")
    text = r.render(results)
    gpu = results[("training", "cuda")]["environment"]["gpu"]
    assert f"### GPU: {gpu}" in text and "## Targets (goals of issue 8)" in text
    assert "## Against the authors' code" in text and "14-22 s" in text
    targets = text.split("## Targets (goals of issue 8)")[1].split("\n## ")[0]
    assert targets.count("**yes**") + targets.count("**no**") >= 4


def test_flop_counts_follow_the_shared_paths_arithmetic(bench):
    """The shared path's FLOPs are affine in S (the noise-free part once per image, the decoder once per draw), the
    per-draw loop's are linear in S, and at S = 1 the two are the same work."""
    f = bench("bench_flops")
    runs = {s: f.sampling_flops(2, 32, 2, s) for s in (1, 2, 5)}
    assert runs[1]["ceiling_speedup"] == pytest.approx(1.0)
    loop = {s: r["per_draw_loop_gflop"] for s, r in runs.items()}
    assert loop[5] == pytest.approx(5 * loop[1]) and loop[2] == pytest.approx(2 * loop[1])
    shared = {s: r["shared_gflop"] for s, r in runs.items()}
    per_draw = shared[2] - shared[1]  # the decoder's FLOPs per draw
    assert 0 < per_draw < loop[1]
    assert shared[5] == pytest.approx(shared[1] + 4 * per_draw)
    assert runs[5]["ceiling_speedup"] == pytest.approx(loop[5] / shared[5]) and runs[5]["ceiling_speedup"] > 1.5
    # a whole stage-2 iteration: the shared path does less, and exactly the same work with one sample per image
    one, three = f.stage2_flops(1, batch=2, size=32), f.stage2_flops(3, batch=2, size=32)
    assert one["ceiling_speedup_iteration"] == pytest.approx(1.0)
    assert 1.0 < three["ceiling_speedup_iteration"] < three["ceiling_speedup_g_update"]


def test_flops_tiny_run_writes_json_and_the_report_shows_the_ceilings(bench, tmp_path):
    f, r = bench("bench_flops"), bench("report")
    f.main(["--tiny", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "flops_cpu_tiny.json").read_text())
    assert data["benchmark"] == "flops" and data["mode"] == "tiny" and len(data["sampling"]) == 1
    # a full run's file is rendered into its section (the tiny numbers relabelled as full for the check)
    data["mode"] = "full"
    (tmp_path / "flops_cpu.json").write_text(json.dumps(data))
    text = r.render(r.load_results(tmp_path))
    assert "## FLOP ceilings of G's shared path" in text
    assert f"x{data['sampling'][0]['ceiling_speedup']:.2f}" in text


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_sharpening_reference_gives_the_library_loss(bench, scale):
    """The calibrated sharpening as first written (plain logsumexp) and the library's (no subnormal floats) agree on
    soft and on saturated samples."""
    s = bench("bench_sharpening")
    from monai_car.losses import calibrated_sharpening_loss

    gen = torch.Generator().manual_seed(1)
    samples = torch.softmax(scale * torch.randn(2, 4, 5, 6, 6, generator=gen), dim=2)
    target = torch.softmax(torch.randn(2, 5, 6, 6, generator=gen), dim=1)
    expected = s.calibrated_with_subnormals(samples, target).item()
    assert calibrated_sharpening_loss(samples, target).item() == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_sharpening_tiny_run_writes_json_and_the_report_shows_it(bench, tmp_path):
    s, r = bench("bench_sharpening"), bench("report")
    s.main(["--tiny", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "sharpening_cpu_tiny.json").read_text())
    assert data["benchmark"] == "sharpening" and [c["kind"] for c in data["cases"]] == ["soft", "saturated"]
    assert all(c["loss_difference"] < 1e-4 for c in data["cases"])
    data["mode"] = "full"
    (tmp_path / "sharpening_cpu.json").write_text(json.dumps(data))
    text = r.render(r.load_results(tmp_path))
    assert "## Sharpening of G's samples" in text and "| saturated |" in text
