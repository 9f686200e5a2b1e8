"""G's noise-free work shared between draws: RefinementUNet.forward_multi and CARNet.sample's eval-mode path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_car.networks.nets import CalibrationSegNet, CARNet, MultiSampleRefiner, RefinementUNet

CASES = [(2, (32, 32)), (2, (33, 20)), (3, (16, 16, 16))]  # (33, 20): odd sizes, the upsampling is padded / cropped


def _randomise_norms(module: nn.Module, seed: int = 0) -> None:
    """Give every batch norm non-trivial running statistics and affine parameters (eval mode is then not ~identity)."""
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.2)


def _g(spatial_dims: int, noise_dim: int = 4, convs_per_block: int = 1) -> RefinementUNet:
    torch.manual_seed(0)
    g = RefinementUNet(
        spatial_dims, 3, 2, channels=(4, 8, 8, 8, 8), noise_dim=noise_dim, convs_per_block=convs_per_block
    )
    _randomise_norms(g)
    return g.eval()


def _net(spatial_dims: int = 2, noise_dim: int = 4) -> CARNet:
    torch.manual_seed(0)
    f = CalibrationSegNet(spatial_dims, 1, 2, channels=(4, 8), convs_per_block=(1, 1))
    return CARNet(f, _g(spatial_dims, noise_dim)).eval()


def _plain(g: RefinementUNet, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Reference: one full G pass per row of the (B * S) stack, ``(B, S, K, *spatial)``."""
    b, s = z.shape[:2]
    xs = x.unsqueeze(1).expand(b, s, *x.shape[1:]).reshape(b * s, *x.shape[1:])
    out = g(xs, z.reshape(b * s, -1))
    return out.reshape(b, s, *out.shape[1:])


@pytest.mark.parametrize("spatial_dims,size", CASES)
@pytest.mark.parametrize("convs_per_block", [1, 2])
def test_forward_multi_equals_a_full_pass_per_draw(spatial_dims, size, convs_per_block):
    g = _g(spatial_dims, convs_per_block=convs_per_block)
    x = torch.rand((2, 3) + size)
    z = torch.randn(2, 3, 4)
    with torch.no_grad():
        expected = _plain(g, x, z)
        out = g.forward_multi(x, z)
    assert out.shape == (2, 3, 2) + size
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # and the draws do differ: the decoder is not shared by mistake
    assert not torch.allclose(out[:, 0], out[:, 1], atol=1e-4)


@pytest.mark.parametrize("spatial_dims,size", CASES)
def test_forward_multi_traceable_equals_a_full_pass_per_draw(spatial_dims, size):
    """The export's path (tensor ops only on B and S) gives the per-draw passes, and refuses training mode."""
    g = _g(spatial_dims, convs_per_block=2)
    x, z = torch.rand((2, 3) + size), torch.randn(2, 3, 4)
    with torch.no_grad():
        expected = _plain(g, x, z)
        out = g.forward_multi_traceable(x, z)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out[:, 0], out[:, 1], atol=1e-4)
    with pytest.raises(ValueError, match="noise z"):
        g.forward_multi_traceable(x, torch.randn(2, 3, 5))
    with pytest.raises(RuntimeError, match="eval"):
        g.train().forward_multi_traceable(x, z)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 4, 5, 6, 100])
def test_forward_multi_chunks_change_nothing(chunk_size):
    """Chunks aligned with whole images (3, 6) broadcast the shared features; the others (1, 2, 4, 5) gather them."""
    g = _g(2)
    x, z = torch.rand(2, 3, 32, 32), torch.randn(2, 3, 4)
    with torch.no_grad():
        expected = _plain(g, x, z)
        out = g.forward_multi(x, z, chunk_size=chunk_size)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_forward_multi_one_draw_and_channels_last():
    g = _g(2)
    x, z = torch.rand(3, 3, 32, 32), torch.randn(3, 1, 4)
    with torch.no_grad():
        torch.testing.assert_close(g.forward_multi(x, z), _plain(g, x, z), rtol=1e-5, atol=1e-5)
        g_cl = g.to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        z = torch.randn(3, 4, 4)
        torch.testing.assert_close(g_cl.forward_multi(x_cl, z, chunk_size=5), _plain(g, x, z), rtol=1e-5, atol=1e-5)


def test_forward_multi_gradients_equal_the_plain_path():
    """With autograd on (eval mode), the shared path back-propagates the same gradients (in-place adds included)."""
    x, z = torch.rand(2, 3, 32, 32), torch.randn(2, 3, 4)
    weights = torch.rand(2, 3, 2, 32, 32)
    grads = []
    for shared in (False, True):
        g = _g(2)
        out = g.forward_multi(x, z, chunk_size=4) if shared else _plain(g, x, z)
        (out * weights).sum().backward()
        grads.append([p.grad.clone() for p in g.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_forward_multi_refuses_training_mode_and_bad_inputs():
    g = _g(2)
    x, z = torch.rand(2, 3, 32, 32), torch.randn(2, 3, 4)
    with pytest.raises(RuntimeError, match="eval mode"):
        g.train().forward_multi(x, z)
    g.eval()
    with pytest.raises(ValueError, match="noise z of shape"):
        g.forward_multi(x, z[0])
    with pytest.raises(ValueError, match="noise z of shape"):
        g.forward_multi(x, torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="chunk_size"):
        g.forward_multi(x, z, chunk_size=0)
    with pytest.raises(ValueError, match="expects input of shape"):
        g.forward_multi(x[:, :2], z)


class _Spy:
    """Counts the calls of RefinementUNet.forward_multi (and can forbid them)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, forbid: bool = False) -> None:
        self.calls = 0
        original = RefinementUNet.forward_multi

        def wrapped(g, *args, **kwargs):
            self.calls += 1
            if forbid:
                raise AssertionError("forward_multi must not be used here")
            return original(g, *args, **kwargs)

        monkeypatch.setattr(RefinementUNet, "forward_multi", wrapped)


@pytest.mark.parametrize("spatial_dims,size", CASES)
@pytest.mark.parametrize("num_samples,chunk_size", [(1, None), (3, None), (3, 4), (5, 2)])
def test_sample_in_eval_mode_shares_and_equals_the_plain_path(monkeypatch, spatial_dims, size, num_samples, chunk_size):
    net = _net(spatial_dims)
    x = torch.rand((2, 1) + size)
    with torch.no_grad():
        net.shared_encoder = False
        plain = net.sample(x, num_samples, generator=torch.Generator().manual_seed(3), chunk_size=chunk_size)
        net.shared_encoder = True
        spy = _Spy(monkeypatch)
        shared = net.sample(x, num_samples, generator=torch.Generator().manual_seed(3), chunk_size=chunk_size)
    assert spy.calls == 1
    assert shared.shape == plain.shape == (2, num_samples, 2) + size
    torch.testing.assert_close(shared, plain, rtol=1e-5, atol=1e-5)


def test_sample_with_explicit_noise_and_probabilities_equals_the_per_draw_loop(monkeypatch):
    net = _net()
    x, noise = torch.rand(2, 1, 32, 32), torch.randn(2, 4, 4)
    spy = _Spy(monkeypatch)
    with torch.no_grad():
        probs = net(x)
        out = net.sample(x, 4, noise=noise, calibration_probs=probs, chunk_size=3)
        loop = torch.stack([net.refine(x, probs, noise[:, s]) for s in range(4)], dim=1)
    assert spy.calls == 1
    torch.testing.assert_close(out, loop, rtol=1e-5, atol=1e-5)


def test_sample_in_training_mode_keeps_a_full_pass_per_draw(monkeypatch):
    """Training: every row its own G pass (own dropout masks, batch-norm statistics of the chunk), as before."""
    net = _net()
    net.refinement_net.train()
    x = torch.rand(2, 1, 32, 32)
    noise = torch.randn(1, 1, 4).expand(2, 3, 4)  # the same noise for every draw: only dropout tells them apart
    _Spy(monkeypatch, forbid=True)
    with torch.no_grad():
        probs = net.calibration_net(x)
        torch.manual_seed(11)
        out = net.sample(x, 3, noise=noise, calibration_probs=probs, chunk_size=4)
        torch.manual_seed(11)
        xs = torch.cat([x, probs], dim=1).unsqueeze(1).expand(2, 3, 3, 32, 32).reshape(6, 3, 32, 32)
        zs = noise.reshape(6, 4)
        rows = torch.cat([net.refinement_net(xs[i : i + 4], zs[i : i + 4]) for i in (0, 4)])
    torch.testing.assert_close(out, rows.reshape(2, 3, 2, 32, 32))
    assert not torch.allclose(out[:, 0], out[:, 1], atol=1e-4)  # per-draw dropout masks


def test_sample_identical_noise_gives_identical_draws_in_eval_mode():
    net = _net()
    x = torch.rand(2, 1, 32, 32)
    noise = torch.randn(2, 1, 4).expand(2, 3, 4)
    with torch.no_grad():
        out = net.sample(x, 3, noise=noise, chunk_size=2)
    torch.testing.assert_close(out[:, 1], out[:, 0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out[:, 2], out[:, 0], rtol=1e-6, atol=1e-6)


def test_sample_keeps_the_plain_path_for_other_generators(monkeypatch):
    """A subclass that changes G's forward, or a wrapped G (compile, DDP), is not taken through the shared path."""

    class Doubled(RefinementUNet):
        def forward(self, x, z):
            return super().forward(2 * x, z)

    torch.manual_seed(0)
    f = CalibrationSegNet(2, 1, 2, channels=(4, 8), convs_per_block=(1, 1))
    net = CARNet(f, Doubled(2, 3, 2, channels=(4, 8, 8, 8, 8), noise_dim=4)).eval()
    wrapped = CARNet(f, _Wrapper(_g(2))).eval()
    _Spy(monkeypatch, forbid=True)
    x, noise = torch.rand(1, 1, 32, 32), torch.randn(1, 2, 4)
    with torch.no_grad():
        probs = net(x)
        out = net.sample(x, 2, noise=noise, calibration_probs=probs)
        expected = torch.stack([net.refine(x, probs, noise[:, s]) for s in range(2)], dim=1)
        wrapped.sample(x, 2, noise=noise)
    torch.testing.assert_close(out, expected)
    assert not net._shares_noise_free_work() and not wrapped._shares_noise_free_work()


class _Wrapper(nn.Module):
    """A G behind another module (as torch.compile or DDP put it)."""

    def __init__(self, g: RefinementUNet) -> None:
        super().__init__()
        self.g = g
        self.noise_dim = g.noise_dim

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.g(x, z)


class _Forwarding(nn.Module):
    """A G behind a module that forwards attribute look-ups to it (as torch.compile's OptimizedModule does)."""

    def __init__(self, g: RefinementUNet) -> None:
        super().__init__()
        self._orig = g

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self._orig(x, z)

    def __getattr__(self, name: str):
        if name == "_orig":
            return super().__getattr__(name)
        return getattr(self._orig, name)


class _MyRefiner(nn.Module):
    """Not a RefinementUNet, but a MultiSampleRefiner: its forward_multi is taken."""

    noise_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.calls = 0

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        logits = x[:, -2:] * self.scale + z[:, :1, None, None]
        return torch.softmax(logits, dim=1)

    def forward_multi(self, x, z, chunk_size=None, allow_training=False):
        self.calls += 1
        b, s = z.shape[:2]
        xs = x.unsqueeze(1).expand(b, s, *x.shape[1:]).reshape(b * s, *x.shape[1:])
        out = self(xs, z.reshape(b * s, -1))
        return out.reshape(b, s, *out.shape[1:])

    def forward_multi_matches_forward(self) -> bool:
        return True


def test_the_shared_path_follows_the_multi_sample_refiner_protocol(monkeypatch):
    """CARNet asks G's class for forward_multi and G itself whether it matches its forward, not for a RefinementUNet."""

    class Doubled(RefinementUNet):
        def forward_logits(self, x, z):
            return super().forward_logits(2 * x, z)

    class Adapted(Doubled):
        def forward_multi(self, x, z, chunk_size=None, allow_training=False):
            return super().forward_multi(2 * x, z, chunk_size, allow_training)

    assert issubclass(RefinementUNet, MultiSampleRefiner) and isinstance(_g(2), MultiSampleRefiner)
    assert _g(2).forward_multi_matches_forward()
    small = {"channels": (4, 8, 8, 8, 8), "noise_dim": 4}
    assert not Doubled(2, 3, 2, **small).forward_multi_matches_forward()
    assert Adapted(2, 3, 2, **small).forward_multi_matches_forward()
    torch.manual_seed(0)
    f = CalibrationSegNet(2, 1, 2, channels=(4, 8), convs_per_block=(1, 1))
    assert CARNet(f, Adapted(2, 3, 2, **small)).eval()._shares_noise_free_work()
    assert not CARNet(f, Doubled(2, 3, 2, **small)).eval()._shares_noise_free_work()
    mine = _MyRefiner()
    net = CARNet(f, mine).eval()
    x, noise = torch.rand(1, 1, 8, 8), torch.randn(1, 3, 4)
    with torch.no_grad():
        probs = net(x)
        out = net.sample(x, 3, noise=noise, calibration_probs=probs)
        expected = torch.stack([net.refine(x, probs, noise[:, s]) for s in range(3)], dim=1)
    assert mine.calls == 1
    torch.testing.assert_close(out, expected)
    forwarding = CARNet(f, _Forwarding(_g(2))).eval()
    assert hasattr(forwarding.refinement_net, "forward_multi")  # found through __getattr__, yet not taken:
    assert not forwarding._shares_noise_free_work()
    _Spy(monkeypatch, forbid=True)
    with torch.no_grad():
        forwarding.sample(torch.rand(1, 1, 32, 32), 2, noise=torch.randn(1, 2, 4))


def test_sample_on_cpu_decodes_in_small_chunks_by_default(monkeypatch):
    net = _net()
    seen = []
    original = RefinementUNet.forward_multi

    def wrapped(g, x, z, chunk_size=None, allow_training=False):
        seen.append(chunk_size)
        return original(g, x, z, chunk_size=chunk_size, allow_training=allow_training)

    monkeypatch.setattr(RefinementUNet, "forward_multi", wrapped)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        default = net.sample(x, 5, generator=torch.Generator().manual_seed(3))
        one_pass = net.sample(x, 5, generator=torch.Generator().manual_seed(3), chunk_size=10)
    assert seen == [CARNet.cpu_chunk_size, 10]
    torch.testing.assert_close(default, one_pass, rtol=1e-5, atol=1e-5)


def _train_g_without_dropout() -> RefinementUNet:
    torch.manual_seed(0)
    return RefinementUNet(2, 3, 2, channels=(4, 8, 8, 8, 8), noise_dim=4, dropout=0.0).train()


def test_training_mode_shared_path_equals_the_full_passes_without_dropout():
    """Training mode with allow_training: without dropout it IS the full pass per draw (batch norm included: the
    shared part's statistics over B inputs equal those over the B * S repeated rows), outputs, gradients and running
    statistics alike."""
    x, z = torch.rand(2, 3, 32, 32), torch.randn(2, 3, 4)
    weights = torch.rand(2, 3, 2, 32, 32)
    results = []
    for shared in (False, True):
        g = _train_g_without_dropout()
        out = g.forward_multi(x, z, allow_training=True) if shared else _plain(g, x, z)
        (out * weights).sum().backward()
        stats = [m.running_mean.clone() for m in g.modules() if isinstance(m, nn.BatchNorm2d)]
        results.append((out.detach(), [p.grad.clone() for p in g.parameters()], stats))
    (out_a, grads_a, stats_a), (out_b, grads_b, stats_b) = results
    torch.testing.assert_close(out_b, out_a, rtol=1e-4, atol=1e-5)
    for a, b in zip(grads_a + stats_a, grads_b + stats_b):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)


def test_training_mode_shared_path_shares_one_dropout_mask_per_image(monkeypatch):
    """With dropout, the shared part draws one mask per image: identical noise gives identical draws of an image
    (the per-sample path gives different ones, see above); CARNet.sample takes this path with share_in_training."""
    net = _net()
    net.refinement_net.train()
    x = torch.rand(2, 1, 32, 32)
    noise = torch.randn(1, 1, 4).expand(2, 3, 4)
    spy = _Spy(monkeypatch)
    with torch.no_grad():
        out = net.sample(x, 3, noise=noise, share_in_training=True)
    assert spy.calls == 1
    # the decoder's dropout still differs per row, so draws differ a little; the shared part's masks do not
    assert not torch.allclose(out[:, 0], out[:, 1], atol=1e-6)
    with pytest.raises(RuntimeError, match="allow_training"):
        net.refinement_net.forward_multi(torch.rand(2, 3, 32, 32), noise)
