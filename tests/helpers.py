"""One helper that checks any ninlayers layer the way Keras checks its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import tensorflow as tf

#: A two-stage trunk that trains in well under a second on 16x16 images.
SMALL = [
    {"filters": 8, "kernel_size": 3},
    {"filters": 16, "kernel_size": 3},
]


def config_json(layer: keras.layers.Layer) -> str:
    return json.dumps(layer.get_config(), sort_keys=True)


def check_layer(
    layer_cls,
    init_kwargs: dict,
    input_shape: tuple,
    expected_output_shape: tuple,
    expected_num_params: int | None = None,
    check_gradients: bool = True,
) -> keras.layers.Layer:
    """Checks config, shapes, parameter count and gradients of a layer.

    - the config round trip is JSON-equal;
    - symbolic and eager outputs have `compute_output_shape`'s shape, which
      equals `expected_output_shape` (a formula in the caller);
    - `count_params()` equals `expected_num_params`;
    - every trainable weight gets a non-zero gradient.
    """
    layer = layer_cls(**init_kwargs)
    clone = layer_cls.from_config(json.loads(json.dumps(layer.get_config())))
    assert config_json(clone) == config_json(layer)

    symbolic = layer(keras.Input(batch_shape=input_shape))
    assert tuple(symbolic.shape) == tuple(expected_output_shape)
    assert tuple(layer.compute_output_shape(input_shape)) == tuple(
        expected_output_shape
    )
    x = np.random.default_rng(0).normal(size=input_shape).astype("float32")
    eager = layer(x)
    assert tuple(eager.shape) == tuple(expected_output_shape)
    if expected_num_params is not None:
        assert layer.count_params() == expected_num_params

    if check_gradients:
        with tf.GradientTape() as tape:
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, "float32") ** 2)
        grads = tape.gradient(loss, layer.trainable_variables)
        assert layer.trainable_variables
        for variable, grad in zip(layer.trainable_variables, grads, strict=True):
            assert grad is not None, f"no gradient for {variable.path}"
            assert np.all(np.isfinite(grad)), f"non-finite grad {variable.path}"
    return layer


def run_python(code: str, timeout: float = 300) -> str:
    """Runs code in a fresh Python process and returns its stdout."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout
