"""`ninlayers export`: a model to a deployment file.

`export_model` loads a model (a `.keras` file, a run's directory or a
preset), takes calibration images from the training data for int8, and
writes the file with `ninlayers.export.export`.
"""

from __future__ import annotations

import os
from typing import Any

import keras
import numpy as np

from ninlayers import classifier, export, exported
from ninlayers.app import data, folders, inference
from ninlayers.classifier import NiNImageClassifier

__all__ = ["export_model", "load_calibration_images"]


def load_calibration_images(
    count: int,
    data_dir: str | os.PathLike | None = None,
    image_folder: str | os.PathLike | None = None,
    size: tuple[int, int] = data.FASHION_MNIST_SHAPE[:2],
    channels: int = 1,
) -> np.ndarray:
    """`count` training images spread over the set, for int8 calibration.

    Args:
        count: int. How many images.
        data_dir: Fashion-MNIST's directory, or `None` to look for it.
        image_folder: an image folder to take them from instead.
        size: `(height, width)` of an image folder's images.
        channels: 1 or 3, for an image folder.

    Returns:
        np.ndarray `(count, height, width, channels)` (fewer if the data has
        fewer): uint8 pixels.
    """
    if image_folder is not None:
        # Only the files taken are read: `count` spread over the folder.
        listed = folders.list_folder(image_folder)
        files = listed.files[:: max(len(listed) // count, 1)][:count]
        return folders.read_all(files, size, channels)
    else:
        (images, _), _ = data.load_fashion_mnist(data_dir)
        images = images[..., None]
    step = max(len(images) // count, 1)
    return images[::step][:count]


def export_model(
    model: keras.Model | str | os.PathLike,
    output: str | os.PathLike,
    format: str | None = None,
    int8: bool = False,
    input_type: str = "float32",
    output_type: str = "float32",
    calibration_images: int = 500,
    data_dir: str | os.PathLike | None = None,
    image_folder: str | os.PathLike | None = None,
    test_time_flip: bool | None = None,
    verbose: bool = False,
    test_time_shift: int | None = None,
) -> dict[str, Any]:
    """Exports a model for deployment (see `ninlayers.export.export`).

    Args:
        model: keras.Model, a `.keras` file, a run's directory or a preset.
        output: the file to write (`.tflite`, `.onnx`, else a SavedModel).
        format: one of `ninlayers.export.FORMATS`, or `None` for the suffix's.
        int8: bool. Full-integer quantization.
        input_type, output_type: an int8 TFLite file's input/output types.
        calibration_images: int. Training images to calibrate int8 on.
        data_dir, image_folder: where the calibration images come from.
        test_time_flip: bool or `None` (the model's setting).
        verbose: bool. Print each stage and a progress bar over the
            calibration images.
        test_time_shift: int or `None` (the model's setting).

    Returns:
        dict: `path`, `format`, `int8`, `test_time_flip` (whether the file
        averages each image with its mirror image), `test_time_shift` (the
        pixels by which it also averages shifted images), `bytes` (the
        file's or folder's size).
    """
    model = inference._as_model(model)
    if isinstance(model, exported.ExportedModel):
        raise ValueError(
            f"{model.path} is already exported: export the .keras file, run "
            "directory or preset it came from."
        )
    if isinstance(model, NiNImageClassifier):
        # Set the views here, once, so that what is reported is the model's.
        model = export.with_test_time(model, test_time_flip, test_time_shift)
        test_time_flip = test_time_shift = None
    calibration = None
    if int8:
        height, width, channels = inference.input_size(model)
        if verbose:
            print(f"Loading {calibration_images} calibration images", flush=True)
        calibration = load_calibration_images(
            calibration_images, data_dir, image_folder, (height, width), channels
        )
        if classifier.input_range(model) is None:
            # A model without a pixel contract takes the [0, 1] floats the
            # application reads images as.
            calibration = calibration.astype("float32") / 255.0
    path = export.export(
        model,
        output,
        format=format,
        int8=int8,
        calibration=calibration,
        input_type=input_type,
        output_type=output_type,
        test_time_flip=test_time_flip,
        verbose=verbose,
        test_time_shift=test_time_shift,
    )
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    views = export.metadata(model)
    return {
        "path": str(path),
        "format": export.format_of(path) if format is None else format,
        "int8": bool(int8),
        "test_time_flip": views["test_time_flip"],
        "test_time_shift": views["test_time_shift"],
        "bytes": sum(p.stat().st_size for p in files),
    }
