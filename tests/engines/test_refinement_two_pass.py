"""RefinementTrainer(sample_chunk_size=...): the two-pass G update against a chunk-by-chunk single-pass reference."""

from __future__ import annotations

import math

import pytest
import torch
from car_engine_synthetic import make_cases, make_loader, make_networks
from ignite.engine import Events
from monai.utils import AdversarialIterationEvents

from monai_car.engines import RefinementTrainer
from monai_car.handlers import DiscriminatorSchedule
from monai_car.optimizers import create_car_optimizer
from monai_car.utils.enums import CarKeys

SCHEDULE = (1, 0)  # D updated every iteration


class _ChunkedSampler:
    """The reference: ``CARNet.sample`` drawing the same noise, then G chunk by chunk (``c`` samples per image per
    pass) with a graph -- the single-pass loss over samples generated the way the two-pass update generates them."""

    def __init__(self, net, chunk: int) -> None:
        self.net, self.chunk = net, chunk

    def sample(self, x, m, generator=None, chunk_size=None, calibration_probs=None, share_in_training=False):
        noise = self.net.sample_noise(x.shape[0] * m, generator=generator, device=x.device, dtype=x.dtype)
        noise = noise.view(x.shape[0], m, -1)
        parts = [
            self.net.sample(x, min(self.chunk, m - j), chunk_size=chunk_size, calibration_probs=calibration_probs,
                            noise=noise[:, j : j + self.chunk], share_in_training=share_in_training)
            for j in range(0, m, self.chunk)
        ]  # fmt: skip
        return torch.cat(parts, dim=1)


def _trainer(sample_chunk_size=None, reference_chunk=None, num_samples=5, iters=1, cases=None, **kwargs):
    net, d = make_networks()
    if kwargs.get("train_calibration"):
        kwargs["f_optimizer"] = create_car_optimizer(net.calibration_net)
    trainer = RefinementTrainer(
        "cpu", 1, make_loader(cases or make_cases(4 * iters), batch_size=4, shuffle=False), net, d,
        create_car_optimizer(net.refinement_net), create_car_optimizer(d, lr=1e-5), num_samples=num_samples,
        discriminator_schedule=DiscriminatorSchedule(*SCHEDULE, accuracy_cap=None),
        sample_chunk_size=sample_chunk_size, seed=3, **kwargs,
    )  # fmt: skip
    if reference_chunk is not None:
        trainer._sampler = _ChunkedSampler(trainer.network, reference_chunk)
    rows = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: rows.append(dict(e.state.output)))
    return trainer, rows


def _compare(a, b, atol=1e-5):
    (ta, rows_a), (tb, rows_b) = a, b
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert set(ra) == set(rb)
        for key in ra:
            if math.isnan(ra[key]):
                assert math.isnan(rb[key]), key
            else:
                assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-6), key
    for name in ("refinement_net", "discriminator", "calibration_net"):
        for p, q in zip(getattr(ta, name).state_dict().values(), getattr(tb, name).state_dict().values()):
            assert torch.allclose(p.float(), q.float(), atol=atol), name  # parameters and BN running statistics


@pytest.mark.parametrize("chunk", [2, 3])  # 5 samples: chunks 2+2+1 and 3+2
def test_two_pass_equals_chunked_single_pass(chunk):
    two = _trainer(sample_chunk_size=chunk, iters=2)
    ref = _trainer(reference_chunk=chunk, iters=2)
    two[0].run()
    ref[0].run()
    _compare(two, ref)
    assert two[1][-1]["d_updated"] == 1.0


def test_chunk_of_all_samples_is_the_plain_single_pass():
    two, plain = _trainer(sample_chunk_size=7), _trainer()  # 7 >= M = 5: one chunk
    two[0].run()
    plain[0].run()
    _compare(two, plain)


def test_refine_ce_joint_f_and_clipping():
    kwargs = dict(generator_loss="refine_ce", train_calibration=True, clip_grad_norm=0.05)
    two, ref = _trainer(sample_chunk_size=2, **kwargs), _trainer(reference_chunk=2, **kwargs)
    two[0].run()
    ref[0].run()
    _compare(two, ref)
    assert math.isfinite(two[1][0]["loss_refine_ce"]) and math.isfinite(two[1][0]["loss_ce_f"])


@pytest.mark.parametrize("loss", ["calibration", "refine_ce"])
def test_void_pixels_match_reference(loss):
    cases = make_cases(4)
    for case in cases:
        case[CarKeys.LABEL][:, :5, :] = 255
    kwargs = dict(ignore_index=255, generator_loss=loss, labels_key="unchecked")  # the drawn grader carries the void
    two, ref = _trainer(sample_chunk_size=2, cases=cases, **kwargs), _trainer(reference_chunk=2, cases=cases, **kwargs)
    two[0].run()
    ref[0].run()
    _compare(two, ref)


def test_losses_are_the_same_quantity_as_the_single_pass():
    """Different dropout masks / BN batches, same loss in distribution: over a few seeds, close on average."""
    diffs = []
    for seed in range(3):
        net_a, d_a = make_networks(seed=seed)
        net_b, d_b = make_networks(seed=seed)
        outs = []
        for net, d, chunk in ((net_a, d_a, 2), (net_b, d_b, None)):
            trainer = RefinementTrainer(
                "cpu", 1, make_loader(make_cases(8), batch_size=8, shuffle=False), net, d,
                create_car_optimizer(net.refinement_net), create_car_optimizer(d, lr=1e-5), num_samples=6,
                sample_chunk_size=chunk, seed=seed,
            )  # fmt: skip
            trainer.run()
            outs.append(trainer.state.output)
        for key in ("loss", "loss_adv", "loss_cal"):
            diffs.append(abs(outs[0][key] - outs[1][key]) / max(abs(outs[1][key]), 1e-8))
    assert max(diffs) < 0.2, diffs


def test_amp_bf16_on_cpu_and_events():
    trainer, rows = _trainer(sample_chunk_size=2, amp=True)
    counts = {}
    for event in AdversarialIterationEvents:
        if event != AdversarialIterationEvents.RECONSTRUCTION_LOSS_COMPLETED:
            trainer.add_event_handler(event, lambda e, ev=event: counts.__setitem__(ev, counts.get(ev, 0) + 1))
    seen = {}
    trainer.add_event_handler(
        AdversarialIterationEvents.GENERATOR_FORWARD_COMPLETED,
        lambda e: seen.setdefault("shape", tuple(e.state.output[CarKeys.SAMPLES].shape)),
    )
    trainer.run()
    assert math.isfinite(rows[0]["loss"]) and trainer.scaler is None
    assert seen["shape"] == (4, 5, 2, 32, 32)
    assert all(n == 1 for n in counts.values()) and len(counts) == len(AdversarialIterationEvents) - 1


def test_bad_values():
    for bad in (0, -1, 2.5, True, "2"):
        with pytest.raises(ValueError, match="sample_chunk_size"):
            _trainer(sample_chunk_size=bad)
    # under DDP the two-pass update is allowed: tests/engines/test_distributed_training.py checks its gradients
