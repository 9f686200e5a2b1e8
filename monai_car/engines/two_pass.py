"""The gradient algorithm of stage 2's bounded-memory generator update: two passes over chunks of samples, exact.

:meth:`RefinementTrainer._update_generator_two_pass <monai_car.engines.RefinementTrainer>` runs it; this module holds
only the pure algorithm.

``L_G = w_adv * L_adv + w_2 * L_2`` where ``L_2`` (the calibration loss, or the refine cross entropy) may couple the
``M`` samples of an image (``L_cal`` through their mean), so the samples cannot simply be back-propagated chunk by
chunk. :func:`draw_samples` draws all ``M`` samples per image without a graph, ``c`` samples per image at a time
(``B * c`` rows per G pass), remembering the global RNG state before each chunk; the caller takes
``g = d(w_2 L_2) / d samples`` on the detached samples; :func:`replay_generator_backward` recomputes each chunk with a
graph -- same noise, same dropout masks through the replayed RNG state -- and back-propagates
``w_adv * L_adv(chunk) + <s_chunk, g_chunk>``, whose gradient is exactly the chunk's share of ``d L_G``. At most
``B * c`` rows of G (and D) are in a graph at once; the cost is one extra G forward without a graph.

What equals what: the result is the gradient of a single-pass ``L_G`` over samples *generated chunk by chunk* (G's
training-mode batch norm normalises each chunk with its own statistics, and each chunk draws its own dropout masks).
With ``sample_chunk_size >= M`` that is the plain single pass, up to float rounding. Batch-norm running statistics are
updated once per chunk, by the graph pass only (the no-graph pass restores them), as a chunk-by-chunk single pass would.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn

from monai_car.losses import generator_adversarial_loss
from monai_car.networks import CARNet
from monai_car.utils.rng import TorchRngState, get_torch_rng_state, set_torch_rng_state

from .refinement_utils import fake_discriminator_input
from .utils import frozen_parameters

__all__ = ["chunk_starts", "draw_samples", "replay_generator_backward"]


def chunk_starts(num_samples: int, sample_chunk_size: int) -> list[tuple[int, int]]:
    """``(start, size)`` of each chunk of ``num_samples`` samples, ``sample_chunk_size`` each (the last may be
    smaller)."""
    step = min(int(sample_chunk_size), int(num_samples))
    return [(j, min(step, num_samples - j)) for j in range(0, num_samples, step)]


def _norm_buffers(module: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(buffer, copy)`` for every batch-norm running statistic, to undo the no-graph pass's updates."""
    saved = []
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            for buf in (m.running_mean, m.running_var, m.num_batches_tracked):
                if buf is not None:
                    saved.append((buf, buf.detach().clone()))
    return saved


def _sample_chunk(
    sampler: CARNet,
    x: torch.Tensor,
    probs: torch.Tensor,
    noise: torch.Tensor,
    start: int,
    size: int,
    chunk_size: int | None,
    share: bool,
) -> torch.Tensor:
    """Samples ``start .. start + size`` of every image, ``(B, size, K, *spatial)``, from their rows of ``noise``."""
    return sampler.sample(
        x,
        size,
        chunk_size=chunk_size,
        calibration_probs=probs,
        noise=noise[:, start : start + size],
        share_in_training=share,
    )


def draw_samples(
    sampler: CARNet,
    x: torch.Tensor,
    probs: torch.Tensor,
    noise: torch.Tensor,
    sample_chunk_size: int,
    chunk_size: int | None,
    autocast: Callable[[], AbstractContextManager[Any]],
    share: bool = False,
) -> tuple[torch.Tensor, list[TorchRngState]]:
    """Pass 1: all samples, chunk by chunk, without a graph; G's batch-norm running statistics are left untouched.

    Args:
        sampler: the CARNet whose ``sample`` runs G (in training mode).
        x: images ``(B, C, *spatial)``.
        probs: F's probabilities ``(B, K, *spatial)``.
        noise: ``(B, M, noise_dim)``.
        sample_chunk_size: samples per image in one chunk (``B * c`` rows).
        chunk_size: the most rows per G forward inside a chunk (``CARNet.sample``'s ``chunk_size``).
        autocast: a context-manager factory (AMP or a null context).
        share: ``CARNet.sample``'s ``share_in_training`` (G's noise-free work once per image).

    Returns:
        ``(samples, states)``: float32 ``(B, M, K, *spatial)`` samples without a graph, and the global RNG state
        before each chunk, for :func:`replay_generator_backward`.
    """
    m = noise.shape[1]
    states: list[TorchRngState] = []
    parts = []
    saved = _norm_buffers(sampler.refinement_net)
    with torch.no_grad():
        for j, c in chunk_starts(m, sample_chunk_size):
            states.append(get_torch_rng_state(x.device))
            with autocast():
                s = _sample_chunk(sampler, x, probs, noise, j, c, chunk_size, share)
            parts.append(s.float())
        for buf, copy in saved:
            buf.copy_(copy)
    return torch.cat(parts, dim=1), states


def replay_generator_backward(
    sampler: CARNet,
    discriminator: nn.Module,
    x: torch.Tensor,
    probs: torch.Tensor,
    noise: torch.Tensor,
    states: list[TorchRngState],
    sample_chunk_size: int,
    chunk_size: int | None,
    sample_grad: torch.Tensor,
    adversarial_weight: float,
    valid: torch.Tensor | None,
    autocast: Callable[[], AbstractContextManager[Any]],
    backward: Callable[[torch.Tensor], None],
    share: bool = False,
    sync: Callable[[bool], AbstractContextManager[Any]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pass 2: each chunk again with a graph, back-propagating its share of ``L_G`` into G's ``.grad``.

    D's parameters get no gradient. The global RNG ends in the state pass 1 left it in.

    Args:
        sampler, x, probs, noise, sample_chunk_size, chunk_size, autocast, share: as for :func:`draw_samples`.
        discriminator: D, ``(N, C + K, *spatial) -> (N, ...)`` logits; it must treat rows independently (no batch
            norm, or any layer mixing rows) for ``L_adv`` to be the single pass's.
        states: the RNG states :func:`draw_samples` returned.
        sample_grad: ``d(w_2 L_2) / d samples``, ``(B, M, K, *spatial)`` float32.
        adversarial_weight: ``w_adv``.
        valid: ``(B, 1, *spatial)`` mask of non-void pixels (void pixels are zeroed in D's input), or None.
        backward: called with each chunk's surrogate loss (e.g. scales it for a ``GradScaler``, then ``.backward()``).
        sync: ``sync(is_last_chunk)`` gives the context of each chunk's forward and backward (under DDP: ``no_sync``
            for all but the last, so the gradients accumulate locally and are all-reduced once); None: no context.

    Returns:
        ``(fake_logits, loss_adv)``: D's detached logits of all ``B * M`` samples in ``CARNet.sample``'s flattened
        order (row ``b * M + m``) and the detached ``L_adv`` over all of them.
    """
    b, m = x.shape[0], noise.shape[1]
    logits_parts, loss_adv = [], torch.zeros((), device=x.device)
    final_state = get_torch_rng_state(x.device)
    with frozen_parameters(discriminator):
        chunks = chunk_starts(m, sample_chunk_size)
        for i, ((j, c), state) in enumerate(zip(chunks, states)):
            set_torch_rng_state(state, x.device)
            with sync(i == len(chunks) - 1) if sync is not None else contextlib.nullcontext():
                with autocast():
                    s = _sample_chunk(sampler, x, probs, noise, j, c, chunk_size, share)
                s = s.float()  # (B, c, K, *spatial)
                with autocast():
                    logits = discriminator(fake_discriminator_input(x, s, valid))
                logits = logits.float()
                l_adv = generator_adversarial_loss(logits) * (c / m)  # this chunk's share of the mean over all rows
                backward(adversarial_weight * l_adv + (s * sample_grad[:, j : j + c]).sum())
            loss_adv = loss_adv + l_adv.detach()
            logits_parts.append(logits.detach().reshape(b, c, *logits.shape[1:]))
    set_torch_rng_state(final_state, x.device)
    fake_logits = torch.cat(logits_parts, dim=1)
    return fake_logits.reshape(b * m, *fake_logits.shape[2:]), loss_adv
