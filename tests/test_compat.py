"""Files written by earlier releases keep loading and predicting the same."""

import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from ninlayers import runtime

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
from make_v010_fixture import EXPECTED, MODEL, fixture_images  # noqa: E402

# Runs on every Keras backend (the README's backend matrix).
pytestmark = pytest.mark.backends

sys.path.remove(str(FIXTURES))


def test_v010_file_loads_and_predicts_the_same(monkeypatch):
    # The kernels the file was written with: batch norm not folded in.
    monkeypatch.setattr(runtime, "FOLD_BATCH_NORM", False)
    expected = np.load(EXPECTED)
    model = keras.saving.load_model(MODEL)
    # The file says precision "auto": it computes in what this machine picks.
    same_policy = model.dtype_policy.name == str(expected["policy"])
    assert same_policy == (runtime.resolve_precision("auto") == str(expected["policy"]))
    predictions = model.predict(fixture_images(), verbose=0)
    # Written on TensorFlow: the same kernels there give the same numbers;
    # another backend's bfloat16 kernels (or another precision) round
    # differently.
    exact = same_policy and keras.backend.backend() == "tensorflow"
    tolerance = 1e-6 if exact else 2e-2
    np.testing.assert_allclose(predictions, expected["predictions"], atol=tolerance)
    assert model.class_names == ["a", "b", "c"]
    assert model.test_time_flip
    # The compiled optimizer, schedule and loss come back too.
    assert type(model.loss).__name__ == "SparseSmoothedCrossentropy"
    assert model.optimizer.iterations.numpy() == 4
    schedule = model.optimizer._learning_rate
    assert float(schedule(0)) == 0.0 and float(schedule(1)) > 0.0
