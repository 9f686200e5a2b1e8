from __future__ import annotations

import copy
import math

import pytest
import torch
from car_engine_synthetic import make_cases, make_loader, make_networks
from ignite.engine import Events
from monai.engines.utils import IterationEvents

from monai_car.engines import CalibrationTrainer, InvalidBatchError
from monai_car.handlers import AtomicCheckpointSaver, StrictCheckpointLoader
from monai_car.losses import MaskedCrossEntropyLoss
from monai_car.optimizers import create_car_optimizer
from monai_car.utils.enums import CarKeys


def _trainer(cases=None, epochs=1, f=None, shuffle=True, **kwargs):
    f = f if f is not None else make_networks()[0].calibration_net
    loader = make_loader(cases if cases is not None else make_cases(8), batch_size=4, shuffle=shuffle)
    return CalibrationTrainer("cpu", epochs, loader, f, create_car_optimizer(f), **kwargs)


def test_loss_is_cross_entropy_of_logits_against_the_drawn_grader():
    trainer = _trainer(shuffle=False)
    seen, losses = {}, []

    @trainer.on(Events.ITERATION_STARTED(once=1))
    def _snapshot(engine):
        seen["f"] = copy.deepcopy(engine.calibration_net)
        seen["batch"] = engine.state.batch

    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"].item()))
    before = [p.detach().clone() for p in trainer.calibration_net.parameters()]
    trainer.run()
    x, y = seen["batch"][CarKeys.IMAGE], seen["batch"][CarKeys.GRADER_LABEL]
    expected = MaskedCrossEntropyLoss()(seen["f"].train().forward_logits(x), y).item()
    assert losses[0] == pytest.approx(expected, rel=1e-5)
    assert y.shape == (4, 1, 32, 32) and set(torch.unique(y).tolist()) <= {0, 1}
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.calibration_net.parameters()))


def test_probability_network_and_gradient_clipping():
    class ProbsOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)

        def forward(self, x):
            return torch.softmax(self.conv(x), dim=1)

    trainer = _trainer(f=ProbsOnly(), clip_grad_norm=1e-4)
    norms = []

    @trainer.on(IterationEvents.MODEL_COMPLETED)
    def _norm(engine):
        norms.append(torch.cat([p.grad.flatten() for p in engine.calibration_net.parameters()]).norm().item())

    trainer.run()
    assert trainer.loss_function.input_is_probs
    assert math.isfinite(trainer.state.output["loss"].item())
    assert norms and all(n <= 1e-4 * 1.001 for n in norms)


def test_bad_input_names_the_case():
    cases = make_cases(4)
    cases[1][CarKeys.IMAGE][0, 0, 0] = float("inf")
    with pytest.raises(InvalidBatchError, match="case_001.*NaN or inf"):
        _trainer(cases=cases).run()
    trainer = _trainer(cases=cases, skip_invalid=True)
    trainer.run()
    assert trainer.state.skipped_cases == {"case_001": "the image holds NaN or inf values ('image')"}
    cases = make_cases(4)
    cases[3][CarKeys.LABEL][0, 5, 5] = 2  # a non-binary grader mask: class 2 does not exist for K = 2
    cases[3][CarKeys.LABEL][1:] = cases[3][CarKeys.LABEL][:1]
    with pytest.raises(InvalidBatchError, match=r"case_003.*outside \[0, 1\]"):
        _trainer(cases=cases).run()


def _run(tmp_path, stop_at=None, resume_from=None):
    f = make_networks(seed=0 if resume_from is None else 5)[0].calibration_net
    trainer = _trainer(f=f, epochs=2, seed=3)
    save_dict = trainer.get_checkpoint_dict()
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"].item()))
    if stop_at is not None:
        AtomicCheckpointSaver(str(tmp_path), save_dict, save_interval=stop_at, epoch_level=False).attach(trainer)
        trainer.add_event_handler(Events.ITERATION_COMPLETED(once=stop_at), lambda e: e.terminate())
    if resume_from is not None:
        StrictCheckpointLoader(resume_from, save_dict).attach(trainer)
    trainer.run()
    return losses, trainer


def test_resume_reproduces_uninterrupted_run(tmp_path):
    full, full_trainer = _run(tmp_path / "full")
    first, _ = _run(tmp_path / "ckpt", stop_at=3)
    second, resumed = _run(tmp_path / "resumed", resume_from=str(next((tmp_path / "ckpt").glob("*.pt"))))
    assert len(full) == 4 and first + second == full
    for p, q in zip(full_trainer.calibration_net.parameters(), resumed.calibration_net.parameters()):
        assert torch.equal(p, q)


def test_an_empty_training_loader_is_an_error_not_a_silent_no_op():
    trainer = _trainer(cases=[], shuffle=False)
    with pytest.raises(
        ValueError, match=r"CalibrationTrainer: the training data loader yields no batches .*batch_size"
    ):
        trainer.run()


def test_progress_bar_off_a_terminal_logs_lines_instead_of_carriage_returns(
    capsys, monkeypatch, logging_not_configured
):
    monkeypatch.delenv("CI", raising=False)
    _trainer(epochs=2, progress_bar=True).run()  # 8 cases, batch 4: 2 iterations per epoch
    out = capsys.readouterr()
    assert "\r" not in out.err + out.out
    lines = [line for line in out.err.splitlines() if line.startswith("CalibrationTrainer epoch")]
    assert [line.split(":")[0] for line in lines] == [
        "CalibrationTrainer epoch [1/2]",
        "CalibrationTrainer epoch [2/2]",
    ]
    assert all("[2/2] 100%, loss=" in line for line in lines)
