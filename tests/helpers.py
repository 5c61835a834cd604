"""One helper that checks any ninlayers layer the way Keras checks its own."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np

#: Any backend's tensor (or a NumPy array) as a NumPy array.
to_numpy = keras.ops.convert_to_numpy

#: What a finished `ninlayers train` leaves in its output directory.
RUN_ARTIFACTS = [
    "cam.png",
    "confusion.png",
    "history.png",
    "metrics.json",
    "model.keras",
]


def saved_epoch(out) -> int:
    """The newest epoch with a checkpoint in `out/backup` (0 if none): for a
    run, or for a distributed run's chief."""
    names = sorted((out / "backup").glob("epoch-*.json"))
    return int(names[-1].stem.split("-")[1]) if names else 0


#: A two-stage trunk that trains in well under a second on 16x16 images.
SMALL = [
    {"filters": 8, "kernel_size": 3},
    {"filters": 16, "kernel_size": 3},
]


def trunk_params(c_in, blocks, mlp=2):
    """The paper's count, block by block: k*k*c_in*f + f + mlp*(f*f + f)."""
    total = 0
    for filters, kernel in blocks:
        total += kernel * kernel * c_in * filters + filters
        total += mlp * (filters * filters + filters)
        c_in = filters
    return total


def nin_params(c_in, blocks, num_classes, head_kernel=3, mlp=2):
    """Trunk plus the head, a block with `num_classes` filters."""
    c_last = blocks[-1][0] if blocks else c_in
    head = trunk_params(c_last, [(num_classes, head_kernel)], mlp)
    return trunk_params(c_in, blocks, mlp) + head


def spatial(size, specs):
    """Hand-written forward size through convs and 3x3/2 valid pooling."""
    for spec in specs:
        if spec.padding == "same":
            size = -(-size // spec.strides)
        else:
            size = (size - spec.kernel_size) // spec.strides + 1
        if spec.pool_size:
            size = (size - spec.pool_size) // spec.pool_strides + 1
    return size


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """2 classes: a bright 6x6 square somewhere on noise, or noise alone."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 0.5, (n, 16, 16, 1)).astype("float32")
    y = rng.integers(0, 2, n)
    for i in np.flatnonzero(y):
        r, c = rng.integers(0, 11, 2)
        x[i, r : r + 6, c : c + 6] = 1.0
    return x, y


def config_json(layer: keras.layers.Layer) -> str:
    return json.dumps(layer.get_config(), sort_keys=True)


def check_layer(
    layer_cls,
    init_kwargs: dict,
    input_shape: tuple,
    expected_output_shape: tuple,
    expected_num_params: int | None = None,
    check_gradients: bool = True,
    expected_num_non_trainable: int | None = None,
    check_training: bool = False,
) -> keras.layers.Layer:
    """Checks a layer the way Keras's `run_layer_test` checks its own.

    - the config round trip is JSON-equal, and so is a
      `serialize_keras_object` round trip (by the registered name), whose
      layer has the same attributes (`dir()`);
    - symbolic and eager outputs have `compute_output_shape`'s shape, which
      equals `expected_output_shape` (a formula in the caller);
    - `count_params()` equals `expected_num_params`, and the non-trainable
      weights (batch-norm statistics) number `expected_num_non_trainable`;
    - every trainable weight gets a finite gradient;
    - with `check_training` (slower: it compiles), one `fit` step runs and
      changes the trainable weights (unless the output is constant), and
      under `mixed_bfloat16` the output has the dtype that
      `compute_output_spec` promises, with float32 variables.
    """
    layer = layer_cls(**init_kwargs)
    _check_serialization(layer_cls, layer)
    symbolic = layer(keras.Input(batch_shape=input_shape))
    assert tuple(symbolic.shape) == tuple(expected_output_shape)
    assert tuple(layer.compute_output_shape(input_shape)) == tuple(
        expected_output_shape
    )
    x = np.random.default_rng(0).normal(size=input_shape).astype("float32")
    eager = layer(x)
    assert tuple(eager.shape) == tuple(expected_output_shape)
    if expected_num_params is not None:
        assert layer.count_params() == expected_num_params
    if expected_num_non_trainable is not None:
        assert len(layer.non_trainable_weights) == expected_num_non_trainable
    assert len(layer.weights) == len(layer.trainable_weights) + len(
        layer.non_trainable_weights
    )
    if check_gradients:
        _check_gradients(layer, x)
    if check_training:
        _check_fit_step(layer_cls, init_kwargs, x)
        _check_mixed_precision(layer_cls, init_kwargs, x)
    return layer


def _check_serialization(layer_cls, layer) -> None:
    clone = layer_cls.from_config(json.loads(json.dumps(layer.get_config())))
    assert config_json(clone) == config_json(layer)
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == f"ninlayers>{layer_cls.__name__}"
    revived = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
    assert type(revived) is layer_cls
    assert config_json(revived) == config_json(layer)
    assert set(dir(revived)) == set(dir(clone))


def gradients(layer, x, loss_of_outputs=None) -> list[np.ndarray]:
    """Gradients of a loss of `layer(x, training=True)` with respect to its
    trainable variables, on whichever Keras backend is active.

    `loss_of_outputs` maps the outputs to a scalar with `keras.ops` (default:
    the sum of their squares, in float32).
    """
    ops = keras.ops
    if loss_of_outputs is None:

        def loss_of_outputs(y):
            return ops.sum(ops.square(ops.cast(y, "float32")))

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_of_outputs(layer(x, training=True))
        grads = tape.gradient(loss, layer.trainable_variables)
    elif backend == "jax":
        import jax

        non_trainable = [v.value for v in layer.non_trainable_variables]

        def loss_fn(trainable):
            y, _ = layer.stateless_call(trainable, non_trainable, x, training=True)
            return loss_of_outputs(y)

        grads = jax.grad(loss_fn)([v.value for v in layer.trainable_variables])
    else:
        for variable in layer.trainable_variables:
            variable.value.grad = None
        loss_of_outputs(layer(x, training=True)).backward()
        grads = [v.value.grad for v in layer.trainable_variables]
    return [None if g is None else ops.convert_to_numpy(g) for g in grads]


def _check_gradients(layer, x) -> None:
    grads = gradients(layer, x)
    assert layer.trainable_variables
    for variable, grad in zip(layer.trainable_variables, grads, strict=True):
        assert grad is not None, f"no gradient for {variable.path}"
        assert np.all(np.isfinite(grad)), f"non-finite grad {variable.path}"


def _check_fit_step(layer_cls, init_kwargs, x) -> None:
    layer = layer_cls(**init_kwargs)
    model = keras.Sequential([keras.Input(x.shape[1:]), layer])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    before = [np.array(w) for w in layer.trainable_weights]
    target = np.zeros(model.output_shape[1:], "float32")[None].repeat(len(x), 0) + 1
    history = model.fit(x, target, batch_size=len(x), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [np.array(w) for w in layer.trainable_weights]
    changed = any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))
    # A softmax over one class is constant: nothing to learn.
    assert changed or np.ptp(np.asarray(model(x))) == 0


def _check_mixed_precision(layer_cls, init_kwargs, x) -> None:
    layer = layer_cls(**{**init_kwargs, "dtype": "mixed_bfloat16"})
    spec = layer.compute_output_spec(keras.KerasTensor(x.shape, "float32"))
    y = layer(x)
    assert keras.backend.standardize_dtype(y.dtype) == spec.dtype
    assert all(w.dtype == "float32" for w in layer.weights)


def run_python(code: str, timeout: float = 300) -> str:
    """Runs code in a fresh Python process and returns its stdout."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def check_model_saving(model: keras.Model, x: np.ndarray, tmp_path) -> keras.Model:
    """A `.keras` round trip (keras-hub's `run_model_saving_test`): the
    reloaded model has the same class, config and outputs, with no custom
    objects passed."""
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored) is type(model)
    assert config_json(restored) == config_json(model)
    np.testing.assert_allclose(
        to_numpy(restored(x, training=False)),
        to_numpy(model(x, training=False)),
        atol=1e-5,
    )
    return restored


def check_backbone(cls, init_kwargs: dict, x: np.ndarray, expected_shape, tmp_path):
    """Checks a backbone the way keras-hub's `run_vision_backbone_test` does:
    config round trip, output shape, a free-size copy at twice the size,
    every stage output, `mixed_bfloat16` outputs with float32 variables,
    and a `.keras` round trip."""
    backbone = cls(**init_kwargs)
    clone = cls.from_config(json.loads(json.dumps(backbone.get_config())))
    assert config_json(clone) == config_json(backbone)
    assert tuple(backbone(x).shape) == tuple(expected_shape)
    free = cls(**{**init_kwargs, "image_shape": (None, None, x.shape[-1])})
    bigger = np.concatenate([np.concatenate([x, x], 1)] * 2, 2)
    assert tuple(free(bigger).shape)[1] >= tuple(expected_shape)[1]
    stages = keras.Model(backbone.input, backbone.stage_outputs)(x)
    last = stages[sorted(stages)[-1]]
    np.testing.assert_allclose(to_numpy(last), to_numpy(backbone(x)), atol=1e-5)
    mixed = cls(**{**init_kwargs, "dtype": "mixed_bfloat16"})
    assert keras.backend.standardize_dtype(mixed(x).dtype) == "bfloat16"
    assert {v.dtype for v in mixed.weights} == {"float32"}
    check_model_saving(backbone, x, tmp_path)
    return backbone


def check_task(cls, init_kwargs: dict, x: np.ndarray, y: np.ndarray, tmp_path):
    """Checks a task the way keras-hub's `run_task_test` does: `predict`
    gives one row of probabilities per image, `fit` runs with `compile()`'s
    defaults and moves the weights, and the model survives a `.keras` round
    trip."""
    task = cls(**init_kwargs)
    probs = task.predict(x, verbose=0)
    assert probs.shape == (len(x), task.num_classes)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-3)
    before = [to_numpy(w).copy() for w in task.trainable_weights]
    task.compile()
    history = task.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    after = [to_numpy(w) for w in task.trainable_weights]
    assert any(not np.allclose(b, a) for b, a in zip(before, after, strict=True))
    check_model_saving(task, x, tmp_path)
    return task


def spy_on_keras_predict(monkeypatch) -> list[tuple]:
    """What reaches `keras.Model.predict` (a NiN model's `predict` calls
    it), as `(x, args, kwargs)` per call; Keras's signature kept, which a
    NiN `predict` reads."""
    given = []
    predict = keras.Model.predict

    @functools.wraps(predict)
    def spy(self, x, *args, **kwargs):
        given.append((x, args, kwargs))
        return predict(self, x, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "predict", spy)
    return given
