"""Keras's Adam and SGD updates as one fused kernel per variable.

Keras 3 writes each optimizer's update in `keras.ops`: Adam's is about ten
elementwise operations per variable, each a pass over the variable's memory.
TensorFlow and PyTorch have kernels that do the whole update in one pass,
with the same arithmetic:

- TensorFlow: `ResourceApplyAdam` (Keras's Adam, which follows TensorFlow's
  formula) and `ResourceApplyKerasMomentum` (Keras's SGD with momentum,
  Nesterov or not), one call per variable;
- PyTorch: `torch.optim.adam.adam(..., fused=True)`, PyTorch's fused Adam,
  one call for all variables (PyTorch adds
  epsilon after bias-correcting the second moment, Keras before: the call
  passes Keras's epsilon divided by that correction, which is the same
  update).

`fuse(optimizer)` makes an optimizer run its update through these kernels;
everything else Keras's `apply` does (loss scaling, clipping, weight decay,
gradient accumulation, EMA, the step counter) is unchanged, as is the
optimizer's config and state, so saved files and checkpoints are those of
the plain Keras optimizer. Where a kernel does not apply (other
optimizers, AMSGrad, SGD without momentum, SGD on PyTorch, JAX, a
`tf.distribute` strategy, `torch.compile`, mismatched dtypes), Keras's own
update runs.

`NiNImageClassifier.compile` fuses the optimizer it is given
(`fused_updates=False` keeps Keras's update).

Example:

>>> import keras
>>> from ninlayers import fused_updates
>>> optimizer = fused_updates.fuse(keras.optimizers.Adam(1e-3))
>>> fused_updates.is_fused(optimizer) == (keras.backend.backend() != "jax")
True
"""

from __future__ import annotations

import math
import types
from typing import Any

import keras

from ninlayers import _keras_compat

_FUSED = "_ninlayers_fused"


def _kind(optimizer: Any) -> str | None:
    """`"adam"` or `"sgd"` for exactly Keras's Adam (without AMSGrad) or SGD
    with momentum (their torch classes on PyTorch); `None` for any other."""
    cls = type(optimizer)
    for name, kind in (("Adam", "adam"), ("SGD", "sgd")):
        base = getattr(keras.optimizers, name)
        keras_own = cls is base or (
            issubclass(cls, base)
            and cls.__name__ == name
            and cls.__module__.startswith("keras.src.backend.")
        )
        if keras_own:
            if kind == "adam" and optimizer.amsgrad:
                return None
            if kind == "sgd" and optimizer.momentum == 0:
                return None
            return kind
    return None


def fuse(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """Runs `optimizer`'s update through a fused kernel where one applies.

    Args:
        optimizer: A Keras optimizer. Keras's `Adam` (without AMSGrad) and
            `SGD` with momentum are fused on TensorFlow, `Adam` on PyTorch;
            any other optimizer, or any on JAX (where XLA fuses the update),
            is left as it is. A `LossScaleOptimizer`'s inner optimizer is
            fused.

    Returns:
        The same optimizer.
    """
    inner = getattr(optimizer, "inner_optimizer", None)
    if inner is not None:
        fuse(inner)
        return optimizer
    kind = _kind(optimizer)
    backend = keras.backend.backend()
    if kind is None or getattr(optimizer, _FUSED, False):
        return optimizer
    if backend == "tensorflow":
        step = _tf_update_step(optimizer.update_step, kind)
        optimizer.update_step = types.MethodType(step, optimizer)
    elif backend == "torch" and kind == "adam":
        step = _torch_adam_step(_keras_compat.torch_update(optimizer))
        bound = types.MethodType(step, optimizer)
        setattr(optimizer, _keras_compat.TORCH_UPDATE, bound)
    else:
        return optimizer
    setattr(optimizer, _FUSED, True)
    return optimizer


def is_fused(optimizer: keras.optimizers.Optimizer) -> bool:
    """Whether `fuse` made `optimizer` run fused.

    Args:
        optimizer: A Keras optimizer; for a `LossScaleOptimizer`, its inner
            optimizer is asked.

    Returns:
        bool: `True` if its update runs through a fused kernel.
    """
    inner = getattr(optimizer, "inner_optimizer", None)
    return bool(getattr(inner if inner is not None else optimizer, _FUSED, False))


def _tf_update_step(keras_update: Any, kind: str) -> Any:
    import tensorflow as tf

    def update_step(self, gradient, variable, learning_rate):
        if (
            tf.distribute.has_strategy()
            or not isinstance(gradient, tf.Tensor)
            or gradient.dtype != variable.dtype
            or not hasattr(variable, "handle")
        ):
            return keras_update(gradient, variable, learning_rate)
        dtype = variable.dtype
        lr = tf.cast(learning_rate, dtype)
        if kind == "sgd":
            (accum,) = _keras_compat.slot_variables(self, variable, "momentums")
            return tf.raw_ops.ResourceApplyKerasMomentum(
                var=variable.handle,
                accum=accum.value.handle,
                lr=lr,
                grad=gradient,
                momentum=tf.cast(self.momentum, dtype),
                use_nesterov=self.nesterov,
            )
        m, v = _keras_compat.slot_variables(self, variable, "_momentums", "_velocities")
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        return tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=m.value.handle,
            v=v.value.handle,
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=lr,
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            grad=gradient,
        )

    return update_step


def _torch_adam_step(keras_update: Any) -> Any:
    import torch
    from torch.optim.adam import adam

    def parallel_update_step(self, grads, variables, learning_rate):
        params = [v.value for v in variables]
        # Under `torch.compile` the step count read as a Python float would
        # recompile the step at every step: Keras's update compiles whole.
        if torch.compiler.is_compiling() or any(
            g.dtype != p.dtype for g, p in zip(grads, params, strict=True)
        ):
            return keras_update(grads, variables, learning_rate)
        slots = [
            _keras_compat.slot_variables(self, v, "_momentums", "_velocities")
            for v in variables
        ]
        step = float(self.iterations.value) + 1.0
        adam(
            params,
            list(grads),
            [m.value for m, _ in slots],
            [v.value for _, v in slots],
            [],
            # The step each update is, before `adam` adds one to it.
            [torch.tensor(step - 1.0) for _ in params],
            fused=True,
            amsgrad=False,
            beta1=self.beta_1,
            beta2=self.beta_2,
            lr=float(learning_rate),
            weight_decay=0.0,
            # PyTorch adds epsilon to the bias-corrected second moment.
            eps=self.epsilon / math.sqrt(1.0 - self.beta_2**step),
            maximize=False,
        )

    return parallel_update_step
