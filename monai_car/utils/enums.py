"""Dictionary keys shared by the transforms, engines, handlers and bundles: data and output keys, one place."""

from __future__ import annotations

from monai.utils.enums import StrEnum

__all__ = ["CarKeys", "RefinementKeys"]


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


class RefinementKeys(StrEnum):
    """Keys of the stage-2 trainer's per-iteration output (``engine.state.output``), all python floats.

    ``LOSS`` is the generator's total loss under MONAI's usual ``"loss"`` key, so that ``from_engine(["loss"])``
    handlers work unchanged. D's losses are NaN in iterations where D is not updated (they are not computed then).
    """

    LOSS = "loss"
    LOSS_ADV = "loss_adv"
    LOSS_CAL = "loss_cal"
    LOSS_REFINE_CE = "loss_refine_ce"
    LOSS_CE_F = "loss_ce_f"
    LOSS_D = "loss_d"
    LOSS_D_BCE = "loss_d_bce"
    LOSS_R1 = "loss_r1"
    D_ACCURACY = "d_accuracy"
    D_ACCURACY_REAL = "d_accuracy_real"
    D_ACCURACY_FAKE = "d_accuracy_fake"
    D_UPDATED = "d_updated"
    LR_G = "lr_g"
    LR_D = "lr_d"
    LR_F = "lr_f"
    NUM_CASES = "num_cases"
    SKIPPED = "skipped"
