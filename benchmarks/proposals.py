"""Hot-path changes proposed to the library, written here on top of the *unchanged* library modules so that the
benchmarks can measure them against what the library does today.

Nothing in ``monai_car`` is modified: these functions use the public pieces of the library's networks and losses. If
the lead adopts a change, it moves into the library (see BENCHMARKS.md, "Hot-path changes") and leaves this file;
the benchmark then compares the library's own paths.

- :func:`two_pass_generator_step` -- the stage-2 G update with memory bounded by a chunk of samples and the *exact*
  gradient of ``L_G = w_adv L_adv + w_cal L_cal``. ``L_cal`` couples the M samples through their mean, so the
  samples cannot simply be back-propagated chunk by chunk. Pass 1 draws all M samples without a graph and takes
  ``g = d(w_cal L_cal)/d mean``; pass 2 recomputes each chunk with a graph (same noise, same dropout masks through a
  replayed RNG state) and back-propagates ``w_adv L_adv(chunk) + <s_chunk, g> / M``, whose gradient is exactly the
  chunk's share of ``d L_G``. Cost: one extra G forward without a graph. Since adopted as
  ``RefinementTrainer(sample_chunk_size=...)`` (``monai_car.engines.two_pass``, measured as ``engine_two_pass``); this
  standalone copy stays as the ``two_pass`` variant of ``bench_training.py`` and shares the library's RNG/batch-norm
  helpers.

Also adopted, and so no longer here: G's noise-free work once per image when sampling in eval mode
(``RefinementUNet.forward_multi``, used by ``CARNet.sample``), and the metrics' pair counts over each image's
foreground window (``monai_car.metrics``).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from monai_car.engines.two_pass import _norm_buffers, _rng_state, _set_rng_state  # the adopted helpers
from monai_car.losses import CalibrationLoss
from monai_car.networks import CARNet

__all__ = ["two_pass_generator_step"]


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
