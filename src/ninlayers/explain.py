"""Class activation maps from the NiN head's per-class maps.

NiN's head makes one spatial map per class and averages each into that class's
score, so the map of a class is already its class activation map (Zhou et al.,
"Learning Deep Features for Discriminative Localization", CVPR 2016): no
gradients, no extra weights.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from ninlayers import _test_time as test_time
from ninlayers import pixels
from ninlayers._utils import all_layers
from ninlayers.classifier import NiNImageClassifier
from ninlayers.layers import NiNClassifierHead

__all__ = ["all_layers", "class_activation_maps", "class_map_model", "find_head"]


def find_head(model: keras.Model) -> NiNClassifierHead:
    """Returns the model's last `NiNClassifierHead`, searching nested models.

    Raises:
        ValueError: if the model has none.
    """
    heads = [
        layer for layer in all_layers(model) if isinstance(layer, NiNClassifierHead)
    ]
    if not heads:
        raise ValueError(
            "Class activation maps need a model with a NiNClassifierHead. "
            f"Received: a {type(model).__name__} named {model.name!r} without one"
        )
    return heads[-1]


def class_map_model(model: keras.Model, average_mirror: bool = False) -> keras.Model:
    """Returns a model mapping images to `(class_maps, predictions)`.

    Works for `NiN` and for functional or Sequential models whose
    `NiNClassifierHead` is called on a tensor of the model's own graph.

    Args:
        model: keras.Model. A built model containing a `NiNClassifierHead`.
        average_mirror: bool. For a model with `test_time_flip`, average the
            image's maps with its mirror image's (flipped back), as its
            predictions are averaged (shifted views' maps are not
            averaged). `False` (the default) keeps the image's own maps,
            which show where better.

    Returns:
        keras.Model with two outputs: the head's maps `(batch, h, w, classes)`
        and the model's predictions `(batch, classes)` (for a model with
        `test_time_flip` or `test_time_shift`, the mean over the views its
        own predictions average).

    Raises:
        ValueError: if the model has no head, or its head's input is not a
            tensor of the model's graph (subclassed models).
    """
    head = find_head(model)
    try:
        features = head.input
        maps = head.class_maps(features)
        mapper = keras.Model(model.inputs, [maps, model.outputs[0]])
    except (AttributeError, ValueError, TypeError) as error:
        raise ValueError(
            "Class activation maps need the head to be called in a functional "
            "or Sequential graph (NiN, keras.Model(inputs, outputs)). "
            f"Received: a {type(model).__name__} where that failed ({error})"
        ) from None
    flip = isinstance(model, NiNImageClassifier) and model.test_time_flip
    shift = model.test_time_shift if isinstance(model, NiNImageClassifier) else 0
    if not (flip or shift):
        return mapper
    images = keras.Input(model.inputs[0].shape[1:])
    outputs = [mapper(view) for view, _ in test_time.views(images, flip, shift)]
    maps = outputs[0][0]
    if average_mirror and flip:
        maps = (maps + keras.ops.flip(outputs[1][0], axis=2)) / 2
    return keras.Model(images, [maps, test_time.mean([p for _, p in outputs])])


def class_activation_maps(
    model: keras.Model,
    images: Any,
    class_index: int | np.ndarray | None = None,
    batch_size: int = 64,
    average_mirror: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Computes one class activation map per image, at the image's size.

    Args:
        model: keras.Model. A model with a `NiNClassifierHead`.
        images: array of shape `(n, h, w, c)`: floats as the model takes
            them, or integer pixels (mapped onto the model's `input_range`).
        class_index: int, array of `n` ints, or `None` for each image's
            predicted class. Defaults to `None`.
        batch_size: int. Defaults to `64`.
        average_mirror: bool. See `class_map_model`. Defaults to `False`.

    Returns:
        `(maps, probabilities)`: `maps` of shape `(n, h, w)` scaled to [0, 1]
        per image (bilinear upsampling of the head's map of the chosen class),
        and the model's `(n, classes)` predictions.

    Example:

    >>> import numpy as np, ninlayers
    >>> model = ninlayers.NiN(input_shape=(28, 28, 1))
    >>> maps, probs = class_activation_maps(model, np.zeros((2, 28, 28, 1)))
    >>> maps.shape, probs.shape
    ((2, 28, 28), (2, 10))
    """
    images = _model_inputs(model, np.asarray(images))
    if images.ndim != 4:
        raise ValueError(
            "`images` must have shape (n, height, width, channels). "
            f"Received: images.shape={images.shape}"
        )
    raw_maps, probs = class_map_model(model, average_mirror).predict(
        images, batch_size=batch_size, verbose=0
    )
    raw_maps = np.asarray(raw_maps, dtype="float32")
    probs = np.asarray(probs, dtype="float32")
    if class_index is None:
        chosen = probs.argmax(axis=-1)
    else:
        chosen = _class_indices(class_index, len(images), probs.shape[-1])
    selected = raw_maps[np.arange(len(images)), :, :, chosen]
    resized = np.asarray(
        keras.ops.image.resize(
            selected[..., None], images.shape[1:3], interpolation="bilinear"
        )
    )[..., 0]
    low = resized.min(axis=(1, 2), keepdims=True)
    high = resized.max(axis=(1, 2), keepdims=True)
    maps = (resized - low) / np.maximum(high - low, 1e-12)
    return maps, probs


def _model_inputs(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """The images as the model's graph takes them: through a classifier's
    converter (which `class_map_model`'s graph does not run), else integer
    pixels mapped onto [0, 1]."""
    if not isinstance(model, NiNImageClassifier):
        images = pixels.to_input_range(images, pixels.DEFAULT_INPUT_RANGE)
    elif model.preprocessor is not None and images.ndim == 4:
        images = model.preprocessor(model.preprocessor.check(images))
    return np.asarray(keras.ops.convert_to_numpy(images), dtype="float32")


def _class_indices(class_index: Any, n: int, num_classes: int) -> np.ndarray:
    """`class_index` checked and broadcast to one class per image."""
    chosen = np.asarray(class_index)
    valid = chosen.dtype.kind in "iu" and chosen.ndim <= 1
    if valid and chosen.ndim == 1 and len(chosen) not in (1, n):
        valid = False
    if not valid or chosen.size == 0 or chosen.min() < 0 or chosen.max() >= num_classes:
        raise ValueError(
            f"`class_index` must be an int in [0, {num_classes}) or {n} of "
            f"them, one per image. Received: class_index={class_index!r}"
        )
    return np.broadcast_to(chosen, (n,))
