from __future__ import annotations

import math

import pytest
import torch
from car_engine_synthetic import make_cases, make_loader, make_networks, record_samples
from ignite.engine import Events
from monai.engines.utils import IterationEvents
from monai.handlers import LrScheduleHandler, ValidationHandler
from monai.utils import AdversarialIterationEvents

from monai_car.engines import CAREvaluator, GeneratorUpdate, InvalidBatchError, RefinementKeys, RefinementTrainer
from monai_car.handlers import AtomicCheckpointSaver, DiscriminatorSchedule, StrictCheckpointLoader
from monai_car.losses import CalibrationLoss
from monai_car.optimizers import create_car_optimizer, create_lr_scheduler
from monai_car.utils.checkpoint import CheckpointKeyError
from monai_car.utils.enums import CarKeys


class _Recorder(torch.nn.Module):
    """Wraps a network and records the batch size of every call."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.calls: list[int] = []
        self.in_channels = getattr(net, "in_channels", None)

    def forward(self, *args):
        self.calls.append(int(args[0].shape[0]))
        return self.net(*args)


def _trainer(cases=None, batch_size=4, epochs=1, schedule=None, **kwargs):
    net, d = make_networks()
    kwargs.setdefault("num_samples", 3)
    if kwargs.get("train_calibration") and "f_optimizer" not in kwargs:
        kwargs["f_optimizer"] = create_car_optimizer(net.calibration_net)
    trainer = RefinementTrainer(
        "cpu",
        epochs,
        make_loader(cases or make_cases(8), batch_size=batch_size),
        net,
        kwargs.pop("discriminator", d),
        create_car_optimizer(net.refinement_net),
        create_car_optimizer(d, lr=1e-5),
        discriminator_schedule=schedule,
        **kwargs,
    )
    return trainer


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def _changed(before, module):
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


def test_iteration_output_losses_and_frozen_f():
    trainer = _trainer(schedule=DiscriminatorSchedule(1, 0, accuracy_cap=None))
    f0, g0, d0 = _params(trainer.calibration_net), _params(trainer.refinement_net), _params(trainer.discriminator)
    trainer.run()
    out = trainer.state.output
    assert set(out) == {k.value for k in RefinementKeys}
    assert out["loss"] == pytest.approx(10 * out["loss_adv"] + 5 * out["loss_cal"], rel=1e-5)
    for key in ("loss", "loss_adv", "loss_cal", "loss_d", "loss_d_bce", "loss_r1", "d_accuracy"):
        assert math.isfinite(out[key]), key
    assert math.isnan(out["loss_refine_ce"]) and math.isnan(out["loss_ce_f"])
    assert out["d_updated"] == 1.0 and out["lr_g"] == 2e-4 and out["lr_d"] == 1e-5 and out["num_cases"] == 4
    assert not _changed(f0, trainer.calibration_net), "F must stay frozen"
    assert _changed(g0, trainer.refinement_net) and _changed(d0, trainer.discriminator)
    assert trainer.discriminator_schedule.num_updates == 2


def test_all_samples_in_one_pass_and_scored_by_d():
    net, d = make_networks()
    g_rec, d_rec = _Recorder(net.refinement_net), _Recorder(d)
    g_rec.noise_dim = net.refinement_net.noise_dim
    net.refinement_net = g_rec
    trainer = RefinementTrainer(
        "cpu",
        1,
        make_loader(make_cases(4), batch_size=4),
        net,
        d_rec,
        create_car_optimizer(g_rec),
        create_car_optimizer(d_rec, lr=1e-5),
        num_samples=5,
        discriminator_schedule=DiscriminatorSchedule(1, 0, accuracy_cap=None),
    )
    trainer.run()
    assert g_rec.calls == [4 * 5]  # one batched G pass with all B * M rows
    # D: all B*M fakes for G's loss, the B reals for the accuracy, then reals + all B*M fakes in D's update
    assert d_rec.calls == [20, 4, 4 + 20]


def test_calibration_loss_matches_the_loss_function():
    trainer = _trainer(schedule=DiscriminatorSchedule(1, 0, accuracy_cap=None), batch_size=8)
    seen = record_samples(trainer)

    trainer.run()
    expected = CalibrationLoss()(seen["samples"], seen["probs"]).item()
    assert seen["samples"].shape == (8, 3, 2, 32, 32)
    assert trainer.state.output["loss_cal"] == pytest.approx(expected, rel=1e-6)


def test_refine_ce_control_and_joint_f():
    trainer = _trainer(generator_loss="refine_ce", train_calibration=True, epochs=1)
    f0 = _params(trainer.calibration_net)
    trainer.run()
    out = trainer.state.output
    assert math.isfinite(out["loss_refine_ce"]) and math.isfinite(out["loss_cal"]) and math.isfinite(out["loss_ce_f"])
    assert out["loss"] == pytest.approx(10 * out["loss_adv"] + 5 * out["loss_refine_ce"], rel=1e-5)
    assert _changed(f0, trainer.calibration_net), "F is trained jointly"
    assert not math.isnan(out["lr_f"])


def test_schedule_cycles_and_accuracy_cap():
    schedule = DiscriminatorSchedule(update_iterations=2, frozen_iterations=1, accuracy_cap=0.6)
    trainer = _trainer(cases=make_cases(12), batch_size=2, schedule=schedule)
    rows = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: rows.append(dict(e.state.output)))
    trainer.run()
    for i, row in enumerate(rows, start=1):
        in_phase = (i - 1) % 3 < 2
        assert row["d_updated"] == float(in_phase and row["d_accuracy"] < 0.6), (i, row)
        assert math.isnan(row["loss_d"]) == (row["d_updated"] == 0.0)
    assert schedule.num_updates + schedule.num_capped + schedule.num_frozen == len(rows) == 6
    assert schedule.num_frozen == 2


def test_events_fired():
    trainer = _trainer(schedule=DiscriminatorSchedule(1, 0, accuracy_cap=None))
    counts: dict[str, int] = {}
    standard = [IterationEvents.FORWARD_COMPLETED, IterationEvents.LOSS_COMPLETED, IterationEvents.BACKWARD_COMPLETED]
    events = standard + [IterationEvents.MODEL_COMPLETED] + list(AdversarialIterationEvents)
    for event in events:
        trainer.add_event_handler(event, lambda e, name=str(event): counts.__setitem__(name, counts.get(name, 0) + 1))
    trainer.run()
    for event in events:
        if event != AdversarialIterationEvents.RECONSTRUCTION_LOSS_COMPLETED:
            assert counts.get(str(event)) == 2, event


def test_gradient_clipping():
    trainer = _trainer(clip_grad_norm=1e-3, schedule=DiscriminatorSchedule(1, 0, accuracy_cap=None))
    norms = []

    @trainer.on(AdversarialIterationEvents.GENERATOR_MODEL_COMPLETED)
    def _norm(engine):
        grads = [p.grad.flatten() for p in engine.refinement_net.parameters() if p.grad is not None]
        norms.append(torch.cat(grads).norm().item())

    trainer.run()
    assert norms and all(n <= 1e-3 * 1.001 for n in norms)


def test_amp_on_cpu_runs():
    trainer = _trainer(
        amp=True, schedule=DiscriminatorSchedule(1, 0, accuracy_cap=None), batch_size=8, progress_bar=True
    )
    trainer.run()
    assert math.isfinite(trainer.state.output["loss"]) and trainer.scaler is None


def test_bad_input_names_the_case():
    cases = make_cases(4)
    cases[2][CarKeys.IMAGE][0, 3, 3] = float("nan")
    with pytest.raises(InvalidBatchError, match="case_002.*NaN"):
        _trainer(cases=cases).run()
    trainer = _trainer(cases=cases, skip_invalid=True)
    trainer.run()
    assert list(trainer.state.skipped_cases) == ["case_002"] and trainer.state.output["num_cases"] == 3
    cases = make_cases(4)
    cases[1][CarKeys.LABEL] = cases[1][CarKeys.LABEL][:3]
    with pytest.raises(InvalidBatchError, match="case_001.*3 graders.*expected 4"):
        _trainer(cases=cases, batch_size=1, num_graders=4).run()


def test_validation_during_training_selects_on_the_whole_validation_set(tmp_path):
    trainer = _trainer(epochs=2, schedule=DiscriminatorSchedule(1, 0, accuracy_cap=None))
    evaluator = CAREvaluator("cpu", make_loader(make_cases(5, seed=3), batch_size=2, shuffle=False), trainer.network,
                             num_samples=2, progress_bar=True)  # fmt: skip
    AtomicCheckpointSaver(str(tmp_path), {"refinement_net": trainer.refinement_net}, save_key_metric=True,
                          key_metric_negative_sign=True, key_metric_filename="best.pt").attach(evaluator)  # fmt: skip
    seen: list[GeneratorUpdate] = []
    evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.append((e.state.epoch, e.state.metrics["ged"])))
    ValidationHandler(validator=evaluator, interval=1, epoch_level=True).attach(trainer)
    trainer.run()
    assert [epoch for epoch, _ in seen] == [1, 2] and evaluator.state.iteration == 3  # 5 cases, batches of 2
    assert evaluator.state.best_metric == min(ged for _, ged in seen) and (tmp_path / "best.pt").is_file()
    assert trainer.refinement_net.training, "evaluation restores training mode"


def test_argument_checks():
    with pytest.raises(ValueError, match="f_optimizer"):
        _trainer(train_calibration=True, f_optimizer=None)
    with pytest.raises(ValueError, match="generator_loss"):
        _trainer(generator_loss="l2")
    with pytest.raises(TypeError, match="CARNet"):
        RefinementTrainer("cpu", 1, [], torch.nn.Linear(1, 1), None, None, None)


def _run_recorded(tmp_path, stop_at=None, resume_from=None, seed_shift=0):
    """A 2-epoch run (2 iterations per epoch) of a fresh trainer; returns the per-iteration losses."""
    net, d = make_networks(seed=seed_shift)
    f_opt = create_car_optimizer(net.calibration_net)
    g_opt, d_opt = create_car_optimizer(net.refinement_net), create_car_optimizer(d, lr=1e-5)
    sched_g = create_lr_scheduler(g_opt, "step", decay_after=1)
    trainer = RefinementTrainer(
        "cpu",
        2,
        make_loader(make_cases(8), batch_size=4),
        net,
        d,
        g_opt,
        d_opt,
        f_optimizer=f_opt,
        train_calibration=True,
        num_samples=3,
        seed=7,
        discriminator_schedule=DiscriminatorSchedule(2, 1, accuracy_cap=0.95),
        train_handlers=[LrScheduleHandler(sched_g, print_lr=False)],
    )
    save_dict = trainer.get_checkpoint_dict({"lr_scheduler_g": sched_g})
    rows = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda e: rows.append((e.state.iteration, e.state.output["loss"], e.state.output["loss_d"])),
    )
    if stop_at is not None:
        AtomicCheckpointSaver(str(tmp_path), save_dict, save_interval=stop_at, epoch_level=False).attach(trainer)
        boundary = stop_at % 2 == 0  # the checkpoint of an epoch's last iteration is written after EPOCH_COMPLETED
        event = Events.EPOCH_COMPLETED(once=stop_at // 2) if boundary else Events.ITERATION_COMPLETED(once=stop_at)
        trainer.add_event_handler(event, lambda e: e.terminate())
    if resume_from is not None:
        StrictCheckpointLoader(resume_from, save_dict).attach(trainer)
    trainer.run()
    return rows, trainer


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory):
    return _run_recorded(tmp_path_factory.mktemp("full"))


@pytest.mark.parametrize("stop_at", [3, 2])  # mid-epoch and at an epoch boundary
def test_resume_reproduces_uninterrupted_run(tmp_path, stop_at, uninterrupted_run):
    full, full_trainer = uninterrupted_run
    first, _ = _run_recorded(tmp_path / "ckpt", stop_at=stop_at)
    assert [r[0] for r in first] == list(range(1, stop_at + 1))
    ckpt = next((tmp_path / "ckpt").glob("*.pt"))
    second, resumed = _run_recorded(tmp_path / "resumed", resume_from=str(ckpt), seed_shift=123)
    assert [r[0] for r in second] == list(range(stop_at + 1, 5))
    combined = first + second
    assert len(combined) == len(full) == 4
    for a, b in zip(full, combined):
        assert a[0] == b[0] and a[1] == b[1] and (a[2] == b[2] or (math.isnan(a[2]) and math.isnan(b[2]))), (a, b)
    for p, q in zip(full_trainer.network.parameters(), resumed.network.parameters()):
        assert torch.equal(p, q)
    assert full_trainer.discriminator_schedule.state_dict() == resumed.discriminator_schedule.state_dict()


def test_resume_with_another_configuration_fails(tmp_path):
    _run_recorded(tmp_path / "ckpt", stop_at=2)
    ckpt = str(next((tmp_path / "ckpt").glob("*.pt")))
    net, d = make_networks()
    trainer = RefinementTrainer(
        "cpu", 2, make_loader(make_cases(8)), net, d, create_car_optimizer(net.refinement_net),
        create_car_optimizer(d), num_samples=3, seed=7,
    )  # fmt: skip
    loader = StrictCheckpointLoader(ckpt, trainer.get_checkpoint_dict())
    with pytest.raises(
        CheckpointKeyError, match=r"missing entries \[\].*unexpected entries \['lr_scheduler_g', 'optimizer_f'\]"
    ):
        loader(trainer)


def test_generator_update_hook_can_be_overridden_by_a_subclass():
    """A trainer variant changes how G learns by overriding ``_update_generator`` alone (nnU-Net's habit): here it
    scales G's update to zero by skipping the optimiser step, while D still trains from the hook's fakes."""

    class FrozenGeneratorTrainer(RefinementTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.updates: list[GeneratorUpdate] = []

        def _update_generator(self, engine, x, y, probs, valid, loss_ce_f):
            with torch.no_grad():
                samples = self.network.sample(x, self.num_samples, calibration_probs=probs)
            fake_in = torch.cat([x.repeat_interleave(self.num_samples, 0), samples.flatten(0, 1)], dim=1)
            logits = self.discriminator(fake_in).detach()
            zero = torch.zeros(())
            update = GeneratorUpdate(fake_in, logits, zero, zero, zero, None)
            self.updates.append(update)
            return update

    net, d = make_networks()
    trainer = FrozenGeneratorTrainer(
        "cpu", 1, make_loader(make_cases(8), batch_size=4), net, d, create_car_optimizer(net.refinement_net),
        create_car_optimizer(d, lr=1e-3), num_samples=3, discriminator_schedule=DiscriminatorSchedule(1, 0, None),
    )  # fmt: skip
    g0, d0 = _params(trainer.refinement_net), _params(trainer.discriminator)
    trainer.run()
    assert len(trainer.updates) == 2 and trainer.updates[0].fake_inputs.shape == (12, 3, 32, 32)
    assert not _changed(g0, trainer.refinement_net), "the overriding hook did not step G"
    assert _changed(d0, trainer.discriminator) and trainer.state.output["d_updated"] == 1.0
    assert trainer.state.output["loss"] == 0.0 and math.isnan(trainer.state.output["loss_refine_ce"])


def test_generator_update_is_a_named_tuple_of_the_logged_losses():
    trainer = _trainer(schedule=DiscriminatorSchedule(1, 0, accuracy_cap=None))
    seen: list[GeneratorUpdate] = []
    original = trainer._update_generator

    def spy(*args):
        update = original(*args)
        seen.append(update._replace(loss_g=update.loss_g.detach()))
        return update

    trainer._update_generator = spy
    trainer.run()
    last, out = seen[-1], trainer.state.output
    assert isinstance(last, GeneratorUpdate) and last.loss_refine_ce is None
    assert last.fake_inputs.shape == (12, 3, 32, 32) and last.fake_logits.shape[0] == 12
    assert out["loss"] == pytest.approx(last.loss_g.item()) and out["loss_cal"] == pytest.approx(last.loss_cal.item())
    assert last.loss_g.item() == pytest.approx(10 * last.loss_adv.item() + 5 * last.loss_cal.item(), rel=1e-5)


def test_fewer_cases_than_a_batch_with_drop_last_is_an_error():
    from monai.data import DataLoader

    trainer = _trainer()
    trainer.data_loader = DataLoader(make_cases(3), batch_size=4, drop_last=True)
    trainer.state.epoch_length = len(trainer.data_loader)
    with pytest.raises(ValueError, match=r"RefinementTrainer: the training data loader yields no batches"):
        trainer.run()


def test_bool_options_given_as_words_are_parsed_not_taken_as_truthy_strings():
    """``python -m monai.bundle run ... --stage2#shared_encoder false`` passes the string 'false' (python-fire)."""
    trainer = _trainer(shared_encoder="false", amp="False")
    assert trainer.shared_encoder is False and trainer.amp is False
    with pytest.raises(ValueError, match="shared_encoder must be true or false, got 'nope'"):
        _trainer(shared_encoder="nope")
