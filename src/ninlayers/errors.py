"""The exceptions ninlayers raises for bad files and failed runs.

Each subclasses `NinLayersError` and `ValueError`, so code that catches
`ValueError` (as for bad arguments) catches them too. Their messages say what
was wrong, what was expected and where.
"""

from __future__ import annotations

__all__ = [
    "DatasetError",
    "ImageFileError",
    "MissingDependencyError",
    "ModelFileError",
    "NinLayersError",
    "TrainingError",
]


class NinLayersError(ValueError):
    """Base class of ninlayers' errors about files and runs."""


class DatasetError(NinLayersError):
    """A data set file is missing, truncated, corrupt or fails its checksum."""


class ModelFileError(NinLayersError):
    """A model file is missing, not a `.keras` archive, or cannot be loaded."""


class ImageFileError(NinLayersError):
    """An image file is missing or is not an image."""


class TrainingError(NinLayersError):
    """Training could not go on (for example, the loss became NaN)."""


class MissingDependencyError(NinLayersError, ImportError):
    """An optional package a feature needs is not installed; the message
    names the pip extra that installs it."""
