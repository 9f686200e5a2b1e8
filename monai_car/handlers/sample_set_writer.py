"""Per-case sample sets and uncertainty maps as NIfTI (overlaying on the CT), a JSON manifest and a PNG montage:
:func:`write_sample_set` for one case, :class:`SampleSetWriter` for every case of an evaluation engine (a thin ignite
adapter over :class:`~monai_car.data.SampleSet` and :func:`~monai_car.data.save_sample_set`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.data import decollate_batch

from monai_car.data.sample_set import SampleSet
from monai_car.data.sample_set_io import SAMPLE_SET_FILES, save_sample_set
from monai_car.utils.enums import CarKeys
from monai_car.utils.validation import check_positive_int

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["write_sample_set", "SampleSetWriter", "SAMPLE_SET_FILES"]

_REQUIRED = (CarKeys.IMAGE, CarKeys.SAMPLES, CarKeys.CALIBRATION, CarKeys.CASE_ID)


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
    num_montage_samples = check_positive_int(num_montage_samples, "num_montage_samples")
    sample_set = SampleSet.from_predictions(case_id, image, samples, calibration_probs, affine=affine, labels=labels)
    montage_writer = None
    if montage:
        from monai_car.visualize.montage import save_sample_set_montage

        montage_writer = partial(save_sample_set_montage, num_samples=num_montage_samples)
    return save_sample_set(output_dir, sample_set, seed=seed, metrics=metrics, montage_writer=montage_writer)


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
