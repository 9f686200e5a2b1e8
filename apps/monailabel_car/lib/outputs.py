"""What the ``car`` task returns: per-lesion channels on the CT's voxel grid, lesion statistics, a ``.seg.nrrd`` file.

One lesion's :class:`~monai_car.data.SampleSet` (on its slab) gives ``2 + S + 1`` channels (:func:`lesion_channels`):

- ``consensus``: the mean of the S samples, foreground where its foreground probability is >= 0.5;
- ``sample_01`` .. ``sample_S``: the S outlines drawn by G (hard label maps);
- ``entropy_mnats``: the entropy of the samples' mean (predictive uncertainty), in milli-nats (value / 1000 = nats);
- ``mutual_information_mnats``: the mutual information between the label and G's noise (the part of the entropy on
  which the outlines disagree), in milli-nats.

The channels of every lesion are pasted into one array on the CT's own voxel grid (:func:`paste_max`, the maximum
where slabs overlap), cropped to the lesions' bounding box (:func:`lesion_box`) unless the full grid is asked for, and
written as a Slicer segmentation file (:func:`write_seg_nrrd`).
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from monai_car.data.sample_set import SampleSet
from monai_car.utils.atomic import atomic_file

__all__ = [
    "CHANNEL_SCALE",
    "UNCERTAINTY_CHANNELS",
    "channel_colors",
    "channel_names",
    "lesion_box",
    "lesion_channels",
    "lesion_statistics",
    "paste_max",
    "write_seg_nrrd",
]

CHANNEL_SCALE = 1000
"""Uncertainty channels hold ``round(value_in_nats * CHANNEL_SCALE)`` (milli-nats)."""

UNCERTAINTY_CHANNELS = ("entropy_mnats", "mutual_information_mnats")
_MAX_UINT16 = np.iinfo(np.uint16).max
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
_HALF_TOLERANCE = 1e-6  # voxel coordinates within this of a half are rounded up


def channel_names(num_samples: int) -> list[str]:
    """The channel names for ``num_samples`` samples: ``consensus``, ``sample_01`` .., then the uncertainty maps."""
    if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}.")
    width = max(2, len(str(int(num_samples))))
    return ["consensus", *(f"sample_{k:0{width}d}" for k in range(1, int(num_samples) + 1)), *UNCERTAINTY_CHANNELS]


def channel_colors(num_samples: int) -> list[tuple[float, float, float]]:
    """Display colours (RGB in [0, 1]) for :func:`channel_names`: consensus yellow, samples a cycle of hues."""
    names = channel_names(num_samples)
    hues = np.linspace(0.0, 1.0, int(num_samples), endpoint=False)
    samples = [tuple(round(c, 3) for c in colorsys.hsv_to_rgb(float(h), 0.55, 0.95)) for h in hues]
    return [(1.0, 0.85, 0.0), *samples, (0.6, 0.6, 0.6), (0.9, 0.2, 0.9)][: len(names)]


def _scaled(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values * CHANNEL_SCALE), 0, _MAX_UINT16).astype(np.uint16)


def lesion_channels(sample_set: SampleSet) -> np.ndarray:
    """One lesion's channels on its slab, ``(2 + S + 1, H, W, Z)`` uint16, in the order of :func:`channel_names`.

    Args:
        sample_set: the lesion's sample set (3D: samples ``(S, K, H, W, Z)``).
    """
    if not isinstance(sample_set, SampleSet) or len(sample_set.spatial_shape) != 3:
        raise ValueError("sample_set must be a 3D SampleSet (samples (S, K, H, W, Z)).")
    consensus = (sample_set.mean_foreground >= 0.5).astype(np.uint16)[None]
    samples = (sample_set.hard_labels > 0).astype(np.uint16)
    entropy = _scaled(sample_set.uncertainty["entropy_sample_mean"])[None]
    mutual_information = _scaled(sample_set.uncertainty["mutual_information"])[None]
    return np.concatenate([consensus, samples, entropy, mutual_information])


def lesion_statistics(sample_set: SampleSet) -> dict:
    """One lesion's numbers for the result JSON, from its samples on the slab.

    - ``presence_frequency``: the fraction of the S samples that draw any lesion voxel;
    - ``volume_mm3``: the distribution of the samples' lesion volumes (``mean``, ``std``, ``p05``, ``p95``);
    - ``mean_entropy_nats`` / ``mean_mutual_information_nats``: the means of the entropy of the samples' mean and of
      the mutual information over the lesion region, the voxels that at least one sample draws (0 when none does);
    - ``mean_calibration_entropy_nats``: F's entropy over the same region (the bundle's ``summary.csv`` reports F's
      entropy over this region plus F's foreground);
    - ``region_voxels``, ``consensus_volume_mm3``.

    Args:
        sample_set: the lesion's sample set.
    """
    if not isinstance(sample_set, SampleSet):
        raise TypeError(f"sample_set must be a SampleSet, got {type(sample_set).__name__}.")
    hard = sample_set.hard_labels > 0  # (S, *spatial)
    voxel_mm3 = sample_set.voxel_volume
    volumes = hard.reshape(hard.shape[0], -1).sum(axis=1) * voxel_mm3
    region = hard.any(axis=0)

    def region_mean(values: np.ndarray) -> float:
        return float(values[region].mean()) if region.any() else 0.0

    return {
        "presence_frequency": float(hard.reshape(hard.shape[0], -1).any(axis=1).mean()),
        "volume_mm3": {
            "mean": float(volumes.mean()),
            "std": float(volumes.std()),
            "p05": float(np.percentile(volumes, 5)),
            "p95": float(np.percentile(volumes, 95)),
        },
        "consensus_volume_mm3": float((sample_set.mean_foreground >= 0.5).sum() * voxel_mm3),
        "mean_entropy_nats": region_mean(sample_set.uncertainty["entropy_sample_mean"]),
        "mean_mutual_information_nats": region_mean(sample_set.uncertainty["mutual_information"]),
        "mean_calibration_entropy_nats": region_mean(sample_set.uncertainty["entropy_calibration"]),
        "region_voxels": int(region.sum()),
        "num_samples": sample_set.num_samples,
    }


def _check_affine(affine: object, name: str) -> np.ndarray:
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.isfinite(a).all() or abs(np.linalg.det(a[:3, :3])) < 1e-12:
        raise ValueError(f"{name} must be a finite, invertible 4x4 affine, got {a.tolist()}.")
    return a


def _source_to_target(target_affine: np.ndarray, source_affine: np.ndarray) -> np.ndarray:
    return np.linalg.inv(_check_affine(target_affine, "target_affine")) @ _check_affine(source_affine, "source_affine")


def _footprint(
    target_shape: Sequence[int], to_target: np.ndarray, source_shape: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """``[lo, hi)`` target voxels that a source grid of ``source_shape`` can cover (clipped to the target)."""
    n = np.asarray(source_shape[:3], dtype=float)
    corners = np.array(np.meshgrid(*[[-0.5, m - 0.5] for m in n], indexing="ij")).reshape(3, -1)
    mapped = to_target[:3, :3] @ corners + to_target[:3, 3:4]
    lo = np.clip(np.floor(mapped.min(axis=1)).astype(int), 0, target_shape)
    hi = np.clip(np.ceil(mapped.max(axis=1)).astype(int) + 1, 0, target_shape)
    return lo, hi


def lesion_box(
    ct_shape: Sequence[int], ct_affine: np.ndarray, slabs: Sequence[tuple[Sequence[int], np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """The bounding box ``[lo, hi)`` (CT voxel indices) of the CT voxels whose centres lie in any lesion slab.

    Args:
        ct_shape: the CT's ``(X, Y, Z)``.
        ct_affine: the CT's voxel-to-world affine.
        slabs: ``(slab shape (H, W, Z), slab affine)`` of each lesion.

    Raises:
        ValueError: no slab, or no slab covers a CT voxel.
    """
    if not slabs:
        raise ValueError("lesion_box needs at least one slab.")
    los, his = [], []
    for shape, affine in slabs:
        to_ct = _source_to_target(ct_affine, affine)
        lo, hi = _footprint(ct_shape, to_ct, shape)
        covered = _covered(lo, hi, to_ct, shape)
        if covered is None:
            continue
        idx = np.argwhere(covered) + lo
        los.append(idx.min(axis=0))
        his.append(idx.max(axis=0) + 1)
    if not los:
        raise ValueError("no lesion slab covers a voxel of the CT.")
    return np.min(los, axis=0), np.max(his, axis=0)


def _covered(lo: np.ndarray, hi: np.ndarray, to_target: np.ndarray, source_shape: Sequence[int]) -> np.ndarray | None:
    """Mask over the target box ``[lo, hi)`` of voxels whose centres fall in a source voxel (None if empty)."""
    if np.any(hi <= lo):
        return None
    grid = np.indices(tuple(hi - lo)).reshape(3, -1) + lo[:, None]
    source = _nearest_source(grid, to_target)
    inside = np.all((source >= 0) & (source < np.asarray(source_shape[:3])[:, None]), axis=0)
    return inside.reshape(tuple(hi - lo)) if inside.any() else None


def _nearest_source(target_voxels: np.ndarray, to_target: np.ndarray) -> np.ndarray:
    """The source voxel nearest to each target voxel centre; halves round up (not to even), so a source lattice
    offset by half a voxel (a slab of even size centred on a voxel) maps one to one, shifted by half a voxel."""
    to_source = np.linalg.inv(to_target)
    coords = to_source[:3, :3] @ target_voxels + to_source[:3, 3:4]
    return np.floor(coords + 0.5 + _HALF_TOLERANCE).astype(np.int64)


def paste_max(target: np.ndarray, target_affine: np.ndarray, source: np.ndarray, source_affine: np.ndarray) -> int:
    """Resample ``source`` channels (nearest voxel) into ``target`` in place, keeping the maximum where both hold data.

    Each target voxel whose centre falls inside a source voxel takes ``max(target, source)`` of that voxel, per
    channel; the others are left as they are. A source at the target's spacing (a slab cut at the CT's native
    spacing, any axis flips or permutations) is copied voxel for voxel, also when its lattice is offset by half a voxel
    (the bundle's even-sized slabs centred on a voxel): then every voxel lands half a voxel away, none twice.

    Args:
        target: ``(C, X, Y, Z)``, modified in place.
        target_affine: its voxel-to-world affine.
        source: ``(C, H, W, D)`` with the same ``C`` and dtype kind.
        source_affine: its voxel-to-world affine.

    Returns:
        the number of target voxels written.
    """
    if target.ndim != 4 or source.ndim != 4 or target.shape[0] != source.shape[0]:
        raise ValueError(f"target {target.shape} and source {source.shape} must be (C, X, Y, Z) with the same C.")
    to_target = _source_to_target(target_affine, source_affine)
    lo, hi = _footprint(target.shape[1:], to_target, source.shape[1:])
    covered = _covered(lo, hi, to_target, source.shape[1:])
    if covered is None:
        return 0
    voxels = np.argwhere(covered).T + lo[:, None]  # (3, N) target voxels
    src = _nearest_source(voxels, to_target)
    values = source[:, src[0], src[1], src[2]]
    current = target[:, voxels[0], voxels[1], voxels[2]]
    target[:, voxels[0], voxels[1], voxels[2]] = np.maximum(current, values)
    return int(voxels.shape[1])


def write_seg_nrrd(
    path: str | Path,
    channels: np.ndarray,
    affine: np.ndarray,
    names: Sequence[str],
    colors: Sequence[Sequence[float]],
    reference_offset: Sequence[int] = (0, 0, 0),
    extra_fields: Mapping[str, str] | None = None,
) -> Path:
    """Write channels as a 3D Slicer segmentation file (``.seg.nrrd``: one layer per channel), atomically.

    The voxel axes and spacing are the given affine's (the CT's): NRRD's ``space directions`` are the affine's
    columns, in LPS as Slicer and ITK expect. Each channel ``i`` is segment ``i`` on layer ``i`` with label value 1
    (a binary channel shows as one segment; the uncertainty channels hold integers, see the module docstring).
    ``reference_offset`` is the file's first voxel in the CT's grid (``Segmentation_ReferenceImageExtentOffset``),
    so Slicer places a cropped file in the CT's full extent.

    Args:
        path: the output file (``*.seg.nrrd``); written to a temporary file beside it, then renamed.
        channels: ``(C, X, Y, Z)`` uint8 / uint16.
        affine: the 4x4 voxel-to-RAS affine of the file's grid.
        names: ``C`` channel names (no line breaks).
        colors: ``C`` RGB colours in [0, 1].
        reference_offset: the file's origin voxel in the reference (CT) grid.
        extra_fields: more ``key:=value`` header fields.

    Returns:
        ``path``.
    """
    import nrrd

    path = Path(path)
    if not path.name.endswith(".seg.nrrd"):
        raise ValueError(f"{path}: a segmentation file must end with .seg.nrrd.")
    if channels.ndim != 4 or channels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"channels must be (C, X, Y, Z) uint8/uint16, got {channels.shape} {channels.dtype}.")
    if len(names) != channels.shape[0] or len(colors) != channels.shape[0]:
        raise ValueError(f"need one name and colour per channel ({channels.shape[0]}), got {len(names)}/{len(colors)}.")
    if any(not isinstance(n, str) or not n or "\n" in n for n in names):
        raise ValueError(f"channel names must be non-empty one-line strings, got {list(names)}.")
    a = _check_affine(affine, "affine")
    directions = (_RAS_TO_LPS @ a[:3, :3]).T  # row i: the LPS step along voxel axis i
    origin = _RAS_TO_LPS @ a[:3, 3]
    extent = " ".join(f"0 {n - 1}" for n in channels.shape[1:])
    header: dict = {
        "encoding": "gzip",
        "space": "left-posterior-superior",
        "kinds": ["list", "domain", "domain", "domain"],
        "space directions": np.vstack([np.full(3, np.nan), directions]),
        "space origin": origin,
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": " ".join(str(int(v)) for v in reference_offset),
    }
    for i, (name, color) in enumerate(zip(names, colors)):
        header.update(
            {
                f"Segment{i}_ID": name,
                f"Segment{i}_Name": name,
                f"Segment{i}_NameAutoGenerated": "0",
                f"Segment{i}_Layer": str(i),
                f"Segment{i}_LabelValue": "1",
                f"Segment{i}_Color": " ".join(f"{float(c):.4g}" for c in color),
                f"Segment{i}_ColorAutoGenerated": "0",
                f"Segment{i}_Extent": extent,
            }
        )
    header.update({str(k): str(v) for k, v in (extra_fields or {}).items()})
    with atomic_file(path, suffix=".seg.nrrd") as tmp:
        nrrd.write(str(tmp), np.ascontiguousarray(channels), header=header, index_order="F", compression_level=6)
    return path
