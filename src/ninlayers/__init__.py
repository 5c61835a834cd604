"""ninlayers: Network in Network as reusable Keras 3 layers and models.

The library: `NiNBlock`, `NiNClassifierHead`, `FusedBatchNormalization`; the
model in keras-hub's three pieces, `NiNBackbone` (the trunk),
`NiNImageConverter` (the pixel contract) and `NiNImageClassifier` (the task),
with `NiN` the one-call model built from them and pretrained presets
(`ninlayers.presets`); the loss and learning-rate schedule NiN models are compiled
with, class activation maps (`ninlayers.explain`), export
(`ninlayers.export`), per-device choices (`ninlayers.runtime`) and fused
optimizer updates (`ninlayers.fused_updates`).

The `ninlayers` command and its Python functions (Fashion-MNIST and image
folders, recipes, the trainer, pictures, the benchmark) live in the
application, `ninlayers.app`, which this package never imports.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.3.0.dev0"

from ninlayers import (
    errors,
    explain,
    export,
    fused_updates,
    pixels,
    presets,
    runtime,
    saving,
)
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
    "fused_updates",
    "list_presets",
    "minimum_input_size",
    "pixels",
    "presets",
    "runtime",
    "saving",
]

# Where the paths removed in 0.3.0 went (they moved to the application in
# 0.2.0): an old name fails with one line naming its new place.
_MOVED = {
    "benchmark": "ninlayers.app.benchmark",
    "cli": "ninlayers.app.cli",
    "datasets": "ninlayers.app.data",
    "experiment": "ninlayers.app",
    "plots": "ninlayers.app.plots",
    "training": "ninlayers.app.recipes",
    "RECIPES": "ninlayers.app.recipes.RECIPES",
    "Recipe": "ninlayers.app.recipes.Recipe",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        raise AttributeError(
            f"ninlayers.{name} moved to {_MOVED[name]} in 0.2.0 and its old "
            f"path was removed in 0.3.0: use {_MOVED[name]}."
        )
    raise AttributeError(f"module 'ninlayers' has no attribute {name!r}")
