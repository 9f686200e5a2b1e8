"""Export a trained :class:`~monai_car.networks.CARNet` to one ``.pt2`` file that runs with only ``torch`` installed.

The file is a :func:`torch.export.export` program of :class:`CARSampler`, saved with :func:`torch.export.save`; the
export metadata (``noise_dim``, ``num_classes``, shapes, versions, ...) travels inside it as the JSON extra file
:data:`METADATA_FILE`. Loading needs neither ``monai_car`` nor MONAI::

    import json, torch

    extra = {"monai_car_metadata.json": ""}
    program = torch.export.load("model.pt2", extra_files=extra).module()
    meta = json.loads(extra["monai_car_metadata.json"])
    probs, samples = program(image, torch.randn(image.shape[0], 16, meta["noise_dim"]))

What was checked in torch 2.13 (CPU):

* ``torch.jit.script`` and ``torch.jit.trace`` emit ``DeprecationWarning: ... is deprecated. Please switch to
  torch.compile or torch.export``, so TorchScript is not used. ``monai.bundle.ckpt_export`` (MONAI 1.6.1) is
  TorchScript-only (``convert_to_torchscript`` + ``save_net_with_metadata`` into a ``.ts``) and exports ``forward``
  (F) only, not G's sampling, so it is not used either.
* ``torch.export.save`` / ``torch.export.load`` support ``extra_files`` (stored under ``<archive>/extra/``).
* Batch ``B`` and samples ``S`` export as dynamic dims. :meth:`CARNet.sample` itself cannot be exported with them
  dynamic (``int(num_samples)`` and the ``range`` over ``B * S`` rows specialise both to the example values), so
  :class:`CARSampler` runs the same computation (F once, the ``B * S`` image/probability/noise rows through
  :meth:`CARNet.refine` in one pass) with shape-symbolic operations; the tests check it equals ``sample``.
* The spatial size can be dynamic too: SegNet's max-unpool (``output_size`` from the encoder) traces symbolically
  for any size. The constraint comes from :class:`RefinementUNet`: its skip-connection size match branches on
  equality, so every spatial size must be a multiple of ``2 ** len(refinement_net.down)`` (16 by default) and at
  least twice that (a bottleneck of size 1 is specialised by the tracer) and at least SegNet's ``2 ** levels``;
  metadata ``spatial_multiple`` / ``min_spatial_size`` (32 / 32 for the default LIDC networks). The exported program
  checks this itself (an ``AssertionError`` naming the violated guard). For sub-networks of other types the size
  constraints are not known here and the spatial size is fixed at export time (``dynamic_spatial=False``).
* Device and dtype are those of the example inputs (the network's parameters) at export time.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.export import Dim

from monai_car import __version__
from monai_car.utils.atomic import atomic_file

from .nets import CalibrationConvNet, CalibrationSegNet, CARNet, RefinementUNet

__all__ = ["CARSampler", "METADATA_FILE", "EXPORT_FORMAT", "export_carnet", "load_exported_carnet"]

#: Name of the JSON extra file holding the export metadata inside the ``.pt2`` archive.
METADATA_FILE = "monai_car_metadata.json"
#: Value of the metadata's ``"format"`` key, identifying a CARNet export.
EXPORT_FORMAT = "monai_car.carnet_sampler"
_FORMAT_VERSION = 1
_RESERVED_KEYS = (
    "format",
    "format_version",
    "monai_car_version",
    "torch_version",
    "spatial_dims",
    "in_channels",
    "num_classes",
    "noise_dim",
    "image_shape",
    "num_samples",
    "dynamic_batch",
    "dynamic_spatial",
    "spatial_multiple",
    "min_spatial_size",
    "inputs",
    "outputs",
)


class CARSampler(nn.Module):
    """``(image, noise) -> (F probabilities, G samples)``: a CARNet's sampling path with explicit noise.

    With the noise an input, the module is deterministic and draws no random numbers, so it exports as a pure
    program. Sample ``s`` of image ``b`` uses ``noise[b, s]``, as in :meth:`CARNet.sample` with ``noise=``.

    Args:
        carnet: the trained network.

    Shapes:
        ``image``: ``(B, C, *spatial)``; ``noise``: ``(B, S, noise_dim)``; outputs: ``(B, K, *spatial)`` calibration
        probabilities and ``(B, S, K, *spatial)`` sample probabilities.
    """

    def __init__(self, carnet: CARNet) -> None:
        super().__init__()
        if not isinstance(carnet, CARNet):
            raise TypeError(f"CARSampler wraps a CARNet, got {type(carnet).__name__}.")
        self.carnet = carnet

    def forward(self, image: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(calibration_probs (B, K, *spatial), samples (B, S, K, *spatial))``."""
        if not isinstance(image, torch.Tensor) or image.ndim < 3:
            raise ValueError(f"image must be a tensor (B, C, *spatial), got {getattr(image, 'shape', type(image))}.")
        noise_dim = self.carnet.noise_dim
        if not isinstance(noise, torch.Tensor) or noise.ndim != 3 or noise.shape[2] != noise_dim:
            raise ValueError(f"noise must be a tensor (B, S, {noise_dim}), got {getattr(noise, 'shape', type(noise))}.")
        if noise.shape[0] != image.shape[0]:
            raise ValueError(f"noise {tuple(noise.shape)} and image {tuple(image.shape)} disagree in batch size.")
        b, s = noise.shape[0], noise.shape[1]
        probs = self.carnet(image)
        g = self.carnet.refinement_net
        if isinstance(g, RefinementUNet) and g.forward_multi_matches_forward():
            # G's noise-free work once per image (CARNet.sample's shared path), B and S symbolic
            g_in = torch.cat([image, probs], dim=1)
            return probs, g.forward_multi_traceable(g_in, noise.to(dtype=image.dtype))
        # CARNet.sample's one-pass path, written without int()/range() on B and S so that both stay symbolic
        xs = image.unsqueeze(1).expand(b, s, *image.shape[1:]).reshape(b * s, *image.shape[1:])
        ps = probs.unsqueeze(1).expand(b, s, *probs.shape[1:]).reshape(b * s, *probs.shape[1:])
        z = noise.reshape(b * s, noise_dim).to(dtype=image.dtype)
        samples = self.carnet.refine(xs, ps, z)
        return probs, samples.reshape(b, s, *samples.shape[1:])


def _spatial_dims(network: CARNet) -> int | None:
    """The sub-networks' ``spatial_dims`` attribute (they must agree), or ``None`` when neither has one."""
    found = {
        int(sub.spatial_dims)
        for sub in (network.calibration_net, network.refinement_net)
        if hasattr(sub, "spatial_dims")
    }
    if len(found) > 1:
        raise ValueError(f"calibration_net and refinement_net disagree in spatial_dims: {sorted(found)}.")
    return found.pop() if found else None


def _spatial_constraints(network: CARNet) -> tuple[int, int] | None:
    """``(multiple, minimum)`` every spatial size of a dynamic-spatial export obeys, or ``None`` if not known.

    :class:`RefinementUNet` needs multiples of ``2 ** levels`` and at least two of them; :class:`CalibrationSegNet`
    takes any size of at least ``2 ** levels``; :class:`CalibrationConvNet` any size.
    """
    multiple, minimum = 1, 1
    for sub in (network.calibration_net, network.refinement_net):
        if isinstance(sub, RefinementUNet):
            step = 2 ** len(sub.down)
            multiple, minimum = math.lcm(multiple, step), max(minimum, 2 * step)
        elif isinstance(sub, CalibrationSegNet):
            minimum = max(minimum, 2 ** len(sub.encoders))
        elif not isinstance(sub, CalibrationConvNet):
            return None
    return multiple, max(multiple * math.ceil(minimum / multiple), 2 * multiple)


def _validate_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping or None, got {type(metadata).__name__}.")
    clash = sorted(str(k) for k in metadata if k in _RESERVED_KEYS)
    if clash:
        raise ValueError(f"metadata keys {clash} are set by the exporter; use other names.")
    if any(not isinstance(k, str) for k in metadata):
        raise TypeError("metadata keys must be strings.")
    try:
        json.dumps(dict(metadata))
    except (TypeError, ValueError) as e:
        raise TypeError(f"metadata must be JSON-serialisable: {e}") from e
    return dict(metadata)


def export_carnet(
    network: CARNet,
    path: str | os.PathLike[str],
    image_shape: Sequence[int],
    num_samples: int = 16,
    dynamic_batch: bool = True,
    metadata: Mapping[str, Any] | None = None,
    dynamic_spatial: bool | None = None,
) -> Path:
    """Export ``network``'s :class:`CARSampler` with :func:`torch.export.export` and save it to ``path`` atomically.

    The network is exported in eval mode (batch norm running statistics, no dropout) with its parameters frozen, so
    the program's outputs do not require grad; its training and ``requires_grad`` flags are restored afterwards.
    The example inputs are made on the network's device in its parameter dtype, which the program then expects.

    Args:
        network: the trained CARNet.
        path: target ``.pt2`` file; its folder must exist. Written via a temp file in that folder and
            ``os.replace``, with the permissions of a file made by ``open()`` (``0o666 & ~umask``, 0644 under the
            usual umask 0022).
        image_shape: one image's shape ``(C, *spatial)`` (``len == spatial_dims + 1``), the example the program is
            traced with; with a static spatial size the program accepts only this size.
        num_samples: ``S`` of the example; with ``dynamic_batch=False`` the only ``S`` the program accepts.
        dynamic_batch: make the batch ``B`` and the number of samples ``S`` dynamic; else the program is fixed to
            ``B = 1`` and ``S = num_samples``.
        metadata: extra JSON-serialisable entries for the metadata (keys must not clash with the exporter's).
        dynamic_spatial: make the spatial size dynamic (multiples of ``spatial_multiple``, at least
            ``min_spatial_size``; see the module docstring). ``None``: dynamic when the sub-networks' size
            constraints are known (CalibrationSegNet / CalibrationConvNet with RefinementUNet), fixed otherwise.

    Returns:
        The written path.

    Raises:
        TypeError: ``network`` is not a CARNet or ``metadata`` is not JSON-serialisable.
        ValueError: bad ``path`` suffix or folder, ``image_shape`` not ``(C, *spatial)`` for the network,
            ``num_samples < 1``, or a dynamic spatial size requested with an example size that breaks the constraints.
        RuntimeError: ``torch.export`` could not export with the requested dynamic dims.
    """
    if not isinstance(network, CARNet):
        raise TypeError(f"network must be a monai_car.networks.CARNet, got {type(network).__name__}.")
    path = Path(path)
    if path.suffix != ".pt2":
        raise ValueError(f"export path must end in .pt2 (torch.export archive), got {str(path)!r}.")
    if not path.parent.is_dir():
        raise ValueError(f"folder of the export path does not exist: {str(path.parent)!r}.")
    if path.is_dir():
        raise ValueError(f"export path is a folder: {str(path)!r}.")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}.")
    shape = tuple(image_shape)
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape):
        raise ValueError(f"image_shape must be positive integers (C, *spatial), got {shape}.")
    spatial_dims = _spatial_dims(network)
    if spatial_dims is None:
        spatial_dims = len(shape) - 1
        if spatial_dims not in (2, 3):
            raise ValueError(f"image_shape must be (C, H, W) or (C, D, H, W), got {shape}.")
    if len(shape) != spatial_dims + 1:
        raise ValueError(
            f"image_shape must be (C, *spatial) with {spatial_dims} spatial dims for this network, got {shape}."
        )
    in_channels = getattr(network.calibration_net, "in_channels", None)
    if in_channels is not None and shape[0] != int(in_channels):
        raise ValueError(f"image_shape has {shape[0]} channels, the calibration net takes {in_channels}.")
    extra = _validate_metadata(metadata)

    constraints = _spatial_constraints(network)
    if dynamic_spatial is None:
        dynamic_spatial = constraints is not None
    if dynamic_spatial:
        if constraints is None:
            raise ValueError(
                "dynamic_spatial=True needs known size constraints (CalibrationSegNet or CalibrationConvNet with "
                f"RefinementUNet); got {type(network.calibration_net).__name__} and "
                f"{type(network.refinement_net).__name__}. Export with dynamic_spatial=False."
            )
        multiple, minimum = constraints
        bad = [n for n in shape[1:] if n % multiple or n < minimum]
        if bad:
            raise ValueError(
                f"with a dynamic spatial size every spatial size must be a multiple of {multiple} and >= {minimum}, "
                f"got {shape[1:]}; pick such an example size or export with dynamic_spatial=False."
            )
    else:
        multiple, minimum = None, None

    param = next(network.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    batch, samples = (2, max(num_samples, 2)) if dynamic_batch else (1, num_samples)
    generator = torch.Generator().manual_seed(0)
    image = torch.rand((batch, *shape), generator=generator).to(device=device, dtype=dtype)
    noise = torch.randn((batch, samples, network.noise_dim), generator=generator).to(device=device, dtype=dtype)

    image_dims: dict[int, Any] = {}
    noise_dims: dict[int, Any] = {}
    if dynamic_batch:
        b_dim = Dim("batch", min=1)
        image_dims[0] = noise_dims[0] = b_dim
        noise_dims[1] = Dim("num_samples", min=1)
    if dynamic_spatial:
        for i in range(spatial_dims):
            image_dims[2 + i] = multiple * Dim(f"spatial{i}_blocks", min=minimum // multiple)
    dynamic_shapes = {"image": image_dims or None, "noise": noise_dims or None}

    meta: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "format_version": _FORMAT_VERSION,
        "monai_car_version": __version__,
        "torch_version": torch.__version__,
        "spatial_dims": spatial_dims,
        "in_channels": shape[0],
        "num_classes": network.num_classes,
        "noise_dim": network.noise_dim,
        "image_shape": list(shape),
        "num_samples": num_samples,
        "dynamic_batch": bool(dynamic_batch),
        "dynamic_spatial": bool(dynamic_spatial),
        "spatial_multiple": multiple,
        "min_spatial_size": minimum,
        "inputs": {"image": "(B, C, *spatial) float", "noise": "(B, S, noise_dim) standard normal"},
        "outputs": {"calibration_probs": "(B, K, *spatial)", "samples": "(B, S, K, *spatial)"},
        **extra,
    }

    was_training = network.training
    requires_grad = [p.requires_grad for p in network.parameters()]
    # an inference program whose outputs do not require grad; the program shares the network's parameter objects,
    # so they stay frozen until it is saved
    network.eval().requires_grad_(False)
    try:
        try:
            program = torch.export.export(CARSampler(network), (image, noise), dynamic_shapes=dynamic_shapes)
        except Exception as e:  # torch.export raises several internal error types
            raise RuntimeError(
                f"torch.export failed (dynamic_batch={dynamic_batch}, dynamic_spatial={dynamic_spatial}, "
                f"example image {(batch, *shape)}); try fixing more dims: {e}"
            ) from e
        _save_atomically(program, path, meta)
    finally:
        network.train(was_training)
        for p, flag in zip(network.parameters(), requires_grad):
            p.requires_grad_(flag)
    return path


def _save_atomically(program: torch.export.ExportedProgram, path: Path, meta: Mapping[str, Any]) -> None:
    """``torch.export.save`` into a temp file next to ``path``, then ``os.replace``-d onto ``path`` (permissions of a
    file made by ``open()``; see :func:`monai_car.utils.atomic.atomic_file`)."""
    with atomic_file(path, suffix=".pt2") as tmp, open(tmp, "wb") as f:
        torch.export.save(program, f, extra_files={METADATA_FILE: json.dumps(meta, indent=2, sort_keys=True)})


def load_exported_carnet(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Load a file written by :func:`export_carnet`; uses only ``torch`` (and the standard library).

    Args:
        path: the ``.pt2`` file.

    Returns:
        ``(module, metadata)``: ``module(image, noise)`` returns ``(calibration_probs, samples)`` as
        :meth:`CARSampler.forward`. Inputs of the wrong shape (including a spatial size outside the exported
        constraints, see ``metadata["spatial_multiple"]`` / ``["min_spatial_size"]``) raise an ``AssertionError``
        naming the violated guard.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a torch.export archive, or not a CARNet export (no or wrong metadata).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no exported CARNet at {str(path)!r}.")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile as e:
        raise ValueError(f"{str(path)!r} is not a torch.export archive (not a zip file).") from e
    if not any(n.endswith("/archive_format") for n in names):
        raise ValueError(f"{str(path)!r} is not a torch.export archive (e.g. a torch.save checkpoint).")
    if not any(n.endswith(f"/extra/{METADATA_FILE}") for n in names):
        raise ValueError(f"{str(path)!r} is a torch.export archive without CARNet metadata ({METADATA_FILE}).")
    extra = {METADATA_FILE: ""}
    try:
        program = torch.export.load(path, extra_files=extra)
    except Exception as e:  # deserialisation errors come as several types
        raise ValueError(f"could not load the torch.export archive {str(path)!r}: {e}") from e
    try:
        meta = json.loads(extra[METADATA_FILE])
    except json.JSONDecodeError as e:
        raise ValueError(f"{str(path)!r} has unreadable metadata: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{str(path)!r} is not a CARNet export (metadata format is not {EXPORT_FORMAT!r}).")
    return program.module(), meta
