"""The trainer's callbacks: timing, divergence, crash-safe backup, history."""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import numpy as np

from ninlayers.app.artifacts import atomic_write_text

__all__ = ["GuardedBackup", "HistoryLog", "StopOnNaN", "Throughput"]


class Throughput(keras.callbacks.Callback):
    """Times the training part of each epoch (validation excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._validation = 0.0

    def on_test_begin(self, logs=None):
        self._test_start = time.perf_counter()

    def on_test_end(self, logs=None):
        self._validation += time.perf_counter() - self._test_start

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start - self._validation)


class StopOnNaN(keras.callbacks.Callback):
    """Stops at the first non-finite loss or gradient and remembers where.

    The gradient norm is checked too: NaN weights can give a finite loss
    (a ReLU maps NaN to 0, so the network outputs uniform scores). Under
    loss scaling (mixed_float16) non-finite gradients are expected now and
    then and the optimizer skips them, so only the loss is checked there.
    """

    def __init__(self) -> None:
        super().__init__()
        self.bad: tuple[int, int, str] | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_begin(self, logs=None):
        self._keys = ["loss"]
        if not isinstance(self.model.optimizer, keras.optimizers.LossScaleOptimizer):
            self._keys.append("gradient_norm")

    def on_train_batch_end(self, batch, logs=None):
        for key in self._keys:
            value = (logs or {}).get(key)
            if value is not None and not np.isfinite(float(value)):
                self.bad = (self._epoch + 1, batch + 1, f"{key} {float(value)}")
                self.model.stop_training = True
                return


class GuardedBackup(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` that never saves NaN weights, nor deletes itself.

    Keras's callback saves at the end of the epoch in which training stopped;
    after a NaN loss that would replace the last good state with NaN weights.
    The backup is kept when `fit` returns: the trainer removes it only once
    every artifact is written, so a crash in between loses nothing.
    """

    def __init__(self, backup_dir: Path, guard: StopOnNaN) -> None:
        super().__init__(
            str(backup_dir), delete_checkpoint=False, double_checkpoint=True
        )
        self.guard = guard

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.bad is None:
            super().on_epoch_end(epoch, logs)


class HistoryLog(keras.callbacks.Callback):
    """Keeps the per-epoch logs across interrupted and resumed runs.

    Writes them after each epoch (atomically, before the backup is taken).
    On resuming, `fit` begins at the epoch after the restored backup's, and
    the log keeps the saved entries of the epochs before it; when the backup
    already holds every epoch, `fit` runs none and the log keeps them all.
    """

    def __init__(self, backup_dir: Path) -> None:
        super().__init__()
        self.path = backup_dir / "history.json"
        self.history: dict[str, list[float]] = {}
        self.resumed_from = 0
        self._saved: dict[str, list[float]] = {}
        self._began = False

    def on_train_begin(self, logs=None):
        self._began = False
        self._saved = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def _resume_at(self, epoch: int) -> None:
        self.resumed_from = epoch
        self.history = {k: list(v[:epoch]) for k, v in self._saved.items()}

    def on_epoch_begin(self, epoch, logs=None):
        if not self._began:
            self._began = True
            self._resume_at(epoch)

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.history))

    def on_train_end(self, logs=None):
        if not self._began:
            self._resume_at(self.params["epochs"])
