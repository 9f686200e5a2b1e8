"""A deterministic segmenter run frozen as F's conditioning input: a torch module or a MONAI bundle on disk.

The third source of black-box predictions, a folder of precomputed prediction maps, needs no network: the 2D
transforms load them and concatenate their one-hot channels to the image
(:func:`~monai_car.transforms.get_train_transforms_2d` with ``blackbox_one_hot=True`` and ``concat_blackbox=True``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["BlackBoxOneHot", "load_bundle_network"]


def load_bundle_network(
    bundle_dir: str | os.PathLike,
    config_file: str = "configs/inference.json",
    network_key: str = "network_def",
    weights: str | None = "models/model.pt",
    map_location: Any = "cpu",
) -> nn.Module:
    """Build a MONAI bundle's network from its config and load its weights (strictly).

    Args:
        bundle_dir: the bundle folder (``configs/``, ``models/``).
        config_file: the config that defines the network, relative to ``bundle_dir``.
        network_key: the config id of the network definition (MONAI's convention: ``network_def``).
        weights: the state dict relative to ``bundle_dir`` (a bare state dict, or a dict with ``"model"`` or
            ``"state_dict"``); ``None`` keeps the freshly built weights.
        map_location: passed to ``torch.load``.

    Returns:
        the network, in eval mode.

    Raises:
        FileNotFoundError: the bundle, its config or its weights are missing (the message names the path).
        KeyError: the config has no ``network_key``.
        TypeError: ``network_key`` does not build a ``torch.nn.Module``.
    """
    from monai.bundle import ConfigParser

    root = Path(bundle_dir).expanduser().absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"black-box bundle folder {root} does not exist; give the folder holding configs/.")
    config = root / config_file
    if not config.is_file():
        raise FileNotFoundError(f"black-box bundle {root} has no {config_file}; name the config with config_file=.")
    parser = ConfigParser()
    parser.read_config(str(config))
    parser["bundle_root"] = str(root)
    if network_key not in parser:
        raise KeyError(f"{config} defines no {network_key!r}; name the network's id with network_key=.")
    net = parser.get_parsed_content(network_key, instantiate=True)
    if not isinstance(net, nn.Module):
        raise TypeError(f"{config}: {network_key!r} builds a {type(net).__name__}, not a torch.nn.Module.")
    if weights is not None:
        path = root / weights
        if not path.is_file():
            raise FileNotFoundError(f"black-box bundle {root} has no weights {weights}; train it or pass weights=.")
        state = torch.load(path, map_location=map_location, weights_only=True)
        if isinstance(state, dict):
            for key in ("model", "state_dict"):
                if key in state and isinstance(state[key], dict):
                    state = state[key]
                    break
        net.load_state_dict(state, strict=True)
    return net.eval()


class BlackBoxOneHot(nn.Module):
    """A frozen black box: images ``(B, C, *spatial)`` -> the one-hot of its argmax ``(B, K, *spatial)``.

    The wrapped network never trains: its parameters have ``requires_grad=False``, it stays in eval mode whatever
    ``train()`` is called with, and its forward runs without a graph. Its output's channels are class scores
    (logits or probabilities); their argmax is the prediction.

    Args:
        network: the black box, a torch module or the path of a MONAI bundle (see :func:`load_bundle_network`).
        num_classes: ``K``, the one-hot width (F's classes; may exceed the black box's channels, e.g. 25 channels
            for a 19-class Cityscapes segmenter: the copy and void channels stay 0).
        map_location: for a bundle path, passed to ``torch.load``.
    """

    def __init__(self, network: nn.Module | str | os.PathLike, num_classes: int, map_location: Any = "cpu") -> None:
        super().__init__()
        if isinstance(network, (str, os.PathLike)):
            network = load_bundle_network(network, map_location=map_location)
        if not isinstance(network, nn.Module):
            raise TypeError(f"network must be a torch.nn.Module or a bundle path, got {type(network).__name__}.")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}.")
        self.network = network
        self.num_classes = num_classes
        for p in self.network.parameters():
            p.requires_grad_(False)
        self.network.eval()

    def train(self, mode: bool = True) -> BlackBoxOneHot:
        """Keep the black box in eval mode (``mode`` applies to nothing else here)."""
        super().train(mode)
        self.network.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One-hot prediction ``(B, K, *spatial)`` in ``x``'s dtype."""
        with torch.no_grad():
            scores = self.network(x)
        if not isinstance(scores, torch.Tensor) or scores.shape[0] != x.shape[0] or scores.shape[2:] != x.shape[2:]:
            raise ValueError(
                f"the black box must map {tuple(x.shape)} to class scores (B, C, *spatial) on the same grid, got "
                f"{getattr(scores, 'shape', type(scores).__name__)}."
            )
        if scores.shape[1] > self.num_classes:
            raise ValueError(
                f"the black box predicts {scores.shape[1]} classes, more than num_classes={self.num_classes}."
            )
        labels = scores.argmax(dim=1) if scores.shape[1] > 1 else (scores[:, 0] > 0).long()
        one_hot = torch.nn.functional.one_hot(labels, self.num_classes).movedim(-1, 1)
        return one_hot.to(dtype=x.dtype)
