"""CAREvaluator: F once and G with S draws per case; GED, HM-IoU and soft-target ECE over the whole set."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from monai.engines import Evaluator
from monai.engines.utils import IterationEvents
from monai.utils import ForwardMode, IgniteInfo, min_version, optional_import
from torch.utils.data import DataLoader

from monai_car.networks import CARNet
from monai_car.utils.distributed import is_distributed
from monai_car.utils.enums import CarKeys
from monai_car.utils.rng import derive_seed
from monai_car.utils.validation import check_bool, check_non_negative_int, check_positive_int

from .metric_handlers import default_car_metrics
from .utils import as_plain, attach_progress_bar, check_batch, check_has_batches, usable_cases

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine, EventEnum
    from ignite.metrics import Metric
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")
    Metric, _ = optional_import("ignite.metrics", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Metric")
    EventEnum, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "EventEnum")

__all__ = ["CAREvaluator", "SKIPPED_BATCH_KEY", "lower_is_better"]

SKIPPED_BATCH_KEY = "skipped_batch"
"""Output key set (to the number of cases) when every case of a batch was skipped; metrics ignore such outputs."""


def lower_is_better(current_metric: float, prev_best: float) -> bool:
    """``metric_cmp_fn`` for error-like key metrics (GED): a new best when strictly lower."""
    return current_metric < prev_best


class CAREvaluator(Evaluator):
    """Evaluate a :class:`~monai_car.networks.CARNet` case by case: F once, G with ``num_samples`` draws.

    Per iteration the output (``engine.state.output``, batch-first, what ``SampleSetWriter`` reads) is::

        {"image": (B, C, *spatial) (the loaded MetaTensor, affine kept), "label": (B, R, *spatial) (when present),
         "samples": (B, S, K, *spatial) G's probabilities, "calibration_probs": (B, K, *spatial) F's probabilities,
         "case_id": [B names]}

    Noise is drawn per case from ``derive_seed(seed, case_id)``, so a case gets the same samples whatever the batch
    size, order, device or number of DDP ranks, and every evaluation run repeats exactly.

    Metrics (``compute_metrics=True`` and no ``key_val_metric`` given; binary ``K = 2`` as LIDC), accumulated over the
    WHOLE data set (all ranks) and reduced at the end of the run into ``engine.state.metrics``:

    - ``ged`` (the key metric; lower is better, so model selection uses ``lower_is_better`` and a checkpoint saver
      needs ``key_metric_negative_sign=True``): squared generalized energy distance with ``S`` samples;
    - ``ged_<n>`` for each ``n`` in ``ged_sample_counts``: GED from the first ``n`` of the ``S`` samples (e.g. GED(16)
      and GED(100) from one 100-sample pass);
    - ``hm_iou``: Hungarian-matched IoU;
    - ``ece``: soft-target ECE (fraction, not percent) of the sample mean, all pixels pooled, ``ece_bins`` bins;
      ``ece_calibration``: the same for F's probabilities. Reliability tables go to
      ``engine.state.reliability_tables``, per-image values to ``engine.state.metric_details``;
    - the fidelity report of the hard samples (:class:`~monai_car.metrics.FidelityMetric`): ``sample_sharpness``,
      ``presence_ece`` (+ ``presence_ece_floor``, the noise floor of a perfect model with these graders),
      ``hard_pixel_ece``, ``f_fit``, with the ``presence`` and ``hard_pixel`` reliability tables.

    Bad input: NaN/inf images, a wrong number of graders, labels off the image grid, or a case without labels while
    metrics are computed are an error naming the case; with ``skip_invalid=True`` such cases are left out of the outputs
    and the metrics and listed in ``engine.state.skipped_cases``.

    Args:
        device: the device.
        val_data_loader: batches are dicts with ``image_key``, ``labels_key`` (for metrics) and ``case_key``.
        network: the CARNet (moved to ``device``).
        num_samples: ``S`` draws of G per case (16 by default, 100 for the final numbers).
        seed: the seed of the noise.
        chunk_size: the most rows of ``B * S`` per G pass (bounds memory for S = 100).
        compute_metrics: attach the default metrics (and require labels).
        ged_sample_counts: further GEDs from the first ``n`` samples.
        ece_bins: ECE bins.
        fidelity_num_samples: the first ``n`` samples make the fidelity report (None: all ``S``).
        num_graders: the required number of graders ``R`` (None: any ``R >= 1``).
        skip_invalid: leave out and report invalid cases instead of raising.
        image_key, labels_key, case_key: batch keys.
        label_classes: ``K`` when ``labels_key`` holds ONE integer label map per case ``(B, 1, *spatial)`` with classes
            in ``[0, K)`` (or ``ignore_index``), as the known-distribution data sets (Cityscapes) have, instead of the
            stacked binary graders; checked as such.
        ignore_index: the void label allowed in those label maps.
        passthrough_keys: batch entries copied into the output as they are (e.g. ``"blackbox"`` for the
            calibration offsets), when present.
        key_val_metric, additional_metrics: replace the default metrics (e.g. mode-weighted GED for Cityscapes, see
            :func:`~monai_car.engines.known_distribution_metrics`).
        metric_cmp_fn: comparison of the key metric (default :func:`lower_is_better`).
        progress_bar: show progress (rank 0): ignite's progress bar on a terminal, else a log line every 50
            iterations and at each epoch's end (:func:`~monai_car.engines.utils.attach_progress_bar`).
        kwargs: the remaining arguments of :class:`monai.engines.Evaluator` (``val_handlers``, ``amp``,
            ``amp_kwargs``, ``mode``, ``decollate`` (default False: the output stays batch-first) ...).
    """

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader: Iterable | DataLoader,
        network: CARNet,
        num_samples: int = 16,
        seed: int = 0,
        chunk_size: int | None = None,
        compute_metrics: bool = True,
        ged_sample_counts: Sequence[int] = (),
        ece_bins: int = 10,
        fidelity_num_samples: int | None = None,
        num_graders: int | None = None,
        skip_invalid: bool = False,
        image_key: str = CarKeys.IMAGE,
        labels_key: str = CarKeys.LABEL,
        case_key: str = CarKeys.CASE_ID,
        label_classes: int | None = None,
        ignore_index: int | None = None,
        passthrough_keys: Sequence[str] = (),
        epoch_length: int | None = None,
        non_blocking: bool = False,
        iteration_update: Callable[[Engine, Any], Any] | None = None,
        postprocessing: Callable | None = None,
        key_val_metric: dict[str, Metric] | None = None,
        additional_metrics: dict[str, Metric] | None = None,
        metric_cmp_fn: Callable = lower_is_better,
        val_handlers: Sequence | None = None,
        amp: bool = False,
        mode: ForwardMode | str = ForwardMode.EVAL,
        event_names: list[str | EventEnum | type[EventEnum]] | None = None,
        event_to_attr: dict | None = None,
        decollate: bool = False,
        to_kwargs: dict | None = None,
        amp_kwargs: dict | None = None,
        progress_bar: bool = False,
    ) -> None:
        amp, progress_bar = check_bool(amp, "amp"), check_bool(progress_bar, "progress_bar")
        if not isinstance(network, CARNet):
            raise TypeError(f"network must be a monai_car.networks.CARNet, got {type(network).__name__}.")
        check_positive_int(num_samples, "num_samples")
        check_non_negative_int(seed, "seed")
        if label_classes is not None:
            check_positive_int(label_classes, "label_classes")
        if isinstance(passthrough_keys, str):
            raise ValueError(f"passthrough_keys must be a sequence of keys, got the string {passthrough_keys!r}.")
        counts = [int(n) for n in ged_sample_counts]
        if any(n < 1 or n > num_samples for n in counts):
            raise ValueError(f"ged_sample_counts {counts} must lie in [1, num_samples={num_samples}].")
        if compute_metrics and key_val_metric is None:
            key_val_metric, defaults = default_car_metrics(network.num_classes, counts, ece_bins, fidelity_num_samples)
            additional_metrics = {**defaults, **(additional_metrics or {})}
        super().__init__(
            device=device,
            val_data_loader=val_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            iteration_update=iteration_update,
            postprocessing=postprocessing,
            key_val_metric=key_val_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            val_handlers=None,
            amp=amp,
            mode=mode,
            event_names=event_names,
            event_to_attr=event_to_attr,
            decollate=decollate,
            to_kwargs=to_kwargs,
            amp_kwargs=amp_kwargs,
        )
        self.network = network.to(self.state.device)
        self.num_samples, self.seed, self.chunk_size = num_samples, seed, chunk_size
        self.compute_metrics, self.num_graders, self.skip_invalid = compute_metrics, num_graders, skip_invalid
        self.image_key, self.labels_key, self.case_key = image_key, labels_key, case_key
        self.label_classes, self.ignore_index = label_classes, ignore_index
        self.passthrough_keys = [str(k) for k in passthrough_keys]
        self.state.skipped_cases = {}
        self.state.reliability_tables = {}
        self.add_event_handler(Events.STARTED, self._sync_network)
        if val_handlers is not None:
            self._register_handlers(val_handlers)
        if progress_bar:
            attach_progress_bar(self)

    def run(self, global_epoch: int = 1) -> None:  # type: ignore[override]
        """Evaluate (``global_epoch``: the trainer's epoch when validating during training).

        Raises:
            ValueError: the data loader yields no batches: MONAI's evaluator would warn and return without metrics,
                so no best model or report would be written and an earlier run's would look new.
        """
        check_has_batches(
            self,
            "the evaluation data loader",
            "Give it at least one case: the validation or test split it reads must not be empty.",
        )
        super().run(global_epoch)

    def _sync_network(self, engine: Engine) -> None:
        """Under DDP, give every rank rank 0's weights and buffers (DDP keeps parameters equal, but batch-norm
        running statistics drift apart per rank), so that all ranks evaluate the model that rank 0 checkpoints."""
        if is_distributed():
            for tensor in self.network.state_dict().values():
                dist.broadcast(tensor, src=0)

    def case_noise(self, case_ids: Sequence[str] | None, batch_size: int, iteration: int) -> torch.Tensor:
        """Noise ``(B, S, noise_dim)`` seeded per case id (per iteration and position when ids are missing)."""
        rows = []
        for i in range(batch_size):
            if case_ids is not None:
                seed = derive_seed(self.seed, "case-noise", str(case_ids[i]))
            else:
                seed = derive_seed(self.seed, "batch-noise", iteration, i)
            gen = torch.Generator().manual_seed(seed)
            rows.append(torch.randn((self.num_samples, self.network.noise_dim), generator=gen))
        return torch.stack(rows).to(self.state.device)

    def _iteration(self, engine: Engine, batchdata: dict[str, Any]) -> dict[str, Any]:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        where = f"evaluation iteration {engine.state.iteration}"
        net = self.network.calibration_net
        label_map = self.label_classes is not None
        check_map = label_map and (self.compute_metrics or batchdata.get(self.labels_key) is not None)
        check = check_batch(
            batchdata,
            image_key=self.image_key,
            grader_key=self.labels_key if check_map else None,
            labels_key=None if label_map else self.labels_key,
            require_labels=self.compute_metrics,
            in_channels=getattr(net, "in_channels", None),
            spatial_dims=getattr(net, "spatial_dims", None),
            num_classes=self.label_classes,
            num_graders=self.num_graders,
            ignore_index=self.ignore_index,
            case_key=self.case_key,
            where=where,
        )
        batchdata = usable_cases(engine, batchdata, check, self.skip_invalid, where)
        if batchdata is None:
            engine.state.output = {SKIPPED_BATCH_KEY: len(check.names)}
            return engine.state.output
        device = engine.state.device
        image = batchdata[self.image_key].to(device=device, non_blocking=self.non_blocking)
        x = as_plain(image).float()
        ids = batchdata.get(self.case_key)
        ids = [str(c) for c in ids] if isinstance(ids, (list, tuple)) and len(ids) == x.shape[0] else None
        noise = self.case_noise(ids, x.shape[0], int(engine.state.iteration))
        autocast = torch.autocast(device.type, **self.amp_kwargs) if self.amp else contextlib.nullcontext()
        with engine.mode(self.network), autocast:
            probs = self.network(x).float()
            samples = self.network.sample(
                x, self.num_samples, calibration_probs=probs, noise=noise, chunk_size=self.chunk_size
            ).float()
        output: dict[str, Any] = {
            CarKeys.IMAGE.value: image,
            CarKeys.SAMPLES.value: samples,
            CarKeys.CALIBRATION.value: probs,
            CarKeys.CASE_ID.value: ids if ids is not None else list(check.names[i] for i in check.valid_indices),
        }
        labels = batchdata.get(self.labels_key)
        if isinstance(labels, torch.Tensor):
            output[CarKeys.LABEL.value] = labels.to(device=device, non_blocking=self.non_blocking)
        for key in self.passthrough_keys:
            value = batchdata.get(key)
            if value is not None:
                output[key] = value.to(device=device) if isinstance(value, torch.Tensor) else value
        engine.state.output = output
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
