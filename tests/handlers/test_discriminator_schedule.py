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
