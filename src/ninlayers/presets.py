"""Named NiNs, pretrained or not, in one line and offline.

`NiN.from_preset(name)` (keras-hub's verb) builds a preset's model and, for a
pretrained one, loads the weights shipped inside the package, after checking
their SHA-256. It also takes the path of a `.keras` file, or of a directory
holding `model.keras` (a `ninlayers train` output). `list_presets()` names
them all.

Example:

>>> "fashion_mnist" in list_presets()
True
>>> NiN.from_preset("seed_fashion_mnist").count_params()
1588198
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import keras

from ninlayers.errors import ModelFileError
from ninlayers.model import NiN
from ninlayers.saving import file_sha256, load_model

__all__ = [
    "FASHION_MNIST_CLASSES",
    "PRESETS",
    "Preset",
    "from_preset",
    "list_presets",
    "weights_path",
]

_WEIGHTS_DIR = Path(__file__).parent / "weights"

#: Fashion-MNIST's ten classes, in label order (the pretrained preset's).
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
    """A named NiN: its arguments, and its shipped weights if pretrained.

    Args:
        description: str. One line for `list_presets()`.
        config: dict. `NiN` arguments.
        weights: str or `None`. A `.weights.h5` file in `ninlayers/weights/`.
        sha256: str or `None`. The weights file's SHA-256.
    """

    description: str
    config: dict[str, Any]
    weights: str | None = None
    sha256: str | None = None


#: What the default recipe trains on Fashion-MNIST, less the architecture.
_TRAINED_FASHION_MNIST: dict[str, Any] = {
    "num_classes": 10,
    "input_shape": (28, 28, 1),
    "use_batch_norm": True,
    "batch_norm_momentum": 0.99,
    "head_final_activation": False,
    "test_time_flip": True,
    "class_names": list(FASHION_MNIST_CLASSES),
}

PRESETS: dict[str, Preset] = {
    "fashion_mnist": Preset(
        description=(
            "NiN trained on Fashion-MNIST by `ninlayers train` (the default "
            "recipe); docs/presets.md has its accuracy and the command"
        ),
        config={**_TRAINED_FASHION_MNIST, "architecture": "fashion_mnist_6x6"},
        weights="fashion_mnist.weights.h5",
        sha256="d1ec77451c351c377b1d52881a81396468c606e7e693a3a131da725cac1d03ba",
    ),
    "fashion_mnist_narrow": Preset(
        description=(
            "the same training on the narrow network (48-128-192, 410,002 "
            "parameters): a quarter of the work per image, for deployment; "
            "docs/presets.md has its accuracy and the command"
        ),
        config={**_TRAINED_FASHION_MNIST, "architecture": "fashion_mnist_narrow"},
        weights="fashion_mnist_narrow.weights.h5",
        sha256="cc180fe24cc672fc08d8fd2ddb52d92e898ae9ea430740ae31d16d33310c76bd",
    ),
    "seed_fashion_mnist": Preset(
        description=(
            "the seed tutorial's (and the paper's) 28x28 NiN: no batch norm, "
            "ReLU class maps; untrained"
        ),
        config={
            "architecture": "fashion_mnist",
            "use_batch_norm": False,
            "head_final_activation": True,
        },
    ),
    "seed_imagenet": Preset(
        description=(
            "the seed tutorial's 224x224 RGB NiN: 11x11/4, 5x5 and 3x3 "
            "stages, dropout 0.5 after the first two; untrained"
        ),
        config={
            "architecture": "seed_imagenet",
            "use_batch_norm": False,
            "head_final_activation": True,
        },
    ),
}


def list_presets() -> dict[str, str]:
    """Returns `{name: description}` of every preset."""
    return {name: preset.description for name, preset in PRESETS.items()}


def weights_path(name: str) -> Path | None:
    """The shipped weights file of a pretrained preset (`None` if untrained)."""
    preset = PRESETS[name]
    return None if preset.weights is None else _WEIGHTS_DIR / preset.weights


def _load_weights(model: NiN, name: str) -> None:
    preset, path = PRESETS[name], weights_path(name)
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
    model.load_weights(path)


def from_preset(
    preset: str | os.PathLike, load_weights: bool = True, **kwargs: Any
) -> keras.Model:
    """Builds a named NiN, or loads a `.keras` file or a run's directory.

    Args:
        preset: str or path. A name in `PRESETS`, a `.keras` file, or a
            directory holding `model.keras`.
        load_weights: bool. Load a pretrained preset's weights. Defaults to
            `True`.
        **kwargs: `NiN` arguments overriding a named preset's (for example
            `precision="float32"`); not allowed with a file.

    Returns:
        keras.Model (a `NiN` for named presets).

    Raises:
        ValueError: if `preset` is neither a known name nor an existing
            file or directory (the message lists the names).
        ModelFileError: if a file cannot be loaded or shipped weights fail
            their SHA-256.
    """
    if isinstance(preset, str) and preset in PRESETS:
        model = NiN(**{**PRESETS[preset].config, **kwargs})
        if load_weights and PRESETS[preset].weights is not None:
            _load_weights(model, preset)
        return model
    path = Path(preset)
    if path.is_dir():
        path = path / "model.keras"
    looks_like_a_path = path.suffix == ".keras" or os.sep in str(preset)
    if not path.exists() and looks_like_a_path:
        raise ModelFileError(f"Model file {path} does not exist.")
    if not path.exists():
        raise ValueError(
            f"Unknown preset {str(preset)!r}: expected one of "
            f"{', '.join(PRESETS)}, a .keras file, or a directory holding "
            "model.keras."
        )
    if kwargs:
        raise ValueError(
            f"Arguments {sorted(kwargs)} apply to named presets only; "
            f"{path} is loaded as saved."
        )
    return load_model(path)
