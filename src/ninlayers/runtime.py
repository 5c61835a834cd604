"""Per-device choices: numeric precision and XLA compilation.

Measured on the 2-core CPU this project runs on (AVX512-BF16, no AMX; seed
network, batch 64): `mixed_bfloat16` trains about 2x faster than float32
(oneDNN runs bfloat16 convolutions on AVX512-BF16 dot products) and XLA
(`jit_compile=True`) about 2x slower. On
NVIDIA GPUs float16 with loss scaling and XLA are the fast choices. The
functions here encode that, and every choice can be overridden.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from typing import Any

import keras

__all__ = [
    "PRECISIONS",
    "STRATEGIES",
    "get_strategy",
    "is_chief",
    "cpu_supports_bfloat16",
    "gpu_compute_capabilities",
    "resolve_jit_compile",
    "resolve_precision",
]

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")

_ENV_PRECISION = "NINLAYERS_PRECISION"

STRATEGIES = ("auto", "default", "mirrored", "multiworker")


@functools.cache
def cpu_supports_bfloat16() -> bool:
    """Returns whether the CPU has native bfloat16 matrix instructions.

    Reads the flags of `/proc/cpuinfo` (Linux) for AMX-BF16 or AVX512-BF16,
    the instructions oneDNN uses for fast bfloat16 convolutions.

    Returns:
        bool. `False` where the flags cannot be read.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


def gpu_compute_capabilities() -> list[tuple[int, int]]:
    """Returns the CUDA compute capability of each visible GPU.

    Returns:
        list of `(major, minor)` tuples, empty on a machine without GPUs.
    """
    import tensorflow as tf

    capabilities = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        capabilities.append(tuple(details.get("compute_capability", (0, 0))))
    return capabilities


def resolve_precision(precision: str = "auto") -> str:
    """Turns a precision choice into a Keras dtype policy name.

    `"auto"` (or the `NINLAYERS_PRECISION` environment variable, when set)
    picks what is fastest on this machine without losing accuracy:
    `"mixed_float16"` when every visible GPU has tensor cores (compute
    capability 7.0 or more), `"float32"` on other GPUs, `"mixed_bfloat16"` on
    a CPU with AMX or AVX512-BF16, `"float32"` elsewhere. Mixed policies keep
    the weights, the softmax and the loss in float32.

    Args:
        precision: str. One of `"auto"`, `"float32"`, `"mixed_bfloat16"`,
            `"mixed_float16"`. Defaults to `"auto"`.

    Returns:
        str. A Keras dtype policy name.

    Example:

    >>> resolve_precision("float32")
    'float32'
    >>> resolve_precision("auto") in ("float32", "mixed_bfloat16", "mixed_float16")
    True
    """
    if precision == "auto":
        precision = os.environ.get(_ENV_PRECISION, "auto")
    if precision not in PRECISIONS:
        raise ValueError(
            f"`precision` must be one of {', '.join(map(repr, PRECISIONS))}. "
            f"Received: precision={precision!r}"
        )
    if precision != "auto":
        return precision
    capabilities = gpu_compute_capabilities()
    if capabilities:
        if all(major >= 7 for major, _ in capabilities):
            return "mixed_float16"
        return "float32"
    return "mixed_bfloat16" if cpu_supports_bfloat16() else "float32"


def resolve_jit_compile(jit_compile: bool | str = "auto") -> bool:
    """Turns an XLA choice into `True` or `False`.

    `"auto"` turns XLA on where a GPU is visible and off on CPU-only machines,
    where XLA measured about 2x slower than TensorFlow's oneDNN kernels.

    Args:
        jit_compile: bool or `"auto"`. Defaults to `"auto"`.

    Returns:
        bool.

    Example:

    >>> resolve_jit_compile(True)
    True
    """
    if isinstance(jit_compile, bool):
        return jit_compile
    if jit_compile != "auto":
        raise ValueError(
            "`jit_compile` must be True, False or 'auto'. "
            f"Received: jit_compile={jit_compile!r}"
        )
    if keras.backend.backend() != "tensorflow":
        return False
    return bool(gpu_compute_capabilities())


def get_strategy(strategy: str = "auto", devices: Sequence[str] | None = None) -> Any:
    """Returns a `tf.distribute` strategy by name.

    - `"default"`: TensorFlow's default strategy (one device);
    - `"mirrored"`: `tf.distribute.MirroredStrategy` over `devices`, or all
      local GPUs;
    - `"multiworker"`: `tf.distribute.MultiWorkerMirroredStrategy`, configured
      from the `TF_CONFIG` environment variable;
    - `"auto"`: mirrored when more than one GPU is visible, else default.

    Create the model and optimizer (and compile) inside `strategy.scope()`,
    and batch the data with the global batch size: each replica gets
    `batch_size / num_replicas_in_sync` of it.

    Args:
        strategy: str. One of `STRATEGIES`. Defaults to `"auto"`.
        devices: list of str or `None`. Devices of the mirrored strategy.

    Returns:
        tf.distribute.Strategy.

    Example:

    >>> get_strategy("default").num_replicas_in_sync
    1
    """
    import tensorflow as tf

    if strategy not in STRATEGIES:
        raise ValueError(
            f"`strategy` must be one of {', '.join(map(repr, STRATEGIES))}. "
            f"Received: strategy={strategy!r}"
        )
    if strategy == "auto":
        gpus = tf.config.list_logical_devices("GPU")
        strategy = "mirrored" if len(gpus) > 1 else "default"
    if strategy == "default":
        return tf.distribute.get_strategy()
    if strategy == "mirrored":
        return tf.distribute.MirroredStrategy(list(devices) if devices else None)
    if "TF_CONFIG" not in os.environ:
        raise ValueError(
            "The multiworker strategy needs the TF_CONFIG environment variable "
            "(cluster and task). Received: TF_CONFIG unset"
        )
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief() -> bool:
    """Returns whether this process is the chief of a multi-worker cluster.

    The chief is the task of type `"chief"`, or worker 0 when the cluster has
    no chief; without `TF_CONFIG` every process is its own chief.

    Example:

    >>> is_chief()
    True
    """
    config = os.environ.get("TF_CONFIG")
    if not config:
        return True
    try:
        parsed = json.loads(config)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"TF_CONFIG must be JSON. Received: TF_CONFIG={config!r} ({error})"
        ) from None
    task = parsed.get("task", {})
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    if kind == "chief":
        return True
    has_chief = "chief" in parsed.get("cluster", {})
    return kind == "worker" and index == 0 and not has_chief
