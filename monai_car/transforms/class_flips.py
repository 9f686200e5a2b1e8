"""The switchable-class flips of the modified Cityscapes (SPEC section 3): one Bernoulli per image and class."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform

from monai_car.utils.cityscapes_classes import COPY_IDS, FLIP_PROBABILITIES, SWITCHABLE_TRAIN_IDS
from monai_car.utils.enums import CarKeys

from .utils import case_name

__all__ = ["FLIP_MODE_KEY", "RandSwitchableClassFlipd", "check_flip_layout"]

FLIP_MODE_KEY = "flip_mode"
"""Default key of the drawn mode: a ``(n,)`` bool tensor, ``True`` where class ``i`` turned into its copy."""


def _class_ids(values: object, name: str) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty sequence of class ids, got {values!r}.")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must hold non-negative int class ids, got {values!r}.")
        out.append(int(v))
    if len(set(out)) != len(out):
        raise ValueError(f"{name} must not repeat a class id, got {values!r}.")
    return tuple(out)


def check_flip_layout(
    switchable: Sequence[int], copies: Sequence[int], probabilities: Sequence[float]
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[float, ...]]:
    """Validate a flip layout: ``n`` distinct switchable classes, ``n`` distinct copies disjoint from them, ``n``
    probabilities in ``[0, 1]``.

    Returns:
        ``(switchable, copies, probabilities)`` as tuples of ints / floats.

    Raises:
        ValueError: naming the argument that is wrong.
    """
    switchable = _class_ids(switchable, "switchable")
    copies = _class_ids(copies, "copies")
    if len(copies) != len(switchable):
        raise ValueError(f"copies {copies} must give one copy per switchable class {switchable}.")
    both = sorted(set(switchable) & set(copies))
    if both:
        raise ValueError(f"classes {both} are both switchable and a copy; a copy must be a class of its own.")
    if isinstance(probabilities, (str, bytes)) or not isinstance(probabilities, Sequence):
        raise ValueError(f"probabilities must be a sequence of floats, got {probabilities!r}.")
    probs = tuple(float(p) for p in probabilities)
    if len(probs) != len(switchable):
        raise ValueError(f"probabilities {probs} must give one flip probability per switchable class {switchable}.")
    if not all(0.0 <= p <= 1.0 for p in probs):
        raise ValueError(f"probabilities must be in [0, 1], got {probs}.")
    return switchable, copies, probs


class RandSwitchableClassFlipd(RandomizableTransform, MapTransform):
    """Turn each switchable class into its copy class with its own probability, identically on all keys.

    Per call (one image) the transform draws one Bernoulli per switchable class, ``mode[i] ~ B(probabilities[i])``,
    from its own ``RandomState`` (``set_random_state(seed)`` or ``Compose.set_random_state``), and applies the same
    ``mode`` to every key: the label and the black-box prediction flip together (the authors' code drew them
    independently). Each key may hold

    - a label map ``(1, H, W)`` (any integer or integer-valued dtype): pixels of ``switchable[i]`` become
      ``copies[i]`` where ``mode[i]``;
    - class channels ``(K, H, W)`` with ``K > 1`` (one-hot or probabilities, ``K > max(copies)``): channel
      ``switchable[i]`` is added to channel ``copies[i]`` and zeroed where ``mode[i]`` (the per-pixel sum is kept).

    A label map that already holds a copy class is refused (the flip would be applied twice). The drawn mode is
    written to ``mode_key`` as a ``(n,)`` bool tensor (it collates to ``(B, n)``) and into each key's
    ``MetaTensor.meta[mode_key]`` when the key holds a ``MetaTensor`` (and into a ``<key>_meta_dict`` dictionary
    when the data holds one, the pre-MetaTensor MONAI convention).

    Args:
        keys: the keys to flip (label, black-box prediction).
        switchable: the classes that may switch (default: sidewalk, person, car, vegetation, road trainIds).
        copies: the class each switchable one turns into (default 19 .. 23).
        probabilities: the flip probability of each class (default 8/17, 7/17, 6/17, 5/17, 4/17).
        mode_key: where to record the drawn mode.
        allow_missing_keys: do not fail when a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection = (CarKeys.LABEL,),
        switchable: Sequence[int] = SWITCHABLE_TRAIN_IDS,
        copies: Sequence[int] = COPY_IDS,
        probabilities: Sequence[float] = FLIP_PROBABILITIES,
        mode_key: Hashable = FLIP_MODE_KEY,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)
        self.switchable, self.copies, self.probabilities = check_flip_layout(switchable, copies, probabilities)
        if mode_key in self.keys:
            raise ValueError(f"mode_key {mode_key!r} is one of the keys flipped {list(self.keys)}; choose another.")
        self.mode_key = mode_key
        self._mode = np.zeros(len(self.switchable), dtype=bool)

    @property
    def mode(self) -> np.ndarray:
        """The last drawn mode, ``(n,)`` bool."""
        return self._mode.copy()

    def randomize(self, data: object = None) -> None:
        """Draw the mode: one Bernoulli per switchable class."""
        super().randomize(None)
        self._mode = self.R.random_sample(len(self.switchable)) < np.asarray(self.probabilities)

    def _flip_labels(self, x: torch.Tensor, key: Hashable, d: Mapping) -> torch.Tensor:
        if x.is_floating_point() and not bool(torch.all(x == torch.round(x))):
            raise ValueError(
                f"case {case_name(d)}: '{key}' is a one-channel map with non-integer values; a label map holds class "
                "ids, class channels need K > 1 channels."
            )
        present = [c for c in self.copies if bool((x == c).any())]
        if present:
            raise ValueError(
                f"case {case_name(d)}: label map '{key}' already holds copy classes {present}; the switchable-class "
                "flip must be applied once, to a label map of the original classes."
            )
        out = x.clone()
        for original, copy, flip in zip(self.switchable, self.copies, self._mode):
            if flip:
                out[x == original] = copy
        return out

    def _flip_channels(self, x: torch.Tensor, key: Hashable, d: Mapping) -> torch.Tensor:
        needed = max(self.copies + self.switchable) + 1
        if x.shape[0] < needed:
            raise ValueError(
                f"case {case_name(d)}: '{key}' has {x.shape[0]} class channels, but the flips need channel "
                f"{needed - 1} (copies {self.copies}); store the black box's probabilities with {needed} or more "
                "channels (the copies' channels zero), or give it as a label map (1, H, W)."
            )
        out = x.clone()
        for original, copy, flip in zip(self.switchable, self.copies, self._mode):
            if flip:
                out[copy] = out[copy] + out[original]
                out[original] = 0
        return out

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        self.randomize()
        mode = torch.as_tensor(self._mode.copy(), dtype=torch.bool)
        for key in self.key_iterator(d):
            x = d[key]
            if not isinstance(x, (torch.Tensor, np.ndarray)) or x.ndim != 3:
                raise ValueError(
                    f"case {case_name(d)}: '{key}' must be a label map (1, H, W) or class channels (K, H, W), got "
                    f"{tuple(x.shape) if hasattr(x, 'shape') else type(x).__name__}."
                )
            t = torch.as_tensor(x)
            out = self._flip_labels(t, key, d) if t.shape[0] == 1 else self._flip_channels(t, key, d)
            if isinstance(x, MetaTensor):
                out = MetaTensor(out, meta=dict(x.meta), applied_operations=list(x.applied_operations))
                out.meta[self.mode_key] = mode.clone()
            elif isinstance(x, np.ndarray):
                out = out.numpy()
            d[key] = out
            meta_dict = d.get(f"{key}_meta_dict")
            if isinstance(meta_dict, dict):
                d[f"{key}_meta_dict"] = {**meta_dict, self.mode_key: mode.clone()}
        d[self.mode_key] = mode
        return d
