"""Small helpers shared by the library's modules."""

from __future__ import annotations

from collections.abc import Iterator

import keras


def all_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Yields every layer of a model, and of the models nested in it, in order."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)
