from __future__ import annotations

import itertools

import pytest
import torch

from monai_car.metrics import (
    compute_mode_weighted_ged,
    mode_index,
    mode_label_maps,
    switchable_modes,
    unflip_label,
)
from monai_car.utils.cityscapes_classes import COPY_IDS, FLIP_PROBABILITIES, SWITCHABLE_CLASS_IDS, SWITCHABLE_TRAIN_IDS

VOID = 24


def test_modes_and_weights_are_the_products_of_the_flip_probabilities():
    modes, weights = switchable_modes()
    assert modes.shape == (32, 5) and modes.dtype == torch.bool and weights.shape == (32,)
    assert len({tuple(m.tolist()) for m in modes}) == 32  # every combination once
    for m, w in zip(modes.tolist(), weights.tolist()):
        expected = 1.0
        for flipped, p in zip(m, FLIP_PROBABILITIES):
            expected *= p if flipped else 1 - p
        assert w == pytest.approx(expected, rel=1e-12)
    assert weights.sum().item() == pytest.approx(1.0, abs=1e-12)
    # mode 0 flips nothing: (9/17)(10/17)(11/17)(12/17)(13/17); the last flips all: 8*7*6*5*4 / 17^5
    assert weights[0].item() == pytest.approx(9 * 10 * 11 * 12 * 13 / 17**5)
    assert weights[-1].item() == pytest.approx(8 * 7 * 6 * 5 * 4 / 17**5)
    assert not modes[0].any() and modes[-1].all() and modes[1].tolist() == [False] * 4 + [True]
    # degenerate probabilities: one certain mode
    modes2, w2 = switchable_modes([1.0, 0.0])
    assert w2.tolist() == [0.0, 0.0, 1.0, 0.0] and modes2[2].tolist() == [True, False]


def test_mode_index_inverts_the_order():
    modes, _ = switchable_modes()
    assert mode_index(modes).tolist() == list(range(32))
    assert mode_index(torch.tensor([[1, 0, 0, 0, 1]])).tolist() == [17]
    with pytest.raises(ValueError, match="bool"):
        mode_index(torch.tensor([2, 0]))
    with pytest.raises(ValueError, match=r"\(\.\.\., n\)"):
        mode_index(torch.tensor(True))


@pytest.mark.parametrize(
    "probs, match",
    [([0.5, 1.5], r"in \[0, 1\]"), ([], "empty"), ("ab", "sequence of floats"), ([True], "real numbers")],
)
def test_modes_validate_probabilities(probs, match):
    with pytest.raises(ValueError, match=match):
        switchable_modes(probs)


def _cityscapes_label() -> torch.Tensor:
    # every switchable class, a non-switchable class (2, building) and void
    return torch.tensor([1, 11, 13, 8, 0, 2, VOID, 1]).reshape(1, 1, 2, 4)


def test_mode_label_maps_pixel_by_pixel():
    label = _cityscapes_label()
    maps = mode_label_maps(label)
    modes, _ = switchable_modes()
    assert maps.shape == (1, 32, 2, 4)
    flat = label.flatten().tolist()
    for m in range(32):
        expected = []
        for v in flat:
            if v in SWITCHABLE_TRAIN_IDS:
                i = SWITCHABLE_TRAIN_IDS.index(v)
                expected.append(COPY_IDS[i] if bool(modes[m, i]) else v)
            else:
                expected.append(v)
        assert maps[0, m].flatten().tolist() == expected
    # custom modes and layout
    two = mode_label_maps(torch.tensor([[[[1, 3, 0]]]]), [1, 3], [5, 6], torch.tensor([[True, False], [True, True]]))
    assert two[0, :, 0].tolist() == [[5, 3, 0], [5, 6, 0]]


def test_unflip_label_and_refusal_of_flipped_labels():
    label = _cityscapes_label()
    maps = mode_label_maps(label)
    for m in (0, 7, 31):
        torch.testing.assert_close(unflip_label(maps[:, m : m + 1]), label)
    with pytest.raises(ValueError, match="unflip_label"):
        mode_label_maps(maps[:, 31:32])
    with pytest.raises(ValueError, match=r"\(B, 1, \*spatial\)"):
        mode_label_maps(label[:, 0])
    with pytest.raises(ValueError, match="lengths differ"):
        mode_label_maps(label, [1, 11], [19])
    with pytest.raises(ValueError, match="both switchable and a copy"):
        mode_label_maps(label, [1, 11], [11, 19])
    with pytest.raises(ValueError, match=r"modes must be \(M, 5\)"):
        mode_label_maps(label, modes=torch.ones(4, 3, dtype=torch.bool))


def test_mode_weighted_ged_of_the_modes_themselves():
    """With p = 1/2 every mode weighs 1/32: samples equal to the 32 modes have GED 0 exactly; with the Cityscapes
    probabilities the same samples are mis-weighted and the GED is positive; void never changes either case."""
    label = _cityscapes_label()
    maps = mode_label_maps(label)
    _, uniform = switchable_modes([0.5] * 5)
    ged = compute_mode_weighted_ged(maps, maps, uniform, SWITCHABLE_CLASS_IDS, ignore_index=VOID)
    assert ged.item() == pytest.approx(0.0, abs=1e-6)
    _, weights = switchable_modes()
    skewed = compute_mode_weighted_ged(maps, maps, weights, SWITCHABLE_CLASS_IDS, ignore_index=VOID)
    assert skewed.item() > 0.005


def test_itertools_order_is_documented_order():
    modes, _ = switchable_modes([0.1, 0.2, 0.3])
    assert modes.tolist() == [list(m) for m in itertools.product((False, True), repeat=3)]
