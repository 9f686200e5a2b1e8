"""Finding CT series in a folder of DICOM files and reading their slices in Hounsfield units.

The folder layout is not trusted (TCIA's LIDC-IDRI layout has changed over the years, and pylidc's own lookup needs a
``~/.pylidcrc``): every file's header is read (``stop_before_pixels``) and files are grouped by
SeriesInstanceUID. Within a series, slices are ordered by ImagePositionPatient z (not InstanceNumber), duplicate z
positions are dropped (the lower InstanceNumber is kept, as pylidc does; :func:`sort_series` records which file each
dropped one duplicates, and :func:`monai_car.data.dicom.load_dicom_series` refuses two different files at one
position), and slices are matched to the annotation database by z, so a series with missing slices cannot silently
misalign the masks. A damaged file is named, never taken for a non-image object and dropped.

Used by :func:`monai_car.data.dicom.load_dicom_series` (one series as a volume) and by the LIDC-IDRI builder in the
top-level ``preprocessing`` package. Importing this module loads numpy and tqdm only (pydicom on first read).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

__all__ = [
    "DataError",
    "SeriesSlices",
    "SliceHeader",
    "find_dicom_files",
    "group_series",
    "match_slices",
    "read_header",
    "read_headers",
    "read_hu",
    "sort_series",
]

_HEADER_TAGS = [
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "PatientID",
    "Modality",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
    "InstanceNumber",
    "SOPClassUID",
]
_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


class DataError(ValueError):
    """Bad input data (a file, a series, a scan): the message names it; the LIDC build skips it and reports it."""


@dataclass(frozen=True)
class SliceHeader:
    """The header fields of one DICOM image slice that the build needs.

    Attributes:
        path: the file.
        series_uid, study_uid, patient_id, modality: DICOM identifiers.
        position: ImagePositionPatient ``(x, y, z)`` in mm (LPS) of the centre of the first pixel.
        orientation: ImageOrientationPatient: direction of increasing column index, then of increasing row index.
        pixel_spacing: PixelSpacing ``(between rows, between columns)`` in mm.
        rows, columns: image size.
        instance_number: InstanceNumber, or ``None`` when absent.
    """

    path: str
    series_uid: str
    study_uid: str
    patient_id: str
    modality: str
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float, float, float]
    pixel_spacing: tuple[float, float]
    rows: int
    columns: int
    instance_number: int | None

    @property
    def z(self) -> float:
        return self.position[2]


def find_dicom_files(root: str | Path) -> list[Path]:
    """All candidate DICOM files under ``root`` (``*.dcm``, any case, or files without a suffix), sorted.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"DICOM root {root} is not a folder; pass the folder holding the LIDC-IDRI download.")
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            suffix = Path(name).suffix.lower()
            if suffix == ".dcm" or suffix == "":
                found.append(Path(folder) / name)
    return found


def read_header(path: str | Path) -> SliceHeader | None:
    """Read one file's header (no pixel data).

    Returns:
        the header, or ``None`` for a file without a suffix that is not DICOM, or a DICOM object that is not an
        image slice (no ImagePositionPatient, e.g. a structured report).

    Raises:
        DataError: a ``.dcm`` file that cannot be parsed, an image slice with malformed geometry tags, or a CT
            image slice (CT Image Storage) without ImagePositionPatient or SeriesInstanceUID (a truncated or damaged
            file: it is named, never taken for a non-image object and dropped).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except Exception as err:  # pydicom raises many exception types on damaged files
        if path.suffix == "" and isinstance(err, InvalidDicomError):
            return None
        raise DataError(f"{path}: not a readable DICOM file ({type(err).__name__}: {err}); skipped.") from err
    if "ImagePositionPatient" not in ds or "SeriesInstanceUID" not in ds:
        damage = _damage(ds)
        if damage:
            raise DataError(f"{path}: {damage} (a truncated or damaged file); skipped.")
        return None
    try:
        position = tuple(float(v) for v in ds.ImagePositionPatient)
        orientation = tuple(float(v) for v in ds.ImageOrientationPatient)
        spacing = tuple(float(v) for v in ds.PixelSpacing)
        rows, columns = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError) as err:
        raise DataError(
            f"{path}: malformed or missing geometry tags (ImagePositionPatient, ImageOrientationPatient, "
            f"PixelSpacing, Rows, Columns): {err}; skipped."
        ) from err
    if len(position) != 3 or len(orientation) != 6 or len(spacing) != 2:
        raise DataError(f"{path}: ImagePositionPatient/ImageOrientationPatient/PixelSpacing have wrong lengths.")
    number = ds.get("InstanceNumber", None)
    return SliceHeader(
        path=str(path),
        series_uid=str(ds.SeriesInstanceUID).strip(),
        study_uid=str(ds.get("StudyInstanceUID", "")).strip(),
        patient_id=str(ds.get("PatientID", "")).strip(),
        modality=str(ds.get("Modality", "")).strip(),
        position=position,  # type: ignore[arg-type]
        orientation=orientation,  # type: ignore[arg-type]
        pixel_spacing=spacing,  # type: ignore[arg-type]
        rows=rows,
        columns=columns,
        instance_number=None if number in (None, "") else int(number),
    )


def _damage(ds) -> str:
    """Why a parsed DICOM object without an image position is a damaged file, not a non-image object ("" if not)."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and len(meta) and "TransferSyntaxUID" not in meta:
        return "its file meta information ends early (no TransferSyntaxUID)"
    if len(ds) == 0:
        return "it holds no data elements"
    sop_class = str(ds.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else ""))
    if sop_class == _CT_IMAGE_STORAGE:
        missing = [t for t in ("ImagePositionPatient", "SeriesInstanceUID") if t not in ds]
        return f"a CT image slice without {' and '.join(missing)}"
    return ""


def _read_chunk(paths: Sequence[str]) -> tuple[list[SliceHeader], list[dict]]:
    headers, problems = [], []
    for p in paths:
        try:
            h = read_header(p)
        except DataError as err:
            problems.append({"kind": "file", "path": str(p), "reason": str(err)})
            continue
        if h is not None:
            headers.append(h)
    return headers, problems


def read_headers(
    paths: Sequence[str | Path], workers: int = 1, chunk_size: int = 256, progress: bool = True
) -> tuple[list[SliceHeader], list[dict]]:
    """Read many headers, in a process pool when ``workers > 1``.

    Returns:
        the image-slice headers (input order) and the unreadable files as ``{"kind", "path", "reason"}``.
    """
    paths = [str(p) for p in paths]
    chunks = [paths[i : i + chunk_size] for i in range(0, len(paths), chunk_size)]
    headers: list[SliceHeader] = []
    problems: list[dict] = []
    bar = tqdm(total=len(paths), desc="DICOM headers", unit="file", disable=not progress)
    if workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for chunk, (h, p) in zip(chunks, pool.map(_read_chunk, chunks)):
                headers.extend(h)
                problems.extend(p)
                bar.update(len(chunk))
    else:
        for chunk in chunks:
            h, p = _read_chunk(chunk)
            headers.extend(h)
            problems.extend(p)
            bar.update(len(chunk))
    bar.close()
    return headers, problems


def group_series(headers: Sequence[SliceHeader]) -> dict[str, list[SliceHeader]]:
    """Headers grouped by SeriesInstanceUID."""
    series: dict[str, list[SliceHeader]] = defaultdict(list)
    for h in headers:
        series[h.series_uid].append(h)
    return dict(series)


@dataclass
class SeriesSlices:
    """One series' slices sorted by z with duplicate z positions removed.

    Attributes:
        series_uid: the SeriesInstanceUID.
        slices: headers sorted by increasing z.
        duplicates: files dropped because another file has the same z (the lower InstanceNumber is kept).
        folders: the folders the files live in (for messages).
        duplicate_of: for each dropped duplicate, the kept file at its z (so callers can compare the two and name
            both).
    """

    series_uid: str
    slices: list[SliceHeader]
    duplicates: list[str]
    folders: list[str]
    duplicate_of: dict[str, str] = field(default_factory=dict)

    @property
    def z(self) -> np.ndarray:
        return np.array([s.z for s in self.slices], dtype=float)

    @property
    def where(self) -> str:
        return ", ".join(self.folders)


def sort_series(headers: Sequence[SliceHeader], expected_size: tuple[int, int] | None = (512, 512)) -> SeriesSlices:
    """Sort a series by ImagePositionPatient z, drop duplicate z and check its geometry.

    Args:
        headers: the series' headers (one SeriesInstanceUID).
        expected_size: required ``(Rows, Columns)`` (pylidc's annotations assume 512 x 512), ``None`` to skip.

    Raises:
        DataError: mixed series, a size other than ``expected_size``, non-axial or inconsistent orientation, or
            inconsistent pixel spacing; the message names the folder and the file.
    """
    if not headers:
        raise ValueError("sort_series needs at least one header.")
    uids = {h.series_uid for h in headers}
    if len(uids) != 1:
        raise ValueError(f"sort_series got several series: {sorted(uids)}.")
    folders = sorted({str(Path(h.path).parent) for h in headers})
    where = ", ".join(folders)
    uid = headers[0].series_uid
    for h in headers:
        if expected_size is not None and (h.rows, h.columns) != tuple(expected_size):
            raise DataError(
                f"series {uid} in {where}: {h.path} is {h.rows} x {h.columns} (Rows x Columns); pylidc's annotations "
                f"assume {expected_size[0]} x {expected_size[1]}, so this scan is skipped."
            )
    ref = headers[0]
    normal = np.cross(ref.orientation[:3], ref.orientation[3:])
    if abs(normal[2]) < 0.99:
        raise DataError(
            f"series {uid} in {where}: {ref.path} is not axial (ImageOrientationPatient {list(ref.orientation)}); "
            "LIDC annotations are on axial slices, so this scan is skipped."
        )
    for h in headers:
        if not np.allclose(h.orientation, ref.orientation, atol=1e-4):
            raise DataError(f"series {uid} in {where}: {h.path} has a different ImageOrientationPatient; skipped.")
        if not np.allclose(h.pixel_spacing, ref.pixel_spacing, atol=1e-4):
            raise DataError(f"series {uid} in {where}: {h.path} has a different PixelSpacing; skipped.")
    order = sorted(headers, key=lambda h: (h.z, h.instance_number if h.instance_number is not None else 0, h.path))
    kept: list[SliceHeader] = []
    duplicates: list[str] = []
    duplicate_of: dict[str, str] = {}
    for h in order:
        if kept and abs(h.z - kept[-1].z) < 1e-6:
            duplicates.append(h.path)
            duplicate_of[h.path] = kept[-1].path
            continue
        kept.append(h)
    return SeriesSlices(uid, kept, duplicates, folders, duplicate_of)


def match_slices(
    db_z: Sequence[float], series: SeriesSlices, tolerance: float | None = None
) -> tuple[list[SliceHeader | None], list[str]]:
    """Match the database's slice z values to the series' files by z (never by index).

    Args:
        db_z: the database's z values (pylidc's ``slice_zvals``), ascending.
        series: from :func:`sort_series`.
        tolerance: largest accepted |z difference| (mm); default a quarter of the smallest database z step,
            at most 0.1 mm.

    Returns:
        one header (or ``None`` when the series has no file at that z) per database slice, and the files whose z
        matches no database slice.
    """
    db = np.asarray(db_z, dtype=float)
    if db.ndim != 1 or len(db) == 0:
        raise ValueError(f"db_z must be a non-empty 1D sequence, got shape {db.shape}.")
    if tolerance is None:
        steps = np.diff(db)
        tolerance = min(0.1, 0.25 * float(steps.min())) if len(steps) and steps.min() > 0 else 0.1
    files_z = series.z
    matched: list[SliceHeader | None] = []
    used = np.zeros(len(files_z), dtype=bool)
    for z in db:
        j = int(np.argmin(np.abs(files_z - z))) if len(files_z) else -1
        if j >= 0 and abs(files_z[j] - z) <= tolerance:
            matched.append(series.slices[j])
            used[j] = True
        else:
            matched.append(None)
    extra = [s.path for s, u in zip(series.slices, used) if not u]
    return matched, extra


def read_hu(header: SliceHeader) -> np.ndarray:
    """The slice's pixels in Hounsfield units: ``pixel_array * RescaleSlope + RescaleIntercept``, ``(rows, cols)``.

    Raises:
        DataError: the file cannot be read or decoded, or its pixel data does not match its Rows/Columns.
    """
    import pydicom

    try:
        ds = pydicom.dcmread(header.path)
        pixels = ds.pixel_array
    except Exception as err:  # pydicom raises many types for damaged or unsupported pixel data
        raise DataError(f"{header.path}: cannot read the pixel data ({type(err).__name__}: {err}).") from err
    if pixels.shape != (header.rows, header.columns):
        raise DataError(
            f"{header.path}: pixel data has shape {pixels.shape}, header says {header.rows} x {header.columns}."
        )
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return (pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)).astype(np.float32)
