"""Deprecated: moved to `ninlayers.app.plots` in 0.2.0; this path goes in 0.3.0."""

from ninlayers._deprecated import warn_moved

warn_moved("ninlayers.plots", "ninlayers.app.plots")

from ninlayers.app.plots import *  # noqa: E402, F403
from ninlayers.app.plots import __all__  # noqa: E402, F401
