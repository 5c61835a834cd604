"""The trainer's callbacks: timing, divergence, held-out scores (the backup:
`backup.py`)."""

from __future__ import annotations

import threading
import time

import keras
import numpy as np

from ninlayers import runtime

__all__ = [
    "Elapsed",
    "HeldOutScore",
    "StopOnNaN",
    "StopOnRequest",
    "Terminated",
    "Throughput",
    "request_stop",
]


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


class Elapsed(keras.callbacks.Callback):
    """Adds `elapsed_seconds` to each epoch's logs: wall-clock seconds since
    `start` (a `time.perf_counter()` value), for time-to-accuracy curves.

    Args:
        start: float. When the run started; `None` for the start of `fit`.
    """

    def __init__(self, start: float | None = None) -> None:
        super().__init__()
        self.start = start

    def on_train_begin(self, logs=None):
        if self.start is None:
            self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["elapsed_seconds"] = time.perf_counter() - self.start


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


class HeldOutScore(keras.callbacks.Callback):
    """Scores held-out images after each epoch: `{prefix}_accuracy` and
    `{prefix}_loss` (unsmoothed cross-entropy) join the epoch's logs.

    It runs the model batch by batch on NumPy arrays (`predict_on_batch`)
    rather than through `fit(validation_data=...)`, which starts and ends a
    new input iterator every epoch: on these machines the end of an
    autotuned one could wait, cores idle, for its tuning thread, up to as
    long again as the iterator had run (docs/performance.md).

    A NiN with test-time views (`test_time_flip`, `test_time_shift`) is
    scored on each image alone unless `all_views`, as timm's training
    scores without its test-time augmentation: ten views would cost ten
    times the scoring every epoch. The trainer's final test score has them.

    Args:
        x: np.ndarray. Images as the model takes them.
        y: np.ndarray. Integer labels.
        batch_size: int. Images per call.
        prefix: str. `"val"` for images held out of the training set, as
            Keras names them; `"test"` for test images, so that nothing
            reading the logs takes test scores for validation ones.
        all_views: bool. Score what the model predicts, averaged over its
            test-time views, rather than each image alone.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int = 500,
        prefix: str = "val",
        all_views: bool = False,
    ) -> None:
        super().__init__()
        self.x, self.y, self.batch_size = x, np.asarray(y), batch_size
        self.prefix, self.all_views = prefix, bool(all_views)
        self._one_view: tuple[keras.Model, keras.Model] | None = None

    def on_epoch_end(self, epoch, logs=None):
        from ninlayers.app.inference import probabilities, scores

        if logs is None or not len(self.x):
            return
        # Across JAX processes, each scores on a copy of its own.
        with runtime.local_model(self.model) as model:
            outputs = []
            for i in range(0, len(self.x), self.batch_size):
                batch = self.x[i : i + self.batch_size]
                # Under several workers each one's batch comes back gathered
                # from all (the same images): the first rows are this batch's.
                predicted = self._predict(model, batch)
                outputs.append(np.asarray(predicted)[: len(batch)])
            probs = probabilities(model, np.concatenate(outputs))
        score = scores(probs, self.y)
        logs[f"{self.prefix}_accuracy"] = score["accuracy"]
        logs[f"{self.prefix}_loss"] = score["loss"]

    def _predict(self, model: keras.Model, batch: np.ndarray):
        """`model`'s outputs for `batch`; for a model with test-time views,
        unless `all_views`, each image seen alone, through the classifier's
        own graph (its layers, shared), kept for the next epochs."""
        views = getattr(model, "test_time_flip", False) or getattr(
            model, "test_time_shift", 0
        )
        if self.all_views or not views:
            return model.predict_on_batch(batch)
        if self._one_view is None or self._one_view[0] is not model:
            graph = keras.Model(model.inputs, model.outputs, name="one_view")
            self._one_view = (model, graph)
        converter = getattr(model, "preprocessor", None)
        if converter is not None:
            batch = converter(converter.check(batch))
        return self._one_view[1].predict_on_batch(batch)


class Terminated(KeyboardInterrupt):
    """A stop signal (SIGTERM, what a batch scheduler sends) ended the run."""


_stop_requested = threading.Event()


def request_stop() -> None:
    """Asks the running training to stop at the end of its current step.

    A signal handler calls it: an exception raised from the handler itself
    can be swallowed where C code calls back into Python (NumPy's array
    protocols, which Keras's JAX trainer goes through after each step).
    """
    _stop_requested.set()


class StopOnRequest(keras.callbacks.Callback):
    """Raises `Terminated` at the end of the step during which
    `request_stop()` was called; every file is written atomically, so the
    run keeps its last backup."""

    def on_train_batch_end(self, batch, logs=None):
        if _stop_requested.is_set():
            raise Terminated()

    on_test_batch_end = on_predict_batch_end = on_train_batch_end
