"""NiN's channels-last kernels on the PyTorch backend.

Keras's torch backend runs each channels-last convolution and pooling by
copying its input to channels-first memory, then (for convolutions) back to
PyTorch's channels-last memory format, and batch normalisation as a dozen
elementwise operations. An NHWC tensor seen through `permute(0, 3, 1, 2)`
already is an NCHW tensor in PyTorch's channels-last memory format, the
layout oneDNN's convolution, batch norm and pooling kernels run fastest in:
these functions hand that view to PyTorch's own kernels and permute the
result back, without a copy. Each returns `None` where it does not apply
(the caller then runs Keras's own code), and gives the same results as
Keras's code (tests/test_fast_paths.py).

Imported only on the torch backend.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import torch
import torch.nn.functional as F

from ninlayers import _keras_compat

#: Converted weights, by variable, inside `cached_weights()`.
_CACHE: contextvars.ContextVar[dict[Any, tuple] | None] = contextvars.ContextVar(
    "ninlayers_torch_weights", default=None
)


def _nchw(x: torch.Tensor) -> torch.Tensor:
    """An NHWC tensor as NCHW in channels-last memory (a view when it can)."""
    return x.permute(0, 3, 1, 2)


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


def _same_padding(
    size: int | None, kernel: int, stride: int, dilation: int
) -> int | None:
    """The symmetric padding equal to Keras's "same", or `None` if it is
    not symmetric (or the size is unknown and the stride is not 1)."""
    effective = (kernel - 1) * dilation + 1
    if stride == 1:
        total = effective - 1
    elif size is None:
        return None
    else:
        total = max((-(-size // stride) - 1) * stride + effective - size, 0)
    return total // 2 if total % 2 == 0 else None


def _padding(
    padding: str,
    spatial: Sequence[int | None],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilation: Sequence[int],
) -> tuple[int, int] | None:
    if padding == "valid":
        return (0, 0)
    pads = tuple(
        _same_padding(n, k, s, d)
        for n, k, s, d in zip(spatial, kernel, strides, dilation, strict=True)
    )
    return None if None in pads else pads


@contextlib.contextmanager
def cached_weights() -> Iterator[None]:
    """Within it, outside autograd, each weight is converted once.

    A convolution's kernel is cast to the input's dtype and laid out as
    PyTorch's weight on every call; inside this context, with gradients
    off, the result is kept and reused while the variable's tensor is the
    same and unchanged (its version counter, which every assignment and
    optimizer step moves). For `predict` and `evaluate`, where the weights
    stay the same from batch to batch, as PyTorch's autocast keeps its
    casts of weights for one autocast region.
    """
    token = _CACHE.set({})
    try:
        yield
    finally:
        _CACHE.reset(token)


def _converted(
    weight: Any, dtype: torch.dtype, convert: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """`convert` of a weight's value: from the cache where it holds (the
    value as stored), else read as its layer would (a cast, in mixed
    precision: PyTorch casts a contiguous tensor fastest)."""
    # `torch.compile` traces the plain read (and no context variable).
    cache = None if torch.compiler.is_compiling() else _CACHE.get()
    if (
        cache is None
        or torch.is_grad_enabled()
        or not isinstance(weight, keras.Variable)  # LoRA: a tensor per call
    ):
        return convert(keras.ops.convert_to_tensor(weight))
    value = _keras_compat.uncast_value(weight)
    key = (id(weight), dtype)
    held = cache.get(key)
    # The same variable, holding the same tensor, not written since.
    if held and held[0] is weight and held[1] is value and held[2] == value._version:
        return held[3]
    converted = convert(value)
    cache[key] = (weight, value, value._version, converted)
    return converted


def _kernel(kernel: Any, dtype: torch.dtype) -> torch.Tensor:
    """A Keras HWIO kernel as PyTorch's OIHW weight in `dtype`, laid out in
    the channels-last memory oneDNN runs: once, where PyTorch would lay out
    a plain cast in the forward and again in the backward pass. (The cast
    comes first: PyTorch transposes a bfloat16 tensor faster, and a cast
    and transpose in one copy was slower than the two.)"""

    def convert(value: torch.Tensor) -> torch.Tensor:
        value = value.to(dtype).permute(3, 2, 0, 1)
        if torch.compiler.is_compiling():
            return value  # `torch.compile` chooses layouts itself.
        return value.contiguous(memory_format=torch.channels_last)

    return _converted(kernel, dtype, convert)


def conv2d(layer: Any, x: torch.Tensor) -> torch.Tensor | None:
    """A channels-last `keras.layers.Conv2D`'s convolution, bias and
    activation on an NHWC tensor; `None` where this path does not apply."""
    if layer.data_format != "channels_last" or layer.groups != 1 or x.ndim != 4:
        return None
    dilation = tuple(layer.dilation_rate)
    padding = _padding(
        layer.padding, x.shape[1:3], layer.kernel_size, layer.strides, dilation
    )
    if padding is None:
        return None
    x = keras.ops.convert_to_tensor(x)
    dtype = x.dtype
    kernel = _kernel(layer.kernel, dtype)
    bias = None
    if layer.use_bias:
        bias = _converted(layer.bias, dtype, lambda value: value.to(dtype))
    y = F.conv2d(_nchw(x), kernel, bias, tuple(layer.strides), padding, dilation)
    y = _nhwc(y)
    return y if layer.activation is None else layer.activation(y)


def batch_norm(
    layer: Any, x: torch.Tensor, training: bool
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """Batch norm of an NHWC tensor over its last axis with PyTorch's kernel.

    Returns:
        The normalised tensor (in `x`'s dtype) and, in training, the batch's
        mean and biased variance in float32 (for the moving statistics).
    """
    # Float32, as the variables are: PyTorch takes them with any `x`.
    vector = {"size": (x.shape[-1],), "dtype": torch.float32, "device": x.device}
    scale = layer.gamma.value if layer.scale else torch.ones(**vector)
    offset = layer.beta.value if layer.center else torch.zeros(**vector)
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        x = x.float()
    if training:
        y, mean, inverse_std = torch.ops.aten.native_batch_norm(
            _nchw(x), scale, offset, None, None, True, 0.0, layer.epsilon
        )
        with torch.no_grad():
            variance = inverse_std.float().pow(-2) - layer.epsilon
        return _nhwc(y), (mean.float().detach(), variance)
    y = F.batch_norm(
        _nchw(x),
        layer.moving_mean.value,
        layer.moving_variance.value,
        scale,
        offset,
        False,
        0.0,
        layer.epsilon,
    )
    return _nhwc(y), None


def update_moving(layer: Any, mean: torch.Tensor, variance: torch.Tensor) -> None:
    """A batch norm's moving statistics, `moving * momentum + batch * (1 -
    momentum)` as Keras's, in one PyTorch kernel each (Keras's variable
    arithmetic is three operations and their Python)."""
    weight = 1.0 - layer.momentum
    for moving, batch in ((layer.moving_mean, mean), (layer.moving_variance, variance)):
        moving.assign(torch.lerp(moving.value, batch, weight))


def max_pool(layer: Any, x: torch.Tensor) -> torch.Tensor | None:
    """A channels-last `keras.layers.MaxPooling2D` on an NHWC tensor; `None`
    where this path does not apply."""
    if layer.data_format != "channels_last" or x.ndim != 4:
        return None
    padding = _padding(
        layer.padding, x.shape[1:3], layer.pool_size, layer.strides, (1, 1)
    )
    if padding is None or any(
        2 * p > k for p, k in zip(padding, layer.pool_size, strict=True)
    ):
        return None
    y = F.max_pool2d(_nchw(x), tuple(layer.pool_size), tuple(layer.strides), padding)
    return _nhwc(y)
