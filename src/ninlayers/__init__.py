"""ninlayers: Network in Network as reusable Keras 3 layers and models."""

__version__ = "0.1.0"

from ninlayers import datasets, errors, explain, runtime, training
from ninlayers.errors import (
    DatasetError,
    ImageFileError,
    ModelFileError,
    NinLayersError,
    TrainingError,
)
from ninlayers.layers import FusedBatchNormalization, NiNBlock, NiNClassifierHead
from ninlayers.model import ARCHITECTURES, BlockSpec, NiN, minimum_input_size
from ninlayers.training import (
    RECIPES,
    OneCycleSchedule,
    Recipe,
    SparseSmoothedCrossentropy,
)

__all__ = [
    "ARCHITECTURES",
    "RECIPES",
    "BlockSpec",
    "DatasetError",
    "FusedBatchNormalization",
    "ImageFileError",
    "ModelFileError",
    "NiN",
    "NiNBlock",
    "NiNClassifierHead",
    "NinLayersError",
    "OneCycleSchedule",
    "Recipe",
    "SparseSmoothedCrossentropy",
    "TrainingError",
    "__version__",
    "datasets",
    "errors",
    "explain",
    "minimum_input_size",
    "runtime",
    "training",
]
