"""NiN's training step on the JAX backend: stateless, as Keras's JAX trainer
calls it (`train_step(state, data)` returns `(logs, state)`)."""

from __future__ import annotations

from typing import Any

import jax
import keras

from ninlayers import _keras_compat
from ninlayers._steps import common


def _loss_scale(model: keras.Model, optimizer_variables: list) -> Any:
    scale = getattr(model.optimizer, "dynamic_scale", None)
    if scale is None:
        return None
    mapping = list(zip(model.optimizer.variables, optimizer_variables, strict=True))
    with keras.StatelessScope(state_mapping=mapping):
        return keras.ops.convert_to_tensor(model.optimizer.dynamic_scale)


def train_step(model: keras.Model, state: tuple, data: Any) -> tuple[dict, tuple]:
    """Keras's JAX step, plus the gradient norm and clipping."""
    trainable, non_trainable, optimizer_variables, metrics_variables = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    grad_fn = jax.value_and_grad(model.compute_loss_and_updates, has_aux=True)
    (_, aux), gradients = grad_fn(
        trainable,
        non_trainable,
        metrics_variables,
        x,
        y,
        sample_weight,
        training=True,
        optimizer_variables=optimizer_variables,
    )
    loss, y_pred, non_trainable, metrics_variables = aux
    norm = common.global_norm(gradients, _loss_scale(model, optimizer_variables))
    gradients = common.clip(gradients, norm, model.gradient_clip_norm)
    trainable, optimizer_variables = model.optimizer.stateless_apply(
        optimizer_variables, gradients, trainable
    )
    logs, metrics_variables = _update_metrics(
        model, metrics_variables, loss, norm, x, y, y_pred, sample_weight
    )
    return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)


def _update_metrics(model, metrics_variables, loss, norm, x, y, y_pred, weight):
    mapping = list(zip(model.metrics_variables, metrics_variables, strict=True))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        _keras_compat.loss_tracker(model).update_state(
            loss, sample_weight=common.batch_size(x)
        )
        if norm is not None:
            model.gradient_norm_tracker.update_state(norm)
        logs = model.compute_metrics(x, y, y_pred, weight)
    updated = []
    for variable in model.metrics_variables:
        value = scope.get_current_value(variable)
        updated.append(variable.value if value is None else value)
    return logs, updated


def test_step(model: keras.Model, state: tuple, data: Any) -> tuple[dict, tuple]:
    """Keras's own JAX test step, without the training-only gradient norm."""
    logs, state = keras.Model.test_step(model, state, data)
    logs.pop(model.gradient_norm_tracker.name, None)
    return logs, state
