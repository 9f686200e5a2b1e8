"""Finding and reporting the cases of a datalist that cannot be used, before training or evaluation."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from monai.transforms import Compose

from monai_car.transforms import get_load_transforms, skip_reason
from monai_car.transforms.utils import case_name

__all__ = ["split_valid_cases"]

logger = logging.getLogger(__name__)


def split_valid_cases(
    data: Sequence[dict],
    transform: Callable[[dict], dict] | None = None,
    spatial_dims: int = 2,
    num_graders: int | None = 4,
    with_labels: bool = True,
) -> tuple[list[dict], list[dict]]:
    """Load and check every case once; return the usable ones and a report of the others.

    This is the "skip and report" path: each case goes through a load-and-check chain run with
    ``on_error="skip"`` (by default :func:`~monai_car.transforms.get_load_transforms`), which marks a bad case
    (NaN/inf image, wrong number of graders, non-binary or wrong-shape masks, missing labels, unreadable files)
    instead of raising. The usable cases are returned *as given* (paths, not loaded arrays), to be loaded again by
    the training/evaluation chain, which stays strict (``on_error="raise"``).

    Args:
        data: datalist entries, e.g. from :func:`~monai_car.data.load_car_datalist`.
        transform: a chain that marks bad cases with :data:`~monai_car.transforms.SKIP_REASON_KEY`; default
            ``Compose(get_load_transforms(spatial_dims, num_graders, with_labels, on_error="skip"))``.
        spatial_dims, num_graders, with_labels: arguments of the default chain.

    Returns:
        ``(valid, skipped)``: the valid entries, and ``{"case_id", "reason"}`` for each skipped one (also logged as
        a warning).
    """
    if isinstance(data, (str, bytes, dict)) or not isinstance(data, Sequence):
        raise TypeError(f"data must be a list of datalist entries (dicts), got {type(data).__name__}.")
    if transform is None:
        transform = Compose(get_load_transforms(spatial_dims, num_graders, with_labels, on_error="skip"))
    elif not callable(transform):
        raise TypeError(f"transform must be callable, got {type(transform).__name__}.")
    valid, skipped = [], []
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise TypeError(f"data[{i}] must be a dict, got {type(item).__name__}.")
        out = transform(dict(item))
        reason = skip_reason(out) if isinstance(out, dict) else ""
        if reason:
            skipped.append({"case_id": case_name(item), "reason": reason})
            logger.warning("skipping case %s: %s", case_name(item), reason)
        else:
            valid.append(item)
    if skipped:
        logger.warning("skipped %d of %d cases (see the reasons above).", len(skipped), len(data))
    return valid, skipped
