"""A classifier's inference on PyTorch: NiN's layers called without `__call__`.

Keras runs a model eagerly on PyTorch, and each layer's `Layer.__call__`
(input conversion, call context, masks, autocast scopes, the module's
hooks) is Python around every layer on every batch. Inside `predict` and
`evaluate` (`_torch_kernels.inference()`), a classifier made only of NiN's
own layers (the trunk's blocks, pooling and dropout, then the head), each
with the model's dtype policy and no activity regularizer, runs them through
`Layer.call`: the model's own `__call__` has already converted the input
and opened the autocast scope each layer's would open again. Anything else
(another layer, a subclass, a mask, training) takes Keras's functional call.

Imported only on the torch backend.
"""

from __future__ import annotations

from typing import Any

import keras

from ninlayers import _torch_kernels
from ninlayers.layers import MaxPooling2D, NiNBlock, NiNClassifierHead

#: Layers run through `Layer.call`, by exact type (a subclass may do more).
_LAYERS = (NiNBlock, MaxPooling2D, keras.layers.Dropout, NiNClassifierHead)
_HEAD_LAYERS = (
    NiNBlock,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.Activation,
)


def chain(model: Any, inputs: Any) -> list[keras.layers.Layer] | None:
    """The classifier's layers after its input, in order, where they can run
    through `Layer.call` on `inputs`; `None` where Keras's call must run."""
    if not _torch_kernels.inference() or len(inputs.shape) != 4:
        return None
    layers = model.layers[1:]
    if layers[:-1] != model.backbone.layers[1:] or layers[-1] is not model.head:
        return None
    head = model.head
    policy = model.dtype_policy.name
    if not all(
        type(layer) in _LAYERS and _plain(layer) and layer.dtype_policy.name == policy
        for layer in layers
    ):
        return None
    parts = (head.block, head.pool, head.output_layer)
    if not all(type(p) in _HEAD_LAYERS and _plain(p) for p in parts):
        return None
    return layers


def _plain(layer: keras.layers.Layer) -> bool:
    return layer.built and layer.activity_regularizer is None


def run(layers: list[keras.layers.Layer], x: Any) -> Any:
    """`x` through `layers` (from `chain`) in inference."""
    for layer in layers:
        if isinstance(layer, NiNClassifierHead):
            x = _call(layer.block, x)
            x = _call(layer.output_layer, _call(layer.pool, x))
        else:
            x = _call(layer, x)
    return x


def _call(layer: keras.layers.Layer, x: Any) -> Any:
    """`layer(x, training=False)` as its `__call__` would run it here."""
    if isinstance(layer, keras.layers.Dropout):
        return x
    if keras.backend.standardize_dtype(x.dtype) != layer.compute_dtype:
        x = keras.ops.cast(x, layer.compute_dtype)
    if isinstance(layer, NiNBlock):
        return layer.call(x, training=False)
    return layer.call(x)
