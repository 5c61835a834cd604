"""Training recipes: everything a run needs besides the data.

`RECIPES` holds four: `"default"` (SGD with Nesterov momentum and a
one-cycle schedule, batch norm, label smoothing, augmentation, test-time
flip), `"quick"` (the same training, 2 epochs of a network of half the
widths in batches of 128: the tutorial's accuracy in minutes), `"fast"`
(the quick recipe for 12 epochs, with test-time shifts: the default's
accuracy in half its time) and
`"tutorial"` (the classic
NiN tutorial's Adam 1e-3, batch 64, 10 epochs, 20% validation, float32;
`"seed"` is its old name, until 0.4.0).
docs/recipes.md records each one's accuracy, time and command.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras

from ninlayers import _checks
from ninlayers.backbone import ARCHITECTURES, architecture_name
from ninlayers.losses import SparseSmoothedCrossentropy
from ninlayers.schedules import OneCycleSchedule

__all__ = [
    "OPTIMIZERS",
    "RECIPES",
    "SCHEDULES",
    "Recipe",
    "batch_norm_momentum",
    "build_loss",
    "build_optimizer",
]

#: The optimizers a recipe can name.
OPTIMIZERS = ("adam", "adamw", "sgd")

#: Runs at least this long keep Keras's batch-norm momentum (0.99).
LONG_RUN_STEPS = 1000

#: The learning-rate schedules a recipe can name.
SCHEDULES = ("constant", "onecycle")


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
        architecture: str. A name in `ninlayers.ARCHITECTURES`.
        use_batch_norm: bool. Batch norm after every convolution.
        batch_norm_momentum: float or `None`. Momentum of its moving
            statistics; `None` picks Keras's 0.99 for runs of at least
            `LONG_RUN_STEPS` steps (as both recipes were measured) and 0.9
            for shorter ones, whose statistics 0.99 would leave stale (a
            2-epoch trial on 512 images then predicted one class).
        head_final_activation: bool. ReLU on the class maps (the paper's way).
        augment: bool. Flips, shifts and random erasing on training batches.
        crop_padding: int. Largest random shift in pixels.
        erasing: float. Random-erasing probability.
        validation_split: float. Share of the training data held out, taken
            from its end as Keras's `validation_split` does.
        precision: str. See `ninlayers.runtime.resolve_precision`.
        test_time_flip: bool. Predict with the mean of each image's and its
            mirror image's outputs (see `NiN`).
        test_time_shift: int. Also average the outputs of each image moved
            this many pixels each way (see `NiN`); `0` for none.
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
    architecture: str = "nin_28"
    use_batch_norm: bool = False
    batch_norm_momentum: float | None = None
    head_final_activation: bool = True
    augment: bool = False
    crop_padding: int = 2
    erasing: float = 0.0
    validation_split: float = 0.0
    precision: str = "auto"
    test_time_flip: bool = False
    test_time_shift: int = 0

    def __post_init__(self) -> None:
        _checks.positive_int("epochs", self.epochs)
        _checks.positive_int("batch_size", self.batch_size)
        _checks.positive_number("learning_rate", self.learning_rate)
        _checks.one_of("optimizer", self.optimizer, OPTIMIZERS)
        _checks.one_of("schedule", self.schedule, SCHEDULES)
        _checks.fraction("warmup_fraction", self.warmup_fraction)
        _checks.fraction("validation_split", self.validation_split)
        _checks.fraction("label_smoothing", self.label_smoothing)
        _checks.fraction("erasing", self.erasing)
        _checks.non_negative_int("test_time_shift", self.test_time_shift)
        if self.batch_norm_momentum is not None:
            _checks.fraction("batch_norm_momentum", self.batch_norm_momentum)
        _checks.one_of(
            "architecture",
            architecture_name(self.architecture, warn=False),
            tuple(ARCHITECTURES),
        )

    def replace(self, **changes: Any) -> Recipe:
        """Returns a copy with some fields changed (`None` values ignored)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes)


#: Earlier names of recipes, accepted with a warning until 0.4.0 ("seed"
#: means the random seed everywhere else).
RENAMED_RECIPES = {"seed": "tutorial"}

RECIPES: dict[str, Recipe] = {
    # The classic NiN tutorial's recipe, exactly.
    "tutorial": Recipe(
        name="tutorial",
        epochs=10,
        batch_size=64,
        learning_rate=1e-3,
        optimizer="adam",
        validation_split=0.2,
        precision="float32",
    ),
    # The most accurate measured within the time budget (docs/recipes.md),
    # with 6x6 class maps (no pooling after the last stage).
    "default": Recipe(
        name="default",
        architecture="nin_28_6x6",
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

# The tutorial's accuracy in minutes: the default's training on a network of
# half the widths, for 2 epochs, without random erasing, in batches of 128
# (1.2x the images/s of 64 on these CPUs) at twice the peak rate
# (docs/recipes.md).
RECIPES["quick"] = RECIPES["default"].replace(
    name="quick",
    architecture="nin_28_narrow",
    epochs=2,
    erasing=0.0,
    batch_size=128,
    learning_rate=0.2,
)

# The default's accuracy (0.94 on three seeds) in about half its time: the
# quick recipe for 12 epochs, predicting from each image moved a pixel each
# way too (docs/recipes.md).
RECIPES["fast"] = RECIPES["quick"].replace(name="fast", epochs=12, test_time_shift=1)


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


def batch_norm_momentum(recipe: Recipe, steps_per_epoch: int) -> float:
    """The recipe's batch-norm momentum, choosing by run length if `None`."""
    if recipe.batch_norm_momentum is not None:
        return recipe.batch_norm_momentum
    return 0.99 if recipe.epochs * steps_per_epoch >= LONG_RUN_STEPS else 0.9


def build_loss(recipe: Recipe) -> keras.losses.Loss | str:
    """Returns the recipe's loss: smoothed when it smooths labels, else `"auto"`.

    `"auto"` lets `NiN.compile` pick sparse cross-entropy (from logits for a
    logits model).
    """
    if recipe.label_smoothing:
        return SparseSmoothedCrossentropy(recipe.label_smoothing)
    return "auto"
