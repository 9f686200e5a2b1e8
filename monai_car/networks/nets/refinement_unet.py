"""G: the refinement U-Net that turns F's probabilities and a noise draw into one label map."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.networks.layers.factories import Conv, Pool
from torch import nn
from torch.nn import functional as F

from monai_car.networks.blocks import NoiseInjection, check_spatial_dims, conv_stack, match_spatial_size
from monai_car.networks.utils import check_network_input

__all__ = ["RefinementUNet"]


class RefinementUNet(nn.Module):
    """U-Net with noise injected into every upsampling block (the CAR refinement generator G).

    Four down and four up blocks, base width 32 doubled per level; every block is ``convs_per_block`` times
    conv3x3 + BN + LeakyReLU(0.2) + Dropout(0.1). Downsampling is a 2x max-pool, upsampling a stride-2 transposed
    convolution followed by concatenation with the skip connection. After each upsampling block a
    :class:`~monai_car.networks.blocks.NoiseInjection` modulates the features with the noise ``z``:
    ``(h + r(z)) * (s(z) + 1)``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels plus F's ``K`` probability channels.
        out_channels: classes ``K``.
        channels: widths per level, ``len(channels) - 1`` down/up blocks (default 4).
        noise_dim: length of ``z`` (8 on LIDC, 32 on Cityscapes).
        convs_per_block: convolutions per block (the paper: one).
        negative_slope: LeakyReLU slope.
        dropout: dropout probability.

    Shapes:
        ``x``: ``(B, in_channels, *spatial)``, ``z``: ``(B, noise_dim)``; output ``(B, K, *spatial)`` probabilities.
        :meth:`forward_multi`: ``x`` ``(B, in_channels, *spatial)``, ``z`` ``(B, S, noise_dim)``; output
        ``(B, S, K, *spatial)`` (S draws per input, the noise-free work done once per input; eval mode).

    It is a :class:`~monai_car.networks.nets.MultiSampleRefiner`, so :meth:`CARNet.sample
    <monai_car.networks.nets.CARNet.sample>` draws through :meth:`forward_multi` (see
    :meth:`forward_multi_matches_forward` for subclasses).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 2,
        channels: Sequence[int] = (32, 64, 128, 256, 512),
        noise_dim: int = 8,
        convs_per_block: int = 1,
        negative_slope: float = 0.2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        if len(channels) < 2:
            raise ValueError(f"channels needs at least two levels, got {tuple(channels)}.")
        if noise_dim < 1 or convs_per_block < 1 or in_channels < 1 or out_channels < 2:
            raise ValueError(
                "need noise_dim >= 1, convs_per_block >= 1, in_channels >= 1 and out_channels >= 2, got "
                f"{noise_dim}, {convs_per_block}, {in_channels}, {out_channels}."
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.noise_dim = noise_dim
        kwargs = {"negative_slope": negative_slope, "dropout": dropout}
        self.stem = conv_stack(spatial_dims, [in_channels] + [channels[0]] * convs_per_block, **kwargs)
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2)
        self.down = nn.ModuleList(
            conv_stack(spatial_dims, [cin] + [cout] * convs_per_block, **kwargs)
            for cin, cout in zip(channels[:-1], channels[1:])
        )
        transpose = Conv[Conv.CONVTRANS, spatial_dims]
        self.upsample = nn.ModuleList()
        self.up = nn.ModuleList()
        self.noise = nn.ModuleList()
        for cin, cout in zip(reversed(channels[1:]), reversed(channels[:-1])):
            self.upsample.append(transpose(cin, cout, kernel_size=2, stride=2))
            self.up.append(conv_stack(spatial_dims, [2 * cout] + [cout] * convs_per_block, **kwargs))
            self.noise.append(NoiseInjection(noise_dim, cout))
        self.head = Conv[Conv.CONV, spatial_dims](channels[0], out_channels, kernel_size=1)

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The encoder: the bottleneck output and the skip features of every level above it, shallowest first."""
        h = self.stem(x)
        skips = [h]
        for block in self.down:
            h = block(self.pool(h))
            skips.append(h)
        skips.pop()  # the bottleneck output is h itself
        return h, skips

    def forward_logits(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, K, *spatial)`` for inputs ``(B, C + K, *spatial)`` and noise ``(B, noise_dim)``."""
        check_network_input(x, self.in_channels, self.spatial_dims, type(self).__name__)
        if z.ndim != 2 or z.shape != (x.shape[0], self.noise_dim):
            raise ValueError(f"expected noise z of shape ({x.shape[0]}, {self.noise_dim}), got {tuple(z.shape)}.")
        h, skips = self._encode(x)
        for upsample, block, noise in zip(self.upsample, self.up, self.noise):
            skip = skips.pop()
            h = match_spatial_size(upsample(h), skip.shape[2:])
            h = noise(block(torch.cat([h, skip], dim=1)), z)
        return self.head(h)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(B, K, *spatial)``."""
        return torch.softmax(self.forward_logits(x, z), dim=1)

    def forward_multi(
        self, x: torch.Tensor, z: torch.Tensor, chunk_size: int | None = None, allow_training: bool = False
    ) -> torch.Tensor:
        """Class probabilities of ``S`` noise draws per input, G's noise-free work done once per input (eval mode).

        The noise enters only after each up block, so the stem, the encoder, the bottleneck and the first up block do
        not depend on ``z``, and neither does the skip-connection half of every later up block's first convolution:
        ``conv(cat(u, skip)) = conv_u(u) + conv_skip(skip) + bias``. These run once per input; only the rest of the
        decoder runs once per draw (about a third of the FLOPs of a full pass at the default widths). In eval mode
        (batch norm on its running statistics, dropout off) every row then equals a plain :meth:`forward` of that
        input with that noise, up to float rounding (the split convolution sums in another order, ~1e-7).

        In training mode only with ``allow_training=True`` (the trainer's ``shared_encoder`` option), a deliberate
        change of the model: the shared part draws ONE dropout mask per input, shared by its ``S`` draws (a full pass
        draws one per draw). Batch norm in the shared part normalises over the ``B`` inputs, which has exactly the
        statistics of the ``B * S`` repeated rows a full pass would see (and updates the running statistics
        identically); the decoder's batch norm sees all ``B * S`` rows, as in a full pass. Gradients flow through the
        shared features once per input (summed over its draws), which is what autograd gives the full pass too.
        Without ``allow_training`` it raises in training mode instead of silently changing the model.

        Args:
            x: inputs ``(B, in_channels, *spatial)`` (image and F's probabilities, concatenated).
            z: noise ``(B, S, noise_dim)``; draw ``s`` of input ``b`` uses ``z[b, s]``.
            chunk_size: the most rows per pass (rows are the ``B * S`` draws, input-major; the shared part runs in
                groups of at most ``chunk_size`` inputs); all at once when ``None``. In training mode batch norm then
                normalises each chunk with its own statistics.
            allow_training: permit training mode (see above).

        Returns:
            ``(B, S, K, *spatial)`` probabilities, ``out[b, s] == self(x[b:b+1], z[b, s:s+1])[0]`` up to rounding.

        Raises:
            RuntimeError: in training mode without ``allow_training``.
            ValueError: on inputs of the wrong shape, or ``chunk_size < 1``.
            NotImplementedError: when an up block no longer starts with a zero-padded, ungrouped convolution
                followed by its norm/activation/dropout (the layout this class builds).
        """
        if self.training and not allow_training:
            raise RuntimeError(
                "forward_multi shares G's noise-free work between draws, which is exact only in eval mode (dropout "
                "off, batch norm on running statistics); call .eval() first, run forward() on every draw's row, or "
                "pass allow_training=True to share one dropout mask per input between its draws."
            )
        check_network_input(x, self.in_channels, self.spatial_dims, type(self).__name__)
        b = x.shape[0]
        if not isinstance(z, torch.Tensor) or z.ndim != 3 or z.shape[0] != b or z.shape[2] != self.noise_dim:
            raise ValueError(
                f"expected noise z of shape ({b}, S, {self.noise_dim}), got {tuple(getattr(z, 'shape', ()))}."
            )
        if chunk_size is not None and (isinstance(chunk_size, bool) or int(chunk_size) < 1):
            raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}.")
        s = z.shape[1]
        if s < 1:
            raise ValueError("z holds no draws (S = 0).")
        rows = b * s
        step = rows if chunk_size is None else int(chunk_size)
        groups = [self._shared_features(x[i : i + step]) for i in range(0, b, step)]
        first = torch.cat([g[0] for g in groups]) if len(groups) > 1 else groups[0][0]
        terms = [torch.cat(t) for t in zip(*(g[1] for g in groups))] if len(groups) > 1 else groups[0][1]
        z = z.reshape(rows, self.noise_dim)

        def decode(i: int) -> torch.Tensor:
            return torch.softmax(self._decode_rows(first, terms, z[i : i + step], i, s), dim=1)

        out = decode(0)
        if step < rows:  # the chunks written into one output, not concatenated (no second copy of all samples)
            first_chunk, out = out, out.new_empty((rows, *out.shape[1:]))
            out[:step] = first_chunk
            for i in range(step, rows, step):
                out[i : i + step] = decode(i)
        return out.reshape(b, s, *out.shape[1:])

    def forward_multi_traceable(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """:meth:`forward_multi` without chunking, written with tensor operations only (no Python integers taken from
        ``B`` or ``S``), so that :func:`torch.export.export` keeps both dynamic (the exported ``.pt2`` program of
        :func:`~monai_car.networks.export_carnet` samples through it). Eval mode only.

        Args:
            x: inputs ``(B, in_channels, *spatial)``; z: noise ``(B, S, noise_dim)``.

        Returns:
            ``(B, S, K, *spatial)`` probabilities, equal to :meth:`forward_multi` up to float rounding.
        """
        if self.training:
            raise RuntimeError("forward_multi_traceable is an eval-mode path: call .eval() first.")
        check_network_input(x, self.in_channels, self.spatial_dims, type(self).__name__)
        if not isinstance(z, torch.Tensor) or z.ndim != 3 or z.shape[2] != self.noise_dim:
            raise ValueError(
                f"expected noise z of shape (B, S, {self.noise_dim}), got {tuple(getattr(z, 'shape', ()))}."
            )
        first, terms = self._shared_features(x)
        b, s = z.shape[0], z.shape[1]

        def per_row(t: torch.Tensor) -> torch.Tensor:
            return t.unsqueeze(1).expand(b, s, *t.shape[1:]).reshape(-1, *t.shape[1:])

        def add_skip(y: torch.Tensor, term: torch.Tensor) -> torch.Tensor:
            return (y.reshape(b, s, *y.shape[1:]) + term.unsqueeze(1)).reshape(-1, *y.shape[1:])

        out = torch.softmax(self._decode(first, terms, z.reshape(-1, self.noise_dim), per_row, add_skip), dim=1)
        return out.reshape(b, s, *out.shape[1:])

    def forward_multi_matches_forward(self) -> bool:
        """Whether :meth:`forward_multi` computes this object's :meth:`forward`.

        True for this class and for subclasses that keep its ``forward`` and ``forward_logits``, or that override
        ``forward_multi`` too (they adapted it); False for a subclass that changes ``forward`` or ``forward_logits``
        only, whose change ``forward_multi`` would skip (``CARNet.sample`` then runs a full pass per draw).
        """
        cls = type(self)
        same_forward = cls.forward is RefinementUNet.forward and cls.forward_logits is RefinementUNet.forward_logits
        return same_forward or cls.forward_multi is not RefinementUNet.forward_multi

    def _shared_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The noise-free part of G for inputs ``(n, C, *spatial)``: the first up block's output (before its noise
        injection) and, for every later up block, the skip half of its first convolution (bias included)."""
        h, skips = self._encode(x)
        skip = skips.pop()
        first = self.up[0](torch.cat([match_spatial_size(self.upsample[0](h), skip.shape[2:]), skip], dim=1))
        terms = []
        for upsample, block in zip(self.upsample[1:], self.up[1:]):
            conv, _ = _split_first_conv(block)
            u_channels = upsample.out_channels
            terms.append(_convolve(conv, skips.pop(), conv.weight[:, u_channels:], conv.bias))
        return first, terms

    def _decode_rows(
        self, first: torch.Tensor, terms: list[torch.Tensor], z: torch.Tensor, start: int, num_samples: int
    ) -> torch.Tensor:
        """Logits of rows ``start .. start + len(z) - 1`` (row ``r`` is draw ``r % S`` of input ``r // S``), from the
        shared features of all inputs."""
        n = z.shape[0]
        aligned = start % num_samples == 0 and n % num_samples == 0  # whole inputs: broadcast instead of gathering
        lo, hi = start // num_samples, (start + n) // num_samples
        index = torch.arange(start, start + n, device=first.device) // num_samples

        def per_row(t: torch.Tensor) -> torch.Tensor:
            if aligned:
                return t[lo:hi].unsqueeze(1).expand(hi - lo, num_samples, *t.shape[1:]).reshape(n, *t.shape[1:])
            return t.index_select(0, index)

        def add_skip(y: torch.Tensor, term: torch.Tensor) -> torch.Tensor:
            if aligned:
                y.view(hi - lo, num_samples, *y.shape[1:]).add_(term[lo:hi].unsqueeze(1))
                return y
            return y.add_(term.index_select(0, index))

        return self._decode(first, terms, z, per_row, add_skip)

    def _decode(
        self,
        first: torch.Tensor,
        terms: list[torch.Tensor],
        z: torch.Tensor,
        per_row: Callable[[torch.Tensor], torch.Tensor],
        add_skip: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """The noise-dependent decoder on rows ``z`` ``(n, noise_dim)``: ``per_row`` maps a per-input shared feature to
        the rows, ``add_skip(y, term)`` adds an up block's shared skip half to its up half ``y`` (rows); logits."""
        h = self.noise[0](per_row(first), z)
        for upsample, block, noise, term in zip(self.upsample[1:], self.up[1:], self.noise[1:], terms):
            conv, rest = _split_first_conv(block)
            u = match_spatial_size(upsample(h), term.shape[2:])
            y = add_skip(_convolve(conv, u, conv.weight[:, : upsample.out_channels], None), term)
            for module in rest:
                y = module(y)
            h = noise(y, z)
        return self.head(h)


def _split_first_conv(block: nn.Module) -> tuple[nn.Module, list[nn.Module]]:
    """An up block's first convolution, and what follows it (its norm/act/dropout, then the block's other layers)."""
    first = block[0]
    conv, adn = getattr(first, "conv", None), getattr(first, "adn", None)
    if not isinstance(conv, (nn.Conv2d, nn.Conv3d)) or adn is None or len(first) != 2:
        raise NotImplementedError(
            "forward_multi needs every up block to start with a ConvNormActDropout (conv, then adn); got "
            f"{type(first).__name__}."
        )
    if conv.padding_mode != "zeros" or conv.groups != 1:
        raise NotImplementedError("forward_multi splits zero-padded, ungrouped convolutions only.")
    return conv, [adn, *list(block)[1:]]


def _convolve(conv: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``conv``'s convolution (stride, padding, dilation) applied with ``weight``, a slice of its input channels."""
    fn = F.conv2d if x.ndim == 4 else F.conv3d
    return fn(x, weight, bias, conv.stride, conv.padding, conv.dilation, 1)
