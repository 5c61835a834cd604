"""Deprecated: moved to `ninlayers.app.recipes` in 0.2.0; this path goes in 0.3.0."""

from ninlayers._deprecated import warn_moved

warn_moved("ninlayers.training", "ninlayers.app.recipes")

from ninlayers.app.recipes import *  # noqa: E402, F403
from ninlayers.app.recipes import RECIPES, Recipe, build_optimizer  # noqa: E402
from ninlayers.losses import SparseSmoothedCrossentropy  # noqa: E402
from ninlayers.schedules import OneCycleSchedule  # noqa: E402

# 0.1.0's names here included the loss and the schedule (now in the library).
__all__ = [
    "OneCycleSchedule",
    "RECIPES",
    "Recipe",
    "SparseSmoothedCrossentropy",
    "build_optimizer",
]
