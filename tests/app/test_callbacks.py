"""The trainer's per-epoch held-out score."""

import numpy as np
import pytest

from helpers import SMALL
from ninlayers import NiN, export
from ninlayers.app.callbacks import HeldOutScore
from ninlayers.app.inference import scores

# Runs on every Keras backend (the README's backend matrix).
pytestmark = pytest.mark.backends


def _model(**views):
    return NiN(
        num_classes=3,
        input_shape=(16, 16, 1),
        architecture=SMALL,
        precision="float32",
        check_input_range=True,
        **views,
    )


def _logs(model, x, y, **options):
    callback = HeldOutScore(x, y, batch_size=4, prefix="test", **options)
    callback.set_model(model)
    logs = {}
    callback.on_epoch_end(0, logs)
    return logs, callback


@pytest.mark.parametrize("views", [{}, {"test_time_flip": True, "test_time_shift": 1}])
def test_held_out_score_sees_each_image_alone(views):
    rng = np.random.default_rng(0)
    # uint8 pixels: the score maps them as the model's converter does.
    x = rng.integers(0, 256, size=(10, 16, 16, 1), dtype=np.uint8)
    y = rng.integers(0, 3, size=10)
    model = _model(**views)
    alone = export.with_test_time(model, flip=False, shift=0)
    expected = scores(alone.predict(x, batch_size=4, verbose=0), y)

    logs, callback = _logs(model, x, y)

    assert logs["test_accuracy"] == pytest.approx(expected["accuracy"])
    assert logs["test_loss"] == pytest.approx(expected["loss"], rel=1e-4)
    if views:
        # Not what the model itself predicts, which averages ten views ...
        all_views = scores(model.predict(x, batch_size=4, verbose=0), y)
        assert logs["test_loss"] != pytest.approx(all_views["loss"], rel=1e-4)
        # ... and the next epoch's score sees the weights as they are then.
        kernel = model.trainable_variables[0]
        kernel.assign(kernel * 2.0)
        alone = export.with_test_time(model, flip=False, shift=0)
        expected = scores(alone.predict(x, batch_size=4, verbose=0), y)
        again = {}
        callback.on_epoch_end(1, again)
        assert again["test_loss"] == pytest.approx(expected["loss"], rel=1e-4)
        assert again["test_loss"] != pytest.approx(logs["test_loss"], rel=1e-4)


def test_held_out_score_of_all_views_scores_what_the_model_predicts():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(6, 16, 16, 1), dtype=np.uint8)
    y = rng.integers(0, 3, size=6)
    model = _model(test_time_flip=True, test_time_shift=1)
    expected = scores(model.predict(x, batch_size=4, verbose=0), y)

    logs, _ = _logs(model, x, y, all_views=True)

    assert logs["test_loss"] == pytest.approx(expected["loss"], rel=1e-4)
    assert logs["test_accuracy"] == pytest.approx(expected["accuracy"])
