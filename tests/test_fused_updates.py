"""Fused optimizer updates: Keras's arithmetic, one kernel, on every backend."""

import keras
import numpy as np
import pytest

from helpers import SMALL
from ninlayers import NiN, _keras_compat, fused_updates

pytestmark = pytest.mark.backends

BACKEND = keras.backend.backend()

#: name -> (make the optimizer, the backends that fuse it)
OPTIMIZERS = {
    "adam": (lambda: keras.optimizers.Adam(0.01), {"tensorflow", "torch"}),
    "adam with a schedule and epsilon": (
        lambda: keras.optimizers.Adam(
            keras.optimizers.schedules.ExponentialDecay(0.01, 2, 0.5), epsilon=1e-3
        ),
        {"tensorflow", "torch"},
    ),
    "adam with weight decay": (
        lambda: keras.optimizers.Adam(0.01, weight_decay=0.1),
        {"tensorflow", "torch"},
    ),
    "sgd, nesterov, weight decay": (
        lambda: keras.optimizers.SGD(
            0.01, momentum=0.9, nesterov=True, weight_decay=5e-4
        ),
        {"tensorflow"},
    ),
    "sgd with momentum": (
        lambda: keras.optimizers.SGD(0.01, momentum=0.9),
        {"tensorflow"},
    ),
    "sgd without momentum": (lambda: keras.optimizers.SGD(0.01), set()),
    "adam with amsgrad": (lambda: keras.optimizers.Adam(0.01, amsgrad=True), set()),
    "rmsprop": (lambda: keras.optimizers.RMSprop(0.01), set()),
}


@pytest.fixture
def kernel_calls(monkeypatch):
    """The fused kernels' calls, counted (TensorFlow's raw ops, PyTorch's
    functional Adam)."""
    calls = []

    def counting(module, name):
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            calls.append(name)
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    if BACKEND == "tensorflow":
        import tensorflow as tf

        counting(tf.raw_ops, "ResourceApplyAdam")
        counting(tf.raw_ops, "ResourceApplyKerasMomentum")
    elif BACKEND == "torch":
        import importlib

        counting(importlib.import_module("torch.optim.adam"), "adam")
    return calls


def _updated(make, fuse, steps=4):
    variables = [
        keras.Variable(np.linspace(-1, 1, 96).reshape(8, 12).astype("float32")),
        keras.Variable(np.linspace(2, 3, 5).astype("float32")),
    ]
    optimizer = make()
    if fuse:
        fused_updates.fuse(optimizer)
    optimizer.build(variables)
    for step in range(steps):
        waves = [np.sin(np.arange(np.prod(v.shape)) * (step + 1)) for v in variables]
        grads = [
            keras.ops.convert_to_tensor(w.reshape(v.shape), "float32")
            for w, v in zip(waves, variables, strict=True)
        ]
        optimizer.apply(grads, variables)
    return optimizer, [keras.ops.convert_to_numpy(v) for v in variables]


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_a_fused_update_is_keras_update(name, kernel_calls):
    make, backends = OPTIMIZERS[name]
    _, keras_result = _updated(make, fuse=False)
    assert kernel_calls == []
    optimizer, fused_result = _updated(make, fuse=True)
    assert fused_updates.is_fused(optimizer) == (BACKEND in backends)
    # One kernel per variable and step on TensorFlow, one per step on PyTorch.
    expected_calls = {"tensorflow": 2 * 4, "torch": 4}.get(BACKEND, 0)
    assert len(kernel_calls) == (expected_calls if BACKEND in backends else 0)
    start = np.linspace(-1, 1, 96).reshape(8, 12)
    assert np.max(np.abs(keras_result[0] - start)) > 1e-3  # it did move
    for a, b in zip(keras_result, fused_result, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_fusing_twice_wraps_once(kernel_calls):
    optimizer = keras.optimizers.Adam(0.01)
    fused_updates.fuse(fused_updates.fuse(optimizer))
    variable = keras.Variable(np.ones(3, "float32"))
    optimizer.build([variable])
    optimizer.apply([keras.ops.ones(3)], [variable])
    assert len(kernel_calls) == (BACKEND != "jax")


def test_compile_fuses_the_optimizer_unless_asked_not_to():
    model = NiN(input_shape=(16, 16, 1), architecture=SMALL)
    model.compile()
    assert fused_updates.is_fused(model.optimizer) == (BACKEND != "jax")
    model.compile(fused_updates=False)
    assert not fused_updates.is_fused(model.optimizer)
    # The config stays Keras's: a saved file names Keras's Adam.
    assert model.get_compile_config()["optimizer"]["class_name"] == "Adam"


def test_fit_with_fused_updates_trains_as_keras_does(kernel_calls):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(32, 16, 16, 1)).astype("float32")
    y = np.arange(32) % 10
    weights = []
    for fused in (False, True):
        keras.utils.set_random_seed(0)
        model = NiN(input_shape=(16, 16, 1), architecture=SMALL, precision="float32")
        model.compile(
            keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
            fused_updates=fused,
        )
        model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
        weights.append(model.get_weights())
    assert bool(kernel_calls) == (BACKEND == "tensorflow")
    for a, b in zip(*weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(BACKEND != "torch", reason="torch.compile")
def test_a_fused_optimizer_compiles_once_under_torch_compile():
    # `jit_compile=True` on PyTorch: the fused update read the step count
    # as a Python float, which recompiled the update at every step.
    import torch

    variables = [keras.Variable(np.ones((3, 4), "float32")), keras.Variable([1.0])]
    optimizer = keras.optimizers.Adam(0.1)
    fused_updates.fuse(optimizer)
    optimizer.build(variables)
    step = torch.compile(lambda grads: optimizer.apply(grads, variables))
    # torch's own patch, not pytest's monkeypatch: the monkeypatch saw no
    # attribute on torch's config module and deleted it on undo, which hid
    # the setting from every later torch.compile in the same process.
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(3):
            step([torch.full((3, 4), 0.5), torch.full((1,), 0.5)])
    # Three Adam steps of a constant gradient move each weight by 3 x 0.1.
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(variables[1]), [0.7], atol=1e-4
    )


@pytest.mark.skipif(BACKEND != "torch", reason="PyTorch's optimizers only")
def test_torch_update_accessor_fails_loudly_when_keras_drops_it():
    optimizer = keras.optimizers.Adam()
    assert callable(_keras_compat.torch_update(optimizer))

    class Bare:
        pass

    with pytest.raises(RuntimeError, match="_parallel_update_step"):
        _keras_compat.torch_update(Bare())


def test_slot_variables_accessor_fails_loudly_when_keras_drops_them():
    variable = keras.Variable(np.ones(3, "float32"))
    optimizer = keras.optimizers.Adam()
    optimizer.build([variable])
    m, v = _keras_compat.slot_variables(
        optimizer, variable, "_momentums", "_velocities"
    )
    assert tuple(m.shape) == tuple(v.shape) == (3,)
    with pytest.raises(RuntimeError, match="_missing_slots"):
        _keras_compat.slot_variables(optimizer, variable, "_missing_slots")
