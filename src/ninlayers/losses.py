"""Losses that NiN models are compiled with, registered for `.keras` files."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from ninlayers import _checks

__all__ = ["SparseSmoothedCrossentropy"]


@keras.saving.register_keras_serializable(package="ninlayers")
class SparseSmoothedCrossentropy(keras.losses.Loss):
    """Cross-entropy with integer labels and label smoothing.

    Equals `keras.losses.CategoricalCrossentropy(label_smoothing=...)` on
    one-hot labels, without the one-hot labels: the target puts
    `1 - label_smoothing` on the true class and spreads `label_smoothing`
    evenly over all classes.

    Args:
        label_smoothing: float. In [0, 1). Defaults to `0.1`.
        from_logits: bool. Whether predictions are logits. Defaults to `False`.
        name: str. Defaults to `"sparse_smoothed_crossentropy"`.
        **kwargs: Base loss arguments (`reduction`, `dtype`).

    Example:

    >>> import numpy as np
    >>> loss = SparseSmoothedCrossentropy(0.0)
    >>> round(float(loss(np.array([1]), np.array([[0.5, 0.5]]))), 4)
    0.6931
    """

    def __init__(
        self,
        label_smoothing: float = 0.1,
        from_logits: bool = False,
        name: str = "sparse_smoothed_crossentropy",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.label_smoothing = _checks.fraction("label_smoothing", label_smoothing)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        if self.from_logits:
            log_probs = ops.log_softmax(y_pred, axis=-1)
        else:
            log_probs = ops.log(ops.clip(y_pred, 1e-7, 1.0))
        labels = ops.cast(ops.reshape(y_true, (-1, 1)), "int32")
        nll = -ops.take_along_axis(log_probs, labels, axis=-1)[:, 0]
        uniform = -ops.mean(log_probs, axis=-1)
        eps = self.label_smoothing
        return (1.0 - eps) * nll + eps * uniform

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "label_smoothing": self.label_smoothing,
            "from_logits": self.from_logits,
        }
