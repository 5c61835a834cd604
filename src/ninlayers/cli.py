"""Deprecated: moved to `ninlayers.app.cli` in 0.2.0; this path goes in 0.3.0."""

from ninlayers._deprecated import warn_moved

warn_moved("ninlayers.cli", "ninlayers.app.cli")

from ninlayers.app.cli import *  # noqa: E402, F403
from ninlayers.app.cli import __all__  # noqa: E402, F401

if __name__ == "__main__":
    import sys

    from ninlayers.app.cli import main

    sys.exit(main())
