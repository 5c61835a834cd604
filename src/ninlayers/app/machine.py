"""What machine measured a figure: processor, instruction sets, libraries.

The machines this project runs on are not all one kind (an AMD EPYC with
AVX512-BF16 and no AMX, an Intel Xeon with AMX), and a speed means nothing
without its processor. Every report (`metrics.json`, `ninlayers benchmark`,
the scripts in benchmarks/) records `describe()`.
"""

from __future__ import annotations

import functools
import os
import platform
from typing import Any

__all__ = ["describe", "one_line"]

#: The CPU flags that decide which kernels oneDNN and XLA run.
KERNEL_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_bf16",
    "avx512_vnni",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


@functools.cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    model, flags = platform.processor() or "unknown", frozenset()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model in ("unknown", ""):
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = frozenset(value.split())
    except OSError:
        pass
    return model, flags


def describe() -> dict[str, Any]:
    """The machine and library versions, as a JSON-able dict.

    Keys: `processor` (its model name), `vcpus` (the CPUs this process may
    use), `kernel_flags` (those of `KERNEL_FLAGS` it has), `gpus` (devices
    the Keras backend sees), and `versions` (ninlayers, Keras, the backend,
    NumPy, Python).

    Example:

    >>> info = describe()
    >>> sorted(info)
    ['gpus', 'kernel_flags', 'processor', 'vcpus', 'versions']
    """
    from ninlayers.app.artifacts import versions

    model, flags = _cpuinfo()
    return {
        "processor": model,
        "vcpus": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "kernel_flags": [flag for flag in KERNEL_FLAGS if flag in flags],
        "gpus": _gpus(),
        "versions": versions(),
    }


def _gpus() -> list[str]:
    import keras

    if keras.backend.backend() != "tensorflow":
        return []
    import tensorflow as tf

    return [device.name for device in tf.config.list_physical_devices("GPU")]


def one_line(info: dict[str, Any] | None = None) -> str:
    """`describe()` in one line, for the top of a report.

    >>> one_line({"processor": "Xeon", "vcpus": 2, "kernel_flags": ["amx_bf16"],
    ...           "gpus": [], "versions": {"keras": "3", "keras_backend": "jax"}})
    'Xeon, 2 vCPUs, amx_bf16, no GPU; Keras 3 on jax'
    """
    info = info or describe()
    flags = ", ".join(info["kernel_flags"]) or "no AVX2"
    gpus = ", ".join(info["gpus"]) or "no GPU"
    versions = info["versions"]
    return (
        f"{info['processor']}, {info['vcpus']} vCPUs, {flags}, {gpus}; "
        f"Keras {versions['keras']} on {versions['keras_backend']}"
    )
