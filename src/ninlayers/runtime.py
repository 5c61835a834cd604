"""Per-device choices: numeric precision, XLA, distribution strategies.

On a CPU with bfloat16 dot products (AVX512-BF16 or AMX), `mixed_bfloat16`
trains NiN about twice as fast as float32 at the same accuracy, and XLA on
TensorFlow is slower than its oneDNN kernels; on NVIDIA GPUs with tensor
cores, float16 with loss scaling and XLA are the fast choices
(docs/performance.md has the measurements). The functions here encode that,
and every choice can be overridden.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import weakref
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import keras

from ninlayers import _checks, _keras_compat

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = [
    "ARRAY_DATA_AUTOTUNE",
    "FOLD_BATCH_NORM",
    "PRECISIONS",
    "PREDICT_BATCH_PIXELS",
    "PREDICT_STEPS_PER_EXECUTION",
    "STRATEGIES",
    "DataParallel",
    "PROCESS_ENV",
    "SingleDevice",
    "get_strategy",
    "is_chief",
    "jax_processes",
    "local_model",
    "num_processes_from_env",
    "spans_processes",
    "strategy_name",
    "task_dir_name",
    "cpu_supports_bfloat16",
    "gpu_compute_capabilities",
    "resolve_jit_compile",
    "resolve_precision",
]

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")

_ENV_PRECISION = "NINLAYERS_PRECISION"

STRATEGIES = ("auto", "default", "mirrored", "multiworker", "data-parallel")

#: Keras's environment variables for several JAX processes
#: (`keras.distribution.initialize`): the coordinator's address (process
#: 0's, `host:port`), the number of processes and this one's index.
PROCESS_ENV = (
    "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "KERAS_DISTRIBUTION_PROCESS_ID",
)

#: Whether the `tf.data` pipelines Keras builds from NumPy arrays, for a
#: NiN model's `fit`, `evaluate` and `predict` on TensorFlow, autotune
#: their buffers (`tf.data.Options().autotune.enabled`). Off by default:
#: with it on, each pipeline's iterator runs a tuning thread, and the
#: iterator's end (each epoch's, each `predict`'s) can wait for that
#: thread's sleep to run out, cores idle, up to as long again as the
#: iterator ran (measured in docs/performance.md). Set it to `True` for
#: Keras's own behaviour. A dataset you pass keeps its options.
ARRAY_DATA_AUTOTUNE = False

#: Whether `predict` and `evaluate` of a NiN classifier (and a backbone's
#: `predict`) on PyTorch and TensorFlow fold each batch norm into the
#: convolution before it: the moving statistics, scale and offset become the
#: kernel's scale and the bias, where the backend would run a batch norm
#: kernel on every batch (on PyTorch once per call; on TensorFlow in the
#: graph, which then fuses convolution, bias and ReLU into one kernel;
#: measured in docs/performance.md). Under mixed precision the probabilities
#: then differ from `model(x)`'s by bfloat16 rounding; `False` runs the same
#: kernels as `model(x)`. JAX does not read it.
FOLD_BATCH_NORM = True

#: Batches per call of the compiled predict function in a NiN classifier's
#: or backbone's `predict`, by backend (only TensorFlow's is read), where
#: the model was compiled with Keras's `steps_per_execution=1` and neither
#: a callback nor `steps` is passed. On TensorFlow each call of the graph
#: costs time besides the kernels (measured in docs/performance.md). `{}`
#: keeps one batch per call.
PREDICT_STEPS_PER_EXECUTION: dict[str, int] = {"tensorflow": 8}

#: Pixels per batch (height x width x images) of a NiN classifier's or
#: backbone's `predict` of image arrays where the caller passes no batch
#: size (nor `steps` nor a callback), by backend (only TensorFlow's is
#: read): 128 images of 28x28, never fewer than Keras's 32 (so 32 from
#: 56x56 up). On an AMX processor larger batches fill its tiles better
#: (measured in docs/performance.md). `{}` keeps Keras's 32.
PREDICT_BATCH_PIXELS: dict[str, int] = {"tensorflow": 128 * 28 * 28}

# Backends whose CPU kernels run bfloat16 faster than float32 where the CPU
# has bfloat16 dot products (docs/backends.md has the measurements).
_CPU_BFLOAT16_BACKENDS = ("tensorflow", "torch")


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
    """Returns the CUDA compute capability of each GPU the backend sees.

    Asks the active Keras backend (TensorFlow, JAX or PyTorch), so a JAX or
    PyTorch user's GPUs count without TensorFlow being imported.

    Returns:
        list of `(major, minor)` tuples, empty on a machine without GPUs.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return [
            _capability(getattr(device, "compute_capability", "0.0"))
            for device in jax.devices()
            if device.platform == "gpu"
        ]
    if backend == "torch":
        import torch

        if not torch.cuda.is_available():
            return []
        count = torch.cuda.device_count()
        return [tuple(torch.cuda.get_device_capability(i)) for i in range(count)]
    if backend != "tensorflow":
        return []
    import tensorflow as tf

    capabilities = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        capabilities.append(tuple(details.get("compute_capability", (0, 0))))
    return capabilities


def _capability(text: str) -> tuple[int, int]:
    major, _, minor = str(text).partition(".")
    return (int(major or 0), int(minor or 0))


def resolve_precision(precision: str = "auto") -> str:
    """Turns a precision choice into a Keras dtype policy name.

    `"auto"` (or the `NINLAYERS_PRECISION` environment variable, when set)
    picks what is fastest on this machine without losing accuracy:
    `"mixed_float16"` when every GPU the backend sees has tensor cores
    (compute capability 7.0 or more), `"float32"` on other GPUs,
    `"mixed_bfloat16"` on a CPU with AMX or AVX512-BF16 under TensorFlow or
    PyTorch (oneDNN's bfloat16 kernels), `"float32"` elsewhere, JAX on a CPU
    included (XLA's CPU kernels gain nothing from bfloat16 there). Mixed
    policies keep the weights, the softmax and the loss in float32.

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
    _checks.one_of("precision", precision, PRECISIONS)
    if precision != "auto":
        return precision
    capabilities = gpu_compute_capabilities()
    if capabilities:
        if all(major >= 7 for major, _ in capabilities):
            return "mixed_float16"
        return "float32"
    fast_bfloat16 = keras.backend.backend() in _CPU_BFLOAT16_BACKENDS
    return "mixed_bfloat16" if fast_bfloat16 and cpu_supports_bfloat16() else "float32"


def resolve_jit_compile(jit_compile: bool | str = "auto") -> bool:
    """Turns an XLA choice into `True` or `False`.

    `"auto"` follows the backend: on JAX, XLA is how Keras runs at all
    (without it every op runs alone, and NiN trained 1.7x slower on a CPU),
    so it is on; on TensorFlow it is on where a GPU is visible and off on
    CPU-only machines, where TensorFlow's oneDNN kernels are faster for NiN;
    on PyTorch it is off (`torch.compile` is opt-in).

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
            "`jit_compile` must be one of True, False, 'auto'. "
            f"Received: jit_compile={jit_compile!r}"
        )
    backend = keras.backend.backend()
    if backend == "jax":
        return True
    if backend != "tensorflow":
        return False
    return bool(gpu_compute_capabilities())


class SingleDevice:
    """The strategy of one device on a backend without `tf.distribute`."""

    num_replicas_in_sync = 1

    def scope(self) -> contextlib.AbstractContextManager:
        """A scope that changes nothing."""
        return contextlib.nullcontext()


class DataParallel:
    """JAX's data parallelism over every device of every process.

    Sets `keras.distribution.DataParallel` over `jax.devices()` as Keras's
    distribution for the process: each step splits the global batch over the
    devices, and batch norm normalises with the global batch. With Keras's
    `PROCESS_ENV` variables naming several processes it first joins them
    (`keras.distribution.initialize`, before any JAX computation); a
    `tf.data` input is then split between the processes by Keras, each
    process reading every `num_processes`-th part of each global batch.

    Args:
        devices: list of str or `None`. Devices of the mesh (`None`: all).

    Example:

    >>> import keras
    >>> if keras.backend.backend() == "jax":
    ...     strategy = DataParallel()
    ...     keras.distribution.set_distribution(None)  # undo, for this example
    """

    def __init__(self, devices: Sequence[str] | None = None) -> None:
        import jax

        processes = num_processes_from_env()
        if processes > 1 and not _jax_distributed_ready():
            _check_hostname_resolves()
            keras.distribution.initialize()
        self.distribution = keras.distribution.DataParallel(
            devices=list(devices) if devices else None
        )
        keras.distribution.set_distribution(self.distribution)
        self.num_replicas_in_sync = len(self.distribution.device_mesh.devices.flat)
        self.num_processes = jax.process_count()
        self.process_id = jax.process_index()

    def scope(self) -> contextlib.AbstractContextManager:
        """A scope that changes nothing: the distribution is already set."""
        return contextlib.nullcontext()


def _check_hostname_resolves() -> None:
    """JAX's CPU collectives (Gloo) look up this machine's own name; where
    it does not resolve they fail with an opaque "enforce fail"."""
    import socket

    name = socket.gethostname()
    try:
        socket.getaddrinfo(name, None)
    except OSError as error:
        raise OSError(
            f"This machine's hostname {name!r} does not resolve, and JAX's CPU "
            "collectives (Gloo) need it to: add it to /etc/hosts (for example "
            f"'127.0.1.1 {name}'). Received: {error}"
        ) from None


def _jax_distributed_ready() -> bool:
    import jax

    return jax.distributed.is_initialized()


def jax_processes() -> int:
    """How many JAX processes train together (1 on other backends, or before
    they join).

    Example:

    >>> jax_processes()
    1
    """
    if keras.backend.backend() != "jax" or not _jax_distributed_ready():
        return 1
    import jax

    return jax.process_count()


def num_processes_from_env() -> int:
    """The JAX process count Keras's `PROCESS_ENV` names (1 when unset).

    Example:

    >>> num_processes_from_env()
    1
    """
    value = os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "1")
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(
            "KERAS_DISTRIBUTION_NUM_PROCESSES must be a positive whole number. "
            f"Received: {value!r}"
        )
    return count


def spans_processes(strategy: object) -> bool:
    """Returns whether a strategy trains across several processes: a
    multi-worker `tf.distribute` strategy, or `DataParallel` over several JAX
    processes.

    Example:

    >>> spans_processes(SingleDevice())
    False
    """
    if isinstance(strategy, DataParallel):
        return strategy.num_processes > 1
    if isinstance(strategy, SingleDevice):
        return False
    return _keras_compat.in_multi_worker_mode(strategy)


@contextlib.contextmanager
def local_model(model: keras.Model) -> Iterator[keras.Model]:
    """Yields `model`, or, under `DataParallel` across several JAX processes,
    a copy of it that runs on this process alone.

    A model distributed across processes computes only when every process
    calls it. Within the block Keras's distribution is unset and the copy
    (same configuration and weights, not compiled) predicts on this
    process's devices, as the chief does to score and draw.

    Args:
        model: keras.Model.

    Yields:
        keras.Model.

    Example:

    >>> import keras
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> with local_model(model) as scorer:
    ...     print(scorer is model)
    True
    """
    if jax_processes() == 1:
        yield model
        return
    weights = model.get_weights()  # replicated: every process has them all
    distribution = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        # One copy per model, refreshed: its compiled predict is reused.
        copy = _LOCAL_COPIES.get(model)
        if copy is None:
            copy = _LOCAL_COPIES[model] = model.__class__.from_config(
                model.get_config()
            )
        copy.set_weights(weights)
        yield copy
    finally:
        keras.distribution.set_distribution(distribution)


_LOCAL_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


#: How long a worker may miss heartbeats before the others call it dead.
#: TensorFlow's default, 10 s, is short for a starved process on a busy
#: 2-core machine.
COORDINATION_HEARTBEAT_MS = 120_000
#: How long workers wait for each other when they exit, so that none
#: leaves while another still talks to it.
COORDINATION_SHUTDOWN_MS = 120_000


def get_strategy(
    strategy: str = "auto", devices: Sequence[str] | None = None
) -> tf.distribute.Strategy | SingleDevice | DataParallel:
    """Returns a `tf.distribute` strategy by name.

    - `"default"`: TensorFlow's default strategy (one device);
    - `"mirrored"`: `tf.distribute.MirroredStrategy` over `devices`, or all
      local GPUs;
    - `"multiworker"`: `tf.distribute.MultiWorkerMirroredStrategy`, configured
      from the `TF_CONFIG` environment variable;
    - `"auto"`: mirrored when more than one GPU is visible, else default;
    - `"data-parallel"` (JAX): `DataParallel`, over every device of every
      process Keras's `PROCESS_ENV` variables name.

    Create the model and optimizer (and compile) inside `strategy.scope()`,
    and batch the data with the global batch size: each replica gets
    `batch_size / num_replicas_in_sync` of it.

    `tf.distribute` is TensorFlow's: on the JAX and PyTorch backends
    `"auto"` and `"default"` give a `SingleDevice` (whose `scope()` does
    nothing) and the other `tf.distribute` names are refused; on JAX,
    `"data-parallel"` distributes with `keras.distribution.DataParallel`
    (docs/distributed.md).

    Args:
        strategy: str. One of `STRATEGIES`. Defaults to `"auto"`.
        devices: list of str or `None`. Devices of the mirrored strategy.

    Returns:
        tf.distribute.Strategy, `SingleDevice` or `DataParallel`.

    Example:

    >>> get_strategy("default").num_replicas_in_sync
    1
    """
    _checks.one_of("strategy", strategy, STRATEGIES)
    backend = keras.backend.backend()
    if strategy == "data-parallel":
        if backend != "jax":
            raise ValueError(
                "`strategy='data-parallel'` is JAX's keras.distribution and "
                "needs KERAS_BACKEND=jax (on TensorFlow, use 'mirrored' or "
                f"'multiworker'). Received: KERAS_BACKEND={backend!r}"
            )
        return DataParallel(devices)
    if backend != "tensorflow":
        if strategy not in ("auto", "default"):
            raise ValueError(
                f"`strategy={strategy!r}` is a tf.distribute strategy and needs "
                "the TensorFlow backend (on JAX, use 'data-parallel'). Received: "
                f"strategy={strategy!r} with KERAS_BACKEND={backend!r}"
            )
        return SingleDevice()
    import tensorflow as tf

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
    _keras_compat.configure_coordination(
        heartbeat_timeout_ms=COORDINATION_HEARTBEAT_MS,
        shutdown_barrier_ms=COORDINATION_SHUTDOWN_MS,
    )
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief() -> bool:
    """Returns whether this process is the chief of a multi-worker cluster.

    The chief is the task of type `"chief"`, or worker 0 when the cluster has
    no chief; on JAX, process 0 of the processes Keras's `PROCESS_ENV`
    variables name. A process in no cluster is its own chief.

    Example:

    >>> is_chief()
    True
    """
    process = _jax_process_id()
    if process is not None:
        return process == 0
    parsed = _tf_config()
    if parsed is None:
        return True
    task = parsed.get("task", {})
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    if kind == "chief":
        return True
    has_chief = "chief" in parsed.get("cluster", {})
    return kind == "worker" and index == 0 and not has_chief


def _jax_process_id() -> int | None:
    """This process's index among several JAX processes (`PROCESS_ENV`);
    `None` on other backends or when there is one process."""
    if keras.backend.backend() != "jax" or num_processes_from_env() < 2:
        return None
    value = os.environ.get("KERAS_DISTRIBUTION_PROCESS_ID", "")
    if not value.isdigit():
        raise ValueError(
            "KERAS_DISTRIBUTION_PROCESS_ID must be this process's index, a "
            f"whole number from 0. Received: {value!r}"
        )
    return int(value)


def _tf_config() -> dict | None:
    """The parsed `TF_CONFIG`, or `None` when it is unset."""
    config = os.environ.get("TF_CONFIG")
    if not config:
        return None
    try:
        return json.loads(config)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"TF_CONFIG must be JSON. Received: TF_CONFIG={config!r} ({error})"
        ) from None


def task_dir_name() -> str | None:
    """A non-chief task's own directory name (`".worker-1"`), `None` for the
    chief: where a worker keeps its files inside a run's output directory.

    Example:

    >>> task_dir_name() is None
    True
    """
    if is_chief():
        return None
    process = _jax_process_id()
    if process is not None:
        return f".process-{process}"
    task = (_tf_config() or {}).get("task", {})
    return f".{task.get('type', 'worker')}-{task.get('index', 0)}"


def strategy_name(
    strategy: tf.distribute.Strategy | SingleDevice | DataParallel,
) -> str:
    """The strategy's public class name (TensorFlow's classes are aliases).

    Example:

    >>> strategy_name(SingleDevice())
    'SingleDevice'
    """
    if isinstance(strategy, (SingleDevice, DataParallel)):
        return type(strategy).__name__
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"
    return type(strategy).__name__.lstrip("_")
