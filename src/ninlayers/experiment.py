"""Deprecated: `ninlayers.experiment` moved to `ninlayers.app` in 0.2.0.

`train`, `evaluate`, `predict`, `explain_images`, `load_images` and
`load_model` are importable from `ninlayers.app` (gone here in 0.3.0).
"""

from ninlayers._deprecated import warn_moved

warn_moved("ninlayers.experiment", "ninlayers.app")

from ninlayers.app.artifacts import (  # noqa: E402, F401
    METRICS_FILE,
    MODEL_FILE,
    load_model,
    save_model_atomically,
)
from ninlayers.app.inference import (  # noqa: E402, F401
    evaluate,
    explain_images,
    load_images,
    predict,
)
from ninlayers.app.trainer import train  # noqa: E402, F401

__all__ = [
    "METRICS_FILE",
    "MODEL_FILE",
    "evaluate",
    "explain_images",
    "load_images",
    "load_model",
    "predict",
    "save_model_atomically",
    "train",
]
