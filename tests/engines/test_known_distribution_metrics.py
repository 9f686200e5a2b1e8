"""The known-distribution evaluation end to end through CAREvaluator: an oracle model (F the true distribution, G
drawing each flip with its probability) scores offsets 0 / sampling noise and the control's GED; a G that never
flips scores the offsets it must (6/17 on average); label maps are checked as such."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_car.engines import CAREvaluator, ControlSamplesOutput, known_distribution_metrics
from monai_car.networks import CARNet
from monai_car.utils.cityscapes_classes import COPY_IDS, FLIP_PROBABILITIES, NUM_CLASSES, SWITCHABLE_TRAIN_IDS, VOID

K = NUM_CLASSES


def _true_distribution(one_hot: torch.Tensor) -> torch.Tensor:
    p = one_hot.clone()
    for original, copy, q in zip(SWITCHABLE_TRAIN_IDS, COPY_IDS, FLIP_PROBABILITIES):
        p[:, copy] = q * one_hot[:, original]
        p[:, original] = (1 - q) * one_hot[:, original]
    return p


class OracleF(nn.Module):
    """F reading the unflipped label from its one-hot input: the true per-pixel distribution."""

    in_channels, out_channels, spatial_dims = K, K, 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _true_distribution(x)


class OracleG(nn.Module):
    """G flipping class i of the whole image when z_i < Phi^-1(p_i) (probability p_i); never, with ``flips=False``."""

    noise_dim = len(SWITCHABLE_TRAIN_IDS)

    def __init__(self, flips: bool = True) -> None:
        super().__init__()
        self.flips = flips

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        out = x[:, :K].clone()
        normal = torch.distributions.Normal(0.0, 1.0)
        for i, (original, copy, q) in enumerate(zip(SWITCHABLE_TRAIN_IDS, COPY_IDS, FLIP_PROBABILITIES)):
            flip = (z[:, i] < normal.icdf(torch.tensor(q))).float().view(-1, 1, 1) * float(self.flips)
            out[:, copy] = flip * x[:, original]
            out[:, original] = (1 - flip) * x[:, original]
        return out


def _cases(n: int = 24, size: int = 12) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    classes = torch.tensor([*SWITCHABLE_TRAIN_IDS, 2, 10, VOID])
    cases = []
    for i in range(n):
        blocks = classes[torch.randint(0, len(classes), (1, 3, 3), generator=gen)]
        label = blocks.repeat_interleave(size // 3, 1).repeat_interleave(size // 3, 2)  # (1, H, W)
        image = torch.nn.functional.one_hot(label[0].clamp_max(K - 1), K).movedim(-1, 0).float()
        cases.append({"image": image, "label": label, "blackbox": image.clone(), "case_id": f"c{i:02d}"})
    return cases


def _loader(cases: list[dict], batch: int = 8) -> list[dict]:
    out = []
    for i in range(0, len(cases), batch):
        chunk = cases[i : i + batch]
        out.append(
            {
                "image": torch.stack([c["image"] for c in chunk]),
                "label": torch.stack([c["label"] for c in chunk]),
                "blackbox": torch.stack([c["blackbox"] for c in chunk]),
                "case_id": [c["case_id"] for c in chunk],
            }
        )
    return out


def _evaluate(g: nn.Module, cases: list[dict], num_samples: int = 16) -> dict:
    return _run_evaluator(g, cases, num_samples).state.metrics


def _run_evaluator(g: nn.Module, cases: list[dict], num_samples: int, key_metric: str = "mode_ged") -> CAREvaluator:
    key, extra = known_distribution_metrics(num_samples=num_samples, seed=0, key_metric=key_metric)
    ev = CAREvaluator(
        "cpu",
        _loader(cases),
        CARNet(OracleF(), g, num_classes=K),
        num_samples=num_samples,
        label_classes=K,
        ignore_index=VOID,
        passthrough_keys=["blackbox"],
        key_val_metric=key,
        additional_metrics=extra,
    )
    ev.run()
    return ev


def test_an_oracle_is_calibrated_and_scores_the_control():
    m = _evaluate(OracleG(), _cases())
    assert m["f_offset_mean"] == pytest.approx(0.0, abs=1e-6)  # F is the true distribution
    assert m["g_offset_mean"] < 0.08  # sampling noise of 16 draws per image, 24 images
    assert m["ece_calibration"] == pytest.approx(0.0, abs=1e-6)
    assert m["sample_sharpness"] == pytest.approx(0.0, abs=1e-6)  # one-hot samples
    assert abs(m["mode_ged"] - m["control_ged"]) < 0.05  # both sample the true distribution
    for name in ("sidewalk2", "person2", "car2", "vegetation2", "road2"):
        assert f"g_predicted_{name}" in m and f"f_offset_{name}" in m


def test_a_g_that_never_flips_has_the_offsets_of_the_flip_probabilities():
    m = _evaluate(OracleG(flips=False), _cases())
    assert m["g_offset_mean"] == pytest.approx(sum(FLIP_PROBABILITIES) / 5)  # 6/17: every copy predicted 0
    assert m["g_offset_worst"] == pytest.approx(8 / 17)
    assert m["mode_ged"] > m["control_ged"] + 0.1  # one mode only: far from the distribution
    assert m["f_offset_mean"] == pytest.approx(0.0, abs=1e-6)


def test_control_samples_are_modes_drawn_by_weight_and_seeded_per_case():
    cases = _cases(4)
    batch = _loader(cases)[0]
    control = ControlSamplesOutput(SWITCHABLE_TRAIN_IDS, COPY_IDS, FLIP_PROBABILITIES, num_samples=400, seed=1)
    samples, modes = control(batch)
    assert samples.shape == (4, 400, 12, 12) and modes.shape == (4, 32, 12, 12)
    again, _ = control({**batch, "case_id": batch["case_id"][::-1], "label": batch["label"].flip(0)})
    assert torch.equal(again.flip(0), samples)  # a case draws the same samples wherever it is in the batch
    road = batch["label"][:, 0] == 0
    i = int(road.flatten(1).any(1).nonzero()[0])
    pixel = road[i].nonzero()[0]
    frequency = (samples[i, :, pixel[0], pixel[1]] == 23).float().mean()  # road -> road2 with p = 4/17
    assert frequency == pytest.approx(4 / 17, abs=0.07)


def test_label_maps_are_checked_and_name_the_case():
    cases = _cases(2)
    cases[1]["label"] = cases[1]["label"].clone()
    cases[1]["label"][0, 0, 0] = 30
    with pytest.raises(ValueError, match="c01"):
        _evaluate(OracleG(), cases)


def test_control_offsets_are_the_copy_frequencies_of_the_control_draws():
    cases = _cases()
    m = _evaluate(OracleG(), cases)
    control = ControlSamplesOutput(SWITCHABLE_TRAIN_IDS, COPY_IDS, FLIP_PROBABILITIES, num_samples=16, seed=0)
    names = ("sidewalk2", "person2", "car2", "vegetation2", "road2")
    for original, copy, q, name in zip(SWITCHABLE_TRAIN_IDS, COPY_IDS, FLIP_PROBABILITIES, names):
        copies = pixels = 0
        for batch in _loader(cases):  # independently: count the copy among the draws on the class's pixels
            samples, _ = control(batch)
            on_class = (batch["label"] == original).expand_as(samples)
            copies += int((samples[on_class] == copy).sum())
            pixels += int(on_class.sum())
        assert m[f"control_predicted_{name}"] == pytest.approx(copies / pixels)
        assert m[f"control_offset_{name}"] == pytest.approx(abs(q - copies / pixels))
    worst = max(m[f"control_offset_{n}"] for n in names)
    assert m["control_offset_worst"] == pytest.approx(worst) and 0 < m["control_offset_mean"] <= worst
    assert not any(k.startswith("control_") and "f_" in k for k in m)  # F has no control


def test_g_offset_mean_as_key_metric_selects_by_calibration():
    key, extra = known_distribution_metrics(key_metric="g_offset_mean")
    assert list(key) == ["g_offset_mean"] and "mode_ged" in extra and "calibration_offsets" not in extra
    ev = _run_evaluator(OracleG(flips=False), _cases(8), num_samples=4, key_metric="g_offset_mean")
    assert ev.state.best_metric == pytest.approx(sum(FLIP_PROBABILITIES) / 5)  # the key metric read its value
    assert "mode_ged" in ev.state.metrics
    with pytest.raises(ValueError, match="key_metric"):
        known_distribution_metrics(key_metric="ged")


def test_control_offsets_need_a_metric_of_label_maps():
    from monai_car.engines import ControlOffsetHandler
    from monai_car.metrics import CalibrationOffsetMetric

    control = ControlSamplesOutput(SWITCHABLE_TRAIN_IDS, COPY_IDS, FLIP_PROBABILITIES, num_samples=4)
    with pytest.raises(ValueError, match="from_probabilities=False"):
        ControlOffsetHandler(CalibrationOffsetMetric(), control)
