"""Learning-rate schedules that NiN models are compiled with."""

from __future__ import annotations

from typing import Any

import keras

from ninlayers import _checks

__all__ = ["OneCycleSchedule"]


@keras.saving.register_keras_serializable(package="ninlayers")
class OneCycleSchedule(keras.optimizers.schedules.CosineDecay):
    """Linear warm-up to a peak learning rate, then cosine decay to zero.

    Keras's `CosineDecay` with a warm-up from 0, set by the whole run's length
    and the warm-up's share of it rather than by step counts.

    Args:
        peak_learning_rate: float. The rate at the end of the warm-up.
        total_steps: int. Steps of the whole run.
        warmup_fraction: float. Share of the steps spent warming up, in
            [0, 1). Defaults to `0.25`.

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
        peak = _checks.positive_number("peak_learning_rate", peak_learning_rate)
        total_steps = _checks.positive_int("total_steps", total_steps)
        warmup_fraction = _checks.fraction("warmup_fraction", warmup_fraction)
        warmup = max(warmup_fraction * total_steps, 1.0)
        super().__init__(
            initial_learning_rate=0.0,
            decay_steps=max(total_steps - warmup, 1.0),
            alpha=0.0,
            name="OneCycleSchedule",
            warmup_target=peak,
            warmup_steps=warmup,
        )
        self.peak_learning_rate = peak
        self.total_steps = total_steps
        self.warmup_fraction = warmup_fraction

    def get_config(self) -> dict[str, Any]:
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "total_steps": self.total_steps,
            "warmup_fraction": self.warmup_fraction,
        }
