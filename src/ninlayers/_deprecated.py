"""The one warning that the old module paths give (they go in 0.3.0)."""

from __future__ import annotations

import warnings


def warn_moved(old: str, new: str) -> None:
    """Warns that module `old` moved to `new` (called by the old module)."""
    warnings.warn(
        f"{old} moved to {new} in ninlayers 0.2.0; import it from there. "
        f"The old path {old} goes in 0.3.0.",
        DeprecationWarning,
        stacklevel=3,
    )
