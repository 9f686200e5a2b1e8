"""Per-case sample sets and uncertainty maps as NIfTI (overlaying on the CT), a JSON manifest and a PNG montage."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.data import decollate_batch

from monai_car.utils.enums import CarKeys
from monai_car.utils.uncertainty import foreground_probability, uncertainty_maps

from .sample_set_io import atomic_case_dir, check_case_id, resolve_affine, save_json, save_nifti, to_numpy

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["write_sample_set", "SampleSetWriter", "SAMPLE_SET_FILES"]

logger = logging.getLogger(__name__)

SAMPLE_SET_FILES = {
    "samples": "samples.nii.gz",
    "sample_mean": "sample_mean.nii.gz",
    "calibration_probs": "calibration_probs.nii.gz",
    "entropy_calibration": "entropy_calibration.nii.gz",
    "entropy_sample_mean": "entropy_sample_mean.nii.gz",
    "mutual_information": "mutual_information.nii.gz",
    "sample_variance": "sample_variance.nii.gz",
    "image": "image.nii.gz",
    "labels": "labels.nii.gz",
}
"""The NIfTI files of a case folder (``labels`` only when labels are given)."""

_PROB_TOL = 1e-4
_REQUIRED = (CarKeys.IMAGE, CarKeys.SAMPLES, CarKeys.CALIBRATION, CarKeys.CASE_ID)


def _check_probs(x: object, name: str, ndims: tuple[int, ...], layout: str) -> np.ndarray:
    a = to_numpy(x, name)
    if a.ndim not in ndims or 0 in a.shape:
        raise ValueError(f"{name} must be {layout} with 2 or 3 spatial dims, got shape {a.shape}.")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{name} must be floating-point probabilities, got dtype {a.dtype}.")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds NaN or inf values.")
    if a.size and (a.min() < -_PROB_TOL or a.max() > 1 + _PROB_TOL):
        raise ValueError(
            f"{name} must be probabilities in [0, 1] (softmax outputs), got values in [{a.min():.4g}, {a.max():.4g}]; "
            "apply softmax to logits first."
        )
    return a.astype(np.float32, copy=False)


def _channels_last(x: np.ndarray) -> np.ndarray:
    """``(N, *spatial) -> (*spatial, N)``: the set axis becomes the last NIfTI axis."""
    return np.moveaxis(x, 0, -1)


def _probability_map(p: np.ndarray) -> tuple[np.ndarray, str]:
    """``(K, *spatial)``: the foreground probability ``(*spatial)`` for ``K <= 2``, else all classes last."""
    if p.shape[0] <= 2:
        return foreground_probability(torch.from_numpy(p), dim=0).numpy(), "(*spatial): foreground probability"
    return _channels_last(p), "(*spatial, K): probability of each class"


def _hard_labels(samples: np.ndarray) -> np.ndarray:
    """``(S, K, *spatial)`` probabilities -> ``(S, *spatial)`` uint8 label maps (``p >= 0.5`` for one channel)."""
    if samples.shape[1] == 1:
        return (samples[:, 0] >= 0.5).astype(np.uint8)
    return samples.argmax(axis=1).astype(np.uint8)


def _case_metrics(hard: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """GED (squared, V-statistic) and, for binary problems, HM-IoU of one case's samples against its graders."""
    from monai_car.metrics.generalized_energy_distance import compute_generalized_energy_distance
    from monai_car.metrics.hungarian_matched_iou import compute_hungarian_matched_iou

    s, y = torch.from_numpy(hard.astype(np.int64))[None], torch.from_numpy(labels.astype(np.int64))[None]
    if num_classes <= 2:
        return {
            "ged": float(compute_generalized_energy_distance(s > 0, y > 0)[0]),
            "hm_iou": float(compute_hungarian_matched_iou(s > 0, y > 0)[0]),
        }
    return {"ged": float(compute_generalized_energy_distance(s, y, num_classes=num_classes)[0])}


def _check_metrics(metrics: Mapping | None) -> dict[str, float]:
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a dict of name -> number, got {type(metrics).__name__}.")
    out = {}
    for k, v in metrics.items():
        try:
            out[str(k)] = float(v.item() if isinstance(v, torch.Tensor) else v)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"metric {k!r} must be a number (or a one-element tensor), got {v!r}.") from e
    return out


def write_sample_set(
    output_dir: str | Path,
    case_id: str,
    image: torch.Tensor | np.ndarray,
    samples: torch.Tensor | np.ndarray,
    calibration_probs: torch.Tensor | np.ndarray,
    affine: torch.Tensor | np.ndarray | None = None,
    labels: torch.Tensor | np.ndarray | None = None,
    seed: int | None = None,
    metrics: Mapping[str, Any] | None = None,
    montage: bool = True,
    num_montage_samples: int = 8,
) -> Path:
    """Write one case's sample set and uncertainty maps to ``output_dir/<case_id>/``, atomically.

    Files (NIfTI, all with the same 4x4 affine so that they overlay on the CT in 3D Slicer; ``*spatial`` is
    ``(H, W)`` for 2D and ``(H, W, D)`` for 3D, as in the input):

    - ``samples.nii.gz``: the ``S`` sampled label maps (argmax of each sample; ``p >= 0.5`` with one channel),
      uint8, ``(*spatial, S)``: the sample axis is the 3rd NIfTI axis for 2D inputs (viewers show it as slices)
      and the 4th for 3D volumes (viewers show it as time frames);
    - ``sample_mean.nii.gz``: the mean of G's samples, float32; the foreground probability ``(*spatial)`` for
      ``K <= 2`` classes, else ``(*spatial, K)``;
    - ``calibration_probs.nii.gz``: F's probabilities, same layout as ``sample_mean``;
    - ``entropy_calibration.nii.gz``, ``entropy_sample_mean.nii.gz``, ``mutual_information.nii.gz`` (nats) and
      ``sample_variance.nii.gz`` (population variance of the foreground probability over the samples), float32
      ``(*spatial)`` (see :mod:`monai_car.utils.uncertainty`);
    - ``image.nii.gz``: the input image, ``(*spatial)`` (``(*spatial, C)`` for several channels), and, when given,
      ``labels.nii.gz``: the graders, uint8 ``(*spatial, R)``;
    - ``manifest.json``: case id, relative file names, ``S``, ``K``, seed, shapes, affine, spacing and metrics
      (``ged``, the squared GED, and ``hm_iou`` against the given labels; entries of ``metrics`` override them);
    - ``montage.png`` (``montage=True``): image, graders, ``num_montage_samples`` samples, F, mean, entropy, in the
      radiological convention when the affine is known (see :func:`monai_car.visualize.montage_figure`).

    Everything is written in a temporary folder inside ``output_dir`` that then replaces ``<case_id>/`` as a
    whole: a failure leaves no partial folder and an existing folder is replaced without mixing old and new files.

    Args:
        output_dir: the parent folder (created if needed).
        case_id: the case's folder name (no path separator, not starting with ``.``).
        image: ``(C, *spatial)`` or ``(*spatial)`` image; a ``MetaTensor``'s affine is used when ``affine`` is None.
        samples: ``(S, K, *spatial)`` probabilities of G's samples.
        calibration_probs: ``(K, *spatial)`` F's probabilities.
        affine: the voxel-to-world affine (``(r+1, r+1)`` or 4x4); default: the image's metadata, else identity
            (with a warning and ``"affine_source": "identity"`` in the manifest).
        labels: ``(R, *spatial)`` graders' masks (binary, or label maps for ``K > 2``).
        seed: the seed of the noise draws, recorded in the manifest.
        metrics: extra per-case numbers for the manifest.
        montage: also write ``montage.png``.
        num_montage_samples: samples shown in the montage.

    Returns:
        the case folder.
    """
    case_id = check_case_id(case_id)
    smp = _check_probs(samples, f"case {case_id}: samples", (4, 5), "(S, K, *spatial)")
    spatial, num_samples, num_classes = smp.shape[2:], smp.shape[0], smp.shape[1]
    cal = _check_probs(calibration_probs, f"case {case_id}: calibration_probs", (smp.ndim - 1,), "(K, *spatial)")
    if cal.shape != smp.shape[1:]:
        raise ValueError(f"case {case_id}: calibration_probs {cal.shape} must be (K, *spatial) = {smp.shape[1:]}.")
    img = to_numpy(image, "image")
    if img.ndim == len(spatial):
        img = img[None]
    if img.ndim != len(spatial) + 1 or img.shape[1:] != spatial:
        raise ValueError(f"case {case_id}: image {img.shape} must be (C, *spatial) or (*spatial) with {spatial}.")
    if not np.isfinite(img).all():
        raise ValueError(f"case {case_id}: the image holds NaN or inf values.")
    lab = None
    if labels is not None:
        lab = to_numpy(labels, "labels")
        if lab.ndim != len(spatial) + 1 or lab.shape[1:] != spatial or lab.shape[0] < 1:
            raise ValueError(f"case {case_id}: labels {lab.shape} must be (R, *spatial) with R >= 1, {spatial}.")
        if (
            not np.isfinite(lab).all()
            or (lab != np.round(lab)).any()
            or lab.min() < 0
            or lab.max() >= max(2, num_classes)
        ):
            raise ValueError(
                f"case {case_id}: labels must hold integer classes in [0, {max(2, num_classes) - 1}], got values in "
                f"[{lab.min()}, {lab.max()}]."
            )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise TypeError(f"seed must be an int or None, got {seed!r}.")
    if isinstance(num_montage_samples, bool) or not isinstance(num_montage_samples, int) or num_montage_samples < 1:
        raise ValueError(f"num_montage_samples must be a positive int, got {num_montage_samples!r}.")
    extra_metrics = _check_metrics(metrics)
    aff, affine_source = resolve_affine(image, affine, len(spatial))
    if affine_source == "identity":
        logger.warning("case %s: no affine given and the image has no metadata; writing an identity affine.", case_id)

    maps = uncertainty_maps(torch.from_numpy(smp)[None], torch.from_numpy(cal)[None])
    hard = _hard_labels(smp)
    mean_map, prob_layout = _probability_map(smp.mean(axis=0))
    cal_map, _ = _probability_map(cal)
    arrays: dict[str, tuple[np.ndarray, str]] = {
        "samples": (_channels_last(hard), "(*spatial, S): argmax label map of each sample"),
        "sample_mean": (mean_map.astype(np.float32), prob_layout + " (mean of G's samples)"),
        "calibration_probs": (cal_map.astype(np.float32), prob_layout + " (F)"),
    }
    for name, m in maps.items():
        arrays[name] = (m[0].numpy().astype(np.float32), "(*spatial)")
    arrays["image"] = ((img[0] if img.shape[0] == 1 else _channels_last(img)).astype(np.float32), "image")
    if lab is not None:
        arrays["labels"] = (_channels_last(lab.astype(np.uint8)), "(*spatial, R): the graders' masks")

    case_metrics = _case_metrics(hard, lab, num_classes) if lab is not None else {}
    case_metrics.update(extra_metrics)
    spacing = np.linalg.norm(aff[:3, : len(spatial)], axis=0)
    with atomic_case_dir(Path(output_dir), case_id) as tmp:
        for name, (data, _) in arrays.items():
            save_nifti(tmp / SAMPLE_SET_FILES[name], data, aff)
        montage_file = None
        if montage:
            from monai_car.visualize.montage import save_montage

            montage_file = "montage.png"
            save_montage(
                tmp / montage_file,
                img,
                samples=smp,
                calibration_probs=cal,
                labels=lab,
                num_samples=min(num_montage_samples, num_samples),
                title=case_id,
                affine=None if affine_source == "identity" else aff,
            )
        manifest = {
            "case_id": case_id,
            "num_samples": int(num_samples),
            "num_classes": int(num_classes),
            "num_graders": None if lab is None else int(lab.shape[0]),
            "seed": None if seed is None else int(seed),
            "spatial_dims": len(spatial),
            "spatial_shape": [int(s) for s in spatial],
            "spacing": [round(float(s), 6) for s in spacing],
            "affine": aff.tolist(),
            "affine_source": affine_source,
            "files": {name: SAMPLE_SET_FILES[name] for name in arrays},
            "shapes": {name: [int(s) for s in data.shape] for name, (data, _) in arrays.items()},
            "layouts": {name: layout for name, (_, layout) in arrays.items()},
            "montage": montage_file,
            "metrics": {k: (None if math.isnan(v) else v) for k, v in case_metrics.items()},
            "units": {"entropy": "nats", "ged": "squared generalized energy distance (V-statistic)"},
        }
        save_json(tmp / "manifest.json", manifest)
    return Path(output_dir) / case_id


class SampleSetWriter:
    """Ignite handler: :func:`write_sample_set` for every case of every iteration of an evaluation engine.

    Per case it reads ``IMAGE`` (its ``MetaTensor`` affine is written), ``SAMPLES`` ``(B, S, K, *spatial)``,
    ``CALIBRATION`` ``(B, K, *spatial)``, ``CASE_ID`` and, when present, ``LABEL`` ``(B, R, *spatial)`` (then the
    manifest gets GED and HM-IoU). When ``engine.state.output`` holds all of them (as
    :class:`~monai_car.engines.CAREvaluator`'s does, after dropping skipped cases) it is used alone; otherwise the
    missing keys are taken from ``engine.state.batch``, case by case. Both may be batch-first dicts or lists of
    per-case dicts (MONAI engines with ``decollate=True``); batches are split with MONAI's ``decollate_batch``. An
    output holding ``skip_key`` (a batch whose cases were all skipped) writes nothing.

    Args:
        output_dir: the parent folder of the case folders.
        output_transform: maps ``engine.state.output`` to the dict(s) to read.
        batch_transform: maps ``engine.state.batch`` to the dict(s) to read.
        seed: the evaluator's noise seed, recorded in each manifest.
        montage: write ``montage.png`` per case.
        num_montage_samples: samples shown in each montage.
        max_cases_per_epoch: write at most this many cases per epoch (``None``: all).
        skip_key: the output key that marks a batch whose cases were all skipped (``None``: no such key).

    Attributes:
        written: the case folders written in the current (or last) epoch.
    """

    def __init__(
        self,
        output_dir: str | Path,
        output_transform: Callable = lambda x: x,
        batch_transform: Callable = lambda x: x,
        seed: int | None = None,
        montage: bool = True,
        num_montage_samples: int = 8,
        max_cases_per_epoch: int | None = None,
        skip_key: str | None = "skipped_batch",
    ) -> None:
        if max_cases_per_epoch is not None and max_cases_per_epoch < 0:
            raise ValueError(f"max_cases_per_epoch must be >= 0 or None, got {max_cases_per_epoch}.")
        self.output_dir = Path(output_dir)
        self.output_transform = output_transform
        self.batch_transform = batch_transform
        self.seed = seed
        self.montage = montage
        self.num_montage_samples = num_montage_samples
        self.max_cases_per_epoch = max_cases_per_epoch
        self.skip_key = skip_key
        self.written: list[Path] = []
        self._count = 0

    def attach(self, engine: Engine) -> None:
        """Write after every iteration; the per-epoch case count restarts at every epoch."""
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _reset(self, engine: Engine) -> None:
        self._count = 0
        self.written = []

    @staticmethod
    def _cases(x: object, where: str) -> list[dict]:
        if x is None:
            return []
        if isinstance(x, Mapping):
            return decollate_batch(dict(x), detach=True)
        if isinstance(x, Sequence) and all(isinstance(i, Mapping) for i in x):
            return [dict(i) for i in x]
        raise TypeError(f"SampleSetWriter: {where} must be a dict (batch-first) or a list of dicts, got {type(x)}.")

    def _select(self, engine: Engine) -> list[dict]:
        """The per-case dicts of this iteration: the output's alone when complete, else merged with the batch's."""
        raw = self.output_transform(engine.state.output)
        if isinstance(raw, Mapping) and self.skip_key is not None and self.skip_key in raw:
            return []  # every case of the batch was skipped by the evaluator
        outputs = self._cases(raw, "engine.state.output")
        complete = bool(outputs) and all(all(k in o for k in _REQUIRED) for o in outputs)
        need_meta = complete and any(not hasattr(o[CarKeys.IMAGE], "affine") for o in outputs)
        if complete and not need_meta:
            return outputs
        batches = self._cases(self.batch_transform(engine.state.batch), "engine.state.batch")
        if complete:  # take the MetaTensor images (affines) from the batch when they line up with the output
            if len(batches) == len(outputs):
                for o, b in zip(outputs, batches):
                    if not hasattr(o[CarKeys.IMAGE], "affine") and hasattr(b.get(CarKeys.IMAGE), "affine"):
                        o[CarKeys.IMAGE] = b[CarKeys.IMAGE]
            return outputs
        if outputs and batches and len(batches) != len(outputs):
            raise ValueError(
                f"SampleSetWriter: the output of iteration {engine.state.iteration} lacks some of "
                f"{[str(k) for k in _REQUIRED]} and its {len(outputs)} cases cannot be matched to the batch's "
                f"{len(batches)}; put all of them in the output."
            )
        n = max(len(outputs), len(batches))
        return [{**(batches[i] if batches else {}), **(outputs[i] if outputs else {})} for i in range(n)]

    def __call__(self, engine: Engine) -> None:
        for i, case in enumerate(self._select(engine)):
            if self.max_cases_per_epoch is not None and self._count >= self.max_cases_per_epoch:
                return
            missing = [str(k) for k in _REQUIRED if k not in case]
            if missing:
                raise KeyError(
                    f"SampleSetWriter: case {i} of iteration {engine.state.iteration} lacks {missing} in both "
                    f"engine.state.output and engine.state.batch (has {sorted(map(str, case))})."
                )
            self.written.append(
                write_sample_set(
                    self.output_dir,
                    str(case[CarKeys.CASE_ID]),
                    image=case[CarKeys.IMAGE],
                    samples=case[CarKeys.SAMPLES],
                    calibration_probs=case[CarKeys.CALIBRATION],
                    labels=case.get(CarKeys.LABEL),
                    seed=self.seed,
                    montage=self.montage,
                    num_montage_samples=self.num_montage_samples,
                )
            )
            self._count += 1
