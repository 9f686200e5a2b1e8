"""A few sample-set montages per validation run, written to TensorBoard."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from monai.handlers.tensorboard_handlers import TensorBoardHandler
from monai.utils import IgniteInfo, min_version, optional_import

from monai_car.utils.distributed import is_main_process
from monai_car.utils.enums import CarKeys
from monai_car.utils.validation import as_plain_tensor, check_positive_int

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["TensorBoardMontageHandler"]


def _find_renderer() -> Callable[..., Any] | None:
    try:
        from monai_car.visualize import render_montage
    except ImportError:
        return None
    return render_montage


class TensorBoardMontageHandler(TensorBoardHandler):
    """Write montages (image, graders, F, sample mean, entropy, a few samples) of the first cases of each evaluation.

    Attach to a :class:`~monai_car.engines.CAREvaluator`; it reads the batch-first output (``image``, ``samples``,
    ``calibration_probs``, optional ``label``, ``case_id``), keeps CPU copies of the first ``max_cases`` cases, and at
    the end of the run writes one image per case under ``"<tag>/<case id>"`` at step ``engine.state.epoch`` (the
    trainer's epoch when run by ``ValidationHandler``). Rank 0 only. The montage is drawn by
    ``monai_car.visualize.render_montage``; without it, images are skipped with one logged warning.

    Args:
        summary_writer: a TensorBoard ``SummaryWriter`` (shared with ``TensorBoardStatsHandler``), or None to create
            one in ``log_dir``.
        log_dir: where a new writer writes.
        max_cases: cases per evaluation run.
        num_samples: samples shown per montage.
        tag: the TensorBoard tag prefix.
        global_epoch_transform: maps the engine's epoch to the logged step.
    """

    def __init__(
        self,
        summary_writer: Any = None,
        log_dir: str = "./runs",
        max_cases: int = 4,
        num_samples: int = 8,
        tag: str = "val_montage",
        global_epoch_transform: Callable[[int], int] = lambda x: x,
    ) -> None:
        check_positive_int(max_cases, "max_cases")
        check_positive_int(num_samples, "num_samples")
        super().__init__(summary_writer=summary_writer, log_dir=log_dir)
        self.max_cases, self.num_samples, self.tag = max_cases, num_samples, tag
        self.global_epoch_transform = global_epoch_transform
        self.logger = logging.getLogger(__name__)
        self._cases: list[dict[str, Any]] = []
        self._warned = False

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._cases = []

    def _collect(self, engine: Engine) -> None:
        output = engine.state.output
        if len(self._cases) >= self.max_cases or not isinstance(output, Mapping) or CarKeys.SAMPLES not in output:
            return
        for key in (CarKeys.IMAGE, CarKeys.SAMPLES, CarKeys.CALIBRATION):
            if not isinstance(output.get(key), torch.Tensor):
                raise KeyError(
                    f"TensorBoardMontageHandler needs {key!r} (a batch-first tensor) in the engine output; attach it "
                    f"to a CAREvaluator (decollate=False). Output keys: {sorted(map(str, output))}."
                )
        ids = output.get(CarKeys.CASE_ID)
        labels = output.get(CarKeys.LABEL)
        affines = getattr(output[CarKeys.IMAGE], "affine", None)  # MetaTensor: (B, 4, 4), for the radiological view
        for i in range(output[CarKeys.IMAGE].shape[0]):
            if len(self._cases) >= self.max_cases:
                break
            self._cases.append(
                {
                    "image": _cpu(output[CarKeys.IMAGE][i]),
                    "samples": _cpu(output[CarKeys.SAMPLES][i]),
                    "calibration_probs": _cpu(output[CarKeys.CALIBRATION][i]),
                    "labels": _cpu(labels[i]) if isinstance(labels, torch.Tensor) else None,
                    "case_id": str(ids[i]) if isinstance(ids, (list, tuple)) else f"case_{len(self._cases)}",
                    "affine": _case_affine(affines, i),
                }
            )

    def _write(self, engine: Engine) -> None:
        if not is_main_process() or not self._cases:
            return
        render = _find_renderer()
        if render is None:
            if not self._warned:
                self.logger.warning("monai_car.visualize.render_montage is unavailable: no montages in TensorBoard.")
                self._warned = True
            return
        step = self.global_epoch_transform(engine.state.epoch)
        for case in self._cases:
            picture = render(
                case["image"],
                samples=case["samples"],
                calibration_probs=case["calibration_probs"],
                labels=case["labels"],
                num_samples=min(self.num_samples, case["samples"].shape[0]),
                title=case["case_id"],
                affine=case["affine"],
            )
            self._writer.add_image(f"{self.tag}/{case['case_id']}", picture, step, dataformats="HWC")
        self._writer.flush()


def _cpu(x: torch.Tensor) -> torch.Tensor:
    return as_plain_tensor(x, "x").detach().float().cpu()


def _case_affine(affines: object, i: int) -> torch.Tensor | None:
    """Case ``i``'s affine from a batch of MetaTensor affines ``(B, 4, 4)`` (or one shared ``(4, 4)``)."""
    if not isinstance(affines, torch.Tensor):
        return None
    a = affines[i] if affines.ndim == 3 and affines.shape[0] > i else affines
    return a.detach().cpu().double() if a.ndim == 2 else None
