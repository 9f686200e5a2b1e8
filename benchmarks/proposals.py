"""Hot-path changes proposed to the library, written here on top of the *unchanged* library modules so that the
benchmarks can measure them against what the library does today.

Nothing in ``monai_car`` is modified: these functions reach into the public submodules of
:class:`~monai_car.networks.nets.RefinementUNet` and :class:`~monai_car.networks.nets.CARNet`. If the lead adopts a
change, it moves into the library (see BENCHMARKS.md, "Proposed changes") and the benchmark keeps comparing.

1. :func:`shared_encoder_sample` -- sampling with G's noise-free work done once per image instead of once per draw.
   In G, the noise enters only after each up block. Everything before the first injection (the encoder, the
   bottleneck, the first up block) does not depend on ``z``, and neither does the skip-connection half of every later
   up block's first convolution, because ``conv(cat(u, skip)) = conv_u(u) + conv_skip(skip) + bias``. In eval mode
   (batch norm on running statistics, dropout off) this gives the same numbers as ``CARNet.sample`` with about a
   third of the per-draw FLOPs.
2. :func:`two_pass_generator_step` -- the stage-2 G update with memory bounded by a chunk of samples and the *exact*
   gradient of ``L_G = w_adv L_adv + w_cal L_cal``. ``L_cal`` couples the M samples through their mean, so the
   samples cannot simply be back-propagated chunk by chunk. Pass 1 draws all M samples without a graph and takes
   ``g = d(w_cal L_cal)/d mean``; pass 2 recomputes each chunk with a graph (same noise, same dropout masks through a
   replayed RNG state) and back-propagates ``w_adv L_adv(chunk) + <s_chunk, g> / M``, whose gradient is exactly the
   chunk's share of ``d L_G``. Cost: one extra G forward without a graph.
3. :func:`crop_to_foreground` -- before the metrics' pairwise matrix products, crop every image's masks to one
   window holding all of that image's foreground (samples and graders). Pixels outside are background in every mask,
   so intersections and unions, hence GED and HM-IoU, are unchanged; lesions cover a small part of a 128x128 crop,
   so the products and the bool-to-float conversions shrink several-fold.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from monai_car.losses import CalibrationLoss
from monai_car.networks import CARNet
from monai_car.networks.blocks import match_spatial_size

__all__ = ["crop_to_foreground", "shared_encoder_sample", "two_pass_generator_step"]


def _conv_part(conv: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``conv``'s convolution applied with another ``weight`` (a slice of its input channels)."""
    fn = F.conv2d if x.ndim == 4 else F.conv3d
    if getattr(conv, "padding_mode", "zeros") != "zeros" or conv.groups != 1:
        raise NotImplementedError("shared_encoder_sample supports zero-padded, ungrouped convolutions only.")
    return fn(x, weight, bias, conv.stride, conv.padding, conv.dilation, 1)


def _split_first_conv(block: nn.Sequential) -> tuple[nn.Module, nn.Module, list[nn.Module]]:
    """The first ``ConvNormActDropout`` of an up block: its conv, its norm/act/dropout, and the blocks after it."""
    first = block[0]
    conv = getattr(first, "conv", None)
    adn = getattr(first, "adn", None)
    if conv is None or adn is None:
        raise NotImplementedError("expected the up block to start with a MONAI Convolution (conv + adn).")
    return conv, adn, list(block)[1:]


@torch.no_grad()
def shared_encoder_sample(
    net: CARNet,
    x: torch.Tensor,
    num_samples: int,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    calibration_probs: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """``CARNet.sample`` in eval mode, with G's noise-free work computed once per image.

    Args:
        net: a :class:`~monai_car.networks.nets.CARNet` whose G is a ``RefinementUNet``, in eval mode.
        x: images ``(B, C, *spatial)``.
        num_samples: draws ``S`` per image.
        noise: ``(B, S, noise_dim)``; drawn with ``generator`` when ``None`` (same draws as ``CARNet.sample``).
        generator: random source for the noise.
        calibration_probs: F's probabilities if already computed.
        chunk_size: the most rows (``B * draws``) per decoder pass; all draws at once when ``None``.

    Returns:
        ``(B, S, K, *spatial)`` probabilities, equal to ``net.sample(x, S, noise=noise)`` up to float rounding.
    """
    g = net.refinement_net
    if g.training:
        raise RuntimeError("shared_encoder_sample needs G in eval mode (dropout off, batch norm on running stats).")
    b, s = x.shape[0], int(num_samples)
    probs = net.calibration_net(x) if calibration_probs is None else calibration_probs
    if noise is None:
        noise = net.sample_noise(b * s, generator=generator, device=x.device, dtype=x.dtype).view(b, s, -1)
    h = g.stem(torch.cat([x, probs], dim=1))
    skips = [h]
    for block in g.down:
        h = block(g.pool(h))
        skips.append(h)
    skips.pop()
    # z-independent: the first up block, and the skip half of every later up block's first convolution
    levels = list(zip(g.upsample, g.up, g.noise))
    skip0 = skips.pop()
    first = levels[0][1](torch.cat([match_spatial_size(levels[0][0](h), skip0.shape[2:]), skip0], dim=1))
    skip_terms = []
    for _, block, _ in levels[1:]:
        conv, _, _ = _split_first_conv(block)
        skip = skips.pop()
        cout = conv.out_channels
        skip_terms.append(_conv_part(conv, skip, conv.weight[:, cout:], conv.bias))
    per_chunk = s if chunk_size is None else max(1, int(chunk_size) // max(b, 1))
    outputs = []
    for j in range(0, s, per_chunk):
        c = min(per_chunk, s - j)
        z = noise[:, j : j + c].reshape(b * c, -1).to(device=x.device, dtype=first.dtype)
        h = first.unsqueeze(1).expand(b, c, *first.shape[1:]).reshape(b * c, *first.shape[1:])
        h = levels[0][2](h, z)
        for (upsample, block, inject), term in zip(levels[1:], skip_terms):
            conv, adn, rest = _split_first_conv(block)
            cout = conv.out_channels
            u = match_spatial_size(upsample(h), term.shape[2:])
            y = _conv_part(conv, u, conv.weight[:, :cout], None)
            y.view(b, c, *y.shape[1:]).add_(term.unsqueeze(1))
            y = adn(y)
            for m in rest:
                y = m(y)
            h = inject(y, z)
        out = torch.softmax(g.head(h), dim=1)
        outputs.append(out.view(b, c, *out.shape[1:]))
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)


def _rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _norm_buffers(module: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(buffer, copy) for every batch-norm running statistic, to undo the no-graph pass's updates."""
    saved = []
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            for buf in (m.running_mean, m.running_var, m.num_batches_tracked):
                if buf is not None:
                    saved.append((buf, buf.detach().clone()))
    return saved


def two_pass_generator_step(
    net: CARNet,
    discriminator: nn.Module,
    x: torch.Tensor,
    probs: torch.Tensor,
    num_samples: int,
    sample_chunk: int,
    noise: torch.Tensor | None = None,
    adv_weight: float = 10.0,
    cal_weight: float = 5.0,
    calibration_loss: nn.Module | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Accumulate ``d L_G / d theta_G`` into G's ``.grad`` with at most ``B * sample_chunk`` rows in a graph.

    ``L_G = adv_weight * mean softplus(-D(x, s)) + cal_weight * KL(mean_m s_m || F(x))`` over all ``M`` samples, as in
    a plain single-pass update; D receives no gradient. Batch norm in G sees one chunk per forward, as with
    ``CARNet.sample(chunk_size=...)``; with ``sample_chunk >= M``, or G in eval mode, the gradient equals the
    single-pass one. Running statistics are updated once per chunk (the no-graph pass leaves them untouched).

    Args:
        net: F + G; only G is run.
        discriminator: D, conditioned on the image: ``D(cat(x, s))``.
        x: images ``(B, C, *spatial)``.
        probs: F's probabilities ``(B, K, *spatial)`` (detached).
        num_samples: ``M``.
        sample_chunk: samples per image in one graph.
        noise: ``(B, M, noise_dim)``; drawn when ``None``.
        adv_weight: weight of the non-saturating adversarial loss.
        cal_weight: weight of the calibration loss.
        calibration_loss: defaults to :class:`~monai_car.losses.CalibrationLoss`.
        autocast_dtype: run G and D under ``torch.autocast`` with this dtype (e.g. bfloat16); losses in float32.

    Returns:
        ``(samples, losses)``: the detached ``(B, M, K, *spatial)`` samples (for D's update) and the loss values.
    """
    b, m = x.shape[0], int(num_samples)
    chunk = max(1, min(int(sample_chunk), m))

    def autocast() -> Any:
        if autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(x.device.type, dtype=autocast_dtype)

    cal = calibration_loss if calibration_loss is not None else CalibrationLoss()
    probs = probs.detach()
    if noise is None:
        noise = net.sample_noise(b * m, device=x.device, dtype=x.dtype).view(b, m, -1)
    starts = list(range(0, m, chunk))
    states = []
    saved = _norm_buffers(net.refinement_net)
    with torch.no_grad():
        parts = []
        for j in starts:
            states.append(_rng_state(x.device))
            with autocast():
                parts.append(net.sample(x, min(chunk, m - j), calibration_probs=probs, noise=noise[:, j : j + chunk]))
        samples = torch.cat(parts, dim=1).float()
        for buf, copy in saved:
            buf.copy_(copy)
    mean = samples.mean(dim=1).requires_grad_(True)
    l_cal = cal(mean.unsqueeze(1), probs)
    l_cal_value = float(l_cal.detach())
    (g_mean,) = torch.autograd.grad(cal_weight * l_cal, mean)
    g_mean = g_mean.unsqueeze(1) / m
    flags = [p.requires_grad for p in discriminator.parameters()]
    discriminator.requires_grad_(False)
    l_adv_total = 0.0
    try:
        for j, state in zip(starts, states):
            c = min(chunk, m - j)
            _set_rng_state(state, x.device)
            with autocast():
                s = net.sample(x, c, calibration_probs=probs, noise=noise[:, j : j + c])
                xs = x.unsqueeze(1).expand(b, c, *x.shape[1:]).reshape(b * c, *x.shape[1:])
                logits = discriminator(torch.cat([xs, s.reshape(b * c, *s.shape[2:])], dim=1))
            l_adv = F.softplus(-logits.float()).sum() / (logits.numel() / c * m)
            surrogate = adv_weight * l_adv + (s.float() * g_mean).sum()
            surrogate.backward()
            l_adv_total += float(l_adv.detach())
    finally:
        for p, flag in zip(discriminator.parameters(), flags):
            p.requires_grad_(flag)
    losses = {"adv": l_adv_total, "cal": l_cal_value, "total": adv_weight * l_adv_total + cal_weight * l_cal_value}
    return samples, losses


def _any_over_set(x: torch.Tensor) -> torch.Tensor:
    """``(B, N, *spatial) -> (B, *spatial)``: foreground in any mask of the set (bool reduced as bytes: fast)."""
    if x.dtype == torch.bool:
        return x.view(torch.uint8).amax(dim=1) > 0
    return (x != 0).amax(dim=1)


def crop_to_foreground(y_pred: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop ``(B, S, *spatial)`` and ``(B, R, *spatial)`` binary masks to a common window size holding, for every
    image, all foreground pixels of its samples and graders (window placed per image, inside the image).

    Every pairwise intersection and union count is unchanged, so are GED and HM-IoU computed from the crops.
    """
    b = y_pred.shape[0]
    spatial = y_pred.shape[2:]
    union = _any_over_set(y_pred) | _any_over_set(y)  # (B, *spatial)
    lo = torch.zeros(b, len(spatial), dtype=torch.long)
    hi = torch.zeros(b, len(spatial), dtype=torch.long)
    for d in range(len(spatial)):
        other = tuple(a for a in range(1, len(spatial) + 1) if a != d + 1)
        present = union.any(dim=other).cpu() if other else union.cpu()  # (B, size_d)
        idx = torch.arange(spatial[d])
        has = present.any(dim=1)
        lo[:, d] = torch.where(has, torch.where(present, idx, spatial[d]).min(dim=1).values, 0)
        hi[:, d] = torch.where(has, torch.where(present, idx, -1).max(dim=1).values, 0)
    size = (hi - lo + 1).max(dim=0).values  # common window size per axis
    start = torch.minimum(lo, torch.tensor(spatial) - size)  # keep the window inside the image
    crops_p, crops_y = [], []
    for i in range(b):
        window = tuple(slice(int(s0), int(s0 + n)) for s0, n in zip(start[i], size))
        crops_p.append(y_pred[(i, slice(None)) + window])
        crops_y.append(y[(i, slice(None)) + window])
    return torch.stack(crops_p), torch.stack(crops_y)
