"""Deprecated: moved to `ninlayers.app.benchmark` in 0.2.0; this path goes in 0.3.0."""

from ninlayers._deprecated import warn_moved

warn_moved("ninlayers.benchmark", "ninlayers.app.benchmark")

from ninlayers.app.benchmark import *  # noqa: E402, F403
from ninlayers.app.benchmark import __all__  # noqa: E402, F401
