"""NiN's channels-last kernels on the PyTorch backend.

Keras's torch backend runs each channels-last convolution and pooling by
copying its input to channels-first memory, then (for convolutions) back to
PyTorch's channels-last memory format, and batch normalisation as a dozen
elementwise operations. An NHWC tensor seen through `permute(0, 3, 1, 2)`
already is an NCHW tensor in PyTorch's channels-last memory format, the
layout oneDNN's convolution, batch norm and pooling kernels run fastest in:
these functions hand that view to PyTorch's own kernels and permute the
result back, without a copy. In `predict` and `evaluate` (`inference()`)
converted weights are kept while unchanged, and a convolution followed by
batch norm runs as one convolution with the batch norm folded in. Each
returns `None` where it does not apply (the caller then runs Keras's own
code), and gives Keras's results (tests/test_fast_paths.py).

Imported only on the torch backend.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

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


def inference() -> bool:
    """Whether this runs inside `cached_weights()` with gradients off and
    outside `torch.compile`: `predict` or `evaluate`, where NiN's inference
    paths run (converted weights kept, batch norm folded, `Layer.call`)."""
    # `torch.compile` traces no context variable: ask it first.
    return (
        not torch.compiler.is_compiling()
        and not torch.is_grad_enabled()
        and _CACHE.get() is not None
    )


def kept(key: tuple, make: Callable[[], Any]) -> Any:
    """`make()`, once per key inside one `cached_weights()` context (one
    `predict` or `evaluate`): for what depends on no weight's value."""
    cache = _CACHE.get()
    if key not in cache:
        cache[key] = make()
    return cache[key]


def torch_dtype(name: str) -> torch.dtype:
    """PyTorch's dtype of a Keras dtype name."""
    return getattr(torch, keras.backend.standardize_dtype(name))


def _cached(key: tuple, variables: Sequence[Any], make: Callable[..., Any]) -> Any:
    """`make` of the variables' values as stored, kept in the cache while
    each variable still holds the same tensor, not written since (its
    version counter, which every assignment and optimizer step moves)."""
    cache = _CACHE.get()
    values = _keras_compat.uncast_values(variables)
    held = cache.get(key)
    if held is not None and all(
        old[0] is variable and old[1] is value and old[2] == value._version
        for old, variable, value in zip(held[0], variables, values, strict=True)
    ):
        return held[1]
    made = make(*values)
    stamps = [
        (v, value, value._version) for v, value in zip(variables, values, strict=True)
    ]
    cache[key] = (stamps, made)
    return made


def _converted(
    weight: Any, dtype: torch.dtype, convert: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """`convert` of a weight's value: from the cache in `inference()`, else
    read as its layer would (a cast, in mixed precision: PyTorch casts a
    contiguous tensor fastest)."""
    if not inference() or not isinstance(weight, keras.Variable):  # LoRA
        return convert(keras.ops.convert_to_tensor(weight))
    return _cached((id(weight), dtype), (weight,), convert)


def _kernel(kernel: Any, dtype: torch.dtype) -> torch.Tensor:
    """A Keras HWIO kernel as PyTorch's weight (`_weight`): once, where
    PyTorch would lay out a plain cast in the forward and again in the
    backward pass."""
    return _converted(kernel, dtype, lambda value: _weight(value, dtype))


def _weight(kernel: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An HWIO kernel as PyTorch's OIHW weight in `dtype`, laid out in the
    channels-last memory oneDNN runs. (The cast comes first: PyTorch
    transposes a bfloat16 tensor faster, and a cast and transpose in one
    copy was slower than the two.)"""
    kernel = kernel.to(dtype).permute(3, 2, 0, 1)
    if torch.compiler.is_compiling():
        return kernel  # `torch.compile` chooses layouts itself.
    return kernel.contiguous(memory_format=torch.channels_last)


def _conv_padding(layer: Any, shape: Sequence[int | None]) -> tuple[int, int] | None:
    """The padding PyTorch's kernel takes for a `keras.layers.Conv2D` on an
    NHWC input of `shape`; `None` where the channels-last path does not apply."""
    if layer.data_format != "channels_last" or layer.groups != 1 or len(shape) != 4:
        return None
    return _padding(
        layer.padding,
        shape[1:3],
        layer.kernel_size,
        layer.strides,
        tuple(layer.dilation_rate),
    )


def conv2d(layer: Any, x: torch.Tensor) -> torch.Tensor | None:
    """A channels-last `keras.layers.Conv2D`'s convolution, bias and
    activation on an NHWC tensor; `None` where this path does not apply."""
    padding = _conv_padding(layer, x.shape)
    if padding is None:
        return None
    x = keras.ops.convert_to_tensor(x)
    dtype = x.dtype
    kernel = _kernel(layer.kernel, dtype)
    bias = None
    if layer.use_bias:
        bias = _converted(layer.bias, dtype, lambda value: value.to(dtype))
    y = _convolve(layer, x, kernel, bias, padding)
    return y if layer.activation is None else layer.activation(y)


def _convolve(
    layer: Any,
    x: torch.Tensor,
    kernel: torch.Tensor,
    bias: torch.Tensor | None,
    padding: tuple[int, int],
) -> torch.Tensor:
    """PyTorch's convolution of the NHWC `x` with `layer`'s strides and
    dilation, on its channels-last view, as an NHWC tensor."""
    y = F.conv2d(
        _nchw(x),
        kernel,
        bias,
        tuple(layer.strides),
        padding,
        tuple(layer.dilation_rate),
    )
    return _nhwc(y)


class _Shaped(NamedTuple):
    """What `FusedBatchNormalization._fused_backend` reads of a tensor."""

    shape: Sequence[int | None]


def inference_unit(
    conv: Any, norm: Any, shape: Sequence[int | None], dtype: torch.dtype
) -> tuple[tuple[int, int], dict[str, Any]] | None:
    """Where inference's `norm(conv(x))`, or `conv(x)` without a `norm`, of
    an NHWC `dtype` input of `shape` runs as one PyTorch convolution: its
    padding and the variables `fold` reads, by name; `None` where the layers
    must run (LoRA, a quantized kernel, a convolution activation, padding
    PyTorch cannot take, a batch norm off the torch path)."""
    padding = _conv_padding(conv, shape)
    if (
        padding is None
        or not isinstance(conv.kernel, keras.Variable)  # LoRA
        or conv.activation not in (None, keras.activations.linear)
        or getattr(conv, "quantization_mode", None) is not None
        or keras.backend.standardize_dtype(dtype) != conv.compute_dtype
    ):
        return None
    weights = {"kernel": conv.kernel}
    if conv.use_bias:
        weights["bias"] = conv.bias
    if norm is None:
        return padding, weights
    if (
        not norm.built
        or norm._fused_backend(_Shaped(shape), None) != "torch"
        or norm.compute_dtype != conv.compute_dtype
    ):
        return None
    weights.update(mean=norm.moving_mean, variance=norm.moving_variance)
    if norm.scale:
        weights["gamma"] = norm.gamma
    if norm.center:
        weights["beta"] = norm.beta
    return padding, weights


def fold(
    norm: Any, dtype: torch.dtype, **values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """PyTorch's channels-last `dtype` weight and bias of one convolution
    from the variables' values `inference_unit` names, with `norm` (or
    `None`) folded in: its moving statistics, scale and offset become the
    kernel's scale and the bias, computed in float32, then cast."""
    w = {name: value.float() for name, value in values.items()}
    kernel, bias = w["kernel"], w.get("bias")
    if norm is not None:
        scale = torch.rsqrt(w["variance"] + norm.epsilon) * w.get("gamma", 1.0)
        bias = (w.get("bias", 0.0) - w["mean"]) * scale + w.get("beta", 0.0)
        kernel = kernel * scale
    return _weight(kernel, dtype), None if bias is None else bias.to(dtype)


def conv_batch_norm(conv: Any, norm: Any, x: Any) -> torch.Tensor | None:
    """Inference's `norm(conv(x))` as one convolution, the batch norm folded in.

    The folded kernel and bias (`fold`) are kept while none of the weights
    changes, where oneDNN would run a batch norm on every batch. `None`
    outside `inference()`, or where either channels-last path does not
    apply (then the caller runs the two layers).
    """
    if not inference():
        return None
    x = keras.ops.convert_to_tensor(x)
    unit = inference_unit(conv, norm, x.shape, x.dtype)
    if unit is None:
        return None
    padding, weights = unit
    names = tuple(weights)

    def make(*values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return fold(norm, x.dtype, **dict(zip(names, values, strict=True)))

    key = ("batch_norm", id(conv), id(norm), x.dtype)
    kernel, bias = _cached(key, tuple(weights.values()), make)
    return _convolve(conv, x, kernel, bias, padding)


def relu(x: torch.Tensor) -> torch.Tensor:
    """ReLU of a tensor nothing else holds: in place outside autograd."""
    return torch.relu(x) if torch.is_grad_enabled() else torch.relu_(x)


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
    padding = pool_padding(layer, x.shape)
    if padding is None:
        return None
    y = F.max_pool2d(_nchw(x), tuple(layer.pool_size), tuple(layer.strides), padding)
    return _nhwc(y)


def pool_padding(layer: Any, shape: Sequence[int | None]) -> tuple[int, int] | None:
    """The padding PyTorch's max pooling takes for a channels-last
    `keras.layers.MaxPooling2D` on an NHWC input of `shape`; `None` where
    PyTorch's kernel cannot pool as Keras does."""
    if layer.data_format != "channels_last" or len(shape) != 4:
        return None
    padding = _padding(
        layer.padding, shape[1:3], layer.pool_size, layer.strides, (1, 1)
    )
    if padding is None or any(
        2 * p > k for p, k in zip(padding, layer.pool_size, strict=True)
    ):
        return None
    return padding
