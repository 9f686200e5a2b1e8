"""Stage 1: the calibration net F trained alone with cross entropy against a randomly drawn grader."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents, default_metric_cmp_fn
from monai.engines.workflow import Workflow
from monai.utils import IgniteInfo, min_version, optional_import
from monai.utils.enums import CommonKeys
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from monai_car.losses import MaskedCrossEntropyLoss
from monai_car.utils.distributed import is_distributed, wrap_ddp
from monai_car.utils.enums import CarKeys
from monai_car.utils.validation import check_bool

from .base import ResumableTrainerMixin
from .ddp_adapters import LogitsForward
from .utils import as_plain, attach_progress_bar, check_batch, merge_checkpoint_entries, usable_cases

if TYPE_CHECKING:
    from ignite.engine import Engine, EventEnum
    from ignite.metrics import Metric
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Metric, _ = optional_import("ignite.metrics", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Metric")
    EventEnum, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "EventEnum")

__all__ = ["CalibrationTrainer"]


class CalibrationTrainer(ResumableTrainerMixin, SupervisedTrainer):
    """Stage 1 of CAR: MONAI's ``SupervisedTrainer`` training F with masked cross entropy on ``GRADER_LABEL``.

    What it adds to ``SupervisedTrainer``:

    - the loss is computed on F's logits (``F.forward_logits`` when F has it, through a DDP-safe adapter; else on its
      probabilities with ``MaskedCrossEntropyLoss(input_is_probs=True)``); the target is one randomly drawn grader
      ``(B, 1, *spatial)`` (``RandGraderd``); void pixels (``ignore_index``) are left out of the mean;
    - every batch is checked (NaN/inf images, grader labels off the image grid or outside ``[0, K)``, cases marked by
      the transforms): an error naming the cases, or with ``skip_invalid=True`` they are left out and reported in
      ``engine.state.skipped_cases``;
    - reproducibility from ``seed`` and exact resumption (see :class:`ResumableTrainerMixin`);
    - DDP: under ``torchrun`` F is wrapped in ``DistributedDataParallel`` (use a ``DistributedSampler``);
    - gradient clipping (``clip_grad_norm``) and an optional progress bar.

    ``engine.state.output`` holds MONAI's ``image``, ``label`` (the drawn grader), ``pred`` (logits) and ``loss``, and
    ``lr`` (F's learning rate, for TensorBoard).

    Args:
        device: the device to train on.
        max_epochs: epochs to train.
        train_data_loader: the training data; batches are dicts with ``image_key``, ``label_key`` and ``case_key``.
        network: F, ``(B, C, *spatial) -> (B, K, *spatial)`` probabilities (moved to ``device``).
        optimizer: F's optimizer (e.g. ``monai_car.optimizers.create_car_optimizer(F, lr=2e-4)``).
        loss_function: overrides the default masked cross entropy; called as ``loss(pred, target)``.
        epoch_length: iterations per epoch (default ``len(train_data_loader)``).
        non_blocking: non-blocking host-to-device copies.
        image_key: the image key.
        label_key: the drawn grader's key.
        case_key: the case-id key (for messages).
        ignore_index: the label value of void pixels, left out of the loss.
        skip_invalid: leave out and report invalid cases instead of raising.
        clip_grad_norm: clip F's gradient norm to this value (None: no clipping).
        seed: the one seed of the run.
        seed_data: seed the data order and augmentation per epoch (needed for exact resumption).
        ddp: wrap F in ``DistributedDataParallel``; None: when a multi-process group is running.
        ddp_kwargs: extra ``DistributedDataParallel`` arguments.
        progress_bar: show progress (rank 0): ignite's progress bar on a terminal, else a log line every 50
            iterations and at each epoch's end (:func:`~monai_car.engines.utils.attach_progress_bar`).
        kwargs: the other arguments of :class:`monai.engines.SupervisedTrainer` (``train_handlers``, ``amp``,
            ``key_train_metric``, ``decollate`` (default False here), ...).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        network: nn.Module,
        optimizer: Optimizer,
        loss_function: Callable | None = None,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        image_key: str = CarKeys.IMAGE,
        label_key: str = CarKeys.GRADER_LABEL,
        case_key: str = CarKeys.CASE_ID,
        ignore_index: int | None = None,
        skip_invalid: bool = False,
        clip_grad_norm: float | None = None,
        seed: int = 0,
        seed_data: bool = True,
        iteration_update: Callable[[Engine, Any], Any] | None = None,
        key_train_metric: dict[str, Metric] | None = None,
        additional_metrics: dict[str, Metric] | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        event_names: list[str | EventEnum | type[EventEnum]] | None = None,
        event_to_attr: dict | None = None,
        decollate: bool = False,
        optim_set_to_none: bool = False,
        to_kwargs: dict | None = None,
        amp_kwargs: dict | None = None,
        ddp: bool | None = None,
        ddp_kwargs: Mapping[str, Any] | None = None,
        progress_bar: bool = False,
    ) -> None:
        amp, seed_data = check_bool(amp, "amp"), check_bool(seed_data, "seed_data")
        progress_bar = check_bool(progress_bar, "progress_bar")
        if not isinstance(network, nn.Module):
            raise TypeError(f"network (F) must be a torch.nn.Module, got {type(network).__name__}.")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}.")
        if clip_grad_norm is not None and not clip_grad_norm > 0:
            raise ValueError(f"clip_grad_norm must be positive or None, got {clip_grad_norm!r}.")
        device = torch.device(device)
        self.calibration_net = network.to(device)
        use_logits = callable(getattr(network, "forward_logits", None))
        train_net: nn.Module = LogitsForward(self.calibration_net) if use_logits else self.calibration_net
        if ddp or (ddp is None and is_distributed()):
            train_net = wrap_ddp(train_net, device, ddp_kwargs)
        if loss_function is None:
            loss_function = MaskedCrossEntropyLoss(ignore_index=ignore_index, input_is_probs=not use_logits)
        if amp and device.type != "cuda":
            warnings.warn("stage-1 AMP uses torch.autocast('cuda'); on a non-CUDA device it is disabled.", stacklevel=2)
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=train_net,
            optimizer=optimizer,
            loss_function=loss_function,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=self._prepare_batch,
            iteration_update=iteration_update,
            key_train_metric=key_train_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            train_handlers=train_handlers,
            amp=amp and device.type == "cuda",
            event_names=event_names,
            event_to_attr=event_to_attr,
            decollate=decollate,
            optim_set_to_none=optim_set_to_none,
            to_kwargs=to_kwargs,
            amp_kwargs=amp_kwargs,
        )
        self._init_resumable(seed, seed_data)
        self.image_key, self.label_key, self.case_key = image_key, label_key, case_key
        self.ignore_index = ignore_index
        self.skip_invalid = skip_invalid
        self.clip_grad_norm = clip_grad_norm
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self.state.skipped_cases = {}
        if clip_grad_norm is not None:
            self.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self._clip_gradients)
        if progress_bar:
            attach_progress_bar(self, [CommonKeys.LOSS])

    def run(self) -> None:  # type: ignore[override]
        """Train (MONAI's ``Trainer.run`` would replace the AMP grad scaler, which is part of the checkpoint).

        Raises:
            ValueError: the data loader yields no batches (an empty training split, or fewer cases than a batch
                with ``drop_last=True``).
        """
        self.check_has_batches()
        Workflow.run(self)

    def get_checkpoint_dict(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Everything a stage-1 checkpoint holds: ``calibration_net``, ``optimizer_f``, ``trainer`` (iteration, epoch,
        seed, RNG states), ``grad_scaler`` with AMP, plus ``extra`` (e.g. ``{"lr_scheduler_f": scheduler}``)."""
        own = {
            "calibration_net": self.calibration_net,
            "optimizer_f": self.optimizer,
            "grad_scaler": self.scaler,
            "trainer": self,
        }
        return merge_checkpoint_entries(own, extra)

    def _prepare_batch(
        self, batchdata: Mapping, device: torch.device | str | None = None, non_blocking: bool = False, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image = as_plain(batchdata[self.image_key]).to(device=device, non_blocking=non_blocking, **kwargs)
        target = as_plain(batchdata[self.label_key]).to(device=device, non_blocking=non_blocking)
        return image.float(), target

    def _clip_gradients(self, engine: Engine) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.calibration_net.parameters(), float(self.clip_grad_norm))  # type: ignore[arg-type]

    def _iteration(self, engine: Engine, batchdata: dict[str, torch.Tensor]) -> dict:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        net = self.calibration_net
        check = check_batch(
            batchdata,
            image_key=self.image_key,
            grader_key=self.label_key,
            in_channels=getattr(net, "in_channels", None),
            spatial_dims=getattr(net, "spatial_dims", None),
            num_classes=getattr(net, "out_channels", None),
            ignore_index=self.ignore_index,
            case_key=self.case_key,
            where=f"stage-1 iteration {engine.state.iteration}",
        )
        batchdata = usable_cases(
            engine, batchdata, check, self.skip_invalid, f"stage-1 iteration {engine.state.iteration}"
        )
        if batchdata is None:
            return {CommonKeys.LOSS: float("nan"), "skipped": len(check.names)}
        with self.iteration_rng(engine):
            output = super()._iteration(engine, batchdata)
        if isinstance(output, dict):
            output["lr"] = float(self.optimizer.param_groups[0]["lr"])
        return output
