"""NiN's training step on the TensorFlow backend, `tf.distribute` included."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from ninlayers import _keras_compat
from ninlayers._steps import common


def train_step(model: keras.Model, data: Any) -> dict[str, Any]:
    """Forward, loss, gradients, clipping, update.

    Under `tf.distribute`, `compute_loss` divides the loss by the replica
    count for the gradient sum; the log multiplies that back, so it is the
    true mean over the global batch. The gradients are all-reduced before
    their norm is taken, so clipping sees the global gradient.
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    with tf.GradientTape() as tape:
        y_pred = model(x, training=True)
        loss = model.compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
        )
        scaled_loss = model.optimizer.scale_loss(loss)
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    _keras_compat.loss_tracker(model).update_state(
        loss * replicas, sample_weight=tf.shape(tf.nest.flatten(x)[0])[0]
    )
    variables = model.trainable_variables
    gradients = tape.gradient(scaled_loss, variables)
    gradients = _clip_gradients(model, gradients, replicas)
    model.optimizer.apply(gradients, variables)
    logs = model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
    return logs_for_reduction(logs)


def test_step(model: keras.Model, data: Any) -> dict[str, Any]:
    """Keras's own test step, without the training-only gradient norm."""
    logs = keras.Model.test_step(model, data)
    logs.pop(model.gradient_norm_tracker.name, None)
    return logs_for_reduction(logs)


def _clip_gradients(model: keras.Model, gradients: list, replicas: int) -> list:
    """Records the global gradient norm and clips to it when asked.

    Under `tf.distribute` each replica holds its part of the gradient, so
    the norm is taken after an all-reduce; the reduced gradients are then
    divided by the replica count, since the optimizer sums them again.
    """
    if replicas > 1:
        gradients = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, gradients
        )
    scale = getattr(model.optimizer, "dynamic_scale", None)
    norm = common.global_norm(gradients, scale)
    model.gradient_norm_tracker.update_state(norm)
    gradients = common.clip(gradients, norm, model.gradient_clip_norm)
    if replicas > 1:
        gradients = [g / replicas for g in gradients]
    return gradients


def logs_for_reduction(logs: dict[str, Any]) -> dict[str, Any]:
    """Makes a step's logs reducible by Keras under several workers.

    Keras 3 (TensorFlow backend) reduces each replica's logs with
    `strategy.reduce("MEAN", value, axis=0)` when a
    `MultiWorkerMirroredStrategy` spans several workers, and a scalar has no
    axis 0 (`Invalid reduction dimension 0 for input with 0 dimensions`).
    Each log becomes a vector of one, which that reduction turns back into
    the scalar mean over the replicas. Other strategies get the logs as they
    are. Reported upstream as tensorflow/tensorflow#72388.
    """
    if _keras_compat.in_multi_worker_mode(tf.distribute.get_strategy()):
        return {name: tf.reshape(value, [1]) for name, value in logs.items()}
    return logs
