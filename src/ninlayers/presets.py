"""Named NiNs as data: the configs of their pieces, their weights and figures.

A preset names a `NiNBackbone` config, a `NiNImageClassifier` config and a
`NiNImageConverter` config; a pretrained one also names a weights file in the
package, its SHA-256, and what was measured on it. The models read these
(`NiNImageClassifier.from_preset`, `NiNBackbone.from_preset`, and `NiN`'s);
this module imports none of them. docs/presets.md has a model card for each
pretrained preset.

Example:

>>> "fashion_mnist" in list_presets()
True
>>> get("fashion_mnist").backbone["architecture"]
'nin_28_6x6'
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from ninlayers._utils import follow_rename
from ninlayers.errors import ModelFileError
from ninlayers.saving import file_sha256

__all__ = [
    "FASHION_MNIST_CLASSES",
    "PRESETS",
    "Preset",
    "get",
    "is_preset",
    "list_presets",
    "model_file",
    "weights_file",
    "weights_path",
]

_WEIGHTS_DIR = Path(__file__).parent / "weights"

#: Fashion-MNIST's ten classes, in label order (the pretrained presets').
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named NiN: the configs of its three pieces, and its weights.

    Args:
        description: str. One line for `list_presets()`.
        backbone: dict. `NiNBackbone` arguments.
        classifier: dict. `NiNImageClassifier` arguments but the backbone and
            the preprocessor.
        converter: dict or `None`. `NiNImageConverter` arguments; `None` for
            a model that takes any floats.
        weights: str or `None`. A `.weights.h5` file in `ninlayers/weights/`.
        sha256: str or `None`. The weights file's SHA-256.
        metrics: dict. What was measured on the shipped weights (test
            accuracy, parameters) and where (docs/measurements/).
        data: str. The data it was trained on, and its licence.
    """

    description: str
    backbone: dict[str, Any]
    classifier: dict[str, Any]
    converter: dict[str, Any] | None = None
    weights: str | None = None
    sha256: str | None = None
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    data: str = ""


#: What the default recipe trains on Fashion-MNIST, but the architecture.
_FASHION_MNIST_TRUNK = {
    "image_shape": (28, 28, 1),
    "use_batch_norm": True,
    "batch_norm_momentum": 0.99,
}
_FASHION_MNIST_CLASSIFIER = {
    "num_classes": 10,
    "head_final_activation": False,
    "test_time_flip": True,
    "class_names": list(FASHION_MNIST_CLASSES),
}
# Trained on [0, 1] floats: integers are mapped there, 0-255 floats refused.
_FASHION_MNIST_PIXELS = {"input_range": (0.0, 1.0), "check_range": True}
_FASHION_MNIST_DATA = (
    "Fashion-MNIST training set (60,000 28x28 grey images, light garments on "
    "a black background; Zalando Research, MIT licence)"
)

PRESETS: dict[str, Preset] = {
    "fashion_mnist": Preset(
        description=(
            "NiN trained on Fashion-MNIST by `ninlayers train` (the default "
            "recipe, 10 epochs); docs/presets.md has its model card"
        ),
        backbone={**_FASHION_MNIST_TRUNK, "architecture": "nin_28_6x6"},
        classifier=_FASHION_MNIST_CLASSIFIER,
        converter=_FASHION_MNIST_PIXELS,
        weights="fashion_mnist.weights.h5",
        sha256="d1ec77451c351c377b1d52881a81396468c606e7e693a3a131da725cac1d03ba",
        metrics={
            "test_accuracy": 0.9419,
            "parameters": 1594882,
            "measured_in": "docs/measurements/preset-fashion_mnist.json",
        },
        data=_FASHION_MNIST_DATA,
    ),
    "fashion_mnist_narrow": Preset(
        description=(
            "the same training on the narrow trunk (48-128-192, 12 epochs): a "
            "quarter of the work per image, for deployment; docs/presets.md"
        ),
        backbone={**_FASHION_MNIST_TRUNK, "architecture": "nin_28_narrow"},
        classifier=_FASHION_MNIST_CLASSIFIER,
        converter=_FASHION_MNIST_PIXELS,
        weights="fashion_mnist_narrow.weights.h5",
        sha256="cc180fe24cc672fc08d8fd2ddb52d92e898ae9ea430740ae31d16d33310c76bd",
        metrics={
            "test_accuracy": 0.9397,
            "parameters": 410002,
            "measured_in": "docs/measurements/preset-fashion_mnist_narrow.json",
        },
        data=_FASHION_MNIST_DATA,
    ),
    "tutorial_fashion_mnist": Preset(
        description=(
            "the tutorial's (and the paper's) 28x28 NiN: no batch norm, ReLU "
            "class maps; untrained"
        ),
        backbone={"architecture": "nin_28", "use_batch_norm": False},
        classifier={"head_final_activation": True},
        converter={"input_range": (0.0, 1.0)},
        metrics={"parameters": 1588198},
    ),
    "tutorial_224": Preset(
        description=(
            "the tutorial's 224x224 RGB NiN: 11x11/4, 5x5 and 3x3 stages, "
            "dropout 0.5 after the first two, no batch norm; untrained"
        ),
        backbone={"architecture": "tutorial_224", "use_batch_norm": False},
        classifier={"head_final_activation": True},
        converter={"input_range": (0.0, 1.0)},
        metrics={"parameters": 2015398},
    ),
}

#: Earlier names of presets, accepted until 0.4.0.
RENAMED_PRESETS = {
    "seed_fashion_mnist": "tutorial_fashion_mnist",
    "seed_imagenet": "tutorial_224",
}


def list_presets() -> dict[str, str]:
    """Returns `{name: description}` of every preset."""
    return {name: preset.description for name, preset in PRESETS.items()}


def is_preset(name: Any) -> bool:
    """Whether `name` names a preset (current or renamed)."""
    return isinstance(name, str) and (name in PRESETS or name in RENAMED_PRESETS)


def get(name: str) -> Preset:
    """The preset called `name`.

    Raises:
        ValueError: for an unknown name (the message lists the names).
    """
    name = follow_rename("Preset", name, RENAMED_PRESETS)
    if not isinstance(name, str) or name not in PRESETS:
        raise _unknown(name)
    return PRESETS[name]


def _unknown(name: Any) -> ValueError:
    return ValueError(
        f"Unknown preset {str(name)!r}: expected one of {', '.join(PRESETS)}, "
        "a .keras file, or a directory holding model.keras."
    )


def weights_path(name: str) -> Path | None:
    """The shipped weights file of a pretrained preset (`None` if untrained)."""
    preset = get(name)
    return None if preset.weights is None else _WEIGHTS_DIR / preset.weights


def weights_file(name: str) -> Path:
    """The shipped weights file of a pretrained preset, checked by SHA-256.

    Raises:
        ModelFileError: if the file is missing or fails its digest.
    """
    preset, path = get(name), weights_path(name)
    if path is None or preset.sha256 is None or not path.is_file():
        raise ModelFileError(
            f"The weights of preset {name!r} are not in this installation "
            f"({path}); reinstall ninlayers, or pass load_weights=False."
        )
    digest = file_sha256(path)
    if digest != preset.sha256:
        raise ModelFileError(
            f"The weights of preset {name!r} ({path}) fail their check: "
            f"expected SHA-256 {preset.sha256}. Received: {digest}. "
            "Reinstall ninlayers."
        )
    return path


def model_file(preset: str | os.PathLike) -> Path:
    """The `.keras` file a path names: the file, or `model.keras` inside a
    directory (a `ninlayers train` output).

    Raises:
        ModelFileError: if a path-like name does not exist.
        ValueError: if it is neither an existing path nor a preset name.
    """
    path = Path(preset)
    if path.is_dir():
        path = path / "model.keras"
    if path.exists():
        return path
    if path.suffix == ".keras" or os.sep in str(preset):
        raise ModelFileError(f"Model file {path} does not exist.")
    raise _unknown(preset)
