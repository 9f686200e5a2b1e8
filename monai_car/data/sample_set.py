"""One case's sample set and everything derived from it, validated and computed once.

:class:`SampleSet` holds G's samples and F's probabilities of one case with its image, graders (optional) and
voxel-to-world affine, plus the derived maps every consumer needs: the hard label maps, the sample mean, the
foreground probabilities and the uncertainty maps of :mod:`monai_car.utils.uncertainty`. The NIfTI writer
(:func:`monai_car.data.save_sample_set`), the montage (:func:`monai_car.visualize.sample_set_figure`) and the lesion
summary of :class:`~monai_car.inferers.LesionSampleSetPredictor` read these fields instead of deriving them again.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.data.utils import to_affine_nd

from monai_car.metrics.utils import probabilities_to_labels
from monai_car.utils.uncertainty import foreground_probability, uncertainty_maps
from monai_car.utils.validation import as_numpy, check_probabilities

__all__ = ["SampleSet", "check_case_id", "hard_labels", "resolve_affine"]


def check_case_id(case_id: object) -> str:
    """Return ``case_id`` if it can name a folder inside the output folder, else raise ``ValueError``."""
    if not isinstance(case_id, str):
        raise ValueError(f"case_id must be a string, got {type(case_id).__name__} {case_id!r}.")
    bad = (not case_id) or case_id != case_id.strip() or case_id.startswith(".") or "\0" in case_id
    if bad or "/" in case_id or "\\" in case_id or os.sep in case_id:
        raise ValueError(
            f"case_id {case_id!r} cannot name a case folder: it must be non-empty, not start with '.', and hold no "
            "path separator or surrounding spaces (e.g. use monai_car.data.make_case_id)."
        )
    return case_id


def resolve_affine(image: object, affine: object | None, spatial_dims: int) -> tuple[np.ndarray, str]:
    """The 4x4 voxel-to-world affine to write, and where it came from.

    Order: the explicit ``affine`` (``(r+1, r+1)`` for ``r`` spatial dims, or 4x4); else the image's ``MetaTensor``
    affine (``meta["affine"]``, MONAI's current affine, which follows crops, pads and flips; a 2D affine is embedded
    in 4x4 as MONAI does); else ``meta["original_affine"]``; else the identity (source ``"identity"``: the output
    will not overlay on the CT).
    """
    source = "affine argument"
    if affine is None:
        meta = getattr(image, "meta", None)
        if isinstance(meta, dict) and meta.get("affine") is not None:
            affine, source = meta["affine"], "image meta 'affine'"
        elif isinstance(meta, dict) and meta.get("original_affine") is not None:
            affine, source = meta["original_affine"], "image meta 'original_affine'"
        else:
            return np.eye(4), "identity"
    a = as_numpy(affine, "affine") if isinstance(affine, torch.Tensor) else np.asarray(affine, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 3 and a.shape[0] == 1:  # a batched affine of one case
        a = a[0]
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] not in (spatial_dims + 1, 4):
        raise ValueError(f"affine must be a {spatial_dims + 1}x{spatial_dims + 1} or 4x4 matrix, got shape {a.shape}.")
    if not np.isfinite(a).all() or abs(np.linalg.det(a[:-1, :-1])) < 1e-12:
        raise ValueError(f"affine must be finite and invertible, got\n{a}")
    if not np.allclose(a[-1], np.eye(a.shape[0])[-1]):
        raise ValueError(f"affine's last row must be (0, .., 0, 1), got {a[-1].tolist()}.")
    return np.asarray(to_affine_nd(3, a), dtype=np.float64), source


def hard_labels(samples: np.ndarray) -> np.ndarray:
    """``(S, K, *spatial)`` probabilities -> ``(S, *spatial)`` uint8 label maps by the metrics' rule
    (:func:`monai_car.metrics.utils.probabilities_to_labels`): the argmax of each sample (ties to the lowest class), or
    ``p >= 0.5`` for a single foreground channel."""
    if samples.ndim < 3:
        raise ValueError(f"samples must be (S, K, *spatial), got shape {samples.shape}.")
    return probabilities_to_labels(torch.from_numpy(np.ascontiguousarray(samples))[None])[0].numpy().astype(np.uint8)


@dataclass(frozen=True, eq=False)
class SampleSet:
    """One case's samples, F's probabilities and the maps derived from them (build it with :meth:`from_predictions`).

    ``*spatial`` is ``(H, W)`` or ``(H, W, D)``. All arrays are numpy, float32 unless said otherwise.

    Attributes:
        case_id: the case's name (a valid folder name).
        image: ``(C, *spatial)``.
        samples: ``(S, K, *spatial)`` probabilities of G's samples.
        calibration_probs: ``(K, *spatial)`` F's probabilities.
        labels: ``(R, *spatial)`` uint8 graders' label maps, or None.
        affine: the 4x4 voxel-to-world affine.
        affine_source: where the affine came from (``"identity"`` when none was known).
        hard_labels: ``(S, *spatial)`` uint8 label map of each sample (:func:`hard_labels`).
        sample_mean: ``(K, *spatial)`` the mean of the samples.
        mean_foreground: ``(*spatial)`` the sample mean's foreground probability (``1 - p[background]``).
        calibration_foreground: ``(*spatial)`` F's foreground probability.
        uncertainty: ``(*spatial)`` maps, nats: ``entropy_calibration``, ``entropy_sample_mean``,
            ``mutual_information`` and ``sample_variance`` (see :func:`monai_car.utils.uncertainty_maps`).
    """

    case_id: str
    image: np.ndarray
    samples: np.ndarray
    calibration_probs: np.ndarray
    labels: np.ndarray | None
    affine: np.ndarray
    affine_source: str
    hard_labels: np.ndarray = field(repr=False)
    sample_mean: np.ndarray = field(repr=False)
    mean_foreground: np.ndarray = field(repr=False)
    calibration_foreground: np.ndarray = field(repr=False)
    uncertainty: Mapping[str, np.ndarray] = field(repr=False)

    @classmethod
    def from_predictions(
        cls,
        case_id: str,
        image: torch.Tensor | np.ndarray,
        samples: torch.Tensor | np.ndarray,
        calibration_probs: torch.Tensor | np.ndarray,
        affine: torch.Tensor | np.ndarray | None = None,
        labels: torch.Tensor | np.ndarray | None = None,
    ) -> SampleSet:
        """Validate one case's predictions and derive every map once.

        Args:
            case_id: the case's folder name (no path separator, not starting with ``.``).
            image: ``(C, *spatial)`` or ``(*spatial)``; a ``MetaTensor``'s affine is used when ``affine`` is None.
            samples: ``(S, K, *spatial)`` probabilities of G's samples.
            calibration_probs: ``(K, *spatial)`` F's probabilities.
            affine: the voxel-to-world affine (``(r+1, r+1)`` or 4x4); default: the image's metadata, else identity.
            labels: ``(R, *spatial)`` graders' masks (binary, or label maps for ``K > 2``).

        Raises:
            TypeError: on inputs that are neither tensors nor arrays.
            ValueError: naming the case, on shapes that disagree, NaN/inf, values that are not probabilities or
                labels that are not classes.
        """
        case_id = check_case_id(case_id)
        smp = check_probabilities(as_numpy(samples, "samples"), f"case {case_id}: samples", (4, 5), "(S, K, *spatial)")
        smp = smp.astype(np.float32, copy=False)
        spatial, num_classes = smp.shape[2:], smp.shape[1]
        cal = check_probabilities(
            as_numpy(calibration_probs, "calibration_probs"), f"case {case_id}: calibration_probs", (smp.ndim - 1,),
            "(K, *spatial)",
        ).astype(np.float32, copy=False)  # fmt: skip
        if cal.shape != smp.shape[1:]:
            raise ValueError(f"case {case_id}: calibration_probs {cal.shape} must be (K, *spatial) = {smp.shape[1:]}.")
        img = as_numpy(image, "image")
        if img.ndim == len(spatial):
            img = img[None]
        if img.ndim != len(spatial) + 1 or img.shape[1:] != spatial:
            raise ValueError(f"case {case_id}: image {img.shape} must be (C, *spatial) or (*spatial) with {spatial}.")
        if not np.isfinite(img).all():
            raise ValueError(f"case {case_id}: the image holds NaN or inf values.")
        lab = None if labels is None else _check_labels(as_numpy(labels, "labels"), case_id, spatial, num_classes)
        aff, affine_source = resolve_affine(image, affine, len(spatial))

        mean = smp.mean(axis=0)
        maps = uncertainty_maps(torch.from_numpy(smp)[None], torch.from_numpy(cal)[None])
        return cls(
            case_id=case_id,
            image=img.astype(np.float32, copy=False),
            samples=smp,
            calibration_probs=cal,
            labels=lab,
            affine=aff,
            affine_source=affine_source,
            hard_labels=hard_labels(smp),
            sample_mean=mean,
            mean_foreground=foreground_probability(torch.from_numpy(mean), dim=0).numpy(),
            calibration_foreground=foreground_probability(torch.from_numpy(cal), dim=0).numpy(),
            uncertainty={name: m[0].numpy().astype(np.float32, copy=False) for name, m in maps.items()},
        )

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """``(H, W)`` or ``(H, W, D)``."""
        return tuple(int(n) for n in self.samples.shape[2:])

    @property
    def num_samples(self) -> int:
        """``S``."""
        return int(self.samples.shape[0])

    @property
    def num_classes(self) -> int:
        """``K``."""
        return int(self.samples.shape[1])

    @property
    def num_graders(self) -> int | None:
        """``R``, or None without labels."""
        return None if self.labels is None else int(self.labels.shape[0])

    @property
    def spacing(self) -> np.ndarray:
        """The voxel size along each spatial axis (the affine's column norms), mm for a CT."""
        return np.linalg.norm(self.affine[:3, : len(self.spatial_shape)], axis=0)

    @property
    def voxel_volume(self) -> float:
        """The volume of one voxel (``|det|`` of the affine's 3x3 part), mm^3 for a CT."""
        return float(abs(np.linalg.det(self.affine[:3, :3])))


def _check_labels(lab: np.ndarray, case_id: str, spatial: tuple[int, ...], num_classes: int) -> np.ndarray:
    if lab.ndim != len(spatial) + 1 or lab.shape[1:] != spatial or lab.shape[0] < 1:
        raise ValueError(f"case {case_id}: labels {lab.shape} must be (R, *spatial) with R >= 1, {spatial}.")
    top = max(2, num_classes)
    if not np.isfinite(lab).all() or (lab != np.round(lab)).any() or lab.min() < 0 or lab.max() >= top:
        raise ValueError(
            f"case {case_id}: labels must hold integer classes in [0, {top - 1}], got values in "
            f"[{lab.min()}, {lab.max()}]."
        )
    return lab.astype(np.uint8)
