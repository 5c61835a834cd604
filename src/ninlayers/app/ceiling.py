"""The machine's compute ceiling, and how much of it training uses.

`measure_ceiling` times a 3x3 convolution shaped like NiN's second block and
a 2048x2048 matmul, in float32 and bfloat16, with TensorFlow; `multiply_adds`
counts a model's convolution multiply-adds per image. `ninlayers benchmark`
multiplies its training images/s by `training_flop_per_image` and divides by
the bfloat16 ceiling measured in the same run.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import keras

__all__ = [
    "measure_ceiling",
    "multiply_adds",
    "multiply_adds_per_layer",
    "median_seconds",
    "seconds_per_call",
    "training_flop_per_image",
]

#: The timed operations: name -> (kind, shapes). The convolution is NiN's
#: second block's 3x3 at batch 64 (13x13x96 -> 256).
OPERATIONS = {
    "conv3x3": ("conv", (64, 13, 13, 96), (3, 3, 96, 256)),
    "matmul2048": ("matmul", (2048, 2048), (2048, 2048)),
}


def multiply_adds_per_layer(model: keras.Model) -> dict[str, int]:
    """Convolution multiply-adds per image of each top-level layer, by name.

    Counts `Conv2D` layers, on their own or inside a layer (`NiNBlock`,
    `NiNClassifierHead`); a block's convolutions work at its output's size
    (its 1x1 convolutions keep the first one's), a head's at its input's
    ("same" padding). Pooling, batch norm and activations are not counted.
    """
    counts = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        shape = layer.output.shape
        if len(shape) != 4:
            shape = layer.input.shape
        total = 0
        for conv in layer._flatten_layers(include_self=True):
            if isinstance(conv, keras.layers.Conv2D):
                k_h, k_w, c_in, c_out = conv.kernel.shape
                total += shape[1] * shape[2] * k_h * k_w * c_in * c_out
        counts[layer.name] = int(total)
    return counts


def multiply_adds(model: keras.Model) -> int:
    """Convolution multiply-adds per image of a model (see
    `multiply_adds_per_layer`)."""
    return sum(multiply_adds_per_layer(model).values())


def training_flop_per_image(model: keras.Model) -> float:
    """FLOPs of one training image: 2 per multiply-add forward, and twice
    the forward's backward (the gradients of the inputs and of the
    weights)."""
    return 6.0 * multiply_adds(model)


def seconds_per_call(fn: Callable[[], Any], calls: int = 1) -> float:
    """Seconds per call of `fn`, a TensorFlow function returning one tensor,
    over `calls` calls in a row.

    Only one element of the last result is read back: reading a whole
    result into NumPy copies it, which costs as much as a fast kernel at
    NiN's sizes and is not the kernel's time.
    """
    import tensorflow as tf

    start = time.perf_counter()
    for _ in range(calls):
        out = fn()
    tf.reshape(out, [-1])[:1].numpy()
    return (time.perf_counter() - start) / calls


def median_seconds(
    fns: dict[Any, Callable[[], Any]], repeats: int, calls: int = 5
) -> dict[Any, float]:
    """Each of `fns` warmed up, then timed `repeats` times in turn,
    alternating (`seconds_per_call` of `calls` calls): the median seconds
    per call, by the same keys."""
    for fn in fns.values():
        seconds_per_call(fn)  # warm-up
    seconds: dict[Any, list[float]] = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            seconds[key].append(seconds_per_call(fn, calls))
    return {key: statistics.median(v) for key, v in seconds.items()}


def measure_ceiling(repeats: int = 20) -> dict[str, Any]:
    """GFLOP/s of `OPERATIONS` in float32 and bfloat16 (medians of `repeats`).

    Returns:
        dict: `gflops[precision][operation]`, `every_repeat_seconds`, and
        `bfloat16` / `float32`: the best operation's median (the ceiling).
    """
    import tensorflow as tf

    gflops: dict[str, dict[str, float]] = {"float32": {}, "bfloat16": {}}
    seconds: dict[str, list[float]] = {}
    for precision in gflops:
        for name, (kind, a_shape, b_shape) in OPERATIONS.items():
            a = tf.random.uniform(a_shape, dtype=tf.float32)
            b = tf.random.uniform(b_shape, dtype=tf.float32) / 30
            a, b = tf.cast(a, precision), tf.cast(b, precision)
            if kind == "conv":
                op = tf.function(lambda a, b: tf.nn.conv2d(a, b, 1, "SAME"))
                n, height, width, _ = a_shape
                k_h, k_w, c_in, c_out = b_shape
                flop = 2 * n * height * width * k_h * k_w * c_in * c_out
            else:
                op = tf.function(lambda a, b: tf.matmul(a, b))
                flop = 2 * a_shape[0] * a_shape[1] * b_shape[1]
            op(a, b).numpy()  # trace and warm up
            key = f"{precision}/{name}"
            call = functools.partial(op, a, b)
            seconds[key] = [seconds_per_call(call) for _ in range(repeats)]
            gflops[precision][name] = flop / statistics.median(seconds[key]) / 1e9
    return {
        "gflops": gflops,
        "bfloat16": max(gflops["bfloat16"].values()),
        "float32": max(gflops["float32"].values()),
        "repeats": repeats,
        "every_repeat_seconds": seconds,
    }
