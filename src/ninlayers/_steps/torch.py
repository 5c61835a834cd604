"""NiN's training step on the PyTorch backend (autograd)."""

from __future__ import annotations

from typing import Any

import keras
import torch

from ninlayers import _keras_compat
from ninlayers._steps import common


def train_step(model: keras.Model, data: Any) -> dict[str, Any]:
    """Forward, loss, `backward()`, clipping, update (Keras's torch step,
    plus the gradient norm and clipping)."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    y_pred = model(x, training=True)
    model.zero_grad()
    loss = model.compute_loss(
        x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
    )
    _keras_compat.loss_tracker(model).update_state(
        loss, sample_weight=common.batch_size(x)
    )
    model.optimizer.scale_loss(loss).backward()
    variables = model.trainable_weights[:]
    gradients = [v.value.grad for v in variables]
    scale = getattr(model.optimizer, "dynamic_scale", None)
    norm = _global_norm(gradients, scale)
    model.gradient_norm_tracker.update_state(norm)
    gradients = common.clip(gradients, norm, model.gradient_clip_norm)
    with torch.no_grad():
        model.optimizer.apply(gradients, variables)
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def _global_norm(gradients: list[Any], scale: Any = None) -> Any:
    """`common.global_norm` with PyTorch's total norm: one pass per gradient
    (a multi-tensor kernel where PyTorch has one) instead of three."""
    norm = torch.nn.utils.get_total_norm([g.float() for g in gradients])
    return norm if scale is None else norm / keras.ops.cast(scale, "float32")


def test_step(model: keras.Model, data: Any) -> dict[str, Any]:
    """Keras's own test step, without the training-only gradient norm."""
    logs = keras.Model.test_step(model, data)
    logs.pop(model.gradient_norm_tracker.name, None)
    return logs
