"""Using a trained model: load images, predict, evaluate, explain.

Each function takes a model (or the path of a `.keras` file) and works for any
NiN or Keras model with a `NiNClassifierHead`, whatever its input size and
channels; the class names come from the model when it has them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from ninlayers import _checks, _keras_compat, explain, exported, runtime
from ninlayers.app import data, folders, plots
from ninlayers.app.images import read_image
from ninlayers.classifier import NiNImageClassifier

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = [
    "class_names",
    "evaluate",
    "explain_images",
    "input_size",
    "load_images",
    "predict",
    "predict_dataset",
    "probabilities",
    "scores",
]

#: The size images are resized to for a model whose input size is free.
DEFAULT_IMAGE_SIZE = data.FASHION_MNIST_SHAPE[:2]


#: What the inference functions take: a Keras model, an exported one, or the
#: path or name of either.
AnyModel = keras.Model | exported.ExportedModel | str | os.PathLike


def _as_model(model: AnyModel) -> keras.Model | exported.ExportedModel:
    """A model, a preset name, a `.keras` file, a run's directory, or an
    exported file (`.tflite`, `.onnx`, SavedModel directory)."""
    if isinstance(model, (keras.Model, exported.ExportedModel)):
        return model
    if exported.is_exported(model):
        return exported.ExportedModel(model)
    return NiNImageClassifier.from_preset(model)


def probabilities(model: keras.Model, outputs: Any) -> np.ndarray:
    """The model's outputs as class probabilities (float64).

    A model whose `NiNClassifierHead` outputs logits (`output_activation=None`)
    gets a softmax; other models' outputs are taken as probabilities.
    """
    outputs = np.asarray(keras.ops.convert_to_numpy(outputs), dtype="float64")
    if isinstance(model, exported.ExportedModel):
        logits = model.logits
    else:
        try:
            logits = explain.find_head(model).output_activation is None
        except ValueError:  # no NiN head: a model of the user's own
            logits = False
    if not logits:
        return outputs
    shifted = np.exp(outputs - outputs.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def class_names(model: keras.Model, num_classes: int) -> list[str]:
    """The model's class names, or `"class 0"`, `"class 1"`, ... without them."""
    names = None
    if isinstance(model, (NiNImageClassifier, exported.ExportedModel)):
        names = model.class_names
    if names:
        return list(names)
    return [f"class {i}" for i in range(num_classes)]


def input_size(model: keras.Model) -> tuple[int, int, int]:
    """`(height, width, channels)` of the model's images.

    A free height or width (`None`) becomes `DEFAULT_IMAGE_SIZE`'s.

    Raises:
        ValueError: for a model whose input is not a batch of images.
    """
    shape = model.input_shape
    if not isinstance(shape, tuple) or len(shape) != 4:
        raise ValueError(
            "This command takes image models, whose input is (batch, height, "
            f"width, channels). Received: model {model.name!r} with input "
            f"shape {shape}"
        )
    _, height, width, channels = shape
    return (height or DEFAULT_IMAGE_SIZE[0], width or DEFAULT_IMAGE_SIZE[1], channels)


def load_images(
    paths: Sequence[str | os.PathLike],
    size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    channels: int = 1,
    invert: bool = False,
) -> np.ndarray:
    """Reads PNG/JPEG (or any Pillow) images as float arrays in [0, 1].

    Each image is converted to grey (1 channel) or RGB (3), resized to `size`
    with bilinear filtering and scaled to [0, 1].

    Args:
        paths: list of str or path.
        size: tuple `(height, width)`. Defaults to `(28, 28)`.
        channels: int. 1 or 3. Defaults to `1`.
        invert: bool. Use `1 - pixel`, for dark objects on a light background
            (Fashion-MNIST has light clothes on black). Defaults to `False`.

    Returns:
        np.ndarray of shape `(n, height, width, channels)`, float32.

    Raises:
        ImageFileError: if a file is missing or is not an image.
    """
    channels = _checks.one_of("channels", channels, (1, 3))
    return np.stack([read_image(p, size, channels, invert) for p in paths])


def _check_fits(model: keras.Model, y: np.ndarray, channels: int, source: str) -> None:
    """Refuses test data the model cannot score: more classes, other channels."""
    num_classes = model.output_shape[-1]
    if len(y) and int(y.max()) >= num_classes:
        raise ValueError(
            f"The model has {num_classes} classes but {source} has "
            f"{int(y.max()) + 1}: evaluate it on data of its own classes."
        )
    if channels != model.input_shape[-1]:
        raise ValueError(
            f"The model expects {model.input_shape[-1]}-channel images but "
            f"{source} has {channels}-channel ones: evaluate it on an image "
            "folder (--image-folder), whose images are converted to its channels."
        )


def predict(
    model: AnyModel,
    image_paths: Sequence[str | os.PathLike],
    top: int = 3,
    invert: bool = False,
) -> list[dict[str, Any]]:
    """Classifies image files.

    Args:
        model: keras.Model, a preset name (`ninlayers.list_presets()`),
            a `.keras` file, a directory holding `model.keras`, or an
            exported file (`ninlayers.exported.ExportedModel`).
        image_paths: list of image files, any size.
        top: int. How many classes to report per image. Defaults to `3`.
        invert: bool. See `load_images`. Defaults to `False`.

    Returns:
        list of dicts, one per image: `image`, `class`, `probability`, `top`
        (a list of `[class, probability]`).
    """
    model = _as_model(model)
    height, width, channels = input_size(model)
    images = load_images(image_paths, (height, width), channels, invert)
    probs = probabilities(model, model.predict(images, verbose=0))
    names = class_names(model, probs.shape[-1])
    results = []
    for path, p in zip(image_paths, probs, strict=True):
        order = np.argsort(-p)[: max(1, top)]
        results.append(
            {
                "image": str(path),
                "class": names[order[0]],
                "probability": float(p[order[0]]),
                "top": [[names[i], float(p[i])] for i in order],
            }
        )
    return results


def explain_images(
    model: AnyModel,
    image_paths: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    invert: bool = False,
) -> Path:
    """Draws the class activation maps of image files into one PNG.

    Args:
        model: keras.Model, a preset name (`ninlayers.list_presets()`),
            a `.keras` file or a directory holding `model.keras`.
        image_paths: list of image files.
        output: str or path of the PNG to write; an existing directory
            (or a path ending in `/`) gets `cam.png` inside it.
        invert: bool. See `load_images`. Defaults to `False`.

    Returns:
        Path of the PNG.
    """
    if Path(output).is_dir() or str(output).endswith(("/", os.sep)):
        output = Path(output) / "cam.png"
    model = _as_model(model)
    if isinstance(model, exported.ExportedModel):
        raise ValueError(
            f"Class activation maps need the Keras model: {model.path} holds "
            "only the class scores. Pass the .keras file, run directory or "
            "preset it was exported from."
        )
    height, width, channels = input_size(model)
    images = load_images(image_paths, (height, width), channels, invert)
    maps, outputs = explain.class_activation_maps(model, images)
    probs = probabilities(model, outputs)
    names = class_names(model, probs.shape[-1])
    return plots.plot_class_activation_maps(images, maps, probs, names, output)


def scores(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy and (unsmoothed) cross-entropy of predicted probabilities."""
    probs = np.asarray(probs, dtype="float64")
    labels = np.asarray(labels).astype(int)
    picked = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
    return {
        "accuracy": float(np.mean(probs.argmax(axis=-1) == labels)),
        "loss": float(-np.mean(np.log(picked))),
        "examples": len(labels),
    }


def predict_dataset(
    model: keras.Model, ds: tf.data.Dataset, verbose: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and labels of every `(images, labels)` batch of `ds`;
    `verbose=1` shows Keras's progress bar, batch by batch.

    A Keras model predicts each batch through its `predict`: the backend's
    compiled function, with a NiN classifier's own paths (TensorFlow's
    fused kernels, PyTorch's folded batch norm, JAX's jit), where calling
    the model would run it op by op on TensorFlow (docs/performance.md
    measures both). A model trained across several `tf.distribute`
    workers is called instead: its `predict` would wait for every
    worker's, and only the chief scores."""
    probs, labels = [], []
    total = int(ds.cardinality()) if int(ds.cardinality()) > 0 else None
    bar = keras.utils.Progbar(total, unit_name="batch") if verbose else None
    compiled = isinstance(model, keras.Model) and not runtime.spans_processes(
        _keras_compat.trainer_strategy(model)
    )
    for x, y in ds:
        # NumPy in between: the tf.data batches feed any Keras backend.
        x = np.asarray(x)
        if compiled:
            outputs = model.predict(x, batch_size=len(x), verbose=0)
        else:  # an exported model's runtime, or a model across workers
            outputs = model(x, training=False)
        probs.append(probabilities(model, outputs).astype("float32"))
        labels.append(np.asarray(y))
        if bar is not None:
            bar.add(1)
    return np.concatenate(probs), np.concatenate(labels)


def labels_by_name(
    model: Any, folders: Sequence[str], labels: np.ndarray, where: Any
) -> np.ndarray:
    """A labelled folder's labels as the model's class indices.

    A model with class names scores each sub-folder as the class of the same
    name, whatever the order; without names, sub-folders are classes in
    sorted order.

    Raises:
        ValueError: naming the sub-folders that are none of the model's
            classes.
    """
    names = None
    if isinstance(model, (NiNImageClassifier, exported.ExportedModel)):
        names = model.class_names
    if not names:
        return labels
    unknown = [f for f in folders if f not in names]
    if unknown:
        raise ValueError(
            f"The classes of {where} must be named as the model's "
            f"({', '.join(names)}); {', '.join(unknown)} is none of them. "
            "Rename its sub-folders, or score a model trained on such data."
        )
    index = np.array([names.index(f) for f in folders])
    return index[np.asarray(labels)]


def evaluate(
    model: AnyModel,
    data_dir: str | os.PathLike | None = None,
    image_folder: str | os.PathLike | None = None,
    limit: int | None = None,
    batch_size: int = 500,
    verbose: int = 0,
) -> dict[str, float]:
    """Measures accuracy and cross-entropy on the test set.

    Args:
        model: keras.Model, a preset name (`ninlayers.list_presets()`),
            a `.keras` file, a directory holding `model.keras`, or an
            exported file (`.tflite`, `.onnx`, SavedModel directory).
        data_dir: str, path or `None`. Fashion-MNIST's directory (see
            `ninlayers.app.data.find_fashion_mnist`).
        image_folder: str, path or `None`. Evaluate on all images of this
            folder (one sub-folder per class) instead.
        limit: int or `None`. Use only the first `limit` test images.
        batch_size: int. Defaults to `500`.
        verbose: int. `1` shows a progress bar. Defaults to `0`.

    Returns:
        dict with `accuracy`, `loss` (unsmoothed cross-entropy) and
        `examples`.
    """
    model = _as_model(model)
    height, width, channels = input_size(model)
    if image_folder is not None:
        # Streamed: listed and checked once, decoded batch by batch.
        listed = folders.list_folder(image_folder)
        folders.check_headers(listed.files)
        listed = listed.subset(np.arange(min(limit or len(listed), len(listed))))
        listed.labels = labels_by_name(
            model, listed.class_names, listed.labels, image_folder
        )
        _check_fits(model, listed.labels, channels, f"the image folder {image_folder}")
        ds = folders.stream(listed, (height, width), channels, batch_size)
        with folders.reading_errors():
            return scores(*predict_dataset(model, ds, verbose))
    _, (x_test, y_test) = data.load_fashion_mnist(data_dir)
    y_test = labels_by_name(model, data.CLASS_NAMES, y_test, "Fashion-MNIST")
    if limit:
        x_test, y_test = x_test[:limit], y_test[:limit]
    _check_fits(model, y_test, 1, "Fashion-MNIST")
    resize = None if x_test.shape[1:3] == (height, width) else (height, width)
    ds = data.make_dataset(x_test, y_test, batch_size, image_size=resize)
    return scores(*predict_dataset(model, ds, verbose))
