"""The app's settings and the LIDC bundle, read from its local folder (MONAI Label's model-zoo download is not used).

:class:`CARAppSettings` reads the ``--conf`` options of ``monailabel start_server`` (and environment variables);
:class:`CARBundle` reads the bundle's ``configs/inference.json`` with MONAI's ``ConfigParser`` and builds the CARNet,
its training geometry and the :class:`~monai_car.inferers.LesionSampleSetPredictor` with the bundle's settings, and
loads the trained weights (strictly, geometry checked) once per model file version.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

import monai_car
from monai_car.inferers import LesionSampleSetPredictor
from monai_car.networks import CARNet
from monai_car.utils import TrainingGeometry, load_network_weights
from monai_car.utils.atomic import file_digest

from .errors import BAD_INPUT, MODEL_MISSING, CARRequestError

__all__ = ["CARAppSettings", "CARBundle", "MODEL_PATH_ENV", "MAX_SAMPLES", "REPO_ROOT"]

REPO_ROOT = Path(monai_car.__file__).resolve().parents[1]
"""The checkout monai_car is installed from (editable install): the default bundle and model live there."""

MODEL_PATH_ENV = "MONAI_CAR_MODEL_PATH"
MAX_SAMPLES = 500
_TRAIN_HINT = (
    "Train the model first: `bash scripts/quickstart.sh` (writes runs/lidc_car/models/model.pt) or `python -m "
    "monai.bundle run training --config_file bundles/lidc_car/configs/train.json`; or point the server at a trained "
    f"model with `--conf model_path /path/to/model.pt` (or the environment variable {MODEL_PATH_ENV})."
)


def _positive_int(value: object, name: str, upper: int | None = None) -> int:
    try:
        number = int(str(value))
    except ValueError as e:
        raise ValueError(f"{name} must be an integer, got {value!r}.") from e
    if number < 1 or (upper is not None and number > upper):
        bound = f"between 1 and {upper}" if upper is not None else "at least 1"
        raise ValueError(f"{name} must be {bound}, got {number}.")
    return number


@dataclass(frozen=True)
class CARAppSettings:
    """The app's options (``--conf key value`` of ``monailabel start_server``).

    Attributes:
        bundle_dir: the LIDC bundle folder (``--conf bundle_path``; default the checkout's ``bundles/lidc_car``).
        model_path: the trained ``model.pt`` (``--conf model_path`` or ``$MONAI_CAR_MODEL_PATH``; default the quick
            start's ``runs/lidc_car/models/model.pt`` in the checkout).
        bundle_overrides: config overrides for a model trained with other settings (``--conf bundle_overrides
            '{"crop_size": 128, ...}'``, JSON).
        num_samples: default S per request (``--conf num_samples``, 16).
        seed: default noise seed (``--conf seed``, 0).
        lesions_csv: the lesion list for lesion-less requests and scoring (``--conf lesions_csv``; default
            ``<studies>/lesions.csv``); columns ``lesion_id,x,y,z,study`` as the bundle's inference reads them.
        lesions_frame: the CSV's world frame, ``LPS`` (default) or ``RAS`` (``--conf lesions_frame``).
    """

    bundle_dir: Path
    model_path: Path
    bundle_overrides: dict = field(default_factory=dict)
    num_samples: int = 16
    seed: int = 0
    lesions_csv: Path | None = None
    lesions_frame: str = "LPS"

    @classmethod
    def from_conf(cls, conf: Mapping[str, str], studies: str | os.PathLike) -> CARAppSettings:
        """Read the settings from ``--conf`` options; ``studies`` is the server's studies folder.

        Raises:
            ValueError: an option that cannot be used (named, with what it must be).
        """
        if not isinstance(conf, Mapping):
            raise TypeError(f"conf must be a mapping of --conf options, got {type(conf).__name__}.")
        models = [m.strip() for m in str(conf.get("models", "car")).split(",") if m.strip()]
        unknown = [m for m in models if m not in ("car", "all")]
        if unknown:
            raise ValueError(
                f"--conf models {','.join(models)}: this app has one model, 'car' (use --conf models car)."
            )
        bundle_dir = Path(conf.get("bundle_path", REPO_ROOT / "bundles" / "lidc_car")).expanduser().resolve()
        if not (bundle_dir / "configs" / "inference.json").is_file():
            raise ValueError(
                f"--conf bundle_path {bundle_dir}: no configs/inference.json there; point it at the LIDC bundle folder "
                f"(the repository's bundles/lidc_car)."
            )
        default_model = REPO_ROOT / "runs" / "lidc_car" / "models" / "model.pt"
        model_path = Path(conf.get("model_path") or os.environ.get(MODEL_PATH_ENV) or default_model).expanduser()
        try:
            overrides = json.loads(conf.get("bundle_overrides", "{}"))
        except json.JSONDecodeError as e:
            raise ValueError(f"--conf bundle_overrides must be a JSON object of config keys, got an error: {e}") from e
        if not isinstance(overrides, dict):
            raise ValueError(f"--conf bundle_overrides must be a JSON object, got {overrides!r}.")
        frame = str(conf.get("lesions_frame", "LPS")).upper()
        if frame not in ("LPS", "RAS"):
            raise ValueError(f"--conf lesions_frame must be LPS or RAS, got {frame!r}.")
        csv_path = conf.get("lesions_csv")
        lesions_csv = Path(csv_path).expanduser() if csv_path else Path(studies) / "lesions.csv"
        return cls(
            bundle_dir=bundle_dir,
            model_path=model_path.resolve(),
            bundle_overrides=overrides,
            num_samples=_positive_int(conf.get("num_samples", 16), "--conf num_samples", MAX_SAMPLES),
            seed=int(conf.get("seed", 0)),
            lesions_csv=lesions_csv,
            lesions_frame=frame,
        )


class CARBundle:
    """The LIDC bundle's inference configuration and the trained CARNet, loaded once per model file version.

    Args:
        settings: the app's settings (bundle folder, model path, overrides).

    Raises:
        ValueError: the bundle's config cannot be parsed with the overrides.
    """

    def __init__(self, settings: CARAppSettings) -> None:
        from monai.bundle import ConfigParser

        if not isinstance(settings, CARAppSettings):
            raise TypeError(f"settings must be CARAppSettings, got {type(settings).__name__}.")
        self.settings = settings
        self.config_file = settings.bundle_dir / "configs" / "inference.json"
        parser = ConfigParser()
        parser.read_config(str(self.config_file))
        unknown = sorted(k for k in settings.bundle_overrides if k.split("#")[0] not in parser.config)
        if unknown:
            raise ValueError(f"--conf bundle_overrides: {unknown} are not keys of {self.config_file}.")
        parser.update({"bundle_root": str(settings.bundle_dir), **settings.bundle_overrides})
        self._parser = parser
        self.crop_size = int(parser.get_parsed_content("crop_size"))
        self.hu_window = [float(v) for v in parser.get_parsed_content("hu_window")]
        spacing = parser.get_parsed_content("in_plane_spacing")
        self.in_plane_spacing = None if spacing is None else float(spacing)
        self.slice_batch_size = int(parser.get_parsed_content("slice_batch_size"))
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[tuple, CARNet]] = {}

    def build_network(self) -> CARNet:
        """A new, untrained CARNet as the bundle's ``network_def`` (with the overrides) defines it."""
        return self._parser.get_parsed_content("network_def", lazy=False)

    def geometry(self) -> TrainingGeometry:
        """The training geometry the model must have been trained with (the bundle's ``training_geometry``)."""
        return self._parser.get_parsed_content("training_geometry", lazy=False)

    def model_version(self) -> str:
        """A digest of the model file (scores are recomputed when it changes).

        Raises:
            CARRequestError: (503) the model file is missing.
        """
        self._require_model()
        return file_digest(self.settings.model_path)

    def _require_model(self) -> Path:
        path = self.settings.model_path
        if not path.is_file():
            raise CARRequestError(MODEL_MISSING, f"the CAR model {path} does not exist. {_TRAIN_HINT}")
        return path

    def network(self, device: str | torch.device = "cpu") -> CARNet:
        """The trained CARNet on ``device`` (built from the bundle's ``network_def``, weights loaded strictly).

        Cached per device and reloaded when the file's modification time or size changes.

        Raises:
            CARRequestError: (503) the model file is missing, unreadable, or trained with other settings.
        """
        path = self._require_model()
        stat = path.stat()
        key, version = str(torch.device(device)), (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] == version:
                return cached[1]
            network = self.build_network()
            try:
                load_network_weights(path, network, geometry=self.geometry(), hint=_TRAIN_HINT)
            except (ValueError, KeyError) as e:  # unreadable file, other geometry, other network
                raise CARRequestError(
                    MODEL_MISSING,
                    f"the CAR model {path} cannot be used with the bundle's settings ({self.config_file}): {e}. "
                    "Set --conf bundle_overrides to the settings it was trained with, or retrain.",
                ) from e
            network = network.to(torch.device(device)).eval()
            self._cache[key] = (version, network)
            return network

    def predictor(
        self, network: CARNet, num_samples: object, seed: object, device: str | torch.device
    ) -> LesionSampleSetPredictor:
        """A predictor with the bundle's slab settings (crop size, HU window, in-plane spacing, batch size).

        Raises:
            CARRequestError: (422) ``num_samples`` or ``seed`` out of range.
        """
        try:
            num_samples = _positive_int(num_samples, "num_samples", MAX_SAMPLES)
            seed = int(seed)
        except (TypeError, ValueError) as e:
            raise CARRequestError(BAD_INPUT, f"bad request parameter: {e}") from e
        if not 0 <= seed < 2**63:
            raise CARRequestError(BAD_INPUT, f"seed must be in [0, 2**63), got {seed}.")
        return LesionSampleSetPredictor(
            network,
            num_samples=num_samples,
            crop_size=self.crop_size,
            in_plane_spacing=self.in_plane_spacing,
            hu_window=self.hu_window,
            batch_size=self.slice_batch_size,
            seed=seed,
            device=device,
            montage=False,
        )
