"""How NiN models feed TensorFlow's `fit`, `evaluate` and `predict`.

Keras turns NumPy arrays into a `tf.data` pipeline whose buffers tf.data
autotunes, and its `predict` calls the compiled function once per batch.
On small CPUs both cost measurable time (docs/performance.md): ninlayers
feeds arrays without autotuning (`runtime.ARRAY_DATA_AUTOTUNE`), reads
them for `predict` in larger batches where the caller names none
(`runtime.PREDICT_BATCH_PIXELS`) and runs several batches per call of
`predict`'s graph (`runtime.PREDICT_STEPS_PER_EXECUTION`), each through
Keras's own pipeline and `steps_per_execution`. The other backends pass
through.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import keras

from ninlayers import _keras_compat, runtime


@contextlib.contextmanager
def predict_arguments(
    model: keras.Model, x: Any, args: tuple, kwargs: dict
) -> Iterator[tuple[Any, tuple, dict]]:
    """`predict`'s `(x, args, kwargs)` to pass to `keras.Model.predict`,
    with several batches per call of the graph inside the context."""
    if keras.backend.backend() != "tensorflow":
        yield x, args, kwargs
        return
    bound = inspect.signature(keras.Model.predict).bind(model, x, *args, **kwargs)
    if _default_batch_size(bound.arguments):
        x, args, kwargs = bound.args[1], bound.args[2:], bound.kwargs
    with _batches_per_call(model, bound.arguments):
        dataset = _untuned_dataset(model, bound.arguments)
        if dataset is None:
            yield x, args, kwargs
            return
        bound.arguments.pop("batch_size", None)
        bound.arguments["x"] = dataset
        yield bound.args[1], bound.args[2:], bound.kwargs


def predict_batch_size(shape: Any) -> int | None:
    """The batch size of a NiN model's `predict` on TensorFlow of an array
    of images of `shape` (batch first, channels last) where the caller
    names none: `runtime.PREDICT_BATCH_PIXELS` of them, at least Keras's
    32; `None` for Keras's own choice."""
    pixels = runtime.PREDICT_BATCH_PIXELS.get("tensorflow")
    if pixels is None or shape is None or len(shape) != 4:
        return None
    if not shape[1] or not shape[2]:  # empty images: the model refuses them
        return None
    return max(_KERAS_BATCH_SIZE, pixels // (shape[1] * shape[2]))


def _default_batch_size(arguments: dict[str, Any]) -> bool:
    """Gives `predict`'s arguments (bound to Keras's signature)
    `predict_batch_size` where they name no batch size, no `steps` (which
    counts batches) and no callbacks, for an array of images; whether it
    did."""
    size = predict_batch_size(getattr(arguments["x"], "shape", None))
    if (
        size is None
        or arguments.get("batch_size") is not None
        or arguments.get("steps") is not None
        or arguments.get("callbacks")
        or not _keras_compat.reads_as_arrays(arguments["x"])
    ):
        return False
    arguments["batch_size"] = size
    return True


#: Keras's `predict` batch size where none is given.
_KERAS_BATCH_SIZE = 32


def autotune_options(enabled: bool = False) -> Any:
    """`tf.data.Options` with autotuning `enabled` (off: how ninlayers
    feeds arrays, `runtime.ARRAY_DATA_AUTOTUNE`)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = enabled
    return options


def untuned_array_dataset(
    x: Any, batch_size: int | None, y: Any = None, shuffle: bool = False
) -> Any:
    """Keras's own `tf.data` pipeline for arrays
    (`_keras_compat.array_dataset`: `predict`'s, or `fit`'s with `y` and
    `shuffle`) without autotuning; `None` for what is not arrays."""
    dataset = _keras_compat.array_dataset(x, batch_size, y, shuffle)
    return None if dataset is None else dataset.with_options(autotune_options())


def _untuned_dataset(model: Any, arguments: dict[str, Any]) -> Any:
    """`predict`'s arrays (its arguments bound to Keras's signature) as
    Keras's own `tf.data` pipeline for them without autotuning (as `fit`
    and `evaluate` read them, `classifier._symbolic_build`); `None` with
    `runtime.ARRAY_DATA_AUTOTUNE`, under a `tf.distribute` strategy, with
    `steps`, or for what is not arrays."""
    if (
        runtime.ARRAY_DATA_AUTOTUNE
        or _keras_compat.trainer_strategy(model) is not None
        or arguments.get("steps") is not None
    ):
        return None
    return untuned_array_dataset(arguments["x"], arguments.get("batch_size"))


@contextlib.contextmanager
def _batches_per_call(model: Any, arguments: dict[str, Any]) -> Iterator[None]:
    """Within it, TensorFlow's `predict` runs several batches per call of
    its graph (`runtime.PREDICT_STEPS_PER_EXECUTION`), through Keras's own
    `steps_per_execution`, where the model keeps Keras's one and `predict`
    has no callbacks, no `steps` (Keras's calls would read whole groups of
    batches past it) and no `tf.distribute` strategy."""
    steps = runtime.PREDICT_STEPS_PER_EXECUTION.get("tensorflow", 1)
    if (
        steps <= 1
        or model.steps_per_execution != 1
        or arguments.get("callbacks")
        or arguments.get("steps") is not None
        or _keras_compat.trainer_strategy(model) is not None
    ):
        yield
        return
    # Keras builds its predict function for `steps_per_execution`: one built
    # for single batches would read only the first of each call's batches.
    if not getattr(model.predict_function, _MULTI_STEP, False):
        model.predict_function = None
    model.steps_per_execution = steps
    try:
        yield
    finally:
        model.steps_per_execution = 1
        if model.predict_function is not None:
            setattr(model.predict_function, _MULTI_STEP, True)


#: Marks a predict function Keras built for several batches per call.
_MULTI_STEP = "_ninlayers_multi_step"
