"""OneCycleSchedule is Keras's CosineDecay with a warm-up, loadable by name."""

import json
import math

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ninlayers import OneCycleSchedule

# Runs on every Keras backend (the README's backend matrix).
pytestmark = pytest.mark.backends


def one_cycle(peak: float, total: int, fraction: float, step: int) -> float:
    """0.1.0's closed form: linear warm-up, then half a cosine to zero."""
    warmup = max(fraction * total, 1.0)
    decay = max(total - warmup, 1.0)
    if step < warmup:
        return peak * step / warmup
    progress = min(max(step - warmup, 0.0) / decay, 1.0)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


@given(
    peak=st.floats(1e-4, 1.0),
    total=st.integers(1, 5000),
    fraction=st.floats(0.0, 0.9),
)
def test_equals_the_one_cycle_formula(peak, total, fraction):
    schedule = OneCycleSchedule(peak, total, fraction)
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    steps = sorted({0, 1, total // 3, total // 2, total - 1, total, total + 7})
    got = [float(schedule(step)) for step in steps]
    want = [one_cycle(peak, total, fraction, step) for step in steps]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * peak)


def test_config_round_trip_by_the_registered_name():
    schedule = OneCycleSchedule(0.1, 100, 0.2)
    serialized = keras.saving.serialize_keras_object(schedule)
    assert serialized["registered_name"] == "ninlayers>OneCycleSchedule"
    assert serialized["config"] == {
        "peak_learning_rate": 0.1,
        "total_steps": 100,
        "warmup_fraction": 0.2,
    }
    revived = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
    assert float(revived(30)) == pytest.approx(float(schedule(30)))


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"peak_learning_rate": 0, "total_steps": 10}, "peak_learning_rate=0"),
        ({"peak_learning_rate": 0.1, "total_steps": 0}, "total_steps=0"),
        (
            {"peak_learning_rate": 0.1, "total_steps": 10, "warmup_fraction": 1},
            "warmup_fraction=1",
        ),
    ],
)
def test_bad_arguments_are_refused(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        OneCycleSchedule(**kwargs)
