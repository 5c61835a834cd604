"""Export for serving: TensorFlow SavedModel and TFLite.

`model.export(path)` (Keras's own) already writes a SavedModel for TF
Serving for NiN and for any functional or Sequential model with ninlayers
layers. The helpers here add what serving needs around it: a float32 copy of
a mixed-precision model (TFLite and many servers want float32 graphs) and a
TFLite conversion.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras

from ninlayers._utils import all_layers

__all__ = ["export_saved_model", "float32_copy", "to_tflite"]


def float32_copy(model: keras.Model) -> keras.Model:
    """Returns a float32 copy of a model, with the same weights.

    Mixed-precision models (`mixed_bfloat16`, `mixed_float16`) keep float32
    weights, so the copy computes the same function in float32.

    Args:
        model: keras.Model. A `NiN`, functional or Sequential model.

    Returns:
        keras.Model. `model` itself when it already computes in float32.
    """
    policies = {layer.dtype_policy.compute_dtype for layer in all_layers(model)}
    if policies <= {"float32"}:
        return model
    config = model.get_config()
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        config = _strip_dtypes(config)
        if "precision" in config:
            config["precision"] = "float32"
        copy = model.__class__.from_config(config)
    finally:
        keras.config.set_dtype_policy(previous)
    copy.set_weights(model.get_weights())
    return copy


def _strip_dtypes(config):
    """Drops every `dtype` entry of a config, so the global policy applies."""
    if isinstance(config, dict):
        return {k: _strip_dtypes(v) for k, v in config.items() if k != "dtype"}
    if isinstance(config, list):
        return [_strip_dtypes(v) for v in config]
    return config


def export_saved_model(model: keras.Model, path: str | os.PathLike) -> Path:
    """Exports a model as a TensorFlow SavedModel for serving.

    The SavedModel has a `serve` endpoint (and the `serving_default`
    signature) taking float32 images and returning the model's outputs.

    Args:
        model: keras.Model.
        path: str or path. A directory to create.

    Returns:
        Path of the SavedModel directory.
    """
    path = Path(path)
    model.export(str(path), format="tf_saved_model", verbose=False)
    return path


def to_tflite(model: keras.Model, path: str | os.PathLike) -> Path:
    """Converts a model to a TFLite flat buffer (float32).

    Args:
        model: keras.Model. Mixed-precision models are converted from their
            float32 copy.
        path: str or path. The `.tflite` file to write.

    Returns:
        Path of the file.
    """
    import tempfile

    import tensorflow as tf

    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        saved = export_saved_model(float32_copy(model), Path(tmp) / "saved")
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        flatbuffer = converter.convert()
    path.write_bytes(flatbuffer)
    return path
