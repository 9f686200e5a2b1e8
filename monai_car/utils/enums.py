"""Dictionary keys shared by the transforms, engines, handlers and bundles."""

from __future__ import annotations

from monai.utils.enums import StrEnum

__all__ = ["CarKeys"]


class CarKeys(StrEnum):
    """Keys of a monai-car data dictionary and of the engines' outputs.

    Data dictionaries (one case, before collation):

    - ``IMAGE``: the image, ``(C, *spatial)``.
    - ``LABELS``: the list of the graders' mask paths, as written in ``datalist.json``.
    - ``LABEL``: all graders' masks stacked, ``(R, *spatial)`` uint8 ``{0, 1}``.
    - ``GRADER_LABEL``: one randomly drawn grader's mask, ``(1, *spatial)``, the stage-1 / stage-2 target.
    - ``CASE_ID``: a string naming the case (for error messages and output files).

    Engine outputs (batched):

    - ``CALIBRATION``: F's probabilities ``(B, K, *spatial)``.
    - ``SAMPLES``: G's sampled probabilities ``(B, S, K, *spatial)``.
    - ``SAMPLE_MEAN``: the mean of G's samples ``(B, K, *spatial)``.
    """

    IMAGE = "image"
    LABELS = "labels"
    LABEL = "label"
    GRADER_LABEL = "grader_label"
    CASE_ID = "case_id"
    CALIBRATION = "calibration_probs"
    SAMPLES = "samples"
    SAMPLE_MEAN = "sample_mean"
