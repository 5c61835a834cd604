"""A NiN training step, kernel by kernel, against the machine's ceilings.

`ninlayers benchmark --kernels` (TensorFlow), for `NiN(architecture=...)`
at a batch size (by default `NiN()` at 64). Three measurements in one run:

1. TensorFlow's profiler over `steps` training steps: the
   time of every kernel, summed per step by kind (convolution forward,
   backward to the input, backward to the filter, matrix products, batch
   norm, ReLU's gradient, pooling, the rest) and by stage. Kernels run two
   at a time (TensorFlow's inter-op threads), so the kinds add up to more
   than the step's wall time: read them as shares.
2. Each of the trunk's convolution shapes alone, at the same batch size
   in bfloat16, as training runs it (1x1 convolutions as matrix products
   where `ninlayers.layers.POINTWISE_AS_MATMUL` says so): forward, backward
   to the input and backward to the filter, alternating, medians of
   `repeats`, in GFLOP/s, against the bfloat16 ceiling
   (`ninlayers.app.ceiling.measure_ceiling`) measured before and after in
   the same run. Each block's convolutions are timed at the block's
   output size with stride 1 and "same" padding: for a block with strides
   or "valid" padding (`nin_224`'s first), the same multiply-adds, not the
   same kernel.
3. Each block's batch norms and ReLU gradient alone, in GB/s, against the
   streaming rate at the same size (`ninlayers.app.streaming`).

Then their sum: the step's time if the trunk's convolutions, batch norms
and ReLU gradients each ran at its measured speed, one after another,
with nothing else in the step (no pooling, head, loss or optimizer). The
step runs two kernels at once, so it can take less.
Kernels are timed in calls back to back, reading one element of the
result (not copying the result into NumPy).
"""

from __future__ import annotations

import collections
import glob
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from ninlayers import NiN, layers
from ninlayers.app import data, machine, streaming
from ninlayers.app.benchmark import benchmark_images
from ninlayers.app.ceiling import measure_ceiling, median_seconds
from ninlayers.app.streaming import trunk_blocks

__all__ = [
    "convolution_bound",
    "convolution_shapes",
    "format_kernel_profile",
    "run_kernel_profile",
]

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

#: A convolution's shape: (height, width, input channels, filters, kernel
#: height, kernel width), at its output's size.
Shape = tuple[int, int, int, int, int, int]


def convolution_shapes(model: keras.Model) -> dict[str, Shape]:
    """The trunk's convolution shapes, by name ("block1 3x3", "block1 1x1",
    ...): each `NiNBlock` of `model.backbone`, its first convolution and its
    1x1 convolutions (one shape for them all), at the block's output size."""
    shapes = {}
    for block in trunk_blocks(model):
        _, height, width, filters = block.output.shape
        k_h, k_w = block.kernel_size
        shapes[f"{block.name} {k_h}x{k_w}"] = (
            height,
            width,
            block.input.shape[-1],
            filters,
            k_h,
            k_w,
        )
        if block.num_mlp_layers:
            shapes[f"{block.name} 1x1"] = (height, width, filters, filters, 1, 1)
    return shapes


def _per_step(model: keras.Model) -> dict[str, int]:
    """How many convolutions of each of `convolution_shapes`' a step runs."""
    counts = dict.fromkeys(convolution_shapes(model), 1)
    for block in trunk_blocks(model):
        if block.num_mlp_layers:
            counts[f"{block.name} 1x1"] = block.num_mlp_layers
    return counts


def _flop(batch: int, shape: Shape) -> int:
    """FLOP of one convolution forward at its output's size."""
    height, width, channels, filters, k_h, k_w = shape
    return 2 * batch * height * width * channels * filters * k_h * k_w


def profile_steps(model: keras.Model, steps: int, batch: int) -> dict:
    """Kernel time per training step by kind and stage, and the wall time."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    if tuple(model.input_shape[1:]) == (28, 28, 1):
        x, y, _ = benchmark_images(batch * steps)
    else:  # random images of the model's size: a few batches, repeated
        rng = np.random.default_rng(0)
        x = rng.random((min(steps, 4) * batch, *model.input_shape[1:]), "float32")
        y = rng.integers(0, model.num_classes, len(x))
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache()
    # Without autotuning, as the trainer feeds a fit: with it, the end of a
    # fit can wait for tf.data's tuning thread (docs/performance.md).
    dataset = data.prefetched(dataset.repeat().take(steps))
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


def _matmul_ops(batch: int, shape: Shape) -> dict:
    """A 1x1 convolution as training runs it (`POINTWISE_AS_MATMUL`): the
    forward product and its two gradients, as matrix products."""
    height, width, channels, filters, _, _ = shape
    rows = batch * height * width
    x = tf.cast(tf.random.normal((rows, channels)), tf.bfloat16)
    w = tf.cast(tf.random.normal((channels, filters)), tf.bfloat16)
    g = tf.cast(tf.random.normal((rows, filters)), tf.bfloat16)
    return {
        "forward": tf.function(lambda: tf.matmul(x, w)),
        "backward, input": tf.function(lambda: tf.matmul(g, w, transpose_b=True)),
        "backward, filter": tf.function(lambda: tf.matmul(x, g, transpose_a=True)),
    }


def _conv_ops(batch: int, shape: Shape) -> dict:
    height, width, channels, filters, k_h, k_w = shape
    if (k_h, k_w) == (1, 1) and layers.POINTWISE_AS_MATMUL.get("tensorflow"):
        return _matmul_ops(batch, shape)
    x = tf.cast(tf.random.normal((batch, height, width, channels)), tf.bfloat16)
    w = tf.cast(tf.random.normal((k_h, k_w, channels, filters)), tf.bfloat16)
    g = tf.cast(tf.random.normal((batch, height, width, filters)), tf.bfloat16)
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


def time_convolutions(shapes: dict[str, Shape], batch: int, repeats: int) -> dict:
    """GFLOP/s of each convolution shape's three operations, alternating."""
    fns, flop = {}, {}
    for name, shape in shapes.items():
        for op, fn in _conv_ops(batch, shape).items():
            fns[f"{name}, {op}"], flop[f"{name}, {op}"] = fn, _flop(batch, shape)
    seconds = median_seconds(fns, repeats)
    return {key: flop[key] / s / 1e9 for key, s in seconds.items()}


def convolution_bound(
    gflops: dict[str, float], model: keras.Model, batch: int
) -> tuple[float, float]:
    """Milliseconds per step of the model's trunk convolutions if each ran
    at its measured speed (`gflops`, by `"{shape name}, {operation}"`) with
    nothing else in the step, and their training FLOP in GFLOP."""
    seconds = flop = 0.0
    per_step = _per_step(model)
    for name, shape in convolution_shapes(model).items():
        one = _flop(batch, shape)
        for op in ("forward", "backward, input", "backward, filter"):
            seconds += per_step[name] * one / (gflops[f"{name}, {op}"] * 1e9)
            flop += per_step[name] * one
    return 1000 * seconds, flop / 1e9


def run_kernel_profile(
    steps: int = 20,
    repeats: int = 15,
    print_fn: Callable[[str], None] | None = print,
    architecture: str | Sequence[Any] = "nin_28",
    batch_size: int = 64,
) -> dict[str, Any]:
    """Profiles a NiN's training step kernel by kernel on TensorFlow.

    Args:
        steps: int. Training steps under the profiler. Defaults to `20`.
        repeats: int. Timed repeats of each convolution alone (medians).
            Defaults to `15`.
        print_fn: callable or `None`. Where the report goes.
        architecture: str or list of block specs. The trunk of the
            `NiN(architecture=...)` profiled (compiled with its defaults).
            Defaults to `"nin_28"` (`NiN()`'s).
        batch_size: int. Images per step. Defaults to `64`.

    Returns:
        dict: the machine, the architecture and batch size, the step's wall
        time and kernel time by kind and stage (`profile`), the ceiling
        before and after, each convolution's GFLOP/s and the convolutions'
        bound (`convolutions_alone`), each block's memory-bound kernels and
        streaming rate in GB/s (`memory_gbps`) and the time of the
        convolutions, batch norms and ReLU gradients one after another
        (`kernels_alone`).
    """
    model = NiN(architecture=architecture)
    model.compile()
    result = {
        "machine": machine.describe(),
        "architecture": architecture,
        "batch_size": batch_size,
        "steps": steps,
        "repeats": repeats,
        "profile": profile_steps(model, steps, batch_size),
    }
    shapes = convolution_shapes(model)
    result["ceiling"] = measure_ceiling()
    result["convolution_gflops"] = time_convolutions(shapes, batch_size, repeats)
    result["ceiling_after"] = measure_ceiling()
    ms, flop = convolution_bound(result["convolution_gflops"], model, batch_size)
    result["convolutions_alone"] = {"ms_per_step": ms, "gflop_per_step": flop}
    result["memory_gbps"] = streaming.time_memory_kernels(
        streaming.activation_shapes(model), batch_size, repeats
    )
    memory_ms = streaming.memory_bound(result["memory_gbps"], model, batch_size)
    result["kernels_alone"] = {
        "ms_per_step": ms + memory_ms,
        "memory_bound_ms_per_step": memory_ms,
    }
    if print_fn is not None:
        print_fn(format_kernel_profile(result))
    return result


def _architecture(result: dict[str, Any]) -> str:
    architecture = result.get("architecture", "nin_28")
    return architecture if isinstance(architecture, str) else "custom trunk"


def format_kernel_profile(result: dict[str, Any]) -> str:
    """Formats `run_kernel_profile`'s result as lines of text."""
    profile = result["profile"]
    total = sum(profile["kernel_ms_per_step_by_kind"].values())
    lines = [
        f"machine: {machine.one_line(result['machine'])}",
        f"{_architecture(result)} at batch {result.get('batch_size', 64)}: wall "
        f"{profile['wall_ms_per_step']:.1f} ms per step",
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
    if "memory_gbps" in result:  # earlier profiles' files lack it
        lines.extend(_memory_lines(result, flop, ceiling))
    return "\n".join(lines)


def _memory_lines(result: dict[str, Any], flop: float, ceiling: float) -> list[str]:
    """The memory-bound kernels' lines of `format_kernel_profile`."""
    gbps = result["memory_gbps"]
    lines = ["memory-bound kernels (GB/s of the bytes each must move once):"]
    for key, rate in gbps.items():
        block, op = key.split(", ", 1)
        if op != "streaming":
            top = gbps[f"{block}, streaming"]
            lines.append(
                f"  {key:30s} {rate:6.1f} GB/s  {rate / top:5.2f} of streaming "
                f"({top:.1f} GB/s)"
            )
    ms = result["kernels_alone"]["ms_per_step"]
    memory = result["kernels_alone"]["memory_bound_ms_per_step"]
    lines.append(
        f"convolutions, batch norms and ReLU gradients alone: {ms:.1f} ms per "
        f"step ({memory:.1f} of them memory-bound), {flop / ms * 1000 / ceiling:.2f}"
        " of the ceiling"
    )
    return lines
