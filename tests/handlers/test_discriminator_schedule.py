from __future__ import annotations

import pytest
from ignite.engine import Engine

from monai_car.handlers import DiscriminatorSchedule
from monai_car.utils.checkpoint import CheckpointKeyError


def test_cycles_of_updates_and_frozen_iterations():
    schedule = DiscriminatorSchedule(update_iterations=50, frozen_iterations=200, accuracy_cap=None)
    phases = [schedule.should_update(i) for i in range(1, 501)]
    assert phases[:50] == [True] * 50 and phases[50:250] == [False] * 200 and phases[250:300] == [True] * 50
    assert schedule.num_updates == 100 and schedule.num_frozen == 400
    late = DiscriminatorSchedule(2, 3, accuracy_cap=None, start_with_update=False)
    assert [late.in_update_phase(i) for i in range(1, 11)] == [False] * 3 + [True] * 2 + [False] * 3 + [True] * 2
    always = DiscriminatorSchedule(1, 0, accuracy_cap=None)
    assert all(always.should_update(i) for i in range(1, 20))


def test_accuracy_cap_skips_updates():
    schedule = DiscriminatorSchedule(3, 1, accuracy_cap=0.85)
    assert schedule.should_update(1, accuracy=0.5)
    assert not schedule.should_update(2, accuracy=0.85)  # at the cap: skipped, as the reference code
    assert not schedule.should_update(3, accuracy=0.9)
    assert not schedule.should_update(4, accuracy=0.1)  # frozen phase
    assert (schedule.num_updates, schedule.num_capped, schedule.num_frozen) == (1, 2, 1)
    assert schedule.last_accuracy == 0.1
    with pytest.raises(ValueError, match="accuracy_cap=0.85 but got accuracy=None"):
        schedule.should_update(5)
    with pytest.raises(ValueError, match="1-based"):
        schedule.should_update(0, accuracy=0.5)


def test_state_dict_round_trip_and_strict_loading():
    schedule = DiscriminatorSchedule(2, 2)
    for i in range(1, 7):
        schedule.should_update(i, accuracy=0.3)
    state = schedule.state_dict()
    restored = DiscriminatorSchedule(2, 2)
    restored.load_state_dict(state)
    assert restored.state_dict() == state
    with pytest.raises(ValueError, match="configured differently.*frozen_iterations"):
        DiscriminatorSchedule(2, 5).load_state_dict(state)
    with pytest.raises(CheckpointKeyError, match=r"missing keys \['num_capped'\]"):
        restored.load_state_dict({k: v for k, v in state.items() if k != "num_capped"})
    with pytest.raises(CheckpointKeyError, match=r"unexpected keys \['counter'\]"):
        restored.load_state_dict({**state, "counter": 1})


def test_argument_checks_and_attach():
    for bad in ({"update_iterations": 0}, {"frozen_iterations": -1}, {"accuracy_cap": 1.5}):
        with pytest.raises(ValueError):
            DiscriminatorSchedule(**bad)
    with pytest.raises(TypeError, match="set_discriminator_schedule"):
        DiscriminatorSchedule().attach(Engine(lambda e, b: None))
    engine = Engine(lambda e, b: None)
    received = []
    engine.set_discriminator_schedule = received.append
    schedule = DiscriminatorSchedule()
    schedule.attach(engine)
    engine.run([0, 1], max_epochs=1)
    assert received == [schedule]


def test_phase_accuracies_by_hand():
    # cycles of 3 updating + 2 frozen; accuracies measured before each update
    schedule = DiscriminatorSchedule(3, 2, accuracy_cap=0.85)
    accuracies = [0.5, 0.6, 0.9, 0.1, 0.1, 0.7, 0.8, 0.6, 0.2, 0.2, 0.55]
    updates = [schedule.should_update(i, a) for i, a in enumerate(accuracies, start=1)]
    # phase 1: iterations 1-3 (0.9 is capped, still counted in the mean); frozen 4-5; phase 2: 6-8; 11 is running
    assert updates == [True, True, False, False, False, True, True, True, False, False, True]
    assert schedule.phase_accuracies == pytest.approx([(0.5 + 0.6 + 0.9) / 3, (0.7 + 0.8 + 0.6) / 3])
    assert schedule.close_phase() == pytest.approx(0.55)  # the partial phase at the end of a run
    assert schedule.idle_warning() is None


def test_idle_discriminator_warning_and_resume_of_a_running_phase():
    idle = DiscriminatorSchedule(2, 1, accuracy_cap=None)
    for i, a in enumerate([0.5, 0.51, 0.0, 0.49, 0.5, 0.0], start=1):
        idle.should_update(i, a)
    assert idle.phase_accuracies == pytest.approx([0.505, 0.495])
    assert "within 0.02 of 0.5" in idle.idle_warning() and "lr_d" in idle.idle_warning()
    engaged = DiscriminatorSchedule(2, 1, accuracy_cap=None)
    for i, a in enumerate([0.5, 0.5, 0.0, 0.5, 0.56], start=1):
        engaged.should_update(i, a)
    assert engaged.idle_warning() is None  # one phase left the band (0.53)
    # a checkpoint taken mid-phase resumes the running phase's mean exactly
    half = DiscriminatorSchedule(4, 0, accuracy_cap=None)
    whole = DiscriminatorSchedule(4, 0, accuracy_cap=None)
    for i, a in enumerate([0.6, 0.7], start=1):
        half.should_update(i, a)
        whole.should_update(i, a)
    resumed = DiscriminatorSchedule(4, 0, accuracy_cap=None)
    resumed.load_state_dict(half.state_dict())
    for i, a in ((3, 0.8), (4, 0.9)):
        resumed.should_update(i, a)
        whole.should_update(i, a)
    assert resumed.phase_accuracies == whole.phase_accuracies == pytest.approx([0.75])


def test_end_of_run_logs_phases_and_warns(caplog):
    engine = Engine(lambda e, b: None)
    engine.set_discriminator_schedule = lambda s: None
    schedule = DiscriminatorSchedule(2, 0, accuracy_cap=None)
    schedule.attach(engine)
    schedule.register_logging(engine)  # idempotent: one set of handlers
    for i in range(1, 4):
        schedule.should_update(i, 0.5)
    with caplog.at_level("INFO"):
        engine.run([0], max_epochs=1)
    assert engine.state.d_phase_accuracies == pytest.approx([0.5, 0.5])
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "within 0.02" in r.getMessage()]
    assert len(warnings) == 1
    schedule.detach_logging(engine)
    assert not engine.has_event_handler(schedule._completed)
