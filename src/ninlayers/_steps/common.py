"""What every backend's step shares: the global norm and the clipping."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keras import ops


def global_norm(gradients: Sequence[Any], scale: Any = None) -> Any:
    """The global L2 norm of `gradients` in float32, divided by `scale`."""
    total = sum(ops.sum(ops.square(ops.cast(g, "float32"))) for g in gradients)
    norm = ops.sqrt(total)
    return norm if scale is None else norm / ops.cast(scale, "float32")


def clip(gradients: Sequence[Any], norm: Any, clip_norm: float | None) -> list:
    """Scales `gradients` so their global norm (`norm`) is at most
    `clip_norm`, as `tf.clip_by_global_norm` does; unchanged for `None`."""
    if clip_norm is None:
        return list(gradients)
    factor = ops.minimum(1.0, clip_norm / ops.maximum(norm, 1e-12))
    return [g * ops.cast(factor, g.dtype) for g in gradients]


def batch_size(x: Any) -> int:
    """The number of examples in a (possibly nested) batch of inputs."""
    from keras import tree

    return next(i for i in tree.flatten(x) if i is not None).shape[0]
