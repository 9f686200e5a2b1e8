"""A one-picture summary of a case: image, graders, G's samples, their mean, F, and the entropy map."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from matplotlib.figure import Figure
from nibabel import orientations

from monai_car.data.sample_set import SampleSet, hard_labels
from monai_car.utils.uncertainty import entropy, foreground_probability
from monai_car.utils.validation import as_numpy, check_non_negative_int

from .utils import figure_to_array, new_figure, save_figure_atomic

__all__ = ["montage_figure", "render_montage", "sample_set_figure", "save_montage", "save_sample_set_montage"]

_RED = np.array([1.0, 0.15, 0.1])


def _np(x: object, name: str) -> np.ndarray | None:
    if x is None:
        return None
    x = as_numpy(x.float() if isinstance(x, torch.Tensor) else x, name).astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or inf values; the montage would be misleading.")
    return x


def _pick_slice(spatial_dims: int, slice_index: int | None, *fg_maps: np.ndarray | None) -> int | None:
    """For 3D maps ``(H, W, D)``: the given slice, else the one with the most foreground, else the central one."""
    if spatial_dims == 2:
        return None
    depth = next(m.shape[-1] for m in fg_maps if m is not None)
    if slice_index is not None:
        if not -depth <= slice_index < depth:
            raise ValueError(f"slice_index {slice_index} is out of range for depth {depth}.")
        return slice_index % depth
    for m in fg_maps:
        if m is not None and m.sum() > 0:
            return int(m.reshape(-1, depth).sum(axis=0).argmax())
    return depth // 2


def _overlay(gray: np.ndarray, mask: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    m = np.clip(mask, 0.0, 1.0)[..., None] * alpha
    return rgb * (1.0 - m) + _RED * m


def _ras_transform(affine: object, spatial_dims: int) -> np.ndarray | None:
    """The nibabel orientation transform from the arrays' axes to RAS, or ``None`` when it cannot be applied.

    ``None`` for a 2D slice that is not axial (its slice axis would not stay last): such panels are shown as stored.
    """
    a = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.shape == (spatial_dims + 1, spatial_dims + 1) and spatial_dims == 2:
        a = np.array([[a[0, 0], a[0, 1], 0, a[0, 2]], [a[1, 0], a[1, 1], 0, a[1, 2]], [0, 0, 1, 0], [0, 0, 0, 1]])
    if a.shape != (4, 4) or not np.isfinite(a).all():
        raise ValueError(f"affine must be a 4x4 (or 3x3 for 2D) matrix, got shape {a.shape}.")
    ornt = orientations.ornt_transform(orientations.io_orientation(a), orientations.axcodes2ornt("RAS"))
    if spatial_dims == 2 and ornt[2, 0] != 2:
        return None
    return ornt


def _to_ras(x: np.ndarray | None, lead: int, ornt: np.ndarray | None, spatial_dims: int) -> np.ndarray | None:
    """Permute/flip the spatial axes of ``x`` (``lead`` leading non-spatial axes) to RAS (no resampling)."""
    if x is None or ornt is None:
        return x
    y = np.moveaxis(x, list(range(lead)), list(range(x.ndim - lead, x.ndim)))  # spatial axes first
    if spatial_dims == 2:
        y = y[:, :, None]
    y = orientations.apply_orientation(y, ornt)
    if spatial_dims == 2:
        y = y[:, :, 0]
    return np.ascontiguousarray(np.moveaxis(y, list(range(y.ndim - lead, y.ndim)), list(range(lead))))


def _normalise(image: np.ndarray) -> np.ndarray:
    lo, hi = float(image.min()), float(image.max())
    return np.zeros_like(image) if hi <= lo else (image - lo) / (hi - lo)


def montage_figure(
    image: torch.Tensor | np.ndarray,
    samples: torch.Tensor | np.ndarray | None = None,
    calibration_probs: torch.Tensor | np.ndarray | None = None,
    labels: torch.Tensor | np.ndarray | None = None,
    num_samples: int = 8,
    slice_index: int | None = None,
    title: str | None = None,
    view_size: int | None = None,
    affine: torch.Tensor | np.ndarray | None = None,
    panel_size: float = 1.7,
    dpi: int = 100,
) -> Figure:
    """Montage of one case (no batch dimension).

    Top row: the image, each grader's mask over it, F's foreground probability, the mean of G's samples (foreground)
    and the entropy of F (or, without F, of the sample mean), in nats. Bottom row: the first ``num_samples`` of G's
    samples (argmax label maps) over the image. For 3D inputs ``(*, H, W, D)`` one axial slice is shown:
    ``slice_index``, else the slice with the most foreground (graders, then sample mean, then F), else the central
    one. Foreground is ``1 - p[background]`` (``p`` itself with one channel).

    Orientation: without ``affine`` the panels show the arrays as stored (first spatial axis down the rows). With the
    voxel-to-world ``affine`` (e.g. ``image.affine`` of a ``MetaTensor``), the arrays are first permuted/flipped to
    RAS (no resampling) and shown in the radiological convention: anterior up, the patient's right on the left of
    the panel, axial slices (a 2D slice that is not axial is shown as stored).

    Args:
        image: ``(C, *spatial)`` or ``(*spatial)``; channel 0 is shown, min-max scaled.
        samples: ``(S, K, *spatial)`` probabilities of G's samples.
        calibration_probs: ``(K, *spatial)`` F's probabilities.
        labels: ``(R, *spatial)`` binary grader masks.
        num_samples: samples shown (at most ``S``).
        slice_index: the slice of 3D inputs (last axis).
        title: figure title (e.g. the case id).
        view_size: show only the central ``view_size x view_size`` pixels of each panel (a zoom on the lesion of
            lesion-centred crops); ``None`` shows everything.
        affine: the arrays' voxel-to-world affine, for the radiological display (see above).
        panel_size: inches per panel.
        dpi: resolution.

    Returns:
        a matplotlib ``Figure`` (Agg canvas).
    """
    img = _np(image, "image")
    smp, cal, lab = _np(samples, "samples"), _np(calibration_probs, "calibration_probs"), _np(labels, "labels")
    if img is None or img.ndim < 2:
        raise ValueError(f"image must be (C, *spatial) or (*spatial), got {getattr(img, 'shape', None)}.")
    if smp is None and cal is None and lab is None:
        raise ValueError("give at least one of samples, calibration_probs or labels to show.")
    if cal is not None:
        spatial = cal.shape[1:]
    elif lab is not None:
        spatial = lab.shape[1:]
    else:
        spatial = smp.shape[2:]
    if smp is not None and (smp.ndim < 4 or smp.shape[2:] != spatial):
        raise ValueError(f"samples must be (S, K, *spatial) with spatial {spatial}, got {smp.shape}.")
    for x, n in ((cal, "calibration_probs"), (lab, "labels")):
        if x is not None and x.shape[1:] != spatial:
            raise ValueError(f"{n} must be (N, *spatial) with spatial {spatial}, got {x.shape}.")
    if len(spatial) not in (2, 3):
        raise ValueError(f"only 2D or 3D cases can be shown, got spatial shape {spatial}.")
    if img.shape[-len(spatial) :] != spatial or img.ndim not in (len(spatial), len(spatial) + 1):
        raise ValueError(f"image {img.shape} does not match the maps' spatial shape {spatial}.")
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}.")
    img = img if img.ndim == len(spatial) else img[0]
    mean_fg = None if smp is None else foreground_probability(torch.from_numpy(smp.mean(axis=0)), dim=0).numpy()
    cal_fg = None if cal is None else foreground_probability(torch.from_numpy(cal), dim=0).numpy()
    if cal is not None:
        ent, ent_name, k = entropy(torch.from_numpy(cal), dim=0).numpy(), "entropy of F", cal.shape[0]
    elif smp is not None:
        ent, ent_name, k = entropy(torch.from_numpy(smp.mean(axis=0)), dim=0).numpy(), "entropy of mean", smp.shape[1]
    else:
        ent, ent_name, k = None, "", 2
    hard = None if smp is None else hard_labels(smp)[:num_samples]
    maps = _CaseMaps(img, lab, cal_fg, mean_fg, ent, ent_name, k, hard)
    return _draw(maps, affine, slice_index, title, view_size, panel_size, dpi)


def sample_set_figure(
    sample_set: SampleSet,
    num_samples: int = 8,
    slice_index: int | None = None,
    title: str | None = None,
    view_size: int | None = None,
    panel_size: float = 1.7,
    dpi: int = 100,
) -> Figure:
    """:func:`montage_figure` of a :class:`~monai_car.data.SampleSet`, from the maps it already holds.

    The title defaults to the case id; the display is radiological unless the sample set's affine is the identity
    placeholder (no geometry was known), then the arrays are shown as stored.
    """
    if not isinstance(sample_set, SampleSet):
        raise TypeError(f"sample_set must be a SampleSet, got {type(sample_set).__name__}.")
    num_samples = check_non_negative_int(num_samples, "num_samples")
    ss = sample_set
    maps = _CaseMaps(
        ss.image[0], ss.labels, ss.calibration_foreground, ss.mean_foreground, ss.uncertainty["entropy_calibration"],
        "entropy of F", ss.num_classes, ss.hard_labels[:num_samples],
    )  # fmt: skip
    affine = None if ss.affine_source == "identity" else ss.affine
    return _draw(maps, affine, slice_index, ss.case_id if title is None else title, view_size, panel_size, dpi)


def save_sample_set_montage(path: str | Path, sample_set: SampleSet, **kwargs: Any) -> Path:
    """Draw :func:`sample_set_figure` (same keyword arguments) and write it to ``path`` (PNG) atomically."""
    return save_figure_atomic(sample_set_figure(sample_set, **kwargs), path)


class _CaseMaps(NamedTuple):
    """What a montage shows, before orientation and slicing; ``hard`` are label maps (foreground is ``> 0``)."""

    image: np.ndarray  # (*spatial)
    labels: np.ndarray | None  # (R, *spatial)
    calibration_foreground: np.ndarray | None  # (*spatial)
    mean_foreground: np.ndarray | None  # (*spatial)
    entropy: np.ndarray | None  # (*spatial)
    entropy_name: str
    num_classes: int
    hard: np.ndarray | None  # (S, *spatial)


def _draw(
    maps: _CaseMaps,
    affine: object | None,
    slice_index: int | None,
    title: str | None,
    view_size: int | None,
    panel_size: float,
    dpi: int,
) -> Figure:
    if view_size is not None and view_size < 1:
        raise ValueError(f"view_size must be a positive int or None, got {view_size}.")
    nd = maps.image.ndim
    ornt = None if affine is None else _ras_transform(affine, nd)
    img, lab = _to_ras(maps.image, 0, ornt, nd), _to_ras(maps.labels, 1, ornt, nd)
    cal_fg, mean_fg = _to_ras(maps.calibration_foreground, 0, ornt, nd), _to_ras(maps.mean_foreground, 0, ornt, nd)
    ent = _to_ras(maps.entropy, 0, ornt, nd)
    hard = None if maps.hard is None else (_to_ras(maps.hard, 1, ornt, nd) > 0).astype(np.float32)
    z = _pick_slice(nd, slice_index, None if lab is None else lab.max(axis=0), mean_fg, cal_fg)

    def sl(x: np.ndarray | None) -> np.ndarray | None:
        if x is None:
            return None
        x = x if z is None else x[..., z]
        if ornt is not None:
            x = x[::-1, ::-1].T  # RAS (x, y) -> rows anterior to posterior, columns patient's right to left
        if view_size is None:
            return x
        h0, w0 = (max((x.shape[0] - view_size) // 2, 0), max((x.shape[1] - view_size) // 2, 0))
        return x[h0 : h0 + view_size, w0 : w0 + view_size]

    gray = _normalise(sl(img))
    top: list[tuple[str, np.ndarray, dict]] = [("image", gray, {"cmap": "gray"})]
    if lab is not None:
        top += [(f"grader {r}", _overlay(gray, sl(lab[r])), {}) for r in range(lab.shape[0])]
    if cal_fg is not None:
        top.append(("F foreground", sl(cal_fg), {"cmap": "viridis", "vmin": 0.0, "vmax": 1.0}))
    if mean_fg is not None:
        top.append(("sample mean", sl(mean_fg), {"cmap": "viridis", "vmin": 0.0, "vmax": 1.0}))
    if ent is not None:
        vmax = math.log(max(maps.num_classes, 2))
        top.append((maps.entropy_name, sl(ent), {"cmap": "magma", "vmin": 0.0, "vmax": vmax}))
    bottom = [] if hard is None else [(f"sample {s}", _overlay(gray, sl(h)), {}) for s, h in enumerate(hard)]

    ncols = max(len(top), len(bottom), 1)
    nrows = 2 if bottom else 1
    fig = new_figure(panel_size * ncols, panel_size * nrows + (0.35 if title else 0.0), dpi=dpi)
    for row, panels in enumerate([top, bottom][:nrows]):
        for col in range(ncols):
            ax = fig.add_subplot(nrows, ncols, row * ncols + col + 1)
            ax.set_axis_off()
            if col < len(panels):
                name, data, kwargs = panels[col]
                ax.imshow(data, interpolation="nearest", **kwargs)
                ax.set_title(name, fontsize=8)
    if title:
        fig.suptitle(title + ("" if z is None else f" (slice {z})"), fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.86 if title else 0.92, wspace=0.04, hspace=0.15)
    return fig


def save_montage(path: str | Path, image: torch.Tensor | np.ndarray, **kwargs) -> Path:
    """Draw :func:`montage_figure` (same arguments) and write it to ``path`` (PNG) atomically."""
    fig = montage_figure(image, **kwargs)
    return save_figure_atomic(fig, path)


def render_montage(image: torch.Tensor | np.ndarray, **kwargs) -> np.ndarray:
    """Draw :func:`montage_figure` (same arguments) into an ``(H, W, 3)`` uint8 RGB array, e.g. for TensorBoard::

    writer.add_image("montage", render_montage(img, samples=s, calibration_probs=p), step, dataformats="HWC")
    """
    return figure_to_array(montage_figure(image, **kwargs))
