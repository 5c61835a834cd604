"""Deprecated: moved to `ninlayers.app.recipes` in 0.2.0; this path goes in 0.3.0."""

from ninlayers._deprecated import warn_moved

warn_moved("ninlayers.training", "ninlayers.app.recipes")

from ninlayers.app.recipes import *  # noqa: E402, F403
from ninlayers.app.recipes import __all__  # noqa: E402, F401
