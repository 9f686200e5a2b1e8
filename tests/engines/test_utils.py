from __future__ import annotations

import logging

import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor, list_data_collate

from monai_car.engines import check_batch, select_cases
from monai_car.engines import utils as engine_utils
from monai_car.engines.utils import attach_progress_bar, frozen_parameters, is_interactive
from monai_car.utils.enums import CarKeys


def _batch(n=3, graders=4, size=8):
    items = []
    for i in range(n):
        label = (torch.rand(graders, size, size) > 0.5).to(torch.uint8)
        items.append(
            {
                CarKeys.IMAGE: MetaTensor(torch.rand(1, size, size), affine=torch.eye(4) * (i + 1)),
                CarKeys.LABEL: label,
                CarKeys.GRADER_LABEL: label[:1].clone(),
                CarKeys.CASE_ID: f"c{i}",
                "skip_reason": "",
            }
        )
    return list_data_collate(items)


def test_check_batch_names_each_bad_case():
    batch = _batch()
    assert check_batch(batch, grader_key=CarKeys.GRADER_LABEL, labels_key=CarKeys.LABEL, num_classes=2).ok
    batch[CarKeys.IMAGE][0, 0, 1, 1] = float("nan")
    batch[CarKeys.GRADER_LABEL][2, 0, 0, 0] = 3
    batch["skip_reason"][1] = "mask shape (7, 7) differs"
    check = check_batch(batch, grader_key=CarKeys.GRADER_LABEL, num_classes=2, ignore_index=None, where="it 5")
    assert check.valid_indices == []
    report = check.report()
    assert "NaN" in report["c0"] and "mask shape" in report["c1"] and "outside [0, 1]" in report["c2"]
    message = check.message("training")
    assert all(name in message for name in ("c0", "c1", "c2")) and "skip_invalid=True" in message
    batch = _batch()
    batch[CarKeys.GRADER_LABEL][1, 0, 0, 0] = 255
    assert check_batch(batch, grader_key=CarKeys.GRADER_LABEL, num_classes=2, ignore_index=255).ok


def test_check_batch_graders_and_batch_level_errors():
    batch = _batch(graders=3)
    check = check_batch(batch, labels_key=CarKeys.LABEL, num_graders=4)
    assert check.report()["c0"] == "3 graders in 'label', expected 4"
    batch = _batch()
    del batch[CarKeys.LABEL]
    assert "no graders' labels" in check_batch(batch, labels_key=CarKeys.LABEL, require_labels=True).report()["c2"]
    with pytest.raises(KeyError, match="no 'image' entry"):
        check_batch({"img": torch.zeros(1, 1, 4, 4)})
    with pytest.raises(ValueError, match=r"must be one drawn grader \(B, 1, \*spatial\)"):
        check_batch(_batch(), grader_key=CarKeys.LABEL)
    with pytest.raises(ValueError, match="channels"):
        check_batch(_batch(), in_channels=3)
    with pytest.raises(TypeError, match="dict batch"):
        check_batch([torch.zeros(1)])


def test_select_cases_keeps_metadata_with_its_case():
    batch = _batch(4)
    sub = select_cases(batch, [0, 3])
    assert sub[CarKeys.CASE_ID] == ["c0", "c3"]
    assert torch.equal(sub[CarKeys.IMAGE].affine[:, 0, 0], torch.tensor([1.0, 4.0]).double())
    assert torch.equal(sub[CarKeys.LABEL], batch[CarKeys.LABEL][[0, 3]])


def test_frozen_parameters():
    net = torch.nn.Conv2d(1, 2, 1)
    x = torch.rand(1, 1, 2, 2, requires_grad=True)
    with frozen_parameters(net):
        net(x).sum().backward()
    assert net.weight.grad is None and x.grad is not None and net.weight.requires_grad


def _progress_engine(every=None, keys=("loss",)):
    engine = Engine(lambda e, b: {"loss": torch.tensor(0.25), "other": 1.0})
    attach_progress_bar(engine, keys, every=every)
    return engine


def test_progress_off_a_terminal_is_periodic_lines_without_carriage_returns(
    capsys, monkeypatch, logging_not_configured
):
    monkeypatch.delenv("CI", raising=False)
    assert not is_interactive()  # pytest captures stdout and stderr: not terminals
    _progress_engine(every=2).run(range(5), max_epochs=2)
    out = capsys.readouterr()
    assert "\r" not in out.err + out.out
    lines = out.err.strip().splitlines()
    assert [line.split(" [", 2)[1].split("]")[0] for line in lines] == ["1/2", "1/2", "1/2", "2/2", "2/2", "2/2"]
    assert lines[0].startswith("Engine epoch [1/2]: [2/5] 40%, loss=0.25 [") and "other" not in lines[0]
    assert lines[2].startswith("Engine epoch [1/2]: [5/5] 100%, loss=0.25")  # the end of each epoch


def test_progress_lines_go_to_the_log_when_logging_shows_them(caplog, capsys):
    caplog.set_level(logging.INFO)
    _progress_engine(keys=()).run(range(3), max_epochs=1)  # default: every 50 iterations and each epoch's end
    assert [r.getMessage().split(" [0")[0] for r in caplog.records if "epoch [" in r.getMessage()] == [
        "Engine epoch [1/1]: [3/3] 100%"
    ]
    assert capsys.readouterr().err == ""


def test_a_terminal_gets_the_bar_unless_ci_is_set(capsys, monkeypatch, logging_not_configured):
    monkeypatch.setattr(engine_utils, "_isatty", lambda stream: True)
    monkeypatch.delenv("CI", raising=False)
    assert is_interactive()
    _progress_engine().run(range(3), max_epochs=1)
    assert "\r" in capsys.readouterr().err  # tqdm's in-place updates
    monkeypatch.setenv("CI", "true")
    assert not is_interactive()
    _progress_engine().run(range(3), max_epochs=1)
    out = capsys.readouterr().err
    assert "\r" not in out and "[3/3] 100%" in out
    with pytest.raises(ValueError, match="every must be a positive int"):
        attach_progress_bar(Engine(lambda e, b: None), every=0)
