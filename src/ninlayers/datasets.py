"""Deprecated: moved to `ninlayers.app.data` in 0.2.0; this path goes in 0.3.0."""

from ninlayers._deprecated import warn_moved

warn_moved("ninlayers.datasets", "ninlayers.app.data")

from ninlayers.app.data import *  # noqa: E402, F403
from ninlayers.app.data import __all__ as _names  # noqa: E402
from ninlayers.errors import DatasetError  # noqa: E402

# 0.1.0 re-exported DatasetError here.
__all__ = [*_names, "DatasetError"]
