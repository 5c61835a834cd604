"""A training step of `NiN()`, kernel by kernel, against the bfloat16 ceiling.

`ninlayers benchmark --kernels` (TensorFlow). Two measurements in one run:

1. TensorFlow's profiler over `steps` training steps at batch 64: the
   time of every kernel, summed per step by kind (convolution forward,
   backward to the input, backward to the filter, matrix products, batch
   norm, ReLU's gradient, pooling, the rest) and by stage. Kernels run two
   at a time (TensorFlow's inter-op threads), so the kinds add up to more
   than the step's wall time: read them as shares.
2. Each of the network's convolution shapes alone, at batch 64 in
   bfloat16, as training runs it (1x1 convolutions as matrix products
   where `ninlayers.layers.POINTWISE_AS_MATMUL` says so): forward, backward
   to the input and backward to the filter, alternating, medians of
   `repeats`, in GFLOP/s, against the ceiling
   (`ninlayers.app.ceiling.measure_ceiling`) measured before and after in
   the same run.
"""

from __future__ import annotations

import collections
import glob
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from ninlayers import NiN, layers
from ninlayers.app import machine
from ninlayers.app.benchmark import benchmark_images
from ninlayers.app.ceiling import measure_ceiling

__all__ = ["SHAPES", "convolution_bound", "format_kernel_profile", "run_kernel_profile"]

#: Kernel name (after the last ":") -> kind.
KINDS = {
    "_MklNativeConv2D": "convolution forward",
    "_MklNativeConv2DBackpropInput": "convolution backward, input",
    "_MklNativeConv2DBackpropFilter": "convolution backward, filter",
    "_MklNativeConv2DBackpropFilterWithBias": "convolution backward, filter",
    "_MklNativeFusedBatchNormEx": "batch norm",
    "_MklNativeFusedBatchNormV3": "batch norm",
    "_MklNativeFusedBatchNormGradV3": "batch norm",
    "ReluGrad": "ReLU gradient",
    "_MklNativeMaxPool": "pooling",
    "_MklMatMul": "matmul (1x1 convolutions)",
    "_MklNativeMatMul": "matmul (1x1 convolutions)",
    "MatMul": "matmul (1x1 convolutions)",
    "_MklBatchMatMulV2": "matmul (1x1 convolutions)",
    "BatchMatMulV2": "matmul (1x1 convolutions)",
    "_MklNativeMaxPoolGrad": "pooling",
}

#: The convolutions of `NiN()` at batch 64: (height, in, out, kernel), by name.
SHAPES = {
    "block1 3x3": (28, 1, 96, 3),
    "block1 1x1": (28, 96, 96, 1),
    "block2 3x3": (13, 96, 256, 3),
    "block2 1x1": (13, 256, 256, 1),
    "block3 3x3": (6, 256, 384, 3),
    "block3 1x1": (6, 384, 384, 1),
}


def _flop(height: int, channels: int, filters: int, kernel: int) -> int:
    """FLOP of one convolution forward at batch 64 ("same" padding)."""
    return 2 * 64 * height * height * channels * filters * kernel * kernel


def profile_steps(steps: int) -> dict:
    """Kernel time per training step by kind and stage, and the wall time."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    x, y, _ = benchmark_images(64 * steps)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(64).cache()
    model = NiN()
    model.compile()
    model.fit(dataset, epochs=1, shuffle=False, verbose=0)  # warm-up, tracing
    space = xplane_pb2.XSpace()
    with tempfile.TemporaryDirectory(prefix="ninlayers-profile-") as directory:
        tf.profiler.experimental.start(directory)
        start = time.perf_counter()
        model.fit(dataset, epochs=1, shuffle=False, verbose=0)
        wall = time.perf_counter() - start
        tf.profiler.experimental.stop()
        path = glob.glob(f"{directory}/**/*.xplane.pb", recursive=True)[0]
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
    kinds, stages = collections.Counter(), collections.Counter()
    others = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if "StatefulPartitionedCall/" not in name:
                    continue
                ms = event.duration_ps / 1e9 / steps
                kind = KINDS.get(name.split(":")[-1], "other")
                kinds[kind] += ms
                if kind == "other":
                    others[name.split(":")[-1]] += ms
                stage = re.search(r"/(block\d|head)", name)
                stages[stage.group(1) if stage else "other"] += ms
    return {
        "wall_ms_per_step": 1000 * wall / steps,
        "kernel_ms_per_step_by_kind": dict(kinds.most_common()),
        "kernel_ms_per_step_by_stage": dict(stages.most_common()),
        "other_kernels_ms_per_step": dict(others.most_common(12)),
    }


def _matmul_ops(height: int, channels: int, filters: int) -> dict:
    """A 1x1 convolution as training runs it (`POINTWISE_AS_MATMUL`): the
    forward product and its two gradients, as matrix products."""
    rows = 64 * height * height
    x = tf.cast(tf.random.normal((rows, channels)), tf.bfloat16)
    w = tf.cast(tf.random.normal((channels, filters)), tf.bfloat16)
    g = tf.cast(tf.random.normal((rows, filters)), tf.bfloat16)
    return {
        "forward": tf.function(lambda: tf.matmul(x, w)),
        "backward, input": tf.function(lambda: tf.matmul(g, w, transpose_b=True)),
        "backward, filter": tf.function(lambda: tf.matmul(x, g, transpose_a=True)),
    }


def _conv_ops(height: int, channels: int, filters: int, kernel: int) -> dict:
    if kernel == 1 and layers.POINTWISE_AS_MATMUL.get("tensorflow"):
        return _matmul_ops(height, channels, filters)
    x = tf.cast(tf.random.normal((64, height, height, channels)), tf.bfloat16)
    w = tf.cast(tf.random.normal((kernel, kernel, channels, filters)), tf.bfloat16)
    g = tf.cast(tf.random.normal((64, height, height, filters)), tf.bfloat16)
    strides = [1, 1, 1, 1]
    return {
        "forward": tf.function(lambda: tf.nn.conv2d(x, w, 1, "SAME")),
        "backward, input": tf.function(
            lambda: tf.raw_ops.Conv2DBackpropInput(
                input_sizes=x.shape,
                filter=w,
                out_backprop=g,
                strides=strides,
                padding="SAME",
            )
        ),
        "backward, filter": tf.function(
            lambda: tf.raw_ops.Conv2DBackpropFilter(
                input=x,
                filter_sizes=w.shape,
                out_backprop=g,
                strides=strides,
                padding="SAME",
            )
        ),
    }


def time_convolutions(repeats: int) -> dict:
    """GFLOP/s of each convolution shape's three operations, alternating."""
    ops = {}
    for name, (height, channels, filters, kernel) in SHAPES.items():
        flop = _flop(height, channels, filters, kernel)
        for op, fn in _conv_ops(height, channels, filters, kernel).items():
            fn().numpy()  # warm-up
            ops[(name, op)] = (fn, flop, [])
    for _ in range(repeats):
        for fn, _, seconds in ops.values():
            start = time.perf_counter()
            fn().numpy()
            seconds.append(time.perf_counter() - start)
    return {
        f"{name}, {op}": flop / statistics.median(seconds) / 1e9
        for (name, op), (_, flop, seconds) in ops.items()
    }


def convolution_bound(gflops: dict[str, float]) -> tuple[float, float]:
    """Milliseconds per step of `NiN()`'s trunk convolutions (each block's
    two 1x1 convolutions counted twice) if each ran at its measured speed
    with nothing else in the step, and their training FLOP in GFLOP."""
    seconds = flop = 0.0
    for name, (height, channels, filters, kernel) in SHAPES.items():
        count = 2 if kernel == 1 else 1
        one = _flop(height, channels, filters, kernel)
        for op in ("forward", "backward, input", "backward, filter"):
            seconds += count * one / (gflops[f"{name}, {op}"] * 1e9)
            flop += count * one
    return 1000 * seconds, flop / 1e9


def run_kernel_profile(
    steps: int = 20,
    repeats: int = 15,
    print_fn: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Profiles `NiN()`'s training step kernel by kernel on TensorFlow.

    Args:
        steps: int. Training steps of 64 images under the profiler.
            Defaults to `20`.
        repeats: int. Timed repeats of each convolution alone (medians).
            Defaults to `15`.
        print_fn: callable or `None`. Where the report goes.

    Returns:
        dict: the machine, the step's wall time and kernel time by kind and
        stage (`profile`), the ceiling before and after, each convolution's
        GFLOP/s and the convolutions' bound (`convolutions_alone`).
    """
    result = {
        "machine": machine.describe(),
        "steps": steps,
        "repeats": repeats,
        "profile": profile_steps(steps),
    }
    result["ceiling"] = measure_ceiling()
    result["convolution_gflops"] = time_convolutions(repeats)
    result["ceiling_after"] = measure_ceiling()
    ms, flop = convolution_bound(result["convolution_gflops"])
    result["convolutions_alone"] = {"ms_per_step": ms, "gflop_per_step": flop}
    if print_fn is not None:
        print_fn(format_kernel_profile(result))
    return result


def format_kernel_profile(result: dict[str, Any]) -> str:
    """Formats `run_kernel_profile`'s result as lines of text."""
    profile = result["profile"]
    total = sum(profile["kernel_ms_per_step_by_kind"].values())
    lines = [
        f"machine: {machine.one_line(result['machine'])}",
        f"wall {profile['wall_ms_per_step']:.1f} ms per step of 64 images",
    ]
    for kind, ms in profile["kernel_ms_per_step_by_kind"].items():
        lines.append(f"  {kind:32s} {ms:7.1f} ms  {ms / total:6.1%} of kernel time")
    ceiling, after = result["ceiling"]["bfloat16"], result["ceiling_after"]["bfloat16"]
    lines.append(
        f"bfloat16 ceiling {ceiling:.0f} GFLOP/s (after the convolutions: {after:.0f})"
    )
    for name, gflops in result["convolution_gflops"].items():
        lines.append(
            f"  {name:30s} {gflops:6.0f} GFLOP/s  {gflops / ceiling:5.2f} of ceiling"
        )
    ms = result["convolutions_alone"]["ms_per_step"]
    flop = result["convolutions_alone"]["gflop_per_step"]
    lines.append(
        f"the convolutions alone at these speeds: {ms:.1f} ms per step, "
        f"{flop / ms * 1000 / ceiling:.2f} of the ceiling; the whole step: "
        f"{flop / profile['wall_ms_per_step'] * 1000 / ceiling:.2f}"
    )
    return "\n".join(lines)
