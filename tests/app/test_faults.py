"""NaN stops cleanly; a failed save keeps the previous file; reruns are exact.

A killed run resuming is tested at every write point in test_resume.py, and
for distributed workers in test_distributed.py."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from helpers import saved_epoch
from ninlayers import NiN
from ninlayers.app import artifacts, trainer
from ninlayers.errors import TrainingError

# The default NiN with a two-block trunk (batch norm on): determinism does
# not depend on the trunk's depth.
TRAIN = [
    "train",
    "--architecture",
    "[[16, 3], [32, 3]]",
    "--train-limit",
    "384",
    "--test-limit",
    "100",
    "--batch-size",
    "64",
    "--verbose",
    "2",
]


def cli(*args):
    return [sys.executable, "-m", "ninlayers.app.cli", *map(str, args)]


ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_good_epoch(
    tmp_path, monkeypatch
):
    class Explodes(keras.optimizers.schedules.LearningRateSchedule):
        """A sane rate for the first epoch (4 steps), then NaN: divergence."""

        def __call__(self, step):
            return keras.ops.where(step < 4, 0.01, float("nan"))

        def get_config(self):
            return {}

    monkeypatch.setattr(
        trainer,
        "build_optimizer",
        lambda recipe, steps: keras.optimizers.SGD(Explodes()),
    )
    out = tmp_path / "run"
    with pytest.raises(TrainingError) as info:
        trainer.train(
            "tutorial", out, epochs=3, train_limit=320, test_limit=50, verbose=0
        )
    message = str(info.value)
    assert "epoch 2" in message and "backup" in message
    assert not (out / "model.keras").exists()
    assert not (out / "metrics.json").exists()
    assert saved_epoch(out) == 1
    restored = NiN(
        precision="float32", use_batch_norm=False, head_final_activation=True
    )
    restored.compile(optimizer=keras.optimizers.SGD(0.01))
    restored.optimizer.build(restored.trainable_variables)
    restored.load_weights(out / "backup" / "epoch-0001.keras")
    assert all(np.all(np.isfinite(w)) for w in restored.get_weights())


def test_atomic_save_keeps_the_previous_file_when_saving_fails(tmp_path, monkeypatch):
    path = tmp_path / "model.keras"
    model = NiN(
        input_shape=(16, 16, 1), architecture=[{"filters": 4, "kernel_size": 3}]
    )
    artifacts.save_model_atomically(model, path)
    before = path.read_bytes()

    def crash(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"PK half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(keras.Model, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        artifacts.save_model_atomically(model, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


@pytest.mark.slow
def test_deterministic_reruns_give_identical_weights(tmp_path):
    weights = []
    for name in ("a", "b"):
        result = subprocess.run(
            cli(
                *TRAIN,
                "--epochs",
                "1",
                "--seed",
                "3",
                "--deterministic",
                "--output",
                tmp_path / name,
            ),
            env=ENV,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        weights.append(
            keras.saving.load_model(tmp_path / name / "model.keras").get_weights()
        )
    assert len(weights[0]) == len(weights[1]) > 0
    for a, b in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, b)
