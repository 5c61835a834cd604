"""A NiN model's inference on TensorFlow: batch norm folded into convolutions.

In mixed precision TensorFlow's graph optimiser leaves an inference
convolution and the batch norm after it as two oneDNN kernels, the batch
norm one more pass over the activations (in float32 it fuses them itself).
Inside `predict` and `evaluate` (`folding`), each NiN block's
`norm(conv(x))` runs instead as one convolution with a bias: the moving
statistics, scale and offset become the kernel's scale and the bias,
computed in float32 from the variables, then cast. The optimiser then
fuses convolution, bias and the ReLU after them into one kernel
(`_FusedConv2D`). Measured in docs/performance.md.

Imported only on the tensorflow backend.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import keras
import tensorflow as tf

from ninlayers import _keras_compat, runtime

#: The weights of the models inside `folding` now (by `id`; each alive
#: while a model holds it), with how many `folding` contexts hold each. A
#: registry of weights, not a context variable: the threads in which a
#: `tf.distribute.MirroredStrategy` traces its replicas' steps see it too.
_FOLDING: collections.Counter[int] = collections.Counter()
_LOCK = threading.Lock()

#: Marks a compiled function with whether its trace folded batch norm.
_MARK = "_ninlayers_folded"

#: The compiled functions that run inference, by `keras.Model` attribute.
_FUNCTIONS = ("predict_function", "test_function")


@contextlib.contextmanager
def folding(model: keras.Model) -> Iterator[None]:
    """Within it, `model`'s NiN blocks fold their batch norms into their
    convolutions as its predict and test functions trace them (in any
    thread), where `runtime.FOLD_BATCH_NORM` says so. A function traced
    here under the other setting is traced again; one made elsewhere is
    kept."""
    fold = bool(runtime.FOLD_BATCH_NORM)
    for name in _FUNCTIONS:
        function = getattr(model, name, None)
        if function is not None and getattr(function, _MARK, fold) is not fold:
            setattr(model, name, None)
    kept = [getattr(model, name, None) for name in _FUNCTIONS]
    held = {id(weight) for weight in model.weights} if fold else set()
    with _LOCK:
        _FOLDING.update(held)
    try:
        yield
    finally:
        with _LOCK:
            _FOLDING.subtract(held)
            for key in held:
                if _FOLDING[key] <= 0:
                    del _FOLDING[key]
        for name, old in zip(_FUNCTIONS, kept, strict=True):
            function = getattr(model, name, None)
            if function is not None and function is not old:
                setattr(function, _MARK, fold)


def _foldable(conv: keras.layers.Conv2D, norm: Any, x: Any) -> bool:
    """Whether `norm(conv(x))` is one convolution with a bias: a built
    plain channels-last convolution of a model inside `folding` (no LoRA,
    quantization, groups or activation of its own) and a built
    channels-last batch norm, both in `x`'s dtype."""
    return (
        conv.built
        and isinstance(conv.kernel, keras.Variable)  # not LoRA
        and id(conv.kernel) in _FOLDING
        and len(x.shape) == 4
        and getattr(conv, "quantization_mode", None) is None
        and conv.activation in (None, keras.activations.linear)
        and conv.groups == 1
        and conv.data_format == "channels_last"
        and keras.backend.standardize_dtype(x.dtype)
        == conv.compute_dtype
        == norm.compute_dtype
        and norm.built
        and norm.axis in (-1, 3)
        and not norm.renorm
        and not getattr(norm, "synchronized", False)
    )


def conv_batch_norm(conv: keras.layers.Conv2D, norm: Any, x: Any) -> Any:
    """Inference's `norm(conv(x))` as one convolution with a bias while a
    model holding `conv` is inside `folding`; `None` otherwise, or where
    the two layers must run."""
    if not _foldable(conv, norm, x):
        return None
    weights = {
        "kernel": conv.kernel,
        "moving_mean": norm.moving_mean,
        "moving_variance": norm.moving_variance,
    }
    if conv.use_bias:
        weights["bias"] = conv.bias
    if norm.scale:
        weights["gamma"] = norm.gamma
    if norm.center:
        weights["beta"] = norm.beta
    values = _keras_compat.uncast_values(list(weights.values()))
    w = {name: tf.cast(v, "float32") for name, v in zip(weights, values, strict=True)}
    scale = tf.math.rsqrt(w["moving_variance"] + norm.epsilon)
    if "gamma" in w:
        scale = scale * w["gamma"]
    bias = (w.get("bias", 0.0) - w["moving_mean"]) * scale + w.get("beta", 0.0)
    y = tf.nn.conv2d(
        x,
        tf.cast(w["kernel"] * scale, x.dtype),
        strides=list(conv.strides),
        padding=conv.padding.upper(),
        dilations=list(conv.dilation_rate),
    )
    return tf.nn.bias_add(y, tf.cast(bias, x.dtype))
