"""Stage 1, stage 2 and evaluation under DDP: 2 CPU processes, gloo, a tiny synthetic data set."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from car_engine_synthetic import make_cases, make_loader, make_networks
from monai.data import DistributedSampler as EvalSampler
from torch.utils.data.distributed import DistributedSampler

from monai_car.engines import CalibrationTrainer, CAREvaluator, DistributedRefiner, RefinementTrainer
from monai_car.handlers import DiscriminatorSchedule
from monai_car.optimizers import create_car_optimizer
from monai_car.utils.distributed import init_distributed

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    device = init_distributed(backend="gloo", device_type="cpu")
    try:
        net, d = make_networks(seed=rank)  # different initialisations: DDP broadcasts rank 0's
        train_cases = make_cases(8)
        dataset = make_loader(train_cases).dataset
        sampler = DistributedSampler(dataset, num_replicas=WORLD, rank=rank, shuffle=True, seed=0)
        loader = make_loader(train_cases, batch_size=2, sampler=sampler)
        f = net.calibration_net
        CalibrationTrainer(device, 1, loader, f, create_car_optimizer(f), seed=1).run()
        trainer = RefinementTrainer(
            device, 1, loader, net, d, create_car_optimizer(net.refinement_net), create_car_optimizer(d, lr=1e-5),
            f_optimizer=create_car_optimizer(f), train_calibration=True, num_samples=2, seed=1,
            discriminator_schedule=DiscriminatorSchedule(1, 0, accuracy_cap=None),
        )  # fmt: skip
        trainer.run()
        eval_cases = make_cases(5, seed=1)
        eval_sampler = EvalSampler(make_loader(eval_cases).dataset, shuffle=False, even_divisible=False)
        evaluator = CAREvaluator(
            device, make_loader(eval_cases, batch_size=2, sampler=eval_sampler), net, num_samples=3
        )
        evaluator.run()
        torch.save(
            {
                "params": [p.detach().clone() for p in list(net.parameters()) + list(d.parameters())],
                "state": {k: v.clone() for k, v in net.state_dict().items()},
                "metrics": dict(evaluator.state.metrics),
                "d_updates": trainer.discriminator_schedule.num_updates,
                "iterations": trainer.state.iteration,
            },
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(600)
def test_two_process_gloo_training_and_evaluation(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert results[0]["iterations"] == results[1]["iterations"] == 2  # 8 cases / 2 ranks / batch 2
    assert results[0]["d_updates"] == results[1]["d_updates"] == 2
    for p, q in zip(results[0]["params"], results[1]["params"]):
        assert torch.equal(p, q), "DDP keeps F, G and D identical on every rank"
    assert results[0]["metrics"] == results[1]["metrics"]
    # the metrics gathered over both ranks' shards equal a single-process evaluation of the whole set
    net, _ = make_networks()
    net.load_state_dict(results[0]["state"])
    single = CAREvaluator("cpu", make_loader(make_cases(5, seed=1), batch_size=5, shuffle=False), net, num_samples=3)
    single.run()
    assert results[0]["metrics"] == pytest.approx(single.state.metrics, rel=1e-5)


G_UPDATES = [  # (shared_encoder, sample_chunk_size): the shared path, and the two-pass update on either path
    (True, None),
    (True, 2),
    (False, 2),
]


def _generator_gradients(rank: int, shared: bool, chunk: int | None, ddp: bool) -> list[torch.Tensor]:
    """G's gradient after one stage-2 iteration on this rank's shard (4 cases, batch 1 per rank, M = 4)."""
    net, d = make_networks(seed=0)
    cases = make_cases(2)
    sampler = DistributedSampler(make_loader(cases).dataset, num_replicas=WORLD, rank=rank, shuffle=False)
    trainer = RefinementTrainer(
        "cpu", 1, make_loader(cases, batch_size=1, sampler=sampler), net, d,
        create_car_optimizer(net.refinement_net), create_car_optimizer(d, lr=1e-5), num_samples=4, seed=3,
        shared_encoder=shared, sample_chunk_size=chunk, ddp=ddp,
    )  # fmt: skip
    trainer.run()
    assert trainer.state.iteration == 1
    if ddp and shared:
        assert isinstance(trainer._g_train, DistributedRefiner)
        assert trainer._sampler._shares_noise_free_work(in_training=True), "the shared path runs under DDP"
    return [p.grad.detach().clone() for p in net.refinement_net.parameters()]


def _gradient_worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    init_distributed(backend="gloo", device_type="cpu")
    try:
        result = {}
        for shared, chunk in G_UPDATES:
            own = _generator_gradients(rank, shared, chunk, ddp=False)
            mean = [g.clone() for g in own]
            for grad in mean:  # the expected DDP gradient: the mean of the ranks' own gradients
                dist.all_reduce(grad)
                grad /= WORLD
            result[f"{shared}-{chunk}"] = (own, mean, _generator_gradients(rank, shared, chunk, ddp=True))
        torch.save(result, os.path.join(out_dir, f"grads{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(600)
def test_ddp_generator_gradients_are_the_mean_of_the_ranks(tmp_path):
    """Under DDP, G's gradient through the shared path and through the two-pass (chunked) update is the mean of what
    each rank computes alone: a path that skips DDP's forward (e.g. ``ddp.module.forward_multi``) or syncs only one
    chunk would leave each rank with its own gradient."""
    mp.spawn(_gradient_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"grads{r}.pt", weights_only=True) for r in range(WORLD)]
    for key in results[0]:
        own = [results[r][key][0] for r in range(WORLD)]
        assert any(not torch.allclose(a, b) for a, b in zip(*own)), f"{key}: the ranks' own gradients are equal"
        for rank in range(WORLD):
            _, expected, got = results[rank][key]
            assert len(expected) == len(got) > 0
            for e, g in zip(expected, got):
                torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6, msg=f"{key}, rank {rank}")
