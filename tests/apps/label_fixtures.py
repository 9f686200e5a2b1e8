"""Helpers of the MONAI Label app tests: an untrained seeded model, synthetic CT studies, a server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

__all__ = [
    "APP_DIR",
    "BUNDLE_CONFIG",
    "StudySpec",
    "bundle_network",
    "free_port",
    "monailabel_server",
    "split_multipart",
    "write_lesions_csv",
    "write_study",
    "write_untrained_model",
]

REPO = Path(__file__).resolve().parents[2]
APP_DIR = REPO / "apps" / "monailabel_car"
BUNDLE_CONFIG = REPO / "bundles" / "lidc_car" / "configs" / "inference.json"


def bundle_network(seed: int) -> tuple[torch.nn.Module, object]:
    """The LIDC bundle's inference CARNet, initialised from ``seed``, and its training geometry (from the config)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE_CONFIG))
    torch.manual_seed(seed)
    network = parser.get_parsed_content("network_def", lazy=False)
    return network.eval(), parser.get_parsed_content("training_geometry", lazy=False)


def write_untrained_model(path: Path, seed: int = 0, image_gain: float = 30.0, noise_gain: float = 4.0) -> Path:
    """``models/model.pt`` as training writes it (``{"model": state dict, "geometry": settings}``), untrained.

    An untrained G spreads its samples about equally whatever the image (mutual information ~0.04 nats on air and
    on soft tissue alike), so two studies would not differ in uncertainty. Two weights are scaled so that they do,
    by construction: G's first convolution's image channel (``image_gain``) and its last noise injection's scale
    (``noise_gain``). G's features then grow with the image intensity and its noise multiplies them: the samples
    disagree more where the CT is bright (mutual information ~0.10 nats on lung, ~0.30 on soft tissue).
    """
    from monai_car.utils import GEOMETRY_KEY, save_checkpoint

    network, geometry = bundle_network(seed)
    with torch.no_grad():
        network.refinement_net.stem[0].conv.weight[:, 0] *= image_gain
        network.refinement_net.noise[-1].to_scale.weight *= noise_gain
    return save_checkpoint(path, {"model": network, GEOMETRY_KEY: geometry})


class StudySpec:
    """A synthetic CT: lung background with texture and one spherical nodule.

    Args:
        affine: voxel-to-RAS affine.
        shape: ``(X, Y, Z)``.
        nodule_voxel: the nodule centre (voxel indices).
        radius_mm: nodule radius.
        nodule_hu: nodule intensity.
        seed: texture seed.
    """

    def __init__(
        self,
        affine: np.ndarray,
        shape: tuple[int, int, int],
        nodule_voxel: tuple[int, int, int],
        radius_mm: float,
        nodule_hu: float,
        seed: int,
    ) -> None:
        self.affine = np.asarray(affine, dtype=float)
        self.shape = shape
        self.nodule_voxel = nodule_voxel
        self.radius_mm = radius_mm
        self.nodule_hu = nodule_hu
        self.seed = seed

    def volume(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        idx = np.indices(self.shape).reshape(3, -1).astype(float)
        world = self.affine[:3, :3] @ idx + self.affine[:3, 3:4]
        centre = self.affine[:3, :3] @ np.asarray(self.nodule_voxel, dtype=float) + self.affine[:3, 3]
        inside = (np.linalg.norm(world - centre[:, None], axis=0) <= self.radius_mm).reshape(self.shape)
        vol = -850.0 + 40.0 * rng.standard_normal(self.shape)
        vol[inside] = self.nodule_hu + 20.0 * rng.standard_normal(int(inside.sum()))
        return vol.astype(np.float32)

    def nodule_world(self) -> np.ndarray:
        return self.affine[:3, :3] @ np.asarray(self.nodule_voxel, dtype=float) + self.affine[:3, 3]


def write_study(path: Path, spec: StudySpec) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(spec.volume(), spec.affine), str(path))
    return path


def write_lesions_csv(path: Path, rows: dict[str, np.ndarray]) -> Path:
    """The bundle's lesion CSV (LPS mm, a ``study`` column): one lesion ``n1`` per study at the given RAS point."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["lesion_id", "x", "y", "z", "study"])
        for study, ras in rows.items():
            writer.writerow(["n1", -ras[0], -ras[1], ras[2], study])
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def monailabel_server(
    studies: Path, conf: dict[str, str], log_path: Path, startup_timeout: float = 240.0
) -> Iterator[str]:
    """Run ``monailabel start_server`` for the app on 127.0.0.1 (a free port); yield its URL; stop it at the end.

    Outbound HTTP of the server goes to a closed local port (``HTTP(S)_PROXY``), so a server that tried to contact
    another address would fail instead of going out. MONAI Label's automatic background scoring is off (the tests
    call scoring themselves). The server's output goes to ``log_path``; its tail is in every failure message.
    """
    import requests

    port = free_port()
    command = [
        str(Path(sys.executable).with_name("monailabel")),
        "start_server",
        "--app",
        str(APP_DIR),
        "--studies",
        str(studies),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    for key, value in {"models": "car", **conf}.items():
        command += ["--conf", key, value]
    env = dict(os.environ)
    env.update(
        HTTP_PROXY="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
        NO_PROXY="127.0.0.1,localhost",
        MONAI_LABEL_AUTO_UPDATE_SCORING="false",
        MONAI_LABEL_SESSIONS="false",
        MONAILABEL_PYEXE=sys.executable,  # the `monailabel` script runs `python` from PATH otherwise
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "2"),
    )
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}:\n{_tail(log_path)}")
            try:
                if requests.get(f"{url}/info/", timeout=5, proxies={"http": None}).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer /info/ within {startup_timeout} s:\n{_tail(log_path)}")
            time.sleep(1.0)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 15)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait(timeout=30)


def split_multipart(response: object) -> tuple[dict, bytes, str]:
    """``(params JSON, file bytes, file name)`` of MONAI Label's multipart infer answer."""
    from requests_toolbelt.multipart.decoder import MultipartDecoder

    params, data, name = None, None, None
    for part in MultipartDecoder.from_response(response).parts:
        disposition = part.headers.get(b"Content-Disposition", b"").decode()
        if 'name="params"' in disposition:
            params = json.loads(part.content)
        elif 'name="image"' in disposition:
            data = part.content
            name = disposition.split("filename=")[-1].strip('"')
    if params is None or data is None:
        raise AssertionError(f"the answer lacks params or the image: {response.headers}")
    return params, data, name
