"""MONAI Label app for monai-car: CAR's plausible lesion outlines and uncertainty, most uncertain study first.

Start it (in the environment of ``scripts/setup_label.sh``)::

    monailabel start_server --app apps/monailabel_car --studies /data/cts --conf models car \
        [--conf model_path runs/lidc_car/models/model.pt] [--conf num_samples 16]

Tasks: infer ``car`` (3D Slicer's point-click section: one lesion per clicked point) and ``car_lesions`` (its "Run"
button: the lesions of the study in ``<studies>/lesions.csv`` or an uploaded mask); scoring ``car_uncertainty``;
active-learning strategies ``car_uncertainty``, ``random`` and ``first``. See ``README.md`` beside this file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import HTTPException
from lib.activelearning import CARUncertaintyScoring, CARUncertaintyStrategy
from lib.bundle import CARAppSettings, CARBundle
from lib.errors import NOT_FOUND, CARRequestError
from lib.infer import CARInferTask
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

import monai_car

__all__ = ["CARApp"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


def _as_http_error(call: Callable[[], T], what: str) -> T:
    """Run ``call``; answer a failure as an HTTP error whose ``detail`` says what went wrong (the server goes on)."""
    try:
        return call()
    except HTTPException:
        raise
    except CARRequestError as e:
        logger.warning("%s refused (%d): %s", what, e.status_code, e)
        raise HTTPException(status_code=e.status_code, detail=e.message) from e
    except MONAILabelException as e:
        status = 400 if e.error in (MONAILabelError.INVALID_INPUT, MONAILabelError.APP_INIT_ERROR) else 500
        logger.warning("%s refused (%d): %s", what, status, e.msg)
        raise HTTPException(status_code=status, detail=e.msg) from e
    except Exception as e:  # the client gets the reason instead of a bare "Internal Server Error"
        logger.exception("%s failed", what)
        raise HTTPException(status_code=500, detail=f"{what} failed: {type(e).__name__}: {e}") from e


class CARApp(MONAILabelApp):
    """The monai-car MONAI Label app (``--conf models car``; the options are those of :class:`CARAppSettings`).

    Args:
        app_dir: this folder.
        studies: the studies folder (a local datastore: NIfTI CTs, ``lesions.csv``).
        conf: the ``--conf`` options.

    Raises:
        ValueError: a ``--conf`` option that cannot be used (the server does not start; the message names it).
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.car_settings = CARAppSettings.from_conf(conf or {}, studies)
        self.car_bundle = CARBundle(self.car_settings)
        model = self.car_settings.model_path
        if not model.is_file():
            logger.warning("CAR model %s does not exist yet: infer and scoring answer 503 until it does.", model)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf or {},
            name=f"monai-car: CAR lesion outlines ({monai_car.__version__})",
            description="Calibrated Adversarial Refinement: plausible lung-nodule outlines and their uncertainty",
            version=monai_car.__version__,
            labels=["lesion"],
        )

    def init_infers(self) -> dict[str, InferTask]:
        return {
            "car": CARInferTask(self.car_settings, self.car_bundle, InferType.DEEPGROW),
            "car_lesions": CARInferTask(
                self.car_settings,
                self.car_bundle,
                InferType.SEGMENTATION,
                description="CAR over the study's lesions from the lesion CSV (or an uploaded lesion mask)",
            ),
        }

    def init_strategies(self) -> dict[str, Strategy]:
        return {"car_uncertainty": CARUncertaintyStrategy(), "random": Random(), "first": First()}

    def init_scoring_methods(self) -> dict[str, ScoringMethod]:
        return {"car_uncertainty": CARUncertaintyScoring(self.car_settings, self.car_bundle)}

    def infer(self, request: dict, datastore: Datastore | None = None) -> dict[str, Any]:
        """MONAI Label's ``infer``, with an unknown study and every failure answered as an HTTP error."""
        image = request.get("image")
        if isinstance(image, str) and image and not os.path.exists(image):
            store = datastore or self.datastore()
            if not store.get_image_uri(image):
                known = sorted(store.list_images())
                raise HTTPException(
                    status_code=NOT_FOUND,
                    detail=f"study {image!r} is not in the datastore {self.studies} (known: {known[:20]}"
                    f"{' ...' if len(known) > 20 else ''}); use one of those ids or add the image to the studies "
                    "folder.",
                )
        return _as_http_error(lambda: super(CARApp, self).infer(request, datastore), f"infer {request.get('model')}")

    def scoring(self, request: dict, datastore: Datastore | None = None) -> Any:
        """MONAI Label's ``scoring``, failures answered as HTTP errors (``run_sync``; a background run logs them)."""
        what = f"scoring {request.get('method')}"
        return _as_http_error(lambda: super(CARApp, self).scoring(request, datastore), what)

    def next_sample(self, request: dict) -> dict[str, Any]:
        """MONAI Label's ``next_sample``, failures answered as HTTP errors."""
        return _as_http_error(lambda: super(CARApp, self).next_sample(request), f"strategy {request.get('strategy')}")
