from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from monai_car.transforms import FLIP_MODE_KEY, RandSwitchableClassFlipd, check_flip_layout
from monai_car.utils.cityscapes_classes import COPY_IDS, FLIP_PROBABILITIES, NUM_CLASSES, SWITCHABLE_TRAIN_IDS

N_SEEDS = 2000


def _label() -> torch.Tensor:
    """A (1, 4, 8) label map holding every switchable class, other classes and void."""
    values = [*SWITCHABLE_TRAIN_IDS, 2, 5, 10, 24, 18, 3, 4]
    return torch.tensor(values * 3 + values[:-1], dtype=torch.uint8)[: 4 * 8].reshape(1, 4, 8)


def _one_hot(label: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(label[0].long(), NUM_CLASSES).permute(2, 0, 1).float()


def test_flip_frequencies_over_seeds_within_binomial_error():
    label = _label()
    modes = np.zeros((N_SEEDS, 5), dtype=bool)
    for seed in range(N_SEEDS):
        t = RandSwitchableClassFlipd("label")
        t.set_random_state(seed=seed)
        modes[seed] = t({"label": label})[FLIP_MODE_KEY].numpy()
    p = np.asarray(FLIP_PROBABILITIES)
    freq = modes.mean(0)
    sigma = np.sqrt(p * (1 - p) / N_SEEDS)
    assert np.all(np.abs(freq - p) < 4 * sigma), (freq, p)
    # one Bernoulli per class, independent: joint frequency of (sidewalk, person) is the product
    joint = (modes[:, 0] & modes[:, 1]).mean()
    q = p[0] * p[1]
    assert abs(joint - q) < 4 * np.sqrt(q * (1 - q) / N_SEEDS)
    assert len({tuple(m) for m in modes}) == 32  # every mode of the 2^5 occurs


def test_label_and_prediction_flip_together_per_class():
    label = _label()
    pred = label.clone()
    pred[0, 0, :3] = 2  # an imperfect prediction: some pixels differ
    probs = _one_hot(pred) * 0.6 + 0.4 / NUM_CLASSES
    for seed in range(40):
        t = RandSwitchableClassFlipd(["label", "pred", "probs"])
        t.set_random_state(seed=seed)
        out = t({"label": label, "pred": pred, "probs": probs})
        mode = out[FLIP_MODE_KEY]
        assert mode.dtype == torch.bool and mode.shape == (5,)
        for i, (original, copy) in enumerate(zip(SWITCHABLE_TRAIN_IDS, COPY_IDS)):
            for key, source in (("label", label), ("pred", pred)):
                where = source == original
                expected = copy if mode[i] else original
                assert (out[key][where] == expected).all(), (seed, key, i)
            if mode[i]:
                assert torch.equal(out["probs"][copy], probs[copy] + probs[original])
                assert (out["probs"][original] == 0).all()
            else:
                assert torch.equal(out["probs"][original], probs[original])
        untouched = ~torch.isin(label, torch.tensor(SWITCHABLE_TRAIN_IDS, dtype=torch.uint8))
        assert torch.equal(out["label"][untouched], label[untouched])
        assert torch.allclose(out["probs"].sum(0), probs.sum(0))
        # the probability channels' argmax is the flipped label map
        assert torch.equal(out["probs"].argmax(0), out["pred"][0].long())


def test_reproducible_and_compose_seeded():
    label = _label()

    def modes(seed):
        chain = Compose([RandSwitchableClassFlipd("label")])
        chain.set_random_state(seed=seed)
        return [chain({"label": label})[FLIP_MODE_KEY].tolist() for _ in range(10)]

    assert modes(3) == modes(3)
    assert modes(3) != modes(4)


def test_mode_recorded_in_meta():
    label = MetaTensor(_label())
    t = RandSwitchableClassFlipd(["label"], mode_key="mode")
    t.set_random_state(seed=1)
    out = t({"label": label, "label_meta_dict": {"x": 1}})
    assert torch.equal(out["label"].meta["mode"], out["mode"])
    assert torch.equal(out["label_meta_dict"]["mode"], out["mode"]) and out["label_meta_dict"]["x"] == 1
    assert isinstance(out["label"], MetaTensor)
    assert torch.equal(torch.as_tensor(t.mode), out["mode"])


def test_configurable_layout_and_certain_flips():
    label = torch.tensor([[[3, 4, 5, 6]]], dtype=torch.uint8)
    t = RandSwitchableClassFlipd("label", switchable=(3, 4), copies=(7, 8), probabilities=(1.0, 0.0))
    for seed in range(5):
        t.set_random_state(seed=seed)
        out = t({"label": label})
        assert out["label"].tolist() == [[[7, 4, 5, 6]]] and out[FLIP_MODE_KEY].tolist() == [True, False]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"copies": (19, 20)}, "one copy per switchable"),
        ({"copies": (19, 20, 21, 22, 1)}, "both switchable and a copy"),
        ({"probabilities": (0.5, 0.5, 0.5, 0.5, 1.5)}, r"in \[0, 1\]"),
        ({"probabilities": (0.5,)}, "one flip probability"),
        ({"switchable": (1, 1, 13, 8, 0)}, "must not repeat"),
        ({"switchable": (1, -1, 13, 8, 0)}, "non-negative int"),
        ({"mode_key": "label"}, "mode_key"),
    ],
)
def test_layout_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RandSwitchableClassFlipd("label", **kwargs)


def test_check_flip_layout_returns_tuples():
    assert check_flip_layout([1], [19], [0.5]) == ((1,), (19,), (0.5,))


def test_refuses_double_flip_and_too_few_channels():
    t = RandSwitchableClassFlipd("label")
    with pytest.raises(ValueError, match="already holds copy classes"):
        t({"label": torch.tensor([[[19, 0]]]), "case_id": "c1"})
    with pytest.raises(ValueError, match="19 class channels"):
        t({"label": torch.rand(19, 2, 2), "case_id": "c1"})
    with pytest.raises(ValueError, match=r"label map \(1, H, W\)"):
        t({"label": torch.zeros(4, 4)})
    with pytest.raises(ValueError, match="non-integer"):
        t({"label": torch.full((1, 2, 2), 0.5)})
