"""Recipes and the pieces they need: a one-cycle schedule, a smoothed loss.

A `Recipe` is everything a training run needs besides data: the seed's own
(Adam 1e-3, batch 64, 10 epochs, 20% validation, float32) and the default, the
best measured on the 2-core CPU this project is developed on (see
docs/recipes.md for each one's accuracy, time and command).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import keras
from keras import ops

from ninlayers import _checks

__all__ = [
    "RECIPES",
    "OneCycleSchedule",
    "Recipe",
    "SparseSmoothedCrossentropy",
    "build_optimizer",
]


@keras.saving.register_keras_serializable(package="ninlayers")
class OneCycleSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to a peak learning rate, then cosine decay to zero.

    Args:
        peak_learning_rate: float. The rate at the end of the warm-up.
        total_steps: int. Steps of the whole run.
        warmup_fraction: float. Share of the steps spent warming up.
            Defaults to `0.25`.

    Example:

    >>> schedule = OneCycleSchedule(0.1, total_steps=100, warmup_fraction=0.2)
    >>> " ".join(f"{float(schedule(s)):.2f}" for s in (0, 10, 20, 60, 100))
    '0.00 0.05 0.10 0.05 0.00'
    """

    def __init__(
        self,
        peak_learning_rate: float,
        total_steps: int,
        warmup_fraction: float = 0.25,
    ) -> None:
        if not peak_learning_rate > 0:
            raise ValueError(
                "`peak_learning_rate` must be positive. "
                f"Received: peak_learning_rate={peak_learning_rate!r}"
            )
        self.peak_learning_rate = float(peak_learning_rate)
        self.total_steps = _checks.positive_int("total_steps", total_steps)
        self.warmup_fraction = _checks.rate("warmup_fraction", warmup_fraction)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = max(self.warmup_fraction * self.total_steps, 1.0)
        decay = max(self.total_steps - warmup, 1.0)
        progress = ops.minimum(ops.maximum(step - warmup, 0.0) / decay, 1.0)
        rising = self.peak_learning_rate * step / warmup
        falling = self.peak_learning_rate * 0.5 * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < warmup, rising, falling)

    def get_config(self) -> dict[str, Any]:
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "total_steps": self.total_steps,
            "warmup_fraction": self.warmup_fraction,
        }


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
        **kwargs: Base loss arguments (`name`, `reduction`, `dtype`).

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
        self.label_smoothing = _checks.rate("label_smoothing", label_smoothing)
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


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A training recipe: model options, optimiser, schedule, augmentation.

    Args:
        name: str. The recipe's name.
        epochs: int. Passes over the training data.
        batch_size: int. Images per step.
        learning_rate: float. The constant rate, or the one-cycle peak.
        optimizer: str. `"adam"`, `"adamw"` or `"sgd"` (Nesterov, 0.9).
        schedule: str. `"constant"` or `"onecycle"`.
        warmup_fraction: float. One-cycle warm-up share of the steps.
        weight_decay: float. Decoupled weight decay.
        label_smoothing: float. Label smoothing of the loss.
        use_batch_norm: bool. Batch norm after every convolution.
        head_final_activation: bool. ReLU on the class maps (the seed's way).
        augment: bool. Flips, shifts and random erasing on training batches.
        crop_padding: int. Largest random shift in pixels.
        erasing: float. Random-erasing probability.
        validation_split: float. Share of the training data held out, taken
            from its end as Keras's `validation_split` does.
        precision: str. See `ninlayers.runtime.resolve_precision`.
        test_time_flip: bool. Predict with the mean of each image's and its
            mirror image's outputs (see `NiN`).
    """

    name: str
    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: str = "adam"
    schedule: str = "constant"
    warmup_fraction: float = 0.25
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    use_batch_norm: bool = False
    head_final_activation: bool = True
    augment: bool = False
    crop_padding: int = 2
    erasing: float = 0.0
    validation_split: float = 0.0
    precision: str = "auto"
    test_time_flip: bool = False

    def __post_init__(self) -> None:
        _checks.positive_int("epochs", self.epochs)
        _checks.positive_int("batch_size", self.batch_size)
        if not self.learning_rate > 0:
            raise ValueError(
                "`learning_rate` must be positive. "
                f"Received: learning_rate={self.learning_rate!r}"
            )
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise ValueError(
                "`optimizer` must be 'adam', 'adamw' or 'sgd'. "
                f"Received: optimizer={self.optimizer!r}"
            )
        if self.schedule not in ("constant", "onecycle"):
            raise ValueError(
                "`schedule` must be 'constant' or 'onecycle'. "
                f"Received: schedule={self.schedule!r}"
            )
        _checks.rate("validation_split", self.validation_split)
        _checks.rate("label_smoothing", self.label_smoothing)
        _checks.rate("erasing", self.erasing)

    def replace(self, **changes: Any) -> Recipe:
        """Returns a copy with some fields changed (`None` values ignored)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes)


RECIPES: dict[str, Recipe] = {
    # The seed tutorial's recipe, exactly.
    "seed": Recipe(
        name="seed",
        epochs=10,
        batch_size=64,
        learning_rate=1e-3,
        optimizer="adam",
        validation_split=0.2,
        precision="float32",
    ),
    # The best measured within 15 minutes on 2 cores (docs/recipes.md).
    "default": Recipe(
        name="default",
        epochs=10,
        batch_size=64,
        learning_rate=0.1,
        optimizer="sgd",
        schedule="onecycle",
        weight_decay=5e-4,
        label_smoothing=0.1,
        use_batch_norm=True,
        head_final_activation=False,
        augment=True,
        crop_padding=2,
        erasing=0.25,
        test_time_flip=True,
    ),
}


def build_optimizer(recipe: Recipe, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Returns the recipe's optimizer, with its learning-rate schedule.

    Args:
        recipe: Recipe.
        steps_per_epoch: int. Used by the one-cycle schedule.

    Returns:
        keras.optimizers.Optimizer.
    """
    rate: Any = recipe.learning_rate
    if recipe.schedule == "onecycle":
        rate = OneCycleSchedule(
            recipe.learning_rate,
            recipe.epochs * steps_per_epoch,
            recipe.warmup_fraction,
        )
    decay = recipe.weight_decay or None
    if recipe.optimizer == "sgd":
        return keras.optimizers.SGD(
            rate, momentum=0.9, nesterov=True, weight_decay=decay
        )
    if recipe.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=recipe.weight_decay)
    return keras.optimizers.Adam(rate, weight_decay=decay)
