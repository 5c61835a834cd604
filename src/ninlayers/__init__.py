"""ninlayers: Network in Network as reusable Keras 3 layers and models."""

__version__ = "0.1.0"

from ninlayers.layers import FusedBatchNormalization, NiNBlock, NiNClassifierHead
from ninlayers.model import ARCHITECTURES, BlockSpec, NiN, minimum_input_size

__all__ = [
    "ARCHITECTURES",
    "BlockSpec",
    "FusedBatchNormalization",
    "NiN",
    "NiNBlock",
    "NiNClassifierHead",
    "__version__",
    "minimum_input_size",
]
