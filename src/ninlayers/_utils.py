"""Small helpers shared by the library's modules."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import keras


def all_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Yields every layer of a model, and of the models nested in it, in order."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)


def follow_rename(
    kind: str, name: Any, renamed: Mapping[str, str], warn: bool = True
) -> Any:
    """`name`, or the name it was renamed to, with a `DeprecationWarning`
    (the old names go in 0.4.0) unless `warn` is false.

    >>> follow_rename("Recipe", "seed", {"seed": "tutorial"}, warn=False)
    'tutorial'
    """
    if not isinstance(name, str) or name not in renamed:
        return name
    if warn:
        warnings.warn(
            f"{kind} {name!r} is now called {renamed[name]!r}; the old name "
            "goes in 0.4.0.",
            DeprecationWarning,
            stacklevel=3,
        )
    return renamed[name]


def inference_weights(model: keras.Model) -> contextlib.AbstractContextManager:
    """`model`'s weights as a whole `predict` or `evaluate` reads them. On
    PyTorch each weight cast and laid out once, not once per batch
    (`_torch_kernels.cached_weights`, which also folds batch norm into
    convolutions); on TensorFlow batch norm folded into convolutions in the
    graph (`_tf_inference.folding`); nothing elsewhere."""
    backend = keras.backend.backend()
    if backend == "torch":
        from ninlayers import _torch_kernels

        return _torch_kernels.cached_weights()
    if backend == "tensorflow":
        from ninlayers import _tf_inference

        return _tf_inference.folding(model)
    return contextlib.nullcontext()
