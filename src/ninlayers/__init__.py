"""ninlayers: Network in Network as reusable Keras 3 layers and models.

The library: `NiNBlock`, `NiNClassifierHead`, `FusedBatchNormalization`; the
model in keras-hub's three pieces, `NiNBackbone` (the trunk),
`NiNImageConverter` (the pixel contract) and `NiNImageClassifier` (the task),
with `NiN` the one-call model built from them and pretrained presets
(`ninlayers.presets`); the loss and learning-rate schedule NiN models are compiled
with, class activation maps (`ninlayers.explain`), export
(`ninlayers.export`) and per-device choices (`ninlayers.runtime`).

The `ninlayers` command and its Python functions (Fashion-MNIST and image
folders, recipes, the trainer, pictures, the benchmark) live in the
application, `ninlayers.app`, which this package never imports.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

from ninlayers import errors, explain, export, pixels, presets, runtime, saving
from ninlayers._deprecated import warn_moved
from ninlayers.backbone import ARCHITECTURES, BlockSpec, NiNBackbone, minimum_input_size
from ninlayers.classifier import NiNImageClassifier
from ninlayers.errors import (
    DatasetError,
    ImageFileError,
    ModelFileError,
    NinLayersError,
    TrainingError,
)
from ninlayers.image_converter import NiNImageConverter
from ninlayers.layers import FusedBatchNormalization, NiNBlock, NiNClassifierHead
from ninlayers.losses import SparseSmoothedCrossentropy
from ninlayers.model import NiN
from ninlayers.presets import list_presets
from ninlayers.schedules import OneCycleSchedule

__all__ = [
    "ARCHITECTURES",
    "BlockSpec",
    "DatasetError",
    "FusedBatchNormalization",
    "ImageFileError",
    "ModelFileError",
    "NiN",
    "NiNBackbone",
    "NiNBlock",
    "NiNClassifierHead",
    "NiNImageClassifier",
    "NiNImageConverter",
    "NinLayersError",
    "OneCycleSchedule",
    "SparseSmoothedCrossentropy",
    "TrainingError",
    "__version__",
    "errors",
    "explain",
    "export",
    "list_presets",
    "minimum_input_size",
    "pixels",
    "presets",
    "runtime",
    "saving",
]

# Names that moved to the application in 0.2.0, reachable here with a
# DeprecationWarning until 0.3.0: old module -> new module, and old
# top-level names -> (module, attribute).
_MOVED_MODULES = {
    "benchmark": "ninlayers.app.benchmark",
    "cli": "ninlayers.app.cli",
    "datasets": "ninlayers.app.data",
    "experiment": "ninlayers.app",
    "plots": "ninlayers.app.plots",
    "training": "ninlayers.app.recipes",
}
_MOVED_NAMES = {
    "RECIPES": "ninlayers.app.recipes",
    "Recipe": "ninlayers.app.recipes",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED_MODULES:
        # Importing the old module path runs its shim, which warns.
        return importlib.import_module(f"ninlayers.{name}")
    if name in _MOVED_NAMES:
        target = _MOVED_NAMES[name]
        warn_moved(f"ninlayers.{name}", f"{target}.{name}")
        return getattr(importlib.import_module(target), name)
    raise AttributeError(f"module 'ninlayers' has no attribute {name!r}")
