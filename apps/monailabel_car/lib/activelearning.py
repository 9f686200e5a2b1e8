"""Active learning with CAR's own uncertainty: score the unlabelled studies, serve the most uncertain one first.

- :class:`CARUncertaintyScoring` (a MONAI Label ``ScoringMethod``) runs the model over every unlabelled study's lesions
  (from the server's lesion CSV) and stores the study's mean mutual information over its lesions in the datastore
  (``update_image_info``: ``car_mutual_information``, with the per-lesion numbers under ``car_lesions``);
- :class:`CARUncertaintyStrategy` (a ``Strategy``) serves the unlabelled study with the highest stored score.

This is the pattern of MONAI Label's ``EpistemicScoring`` + ``Epistemic`` strategy with CAR's sample-based mutual
information (S draws of G, the spread the model was trained to calibrate) instead of dropout at test time.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.utils.others.generic import name_to_device, strtobool

from monai_car.utils.atomic import file_digest

from .bundle import CARAppSettings, CARBundle
from .errors import BAD_INPUT, CARRequestError
from .lesions import csv_lesions
from .predict import load_study, predict_lesions, study_score

__all__ = ["SCORE_KEY", "STAMP_KEY", "LESIONS_KEY", "CARUncertaintyScoring", "CARUncertaintyStrategy"]

logger = logging.getLogger(__name__)

SCORE_KEY = "car_mutual_information"
"""Image-info key of a study's score: the mean over its lesions of their mean mutual information (nats)."""
STAMP_KEY = "car_scoring"
"""Image-info key of what a score was computed with (model digest, S, seed, lesion CSV digest) or why there is none."""
LESIONS_KEY = "car_lesions"
"""Image-info key of the per-lesion numbers behind a score."""


class CARUncertaintyScoring(ScoringMethod):
    """Score every unlabelled study with CAR's mutual information (``POST /scoring/car_uncertainty``).

    A study whose stored stamp matches the current model file, ``num_samples``, ``seed`` and lesion CSV is skipped
    (``"force": true`` rescores). A study without lesions in the CSV, or one that cannot be read, gets a stamp with
    its reason and no score; the others are still scored.

    Request parameters: ``num_samples`` (default ``--conf num_samples``), ``seed``, ``force``, ``device``.

    Raises (``__call__``):
        CARRequestError: (503) the model is missing or unusable; (422) bad parameters or an unreadable lesion CSV.
    """

    def __init__(self, settings: CARAppSettings, bundle: CARBundle) -> None:
        super().__init__("CAR: mean mutual information of S outlines over each unlabelled study's lesions")
        self.car_settings = settings
        self.bundle = bundle

    def __call__(self, request: dict, datastore: Datastore) -> dict[str, Any]:
        device = name_to_device(request.get("device"))
        settings = self.car_settings
        network = self.bundle.network(device)
        predictor = self.bundle.predictor(
            network, request.get("num_samples", settings.num_samples), request.get("seed", settings.seed), device
        )
        force = strtobool(request.get("force", False))
        csv_path = settings.lesions_csv
        stamp = {
            "model": self.bundle.model_version(),
            "num_samples": predictor.num_samples,
            "seed": predictor.seed,
            "lesions_csv": file_digest(csv_path) if csv_path is not None and csv_path.is_file() else None,
        }
        result: dict[str, Any] = {"scored": {}, "skipped": [], "without_score": {}}
        for image_id in sorted(datastore.get_unlabeled_images()):
            info = datastore.get_image_info(image_id)
            if not force and info.get(STAMP_KEY, {}).get("stamp") == stamp:
                result["skipped"].append(image_id)
                continue
            start = time.time()
            try:
                lesions = csv_lesions(csv_path, settings.lesions_frame, image_id)
                if not lesions:
                    raise CARRequestError(BAD_INPUT, f"no lesion of study {image_id!r} in the lesion CSV {csv_path}")
                data, affine = load_study(datastore.get_image_uri(image_id), image_id)
                statistics = predict_lesions(predictor, data, affine, lesions).statistics
            except CARRequestError as e:
                logger.warning("CAR scoring: %s has no score: %s", image_id, e)
                datastore.update_image_info(image_id, {STAMP_KEY: {"stamp": stamp, "reason": str(e)}, SCORE_KEY: None})
                result["without_score"][image_id] = str(e)
                continue
            score = study_score(statistics)
            datastore.update_image_info(
                image_id,
                {
                    SCORE_KEY: score,
                    LESIONS_KEY: statistics,
                    STAMP_KEY: {"stamp": stamp, "ts": int(time.time()), "seconds": round(time.time() - start, 2)},
                },
            )
            result["scored"][image_id] = score
            logger.info("CAR scoring: %s => %.5f nats (%d lesions)", image_id, score, len(statistics))
        return result


class CARUncertaintyStrategy(Strategy):
    """Serve the unlabelled study with the highest CAR uncertainty (``POST /activelearning/car_uncertainty``).

    Order: studies not served by this strategy within ``reset`` seconds first (so that annotators working at the same
    time get different studies, as MONAI Label's ``Epistemic`` does), then scored studies by decreasing score, then
    studies without a score, then by id.

    Args:
        reset: seconds after which a served study counts as not served (default one day).
        key: the image-info key of the score.
    """

    def __init__(self, reset: int = 24 * 60 * 60, key: str = SCORE_KEY) -> None:
        if reset < 0:
            raise ValueError(f"reset must be >= 0 seconds, got {reset}.")
        super().__init__("CAR: the unlabelled study with the highest mutual information first")
        self.reset = int(reset)
        self.key = key

    def __call__(self, request: dict, datastore: Datastore) -> dict[str, Any] | None:
        images = datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels"))
        if not images:
            return None
        now = int(time.time())
        strategy = request.get("strategy", "car_uncertainty")

        def rank(image_id: str) -> tuple:
            info = datastore.get_image_info(image_id)
            served = info.get("strategy", {}).get(strategy, {}).get("ts", 0)
            recent = now - served < self.reset
            score = info.get(self.key)
            unscored = not isinstance(score, (int, float))
            return (recent, served if recent else 0, unscored, 0.0 if unscored else -float(score), image_id)

        ranked = sorted(images, key=rank)
        best = ranked[0]
        score = datastore.get_image_info(best).get(self.key)
        logger.info("%s: serving %s (%s = %s); order %s", strategy, best, self.key, score, ranked)
        return {"id": best, self.key: score, "car_order": ranked}
