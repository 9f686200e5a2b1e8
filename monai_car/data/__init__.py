"""Data for monai-car: multi-grader datalists, the embedded demo data, DICOM series reading, sample sets, 2D
datalists and the official Cityscapes layout (class layout: :mod:`monai_car.utils.cityscapes_classes`).

The public names load their submodule on first use (PEP 562), so ``from monai_car.data.dicom_series import ...``
(what the top-level ``preprocessing`` package does) does not load torch and MONAI through this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cityscapes import (
        CITYSCAPES_RESOLUTION,
        CITYSCAPES_VALIDATION_CITIES,
        QUARTER_RESOLUTION,
        CityscapesCase,
        build_cityscapes_datalist,
        find_cityscapes_cases,
        split_cityscapes_cases,
    )
    from .datalist import DATALIST_GEOMETRY_KEYS, load_car_datalist, make_case_id, training_geometry
    from .dataset import split_valid_cases
    from .demo import DemoNodule, ensure_demo_dataset, load_demo_nodules
    from .demo_volumes import ensure_demo_volumes
    from .dicom import load_dicom_series
    from .dicom_series import (
        DataError,
        SeriesSlices,
        SliceHeader,
        find_dicom_files,
        group_series,
        match_slices,
        read_header,
        read_headers,
        read_hu,
        sort_series,
    )
    from .sample_set import SampleSet, check_case_id, hard_labels, resolve_affine
    from .sample_set_io import SAMPLE_SET_FILES, atomic_case_dir, sample_set_metrics, save_nifti, save_sample_set
    from .segmentation_2d import datalist_metadata, load_segmentation_datalist, write_segmentation_datalist
    from .synthetic_scenes import build_synthetic_scenes, ensure_synthetic_scenes, render_scene

_EXPORTS = {
    "DATALIST_GEOMETRY_KEYS": "datalist",
    "load_car_datalist": "datalist",
    "make_case_id": "datalist",
    "training_geometry": "datalist",
    "split_valid_cases": "dataset",
    # demo data set (issue 6)
    "DemoNodule": "demo",
    "ensure_demo_dataset": "demo",
    "load_demo_nodules": "demo",
    "ensure_demo_volumes": "demo_volumes",
    # one case's sample set, computed once, and its files (issue 13)
    "SampleSet": "sample_set",
    "check_case_id": "sample_set",
    "hard_labels": "sample_set",
    "resolve_affine": "sample_set",
    "SAMPLE_SET_FILES": "sample_set_io",
    "atomic_case_dir": "sample_set_io",
    "sample_set_metrics": "sample_set_io",
    "save_nifti": "sample_set_io",
    "save_sample_set": "sample_set_io",
    # DICOM series (issue 13)
    "load_dicom_series": "dicom",
    "DataError": "dicom_series",
    "SeriesSlices": "dicom_series",
    "SliceHeader": "dicom_series",
    "find_dicom_files": "dicom_series",
    "group_series": "dicom_series",
    "match_slices": "dicom_series",
    "read_header": "dicom_series",
    "read_headers": "dicom_series",
    "read_hu": "dicom_series",
    "sort_series": "dicom_series",
    # generic 2D path and the official Cityscapes layout (issue 15)
    "datalist_metadata": "segmentation_2d",
    "load_segmentation_datalist": "segmentation_2d",
    "write_segmentation_datalist": "segmentation_2d",
    "build_synthetic_scenes": "synthetic_scenes",
    "ensure_synthetic_scenes": "synthetic_scenes",
    "render_scene": "synthetic_scenes",
    "CITYSCAPES_RESOLUTION": "cityscapes",
    "CITYSCAPES_VALIDATION_CITIES": "cityscapes",
    "QUARTER_RESOLUTION": "cityscapes",
    "CityscapesCase": "cityscapes",
    "build_cityscapes_datalist": "cityscapes",
    "find_cityscapes_cases": "cityscapes",
    "split_cityscapes_cases": "cityscapes",
}

__all__: list[str] = ["DATALIST_GEOMETRY_KEYS", "load_car_datalist", "make_case_id", "split_valid_cases"]
__all__ += ["training_geometry"]  # a model's training geometry (issue 14)
__all__ += ["DemoNodule", "ensure_demo_dataset", "ensure_demo_volumes", "load_demo_nodules"]  # demo (issue 6)
__all__ += [  # sample sets (issue 13)
    "SAMPLE_SET_FILES",
    "SampleSet",
    "atomic_case_dir",
    "check_case_id",
    "hard_labels",
    "resolve_affine",
    "sample_set_metrics",
    "save_nifti",
    "save_sample_set",
]
__all__ += [  # DICOM series (issue 13)
    "DataError",
    "SeriesSlices",
    "SliceHeader",
    "find_dicom_files",
    "group_series",
    "load_dicom_series",
    "match_slices",
    "read_header",
    "read_headers",
    "read_hu",
    "sort_series",
]
# generic 2D path and the official Cityscapes layout (issue 15); class layout: monai_car.utils.cityscapes_classes
__all__ += [
    "CITYSCAPES_RESOLUTION",
    "CITYSCAPES_VALIDATION_CITIES",
    "QUARTER_RESOLUTION",
    "CityscapesCase",
    "build_cityscapes_datalist",
    "build_synthetic_scenes",
    "datalist_metadata",
    "ensure_synthetic_scenes",
    "find_cityscapes_cases",
    "load_segmentation_datalist",
    "render_scene",
    "split_cityscapes_cases",
    "write_segmentation_datalist",
]


def __getattr__(name: str) -> Any:
    """Import the submodule holding ``name`` on first use (a public name, or a submodule such as ``dataset``)."""
    if name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    else:
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
