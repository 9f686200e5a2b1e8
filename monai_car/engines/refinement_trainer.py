"""Stage 2: the refinement generator G and the discriminator D, with F frozen (or trained jointly)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from monai.engines import Trainer
from monai.engines.utils import IterationEvents, default_metric_cmp_fn
from monai.engines.workflow import Workflow
from monai.utils import AdversarialIterationEvents, IgniteInfo, min_version, optional_import
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from monai_car.handlers.discriminator_schedule import DiscriminatorSchedule
from monai_car.losses import (
    CalibrationLoss,
    MaskedCrossEntropyLoss,
    calibrated_sharpening_loss,
    discriminator_adversarial_loss,
    generator_adversarial_loss,
    r1_penalty,
    sharpening_loss,
)
from monai_car.networks import CARNet, MultiSampleRefiner
from monai_car.utils.distributed import all_reduce_mean, is_distributed, wrap_ddp
from monai_car.utils.enums import CarKeys
from monai_car.utils.enums import RefinementKeys as K
from monai_car.utils.validation import check_bool

from .base import ResumableTrainerMixin
from .ddp_adapters import DistributedRefiner, LogitsForward
from .refinement_utils import (
    GENERATOR_LOSSES,
    SHARPENING_TARGETS,
    as_floats,
    check_refinement_args,
    discriminator_accuracies,
    fake_discriminator_input,
    learning_rate,
    one_hot_label_map,
    repeat_per_sample,
    straight_through_hard,
)
from .two_pass import draw_samples, replay_generator_backward
from .utils import (
    as_plain,
    attach_progress_bar,
    check_batch,
    frozen_parameters,
    merge_checkpoint_entries,
    usable_cases,
)

if TYPE_CHECKING:
    from ignite.engine import Engine, EventEnum
    from ignite.metrics import Metric
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Metric, _ = optional_import("ignite.metrics", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Metric")
    EventEnum, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "EventEnum")

__all__ = ["GENERATOR_LOSSES", "GeneratorUpdate", "RefinementTrainer"]


class GeneratorUpdate(NamedTuple):
    """What G's update hands to D's: D's fake inputs and logits, and G's losses.

    Attributes:
        fake_inputs: D's inputs for all ``B * M`` samples, ``(B * M, C + K, *spatial)``: the image concatenated with a
            sample (with G's graph in the single pass, without in the two-pass update; D's step detaches them).
        fake_logits: D's detached logits of those inputs, ``(B * M, 1)`` (or per patch).
        loss_g: G's weighted loss ``adversarial_weight * L_adv + calibration_weight * L_2``.
        loss_adv: the non-saturating adversarial loss ``L_adv``.
        loss_cal: the calibration loss ``L_cal`` (logged even when G is trained with the refine cross entropy).
        loss_refine_ce: the refine cross entropy (None with the calibration loss).
    """

    fake_inputs: torch.Tensor
    fake_logits: torch.Tensor
    loss_g: torch.Tensor
    loss_adv: torch.Tensor
    loss_cal: torch.Tensor
    loss_refine_ce: torch.Tensor | None


class RefinementTrainer(ResumableTrainerMixin, Trainer):
    """Stage 2 of CAR, in the spirit of MONAI's ``AdversarialTrainer``: G and D updated from one batched sampling pass.

    Each iteration, for images ``x`` ``(B, C, *spatial)`` and one drawn grader ``y`` ``(B, 1, *spatial)``:

    1. F's probabilities ``p = F(x)``: F frozen (eval mode, no gradient), or with ``train_calibration=True`` trained
       jointly with its cross entropy ``L_ce(F)`` (G still sees ``p`` detached).
    2. ``M = num_samples`` label maps per image from G in one batched ``CARNet.sample`` pass: ``(B, M, K, *spatial)``,
       noise from a generator seeded per iteration.
    3. G's loss ``L_G = adversarial_weight * L_adv + calibration_weight * L_cal`` (paper: 10 and 5), ``L_adv`` the
       non-saturating loss of D's scores of all ``B * M`` samples (D's parameters frozen for this pass), ``L_cal`` the
       KL of the sample mean from ``p``. With ``generator_loss="refine_ce"`` (the paper's control) ``L_cal`` is replaced
       by the cross entropy of G's samples against ``y`` (``L_cal`` is still reported). G (and F) are updated.
    4. D's accuracy on this batch before its update (real: ``concat(x, one_hot(y))``; fake: all ``B * M`` samples);
       the :class:`~monai_car.handlers.DiscriminatorSchedule` decides from the iteration and that accuracy (mean over
       DDP ranks) whether D is updated. If so: ``L_D = BCE(real, fake) + r1_weight * R1(real)`` with the fakes
       ``concat(x repeated, samples.detach())``, all ``M`` of them, in one D pass with the reals.

    ``engine.state.output`` is a dict of python floats, :class:`~monai_car.utils.enums.RefinementKeys`: ``loss`` (G's
    total), ``loss_adv``, ``loss_cal``, ``loss_refine_ce``, ``loss_ce_f``, ``loss_d``, ``loss_d_bce``, ``loss_r1`` (NaN
    when not computed this iteration), ``d_accuracy`` (+ real / fake parts), ``d_updated``, the learning rates and the
    number of cases. Events: MONAI's ``IterationEvents`` (``FORWARD_COMPLETED`` after G's pass, ``LOSS_COMPLETED``,
    ``BACKWARD_COMPLETED``, ``MODEL_COMPLETED`` at the end) and ``AdversarialIterationEvents`` at the matching points;
    during the iteration ``engine.state.output`` holds the live tensors (``image``, ``grader_label``, ``samples``,
    ``calibration_probs`` and the losses so far).

    AMP: F and G run under ``torch.autocast(device.type)`` (bfloat16 on CPU by default), with a ``GradScaler`` on CUDA;
    D's update (with R1's double backward) runs in float32 for stability. ``clip_grad_norm`` clips G's, F's and D's
    gradient norms separately. Under ``torchrun`` G, D (and a jointly trained F) are wrapped in
    ``DistributedDataParallel``; use a ``DistributedSampler``.

    Args:
        device: the device to train on.
        max_epochs: epochs to train.
        train_data_loader: batches are dicts with ``image_key``, ``grader_key`` (and ``case_key``; ``labels_key`` is
            checked when present).
        network: the :class:`~monai_car.networks.CARNet` holding F and G (moved to ``device``).
        discriminator: D, ``(N, C + K, *spatial) -> (N, 1)`` logits (or per-patch logits).
        g_optimizer: G's optimizer (``create_car_optimizer(G, 2e-4)``).
        d_optimizer: D's optimizer (``create_car_optimizer(D, 1e-5)``).
        f_optimizer: F's optimizer, with ``train_calibration=True`` only.
        train_calibration: train F jointly with its cross entropy.
        num_samples: ``M`` samples per image (paper: 20 on LIDC).
        adversarial_weight, calibration_weight: the weights of ``L_adv`` and ``L_cal`` (or of the refine CE).
        r1_weight: the weight of the R1 penalty (10).
        calibration_ce_weight: the weight of F's cross entropy when trained jointly.
        generator_loss: ``"calibration"`` (CAR) or ``"refine_ce"`` (the control).
        discriminator_schedule: when D is updated; default ``DiscriminatorSchedule()`` (50 on, 200 off, cap 0.85).
        calibration_clamp: probability clamp inside ``L_cal``'s logarithms (1e-3 as the reference).
        calibration_estimator: ``"plugin"`` (the paper: KL of the M samples' mean) or ``"jackknife"`` (without the
            plug-in's ~1/(2M) bias against diverse samples), see :class:`~monai_car.losses.CalibrationLoss`.
        calibration_pixel_reduction: ``"mean"`` (the paper) or ``"sum"`` of the pixel KLs per image.
        calibration_direction: ``"reverse"`` (the paper, ``KL(mean G || F)``) or ``"forward"`` (``KL(F || mean G)``:
            its gradient does not vanish on a class that G's saturated samples dropped, see
            :class:`~monai_car.losses.CalibrationLoss`; plug-in estimator only).
        hard_samples: where G's hard samples (``one_hot(argmax)``, with the straight-through gradient onto the
            probabilities: :func:`~monai_car.engines.refinement_utils.straight_through_hard`) replace its
            probabilities: ``"none"`` (the paper), ``"discriminator"`` (D's fakes are label maps like its reals, so D
            cannot tell G's samples by their softness and push them to saturate), ``"calibration"`` (the calibration
            loss measures the hard samples' frequencies) or ``"all"``. Single-pass update only.
        sharpening_weight: weight of the mean cross entropy of each sample against its own argmax
            (:func:`~monai_car.losses.sharpening_loss`): keeps G's probabilities label-like when D
            sees hard samples and no longer does. 0 (the paper) leaves it out. Single-pass update only.
        sharpening_target: what the sharpening term pulls each sample toward: ``"argmax"`` (its own argmax,
            :func:`~monai_car.losses.sharpening_loss`; leans to the majority class wherever the samples are still
            soft) or ``"calibrated"`` (near one-hot targets whose class shares across the ``M`` samples of a pixel
            are F's probabilities, :func:`~monai_car.losses.calibrated_sharpening_loss`).
        ignore_index: the label value of void pixels: left out of every loss and blanked in D's inputs.
        num_graders: the expected number of graders in ``labels_key`` when present.
        skip_invalid: leave out and report invalid cases (``engine.state.skipped_cases``) instead of raising.
        clip_grad_norm: max gradient norm (None: no clipping).
        chunk_size: the most rows of ``B * M`` per G pass (None: all in one).
        sample_chunk_size: None (default): G's update back-propagates all ``B * M`` samples in one graph. An int
            ``c >= 1``: bounded memory, at most ``B * c`` rows of G and D in a graph at once (any ``c``; the last
            chunk may be smaller), for one extra G forward without a graph (:meth:`_update_generator_two_pass`). The
            gradient is exact for ``L_G`` over samples generated ``c`` per image at a time: what changes is only that
            G's training-mode batch norm normalises each chunk with its own statistics (and updates its running
            statistics once per chunk) and each chunk draws its own dropout masks; with ``c >= M`` it is the single
            pass. D's update and its accuracy still see all ``M`` samples. Under DDP the chunks' backward passes
            accumulate locally (``no_sync``) and the last one all-reduces the sum, as gradient accumulation does.
        shared_encoder: G's noise-free work (encoder, bottleneck, first up block, skip halves) once per image for
            its ``M`` samples, forward and backward, when G is a :class:`~monai_car.networks.nets.RefinementUNet`
            (under DDP through :class:`~monai_car.engines.DistributedRefiner`, which keeps it synchronised). What
            changes against the per-sample path (``False``): G's dropout in that shared part draws one mask per image
            instead of one per sample; batch norm there sees the ``B`` images, whose statistics equal those of the
            ``B * M`` repeated rows.
        seed: the one seed of the run (see :class:`ResumableTrainerMixin`).
        seed_data: seed data order and augmentation per epoch.
        image_key, grader_key, labels_key, case_key: batch keys.
        ddp: wrap the trained networks in DDP; None: when a multi-process group is running.
        ddp_kwargs: extra ``DistributedDataParallel`` arguments.
        progress_bar: show progress (rank 0): ignite's progress bar on a terminal, else a log line every 50
            iterations and at each epoch's end (:func:`~monai_car.engines.utils.attach_progress_bar`).
        kwargs: the remaining arguments of :class:`monai.engines.Trainer` / ``Workflow`` (``train_handlers``,
            ``epoch_length``, ``amp``, ``amp_kwargs``, ``key_train_metric``, ``decollate`` (default False) ...).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        network: CARNet,
        discriminator: nn.Module,
        g_optimizer: Optimizer,
        d_optimizer: Optimizer,
        f_optimizer: Optimizer | None = None,
        train_calibration: bool = False,
        num_samples: int = 20,
        adversarial_weight: float = 10.0,
        calibration_weight: float = 5.0,
        r1_weight: float = 10.0,
        calibration_ce_weight: float = 1.0,
        generator_loss: str = "calibration",
        discriminator_schedule: DiscriminatorSchedule | None = None,
        calibration_clamp: float = 1e-3,
        calibration_estimator: str = "plugin",
        calibration_pixel_reduction: str = "mean",
        calibration_direction: str = "reverse",
        hard_samples: str = "none",
        sharpening_weight: float = 0.0,
        sharpening_target: str = "argmax",
        ignore_index: int | None = None,
        num_graders: int | None = None,
        skip_invalid: bool = False,
        clip_grad_norm: float | None = None,
        chunk_size: int | None = None,
        sample_chunk_size: int | None = None,
        shared_encoder: bool = True,
        seed: int = 0,
        seed_data: bool = True,
        image_key: str = CarKeys.IMAGE,
        grader_key: str = CarKeys.GRADER_LABEL,
        labels_key: str = CarKeys.LABEL,
        case_key: str = CarKeys.CASE_ID,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        iteration_update: Callable[[Engine, Any], Any] | None = None,
        postprocessing: Callable | None = None,
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
        train_calibration, shared_encoder = (
            check_bool(train_calibration, "train_calibration"),
            check_bool(shared_encoder, "shared_encoder"),
        )
        amp, seed_data = check_bool(amp, "amp"), check_bool(seed_data, "seed_data")
        progress_bar = check_bool(progress_bar, "progress_bar")
        check_refinement_args(
            network, discriminator, g_optimizer, d_optimizer, f_optimizer, train_calibration, num_samples,
            generator_loss, discriminator_schedule, clip_grad_norm, sample_chunk_size,
            {"adversarial_weight": adversarial_weight, "calibration_weight": calibration_weight,
             "r1_weight": r1_weight, "calibration_ce_weight": calibration_ce_weight,
             "sharpening_weight": sharpening_weight},
            hard_samples,
        )  # fmt: skip
        device = torch.device(device)
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            iteration_update=iteration_update,
            postprocessing=postprocessing,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            handlers=None,
            amp=amp,
            event_names=event_names,
            event_to_attr=event_to_attr,
            decollate=decollate,
            to_kwargs=to_kwargs,
            amp_kwargs=amp_kwargs,
        )
        self.register_events(*AdversarialIterationEvents)
        self.network = network.to(device)
        self.calibration_net = network.calibration_net
        self.refinement_net = network.refinement_net
        self.discriminator = discriminator.to(device)
        self.g_optimizer, self.d_optimizer, self.f_optimizer = g_optimizer, d_optimizer, f_optimizer
        self.train_calibration = bool(train_calibration)
        self.num_samples = int(num_samples)
        self.adversarial_weight, self.calibration_weight = float(adversarial_weight), float(calibration_weight)
        self.r1_weight, self.calibration_ce_weight = float(r1_weight), float(calibration_ce_weight)
        self.generator_loss = generator_loss
        self.discriminator_schedule = discriminator_schedule or DiscriminatorSchedule()
        self._schedule_given = discriminator_schedule is not None
        self.ignore_index, self.num_graders = ignore_index, num_graders
        self.skip_invalid, self.clip_grad_norm, self.chunk_size = skip_invalid, clip_grad_norm, chunk_size
        self.sample_chunk_size = sample_chunk_size
        self.shared_encoder = bool(shared_encoder)
        self.hard_samples, self.sharpening_weight = hard_samples, float(sharpening_weight)
        if sharpening_target not in SHARPENING_TARGETS:
            raise ValueError(f"sharpening_target must be one of {SHARPENING_TARGETS}, got {sharpening_target!r}.")
        self.sharpening_target = sharpening_target
        self.image_key, self.grader_key, self.labels_key, self.case_key = image_key, grader_key, labels_key, case_key
        self.optim_set_to_none = optim_set_to_none
        self.calibration_loss = CalibrationLoss(
            clamp=calibration_clamp,
            estimator=calibration_estimator,
            pixel_reduction=calibration_pixel_reduction,
            direction=calibration_direction,
        )
        self.refine_ce_loss = MaskedCrossEntropyLoss(ignore_index=ignore_index, input_is_probs=True)
        f_logits = callable(getattr(self.calibration_net, "forward_logits", None))
        self.f_ce_loss = MaskedCrossEntropyLoss(ignore_index=ignore_index, input_is_probs=not f_logits)
        self.scaler = torch.amp.GradScaler("cuda") if amp and device.type == "cuda" else None
        self.noise_generator = torch.Generator(device=device)
        self.state.skipped_cases = {}
        # DDP: wrap what is trained; the sampling path goes through the wrapped G (its shared path too)
        use_ddp = bool(ddp) or (ddp is None and is_distributed())
        self._g_train: nn.Module = self.refinement_net
        if use_ddp:
            multi = self.shared_encoder and issubclass(type(self.refinement_net), MultiSampleRefiner)
            self._g_train = (
                DistributedRefiner(self.refinement_net, device, ddp_kwargs)
                if multi
                else wrap_ddp(self.refinement_net, device, ddp_kwargs)
            )
        self._d_train: nn.Module = wrap_ddp(self.discriminator, device, ddp_kwargs) if use_ddp else self.discriminator
        f_net: nn.Module = LogitsForward(self.calibration_net) if f_logits else self.calibration_net
        self._f_train: nn.Module = wrap_ddp(f_net, device, ddp_kwargs) if use_ddp and train_calibration else f_net
        self._f_gives_logits = f_logits
        if self._g_train is self.refinement_net:
            self._sampler = self.network
        else:
            self._g_train.noise_dim = self.network.noise_dim  # CARNet reads it
            self._sampler = CARNet(self.calibration_net, self._g_train, num_classes=self.network.num_classes)
        self._init_resumable(seed, seed_data)
        self.discriminator_schedule.register_logging(self)  # D's accuracy per update phase, idle-D warning
        if train_handlers is not None:
            self._register_handlers(train_handlers)
        if progress_bar:
            attach_progress_bar(self, [K.LOSS, K.LOSS_CAL, K.LOSS_D, K.D_ACCURACY])

    # --- configuration ----------------------------------------------------------------------------------------------
    def set_discriminator_schedule(self, schedule: DiscriminatorSchedule) -> None:
        """Use ``schedule`` (called by ``DiscriminatorSchedule.attach``); conflicts with a different one given to the
        constructor."""
        if not isinstance(schedule, DiscriminatorSchedule):
            raise TypeError(f"expected a DiscriminatorSchedule, got {type(schedule).__name__}.")
        if self._schedule_given and schedule is not self.discriminator_schedule:
            raise ValueError(
                "a different DiscriminatorSchedule was already given to the trainer's constructor; pass only one."
            )
        if schedule is not self.discriminator_schedule:
            self.discriminator_schedule.detach_logging(self)
        self.discriminator_schedule = schedule
        self._schedule_given = True

    def get_checkpoint_dict(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Everything a stage-2 checkpoint holds, for ``AtomicCheckpointSaver`` / ``StrictCheckpointLoader``:
        ``calibration_net``, ``refinement_net``, ``discriminator``, ``optimizer_g``, ``optimizer_d``
        (``optimizer_f`` when F is trained), ``grad_scaler`` (AMP on CUDA), ``discriminator_schedule``, ``trainer``
        (iteration, epoch, seed, RNG states), plus ``extra`` (e.g. the LR schedulers)."""
        own: dict[str, Any] = {
            "calibration_net": self.calibration_net,
            "refinement_net": self.refinement_net,
            "discriminator": self.discriminator,
            "optimizer_g": self.g_optimizer,
            "optimizer_d": self.d_optimizer,
            "optimizer_f": self.f_optimizer,
            "grad_scaler": self.scaler,
            "discriminator_schedule": self.discriminator_schedule,
            "trainer": self,
        }
        return merge_checkpoint_entries(own, extra)

    def run(self) -> None:  # type: ignore[override]
        """Train (MONAI's ``Trainer.run`` would replace the AMP grad scaler, which is part of the checkpoint).

        Raises:
            ValueError: the data loader yields no batches (an empty training split, or fewer cases than a batch
                with ``drop_last=True``).
        """
        self.check_has_batches()
        Workflow.run(self)

    # --- one iteration ----------------------------------------------------------------------------------------------
    def _iteration(self, engine: Engine, batchdata: dict[str, Any]) -> dict[str, float]:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        where = f"stage-2 iteration {engine.state.iteration}"
        net = self.calibration_net
        check = check_batch(
            batchdata,
            image_key=self.image_key,
            grader_key=self.grader_key,
            labels_key=self.labels_key if self.labels_key in batchdata else None,
            in_channels=getattr(net, "in_channels", None),
            spatial_dims=getattr(net, "spatial_dims", None),
            num_classes=self.network.num_classes,
            num_graders=self.num_graders,
            ignore_index=self.ignore_index,
            case_key=self.case_key,
            where=where,
        )
        batchdata = usable_cases(engine, batchdata, check, self.skip_invalid, where)
        if batchdata is None:
            return self._skipped_output(len(check.names))
        with self.iteration_rng(engine):
            return self._train_step(engine, batchdata)

    def _second_loss(
        self, samples: torch.Tensor, probs: torch.Tensor, y: torch.Tensor, valid: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """``(loss_cal, loss_refine_ce, second)``: the calibration loss of ``samples`` ``(B, M, K, *spatial)`` against
        F's ``probs`` (logged, and G's second loss unless ``generator_loss="refine_ce"``, when it has no graph), the
        refine cross entropy against the grader ``y`` (None with the calibration loss), and the one weighted into G's
        loss."""
        use_cal = self.generator_loss == "calibration"
        with contextlib.nullcontext() if use_cal else torch.no_grad():
            loss_cal = self.calibration_loss(samples, probs, mask=valid)
        if use_cal:
            return loss_cal, None, loss_cal
        b, m = samples.shape[:2]
        loss_refine_ce = self.refine_ce_loss(samples.reshape(b * m, *samples.shape[2:]), repeat_per_sample(y, m))
        return loss_cal, loss_refine_ce, loss_refine_ce

    def _autocast(self, device: torch.device) -> Any:
        return torch.autocast(device.type, **self.amp_kwargs) if self.amp else contextlib.nullcontext()

    def _train_step(self, engine: Engine, batch: Mapping[str, Any]) -> dict[str, float]:
        device = engine.state.device
        x = as_plain(batch[self.image_key]).to(device=device, non_blocking=self.non_blocking).float()
        y = as_plain(batch[self.grader_key]).to(device=device, non_blocking=self.non_blocking).long()
        b, k = x.shape[0], self.network.num_classes
        valid = (y != self.ignore_index) if self.ignore_index is not None else None  # (B, 1, *spatial)
        out: dict[str, Any] = {self.image_key: x, self.grader_key: y}
        engine.state.output = out

        # F: frozen, or trained jointly with its cross entropy
        loss_ce_f = None
        if self.train_calibration:
            self._f_train.train()
            with self._autocast(device):
                f_out = self._f_train(x).float()
            loss_ce_f = self.f_ce_loss(f_out, y)
            probs = (torch.softmax(f_out, dim=1) if self._f_gives_logits else f_out).detach()
        else:
            self.calibration_net.eval()
            with torch.no_grad(), self._autocast(device):
                probs = self.calibration_net(x).float()
        out[CarKeys.CALIBRATION] = probs

        # G (and F), then D (its accuracy before the update decides, with the schedule, whether it is updated)
        g = self._update_generator(engine, x, y, probs, valid, loss_ce_f)
        real_in = torch.cat([x, one_hot_label_map(y, k, valid)], dim=1)
        fake_logits = g.fake_logits.detach()
        with torch.no_grad():
            real_logits = self.discriminator(real_in).float()
        acc_real, acc_fake = discriminator_accuracies(real_logits, fake_logits)
        accuracy = all_reduce_mean(0.5 * (acc_real + acc_fake), device)
        loss_d_bce = discriminator_adversarial_loss(real_logits, fake_logits)
        update_d = self.discriminator_schedule.should_update(int(engine.state.iteration), accuracy)
        loss_d = loss_r1 = None
        if update_d:
            loss_d, loss_r1 = self._update_discriminator(engine, real_in, g.fake_inputs.detach())
        engine.state.output = as_floats(
            {
                K.LOSS: g.loss_g, K.LOSS_ADV: g.loss_adv, K.LOSS_CAL: g.loss_cal, K.LOSS_REFINE_CE: g.loss_refine_ce,
                K.LOSS_CE_F: loss_ce_f, K.LOSS_D: loss_d, K.LOSS_D_BCE: loss_d_bce, K.LOSS_R1: loss_r1,
                K.D_ACCURACY: accuracy, K.D_ACCURACY_REAL: acc_real, K.D_ACCURACY_FAKE: acc_fake,
                K.D_UPDATED: float(update_d), K.LR_G: learning_rate(self.g_optimizer),
                K.LR_D: learning_rate(self.d_optimizer), K.LR_F: learning_rate(self.f_optimizer),
                K.NUM_CASES: b, K.SKIPPED: 0,
            }
        )  # fmt: skip
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output

    # --- G's update -------------------------------------------------------------------------------------------------
    def _update_generator(
        self,
        engine: Engine,
        x: torch.Tensor,
        y: torch.Tensor,
        probs: torch.Tensor,
        valid: torch.Tensor | None,
        loss_ce_f: torch.Tensor | None,
    ) -> GeneratorUpdate:
        """G's (and a jointly trained F's) update: all ``B * M`` samples in one graph, or, with ``sample_chunk_size``
        set, two passes over chunks of samples (bounded memory, the same gradient; :mod:`~monai_car.engines.two_pass`).

        Subclasses change how G learns by overriding this one hook.

        Args:
            engine: the engine (this trainer).
            x: images ``(B, C, *spatial)``; y: one grader's labels ``(B, 1, *spatial)``.
            probs: F's detached probabilities ``(B, K, *spatial)``.
            valid: non-void mask ``(B, 1, *spatial)`` or None.
            loss_ce_f: F's cross entropy when F is trained jointly, else None.
        """
        if self.sample_chunk_size is None:
            return self._update_generator_single_pass(engine, x, y, probs, valid, loss_ce_f)
        return self._update_generator_two_pass(engine, x, y, probs, valid, loss_ce_f)

    def _update_generator_single_pass(
        self,
        engine: Engine,
        x: torch.Tensor,
        y: torch.Tensor,
        probs: torch.Tensor,
        valid: torch.Tensor | None,
        loss_ce_f: torch.Tensor | None,
    ) -> GeneratorUpdate:
        """All ``B * M`` samples of G in one graph; F's cross entropy (if any) is added before the one backward."""
        device, out = engine.state.device, engine.state.output
        self._g_train.train()
        self.noise_generator.manual_seed(self.iteration_seed(engine.state.iteration, "noise"))
        with self._autocast(device):
            samples = self._sampler.sample(
                x,
                self.num_samples,
                generator=self.noise_generator,
                chunk_size=self.chunk_size,
                calibration_probs=probs,
                share_in_training=self.shared_encoder,
            )
        samples = samples.float()  # (B, M, K, *spatial)
        hard = straight_through_hard(samples) if self.hard_samples != "none" else samples
        out[CarKeys.SAMPLES] = samples
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(AdversarialIterationEvents.GENERATOR_FORWARD_COMPLETED)

        fake_in = fake_discriminator_input(x, hard if self.hard_samples in ("all", "discriminator") else samples, valid)
        self.discriminator.train()
        with frozen_parameters(self.discriminator), self._autocast(device):
            fake_logits = self.discriminator(fake_in)  # gradients reach G only
        fake_logits = fake_logits.float()
        engine.fire_event(AdversarialIterationEvents.GENERATOR_DISCRIMINATOR_FORWARD_COMPLETED)

        loss_adv = generator_adversarial_loss(fake_logits)
        cal_in = hard if self.hard_samples in ("all", "calibration") else samples
        loss_cal, loss_refine_ce, second = self._second_loss(cal_in, probs, y, valid)
        loss_g = self.adversarial_weight * loss_adv + self.calibration_weight * second
        if self.sharpening_weight > 0:
            if self.sharpening_target == "calibrated":
                sharpening = calibrated_sharpening_loss(samples, probs, valid)
            else:
                sharpening = sharpening_loss(samples, valid)
            loss_g = loss_g + self.sharpening_weight * sharpening
        total = loss_g if loss_ce_f is None else loss_g + self.calibration_ce_weight * loss_ce_f
        out.update({K.LOSS: loss_g, K.LOSS_ADV: loss_adv, K.LOSS_CAL: loss_cal})
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        engine.fire_event(AdversarialIterationEvents.GENERATOR_LOSS_COMPLETED)

        self._zero_generator_grads()
        self._backward(total)
        self._generator_optimizer_step(engine)
        return GeneratorUpdate(fake_in, fake_logits.detach(), loss_g, loss_adv, loss_cal, loss_refine_ce)

    def _update_generator_two_pass(
        self,
        engine: Engine,
        x: torch.Tensor,
        y: torch.Tensor,
        probs: torch.Tensor,
        valid: torch.Tensor | None,
        loss_ce_f: torch.Tensor | None,
    ) -> GeneratorUpdate:
        """G's update with at most ``B * sample_chunk_size`` rows in a graph: all samples drawn without a graph, the
        gradient of the weighted second loss taken on them, then each chunk replayed with a graph (the pure algorithm:
        :func:`~monai_car.engines.two_pass.draw_samples` and :func:`~.two_pass.replay_generator_backward`).

        Same noise, losses, events and output as the single pass (see :mod:`~monai_car.engines.two_pass` for what
        "same" means under dropout and batch norm); F's cross entropy (if any) is back-propagated once, on its own;
        ``engine.state.output``'s live tensors (``samples``, the G losses) and the returned tensors carry no graph.
        """
        device, out = engine.state.device, engine.state.output
        b, m = x.shape[0], self.num_samples
        net, chunk, rows, share = self._sampler, self.sample_chunk_size, self.chunk_size, self.shared_encoder
        self._g_train.train()
        self.noise_generator.manual_seed(self.iteration_seed(engine.state.iteration, "noise"))
        noise = self.network.sample_noise(b * m, generator=self.noise_generator, device=device, dtype=x.dtype)
        noise = noise.view(b, m, -1)  # what CARNet.sample draws from the same generator

        def autocast() -> Any:
            return self._autocast(device)

        samples, states = draw_samples(net, x, probs, noise, chunk, rows, autocast, share)
        out[CarKeys.SAMPLES] = samples
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(AdversarialIterationEvents.GENERATOR_FORWARD_COMPLETED)

        # the gradient of the weighted second loss w.r.t. every sample (it may couple the M samples of an image)
        leaf = samples.detach().requires_grad_(True)
        loss_cal, loss_refine_ce, second = self._second_loss(leaf, probs, y, valid)
        (sample_grad,) = torch.autograd.grad(self.calibration_weight * second, leaf)

        self._zero_generator_grads()
        if loss_ce_f is not None:
            self._backward(self.calibration_ce_weight * loss_ce_f)
        self.discriminator.train()
        fake_logits, loss_adv = replay_generator_backward(
            net, self.discriminator, x, probs, noise, states, chunk, rows, sample_grad,
            self.adversarial_weight, valid, autocast, self._backward, share, self._generator_sync,
        )  # fmt: skip
        engine.fire_event(AdversarialIterationEvents.GENERATOR_DISCRIMINATOR_FORWARD_COMPLETED)
        loss_g = self.adversarial_weight * loss_adv + self.calibration_weight * second.detach()
        loss_cal = loss_cal.detach()
        out.update({K.LOSS: loss_g, K.LOSS_ADV: loss_adv, K.LOSS_CAL: loss_cal})
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        engine.fire_event(AdversarialIterationEvents.GENERATOR_LOSS_COMPLETED)
        self._generator_optimizer_step(engine)
        fake_in = fake_discriminator_input(x, samples, valid)
        return GeneratorUpdate(fake_in, fake_logits, loss_g, loss_adv, loss_cal, loss_refine_ce)

    # --- D's update -------------------------------------------------------------------------------------------------
    def _update_discriminator(
        self, engine: Engine, real_in: torch.Tensor, fake_in: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One D update, ``BCE(real, fake) + r1_weight * R1(real)``, in float32 (no autocast: R1's double backward is
        fragile in half precision).

        The reals ``(B, C + K, *spatial)`` and all fakes ``(B * M, C + K, *spatial)`` (detached) go through D in one
        pass (one DDP forward per backward); MONAI's ``AdversarialIterationEvents`` are fired at the matching points.

        Returns:
            the D loss and the R1 penalty (before weighting).
        """
        real_in = real_in.detach().requires_grad_(True)
        logits = self._d_train(torch.cat([real_in, fake_in], dim=0)).float()
        real_logits, fake_logits = logits[: real_in.shape[0]], logits[real_in.shape[0] :]
        engine.fire_event(AdversarialIterationEvents.DISCRIMINATOR_REALS_FORWARD_COMPLETED)
        engine.fire_event(AdversarialIterationEvents.DISCRIMINATOR_FAKES_FORWARD_COMPLETED)
        loss_r1 = r1_penalty(real_logits, real_in)
        loss_d = discriminator_adversarial_loss(real_logits, fake_logits) + self.r1_weight * loss_r1
        engine.fire_event(AdversarialIterationEvents.DISCRIMINATOR_LOSS_COMPLETED)
        self.d_optimizer.zero_grad(set_to_none=self.optim_set_to_none)
        loss_d.backward()
        engine.fire_event(AdversarialIterationEvents.DISCRIMINATOR_BACKWARD_COMPLETED)
        self._clip(self.d_optimizer, self.discriminator, scaled=False)
        self.d_optimizer.step()
        engine.fire_event(AdversarialIterationEvents.DISCRIMINATOR_MODEL_COMPLETED)
        return loss_d, loss_r1

    # --- shared pieces ----------------------------------------------------------------------------------------------
    def _zero_generator_grads(self) -> None:
        for opt in [self.g_optimizer] + ([self.f_optimizer] if self.train_calibration else []):
            opt.zero_grad(set_to_none=self.optim_set_to_none)

    def _generator_sync(self, last: bool) -> contextlib.AbstractContextManager:
        """The context of one chunk's G forward and backward in the two-pass update: under DDP all but the ``last``
        accumulate their gradients locally (``no_sync``); the last backward all-reduces the sum."""
        no_sync = getattr(self._g_train, "no_sync", None)
        return no_sync() if no_sync is not None and not last else contextlib.nullcontext()

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def _generator_optimizer_step(self, engine: Engine) -> None:
        """After G's (and F's) gradients are in: fire the backward events, clip, step, fire the model event."""
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.fire_event(AdversarialIterationEvents.GENERATOR_BACKWARD_COMPLETED)
        optimizers = [self.g_optimizer] + ([self.f_optimizer] if self.train_calibration else [])
        modules = [self.refinement_net] + ([self.calibration_net] if self.train_calibration else [])
        for opt, module in zip(optimizers, modules):
            self._clip(opt, module)
            self.scaler.step(opt) if self.scaler is not None else opt.step()
        if self.scaler is not None:
            self.scaler.update()
        engine.fire_event(AdversarialIterationEvents.GENERATOR_MODEL_COMPLETED)

    def _clip(self, optimizer: Optimizer, module: nn.Module, scaled: bool = True) -> None:
        if self.clip_grad_norm is None:
            return
        if scaled and self.scaler is not None:
            self.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(module.parameters(), self.clip_grad_norm)

    def _skipped_output(self, num_skipped: int) -> dict[str, float]:
        return as_floats({**{key: None for key in K}, K.NUM_CASES: 0, K.SKIPPED: num_skipped, K.D_UPDATED: 0})
