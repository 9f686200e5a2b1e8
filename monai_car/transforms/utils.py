"""Helpers shared by the monai-car transforms: case names in messages and the "skip this case" mark."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch

from monai_car.utils.enums import CarKeys

__all__ = ["SKIP_REASON_KEY", "case_name", "mark_invalid", "skip_reason", "check_on_error", "non_binary_values"]

SKIP_REASON_KEY = "skip_reason"
"""Key of the reason a case must be skipped, written by the transforms run with ``on_error="skip"``.

``""`` (or absent) means the case is valid; a non-empty string names the case and says what is wrong with it.
"""

_ON_ERROR = ("raise", "skip")


def check_on_error(on_error: str) -> str:
    """Validate an ``on_error`` argument (``"raise"`` or ``"skip"``)."""
    if on_error not in _ON_ERROR:
        raise ValueError(f"on_error must be one of {_ON_ERROR}, got {on_error!r}.")
    return on_error


def case_name(data: Mapping) -> str:
    """A name for the case in messages: its ``case_id``, else its image file, else ``"<unnamed case>"``."""
    if data.get(CarKeys.CASE_ID):
        return str(data[CarKeys.CASE_ID])
    image = data.get(CarKeys.IMAGE)
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    meta = getattr(image, "meta", None)
    if isinstance(meta, Mapping) and meta.get("filename_or_obj"):
        return str(meta["filename_or_obj"])
    return "<unnamed case>"


def skip_reason(data: Mapping) -> str:
    """The reason the case is marked to be skipped, ``""`` when it is not marked."""
    reason = data.get(SKIP_REASON_KEY, "")
    return reason if isinstance(reason, str) else str(reason)


def mark_invalid(data: dict, reason: str) -> dict:
    """Append ``reason`` to the case's :data:`SKIP_REASON_KEY` (in place) and return ``data``."""
    if not reason:
        raise ValueError("mark_invalid needs a non-empty reason.")
    previous = skip_reason(data)
    data[SKIP_REASON_KEY] = f"{previous}; {reason}" if previous else reason
    return data


def non_binary_values(x: torch.Tensor | np.ndarray, limit: int = 3) -> list[float]:
    """Up to ``limit`` distinct values of ``x`` other than 0 and 1 (``[]`` for a binary mask)."""
    t = torch.as_tensor(np.asarray(x)) if isinstance(x, np.ndarray) else x
    if t.dtype == torch.bool:
        return []
    bad = t[(t != 0) & (t != 1)]
    if bad.numel() == 0:
        return []
    return [float(v) for v in torch.unique(bad.detach().flatten().cpu())[:limit]]
