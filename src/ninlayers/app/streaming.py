"""A NiN training step's memory-bound kernels against the streaming rate.

Part of `ninlayers benchmark --kernels` (TensorFlow; `ninlayers.app.kernels`
profiles the step and times its convolutions). Batch norm and ReLU's
gradient do a few operations per element: their speed is how fast the
processor moves bytes, not its matrix units. Each block's activation
(its output before pooling, bfloat16, at the profile's batch size) is
timed alone, alternating, medians of `repeats`, in GB/s of the bytes each
kernel must read and write once:

- batch norm forward, with its ReLU (as training runs it): `x` in,
  `y` out, 2 activations;
- batch norm backward: `dy` and `x` in, `dx` out, 3;
- ReLU's gradient: `dy` and `y` in, `dx` out, 3;

against the streaming rate at the same size: float32 `a + b` over
tensors of the activation's bytes (3 of them). A kernel that reads its
input twice (batch norm: the statistics, then the normalisation) moves
more than it must, so it reaches at most 2/3 (forward) or 3/5 (backward)
of the streaming rate at sizes beyond the caches.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from ninlayers import layers
from ninlayers.app.ceiling import median_seconds

__all__ = [
    "activation_shapes",
    "memory_bound",
    "time_memory_kernels",
    "trunk_blocks",
]

#: Operation -> activations of bytes it reads and writes once.
TRAFFIC = {
    "streaming": 3,
    "batch norm forward": 2,
    "batch norm backward": 3,
    "ReLU gradient": 3,
}

#: A block's activation, at its output's size: (height, width, channels).
Activation = tuple[int, int, int]


def _bytes(batch: int, shape: Activation) -> int:
    """Bytes of one bfloat16 activation of `shape` at `batch`."""
    return 2 * batch * shape[0] * shape[1] * shape[2]


def trunk_blocks(model: keras.Model) -> list[layers.NiNBlock]:
    """The `NiNBlock`s of `model.backbone`, in order."""
    trunk = model.backbone.layers
    return [layer for layer in trunk if isinstance(layer, layers.NiNBlock)]


def activation_shapes(model: keras.Model) -> dict[str, Activation]:
    """Each `NiNBlock` of `model.backbone` by name: its output's size."""
    return {block.name: tuple(block.output.shape[1:]) for block in trunk_blocks(model)}


def _per_step(block: layers.NiNBlock) -> dict[str, int]:
    """How many of each memory-bound kernel a training step of `block` runs:
    its batch norms, and one ReLU per activated convolution."""
    norms = sum(norm is not None for norm in block.norms)
    relus = 0
    if block.activation is keras.activations.relu:
        relus = block.num_mlp_layers + int(block.final_activation)
    return {
        "batch norm forward": norms,
        "batch norm backward": norms,
        "ReLU gradient": relus,
    }


def _memory_ops(batch: int, shape: Activation) -> dict[str, Any]:
    """The kernels at one activation's shape, as training runs them."""
    channels = shape[-1]
    x = tf.cast(tf.random.normal((batch, *shape)), tf.bfloat16)
    dy = tf.cast(tf.random.normal((batch, *shape)), tf.bfloat16)
    half = batch * shape[0] * shape[1] * channels // 2  # float32, same bytes
    a, b = tf.random.normal((half,)), tf.random.normal((half,))
    scale, offset = tf.ones((channels,)), tf.zeros((channels,))
    empty = tf.zeros((0,))

    def forward():
        return tf.raw_ops.FusedBatchNormV3(
            x=x, scale=scale, offset=offset, mean=empty, variance=empty
        )

    _, _, _, *reserve = forward()

    def backward():
        return tf.raw_ops.FusedBatchNormGradV3(
            y_backprop=dy,
            x=x,
            scale=scale,
            reserve_space_1=reserve[0],
            reserve_space_2=reserve[1],
            reserve_space_3=reserve[2],
        )[0]

    ops = {
        "streaming": lambda: a + b,
        "batch norm forward": lambda: tf.nn.relu(forward()[0]),
        "batch norm backward": backward,
        "ReLU gradient": lambda: tf.raw_ops.ReluGrad(gradients=dy, features=x),
    }
    return {name: tf.function(fn, autograph=False) for name, fn in ops.items()}


def time_memory_kernels(
    shapes: dict[str, Activation], batch: int, repeats: int
) -> dict[str, float]:
    """GB/s of each activation's kernels and its streaming rate, by
    `"{block}, {operation}"` (`TRAFFIC`), alternating, medians of
    `repeats` (`ceiling.median_seconds`)."""
    fns, moved = {}, {}
    for name, shape in shapes.items():
        for op, fn in _memory_ops(batch, shape).items():
            fns[f"{name}, {op}"] = fn
            moved[f"{name}, {op}"] = TRAFFIC[op] * _bytes(batch, shape)
    seconds = median_seconds(fns, repeats)
    return {key: moved[key] / s / 1e9 for key, s in seconds.items()}


def memory_bound(gbps: dict[str, float], model: keras.Model, batch: int) -> float:
    """Milliseconds per step of the trunk's batch norms and ReLU gradients if
    each ran at its measured rate (`gbps`, as `time_memory_kernels` returns
    it) with nothing else in the step."""
    seconds = 0.0
    for block in trunk_blocks(model):
        size = _bytes(batch, tuple(block.output.shape[1:]))
        for op, count in _per_step(block).items():
            rate = gbps[f"{block.name}, {op}"] * 1e9
            seconds += count * TRAFFIC[op] * size / rate
    return 1000 * seconds
