from __future__ import annotations

import pytest
import torch
from car_engine_synthetic import make_cases, make_loader, make_networks
from ignite.engine import Events
from monai.data import DataLoader, MetaTensor

from monai_car.engines import CAREvaluator, InvalidBatchError
from monai_car.handlers import AtomicCheckpointSaver
from monai_car.metrics import (
    FIDELITY_KEYS,
    compute_fidelity_terms,
    compute_generalized_energy_distance,
    compute_hungarian_matched_iou,
    compute_soft_target_calibration_error,
    fidelity_from_terms,
)
from monai_car.utils.checkpoint import load_checkpoint
from monai_car.utils.enums import CarKeys


def _meta_cases(n=6):
    cases = make_cases(n)
    for i, c in enumerate(cases):
        c[CarKeys.IMAGE] = MetaTensor(c[CarKeys.IMAGE], affine=torch.diag(torch.tensor([i + 1.0, 2.0, 1.0, 1.0])))
    return cases


def _collect(evaluator):
    outputs = []
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(e.state.output))
    return outputs


def _masks(samples):
    return samples.argmax(dim=2)  # (B, S, *spatial) foreground masks for K = 2


def test_output_dict_and_metrics_over_the_whole_set():
    net, _ = make_networks()
    cases = _meta_cases(6)
    evaluator = CAREvaluator("cpu", make_loader(cases, batch_size=4, shuffle=False), net, num_samples=5, seed=1,
                             ged_sample_counts=(2,))  # fmt: skip
    outputs = _collect(evaluator)
    evaluator.run()
    first = outputs[0]
    assert set(first) == {"image", "label", "samples", "calibration_probs", "case_id"}
    assert first["samples"].shape == (4, 5, 2, 32, 32) and first["calibration_probs"].shape == (4, 2, 32, 32)
    assert first["label"].shape == (4, 4, 32, 32) and first["case_id"] == [
        "case_000",
        "case_001",
        "case_002",
        "case_003",
    ]
    assert isinstance(first["image"], MetaTensor) and torch.equal(
        first["image"].affine[:, 0, 0], torch.tensor([1.0, 2, 3, 4]).double()
    )
    samples = torch.cat([o["samples"] for o in outputs])
    labels = torch.cat([o["label"] for o in outputs])
    probs = torch.cat([o["calibration_probs"] for o in outputs])
    assert samples.shape[0] == 6  # the whole set, not one batch
    metrics = evaluator.state.metrics
    assert metrics["ged"] == pytest.approx(
        compute_generalized_energy_distance(_masks(samples), labels).mean().item(), rel=1e-5
    )
    ged2 = compute_generalized_energy_distance(_masks(samples[:, :2]), labels).mean().item()
    assert metrics["ged_2"] == pytest.approx(ged2, rel=1e-5)
    assert metrics["hm_iou"] == pytest.approx(
        compute_hungarian_matched_iou(_masks(samples), labels).mean().item(), rel=1e-5
    )
    ece = compute_soft_target_calibration_error(samples.mean(1), labels).item()
    assert metrics["ece"] == pytest.approx(ece, rel=1e-6)
    assert metrics["ece_calibration"] == pytest.approx(
        compute_soft_target_calibration_error(probs, labels).item(), rel=1e-6
    )
    assert set(evaluator.state.reliability_tables) == {"ece", "ece_calibration", "presence", "hard_pixel"}
    assert len(evaluator.state.reliability_tables["ece"]["count"]) == 10
    # the fidelity report, over the whole set, under its own keys
    fidelity = fidelity_from_terms(*compute_fidelity_terms(samples, labels, probs))[0]
    for key in FIDELITY_KEYS:
        assert metrics[key] == pytest.approx(fidelity[key], rel=1e-6, nan_ok=True), key
    assert metrics["fidelity_cases"] == 6
    assert len(evaluator.state.reliability_tables["presence"]["count"]) == 5


def test_noise_is_per_case_reproducible_across_batch_sizes():
    net, _ = make_networks()
    cases = make_cases(5)
    runs = []
    for batch_size in (1, 4, 4):
        evaluator = CAREvaluator("cpu", make_loader(cases, batch_size=batch_size, shuffle=False), net, num_samples=3)
        outputs = _collect(evaluator)
        evaluator.run()
        runs.append((torch.cat([o["samples"] for o in outputs]), dict(evaluator.state.metrics)))
    for samples, metrics in runs[1:]:
        assert torch.allclose(samples, runs[0][0], atol=1e-6)
        assert metrics == pytest.approx(runs[0][1], rel=1e-5)
    other = CAREvaluator("cpu", make_loader(cases, shuffle=False), net, num_samples=3, seed=9)
    outputs = _collect(other)
    other.run()
    assert not torch.allclose(torch.cat([o["samples"] for o in outputs]), runs[0][0])


def test_bad_input_names_the_case():
    net, _ = make_networks()
    cases = make_cases(4)
    for c in cases:
        del c[CarKeys.LABEL]
    loader = DataLoader(cases, batch_size=4)
    with pytest.raises(InvalidBatchError, match="case_000.*no graders' labels"):
        CAREvaluator("cpu", loader, net, num_samples=2).run()
    evaluator = CAREvaluator("cpu", loader, net, num_samples=2, compute_metrics=False)
    outputs = _collect(evaluator)
    evaluator.run()
    assert "label" not in outputs[0] and evaluator.state.metrics == {}
    with pytest.raises(InvalidBatchError, match="case_000.*4 graders.*expected 3"):
        CAREvaluator("cpu", make_loader(make_cases(2), shuffle=False), net, num_samples=2, num_graders=3).run()


def test_skip_invalid_leaves_the_case_out_of_outputs_and_metrics():
    net, _ = make_networks()
    cases = _meta_cases(4)
    cases[1][CarKeys.IMAGE][0, 2, 2] = float("nan")
    evaluator = CAREvaluator("cpu", make_loader(cases, shuffle=False), net, num_samples=3, skip_invalid=True)
    outputs = _collect(evaluator)
    evaluator.run()
    assert evaluator.state.skipped_cases == {"case_001": "the image holds NaN or inf values ('image')"}
    assert outputs[0]["case_id"] == ["case_000", "case_002", "case_003"]
    assert torch.equal(outputs[0]["image"].affine[:, 0, 0], torch.tensor([1.0, 3, 4]).double())
    clean = CAREvaluator("cpu", make_loader([cases[i] for i in (0, 2, 3)], shuffle=False), net, num_samples=3)
    clean.run()
    assert evaluator.state.metrics == pytest.approx(clean.state.metrics, rel=1e-6)


def test_model_selection_keeps_the_lowest_ged(tmp_path):
    net, _ = make_networks()
    evaluator = CAREvaluator("cpu", make_loader(make_cases(4), shuffle=False), net, num_samples=3)
    saver = AtomicCheckpointSaver(
        str(tmp_path), {"refinement_net": net.refinement_net}, save_key_metric=True, key_metric_negative_sign=True,
        key_metric_filename="best.pt",
    )  # fmt: skip
    saver.attach(evaluator)
    values, weights = [], []
    for epoch, bias in ((1, 0.0), (2, 5.0), (3, -5.0)):
        with torch.no_grad():  # push G's output towards foreground / background: GED changes between runs
            net.refinement_net.head.bias.copy_(torch.tensor([0.0, bias]))
        evaluator.run(global_epoch=epoch)
        values.append(evaluator.state.metrics["ged"])
        weights.append(net.refinement_net.head.bias.clone())
    best = min(range(3), key=lambda i: values[i])
    assert evaluator.state.best_metric == pytest.approx(values[best])
    assert evaluator.state.best_metric_epoch == best + 1
    target = {"refinement_net": make_networks(seed=4)[0].refinement_net}
    load_checkpoint(tmp_path / "best.pt", target)
    assert torch.equal(target["refinement_net"].head.bias, weights[best])


def test_sample_set_writer_attaches(tmp_path):
    from monai_car.handlers import SampleSetWriter

    net, _ = make_networks()
    writer = SampleSetWriter(output_dir=tmp_path, montage=False)
    CAREvaluator("cpu", make_loader(_meta_cases(3), shuffle=False), net, num_samples=2, val_handlers=[writer]).run()
    assert len(writer.written) == 3 and all(p.is_dir() for p in writer.written)


def test_a_fully_skipped_batch_is_left_out_of_the_metrics():
    net, _ = make_networks()
    cases = make_cases(4)
    for i in (0, 1):
        cases[i][CarKeys.IMAGE][0, 0, 0] = float("inf")
    evaluator = CAREvaluator("cpu", make_loader(cases, batch_size=2, shuffle=False), net, num_samples=2,
                             skip_invalid=True)  # fmt: skip
    outputs = _collect(evaluator)
    evaluator.run()
    assert outputs[0] == {"skipped_batch": 2} and outputs[1]["case_id"] == ["case_002", "case_003"]
    clean = CAREvaluator("cpu", make_loader(cases[2:], batch_size=2, shuffle=False), net, num_samples=2)
    clean.run()
    assert evaluator.state.metrics == pytest.approx(clean.state.metrics, rel=1e-6)


def test_an_empty_split_is_an_error_and_no_best_model_is_written(tmp_path):
    net, _ = make_networks()
    evaluator = CAREvaluator("cpu", make_loader([], batch_size=4, shuffle=False), net, num_samples=2)
    saver = AtomicCheckpointSaver(
        str(tmp_path), {"model": net}, save_key_metric=True, key_metric_negative_sign=True, key_metric_filename="m.pt"
    )
    saver.attach(evaluator)
    with pytest.raises(ValueError, match=r"CAREvaluator: the evaluation data loader yields no batches.*test split"):
        evaluator.run()
    assert not (tmp_path / "m.pt").exists()
