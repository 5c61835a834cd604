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

Where every block's convolutions take PyTorch's channels-last kernel with
ReLU between them (and `runtime.FOLD_BATCH_NORM`), the layers up to the
head's pooling run as a plan: for an input shape, the list of
PyTorch calls they make (each convolution with its batch norm folded in,
ReLU in place, max pooling) on the NCHW view of the tensor, its weights
made once while none of the variables changes. Of the blocks' logic the
plan repeats only their order (convolution, then ReLU but after a head's
last convolution); each convolution is `_torch_kernels.inference_unit`'s
and `fold`'s, as the block's own call in inference runs it.

Imported only on the torch backend.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import keras
import torch
import torch.nn.functional as F

from ninlayers import _torch_kernels, runtime
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
    steps = _plan(layers, x)
    if steps is not None:
        x = _torch_kernels._nchw(_cast(x, layers[0].compute_dtype))
        for step in steps:
            x = step(x)
        head = layers[-1]
        return _call(head.output_layer, _call(head.pool, _torch_kernels._nhwc(x)))
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
    x = _cast(x, layer.compute_dtype)
    if isinstance(layer, NiNBlock):
        return layer.call(x, training=False)
    return layer.call(x)


def _cast(x: Any, dtype: str) -> Any:
    """`x` in `dtype`, as a layer's `__call__` would give it to `call`."""
    if keras.backend.standardize_dtype(x.dtype) != dtype:
        return keras.ops.cast(x, dtype)
    return x


class _Unit:
    """One convolution of a plan (its batch norm folded in), then ReLU."""

    def __init__(self, conv: Any, norm: Any, shape: Sequence[int | None], relu: bool):
        self.conv, self.norm, self.relu = conv, norm, relu
        self.dtype = _torch_kernels.torch_dtype(conv.compute_dtype)
        unit = _torch_kernels.inference_unit(conv, norm, shape, self.dtype)
        self.padding, self.weights = unit if unit is not None else (None, {})

    def steps(self, values: Sequence[torch.Tensor]) -> list[Callable[..., Any]]:
        """PyTorch's calls, given the values of `self.weights`."""
        kernel, bias = _torch_kernels.fold(
            self.norm, self.dtype, **dict(zip(self.weights, values, strict=True))
        )
        convolve = functools.partial(
            F.conv2d,
            weight=kernel,
            bias=bias,
            stride=tuple(self.conv.strides),
            padding=self.padding,
            dilation=tuple(self.conv.dilation_rate),
        )
        return [convolve, torch.relu_] if self.relu else [convolve]


def _structure(
    layers: list[keras.layers.Layer], shape: tuple
) -> tuple[list, list] | None:
    """The plan's units and pooling calls for an NHWC input of `shape`, up
    to the head's pooling, and the variables the units read; `None` where
    a layer must run its own call."""
    items: list = []
    for layer in layers:
        if isinstance(layer, keras.layers.Dropout):
            continue
        if isinstance(layer, MaxPooling2D):
            padding = _torch_kernels.pool_padding(layer, shape)
            if padding is None:
                return None
            items.append(
                functools.partial(
                    F.max_pool2d,
                    kernel_size=tuple(layer.pool_size),
                    stride=tuple(layer.strides),
                    padding=padding,
                )
            )
            shape = layer.compute_output_shape(shape)
            continue
        block = layer.block if isinstance(layer, NiNClassifierHead) else layer
        if block.activation is not keras.activations.relu:
            return None
        last = len(block.convs) - 1
        for index, (conv, norm) in enumerate(
            zip(block.convs, block.norms, strict=True)
        ):
            unit = _Unit(conv, norm, shape, index < last or block.final_activation)
            if unit.padding is None:
                return None
            items.append(unit)
            shape = conv.compute_output_shape(shape)
    variables = [
        v for item in items if isinstance(item, _Unit) for v in item.weights.values()
    ]
    return items, variables


def _plan(layers: list[keras.layers.Layer], x: Any) -> list | None:
    """The PyTorch calls `layers` make on `x` up to the head's pooling,
    made once per input shape (the batch size aside) and kept while no
    weight changes; `None` where the layers run their own calls."""
    if not runtime.FOLD_BATCH_NORM:
        return None
    shape = (None, *x.shape[1:])
    key = ("plan", *map(id, layers), shape)
    structure = _torch_kernels.kept(key, lambda: _structure(layers, shape))
    if structure is None:
        return None
    items, variables = structure

    def make(*values: torch.Tensor) -> list[Callable[..., Any]]:
        steps, start = [], 0
        for item in items:
            if isinstance(item, _Unit):
                end = start + len(item.weights)
                steps.extend(item.steps(values[start:end]))
                start = end
            else:
                steps.append(item)
        return steps

    return _torch_kernels._cached(("plan-weights", *key), variables, make)
