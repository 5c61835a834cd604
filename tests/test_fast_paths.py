"""NiN's own kernels give Keras's results: convolution, pooling, a training step.

On PyTorch, `NiNBlock`'s convolutions, `MaxPooling2D` and
`FusedBatchNormalization` run PyTorch's channels-last kernels
(`ninlayers._torch_kernels`); on TensorFlow batch norm runs the fused
kernel. Each is checked here against the Keras layer it stands for, on
whichever backend runs the tests (the README's backend matrix runs all three).
"""

import contextlib

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import to_numpy
from ninlayers import NiNBackbone, NiNBlock
from ninlayers.layers import (
    FusedBatchNormalization,
    MaxPooling2D,
    _convolve,
    _convolve_and_normalize,
    _folded,
)

pytestmark = pytest.mark.backends


@st.composite
def windows(draw, max_kernel=5):
    kernel = (draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel)))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = draw(st.sampled_from(["same", "valid"]))
    shape = (
        draw(st.integers(1, 3)),
        draw(st.integers(kernel[0], 11)),
        draw(st.integers(kernel[1], 11)),
        draw(st.integers(1, 5)),
    )
    return kernel, strides, padding, shape


@given(windows(), st.integers(1, 6), st.booleans())
def test_convolution_equals_keras_conv2d(window, filters, use_bias):
    kernel, strides, padding, shape = window
    conv = keras.layers.Conv2D(
        filters, kernel, strides, padding, use_bias=use_bias, bias_initializer="ones"
    )
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    expected = to_numpy(conv(x))
    np.testing.assert_allclose(
        to_numpy(_convolve(conv, x)), expected, rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
def test_pointwise_convolution_equals_keras_conv2d(dtype):
    # NiN's 1x1 convolutions: one matrix product on TensorFlow and JAX.
    conv = keras.layers.Conv2D(7, 1, bias_initializer="ones", dtype=dtype)
    x = np.random.default_rng(3).normal(size=(3, 5, 4, 6)).astype("float32")
    expected = to_numpy(conv(x)).astype("float32")
    ours = _convolve(conv, keras.ops.cast(x, conv.compute_dtype), training=True)
    assert keras.backend.standardize_dtype(ours.dtype) == conv.compute_dtype
    tolerance = 1e-5 if dtype == "float32" else 3e-2
    np.testing.assert_allclose(
        to_numpy(ours).astype("float32"), expected, rtol=tolerance, atol=tolerance
    )


@pytest.mark.parametrize("kernel_size", [1, 3])
def test_convolution_with_lora_equals_keras_conv2d(kernel_size):
    # With LoRA enabled, a convolution's kernel is the sum of the frozen
    # kernel and a low-rank update: a tensor, not a variable.
    conv = keras.layers.Conv2D(5, kernel_size, padding="same")
    x = np.random.default_rng(4).normal(size=(2, 6, 6, 3)).astype("float32")
    conv.build(x.shape)
    conv.enable_lora(2)
    conv.lora_kernel_b.assign(np.full(conv.lora_kernel_b.shape, 0.5, "float32"))
    np.testing.assert_allclose(
        to_numpy(_convolve(conv, x, training=True)),
        to_numpy(conv(x)),
        rtol=1e-5,
        atol=1e-5,
    )


@given(windows(max_kernel=3))
def test_max_pooling_equals_keras(window):
    pool_size, strides, padding, shape = window
    x = np.random.default_rng(1).normal(size=shape).astype("float32")
    ours = MaxPooling2D(pool_size, strides, padding)
    theirs = keras.layers.MaxPooling2D(pool_size, strides, padding)
    np.testing.assert_array_equal(to_numpy(ours(x)), to_numpy(theirs(x)))


def _plain_keras_copy(backbone: NiNBackbone) -> keras.Model:
    """The same trunk from Keras's own Conv2D, BatchNormalization, ReLU and
    MaxPooling2D, with the backbone's weights."""

    def copy(cls, layer):
        return cls.from_config({**layer.get_config(), "name": None})

    inputs = keras.Input(backbone.input_shape[1:])
    x = inputs
    for layer in backbone.layers[1:]:
        if isinstance(layer, MaxPooling2D):
            x = copy(keras.layers.MaxPooling2D, layer)(x)
            continue
        for conv, norm in zip(layer.convs, layer.norms, strict=True):
            x = copy(keras.layers.Conv2D, conv)(x)
            x = copy(keras.layers.BatchNormalization, norm)(x)
            x = keras.layers.ReLU()(x)
    model = keras.Model(inputs, x)
    model.set_weights(backbone.get_weights())
    return model


def test_a_training_step_equals_keras_layers():
    # Forward in training mode, the gradients through every kernel, the
    # moving statistics and the update: one SGD step of each, compared.
    backbone = NiNBackbone(
        [(8, 3), (12, 3, 1, "same", 3, 2)], image_shape=(12, 12, 2), dtype="float32"
    )
    plain = _plain_keras_copy(backbone)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 12, 12, 2)).astype("float32")
    y = rng.normal(size=(4, 2, 2, 12)).astype("float32")
    for model in (backbone, plain):
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
    for ours, theirs in zip(backbone.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        to_numpy(backbone(x, training=False)),
        to_numpy(plain(x, training=False)),
        rtol=1e-4,
        atol=1e-4,
    )


def test_a_block_runs_its_batch_norms_kernel_directly_on_torch(monkeypatch):
    # Keras's `Layer.__call__` per batch norm was a sizeable part of a small
    # batch's time on PyTorch: there the block calls the kernel itself.
    calls = []
    layer_call = FusedBatchNormalization.__call__

    def counted(self, *args, **kwargs):
        calls.append(self.name)
        return layer_call(self, *args, **kwargs)

    monkeypatch.setattr(FusedBatchNormalization, "__call__", counted)
    block = NiNBlock(8, 3, use_batch_norm=True)
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    block(x, training=True)
    block(x, training=False)
    assert len(block.norms) == 3
    direct = keras.backend.backend() == "torch"
    assert calls == ([] if direct else ["norm0", "norm1", "norm2"] * 2)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="PyTorch's kernels")
def test_inference_converts_a_kernel_once_until_it_changes():
    import torch

    from ninlayers import _torch_kernels

    conv = keras.layers.Conv2D(4, 3)
    conv.build((None, 6, 6, 2))
    weight = lambda: _torch_kernels._kernel(conv.kernel, torch.bfloat16)  # noqa: E731
    with torch.no_grad(), _torch_kernels.cached_weights():
        first = weight()
        assert weight() is first
        conv.kernel.assign(np.ones(conv.kernel.shape, "float32"))
        changed = weight()
        assert changed is not first and bool(torch.all(changed == 1))
        assert changed.dtype == torch.bfloat16 and changed.shape == (4, 2, 3, 3)
        assert changed.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert weight() is not weight()  # outside the context
    with _torch_kernels.cached_weights():
        assert weight() is not weight()  # gradients on: training


class _NewWeightsAfterFirstBatch(keras.callbacks.Callback):
    def __init__(self, weights):
        super().__init__()
        self.weights = weights

    def on_predict_batch_end(self, batch, logs=None):
        if batch == 0:
            self.model.set_weights(self.weights)


def test_predict_uses_weights_changed_between_its_batches():
    # On PyTorch `predict` keeps each converted weight while the variable is
    # unchanged: a change between two batches must reach the second one.
    from ninlayers import NiN

    model, other = (NiN(architecture=[(8, 3)], num_classes=3) for _ in range(2))
    x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype("float32")
    first = model.predict(x[:2], verbose=0)
    changes = _NewWeightsAfterFirstBatch(other.get_weights())
    got = model.predict(x, batch_size=2, verbose=0, callbacks=[changes])
    np.testing.assert_allclose(got[:2], first, atol=1e-6)
    expected = other.predict(x[2:], verbose=0)
    np.testing.assert_allclose(got[2:], expected, atol=1e-6)


@contextlib.contextmanager
def _inference(*layers: keras.Layer):
    """As inside the `predict` of a classifier of `layers` (weights kept on
    PyTorch, batch norm folded on PyTorch and TensorFlow)."""
    if keras.backend.backend() == "tensorflow":
        from ninlayers import _tf_inference

        with _tf_inference.folding(keras.Sequential(layers)):
            yield
        return
    if keras.backend.backend() != "torch":
        yield
        return
    import torch

    from ninlayers import _torch_kernels

    with torch.no_grad(), _torch_kernels.cached_weights():
        yield


def _random_statistics(norm: FusedBatchNormalization, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for variable in norm.weights:
        values = rng.normal(size=variable.shape)
        if variable is norm.moving_variance:
            values = rng.uniform(0.2, 3.0, size=variable.shape)
        variable.assign(values.astype("float32"))


@given(
    windows(),
    st.integers(1, 6),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.sampled_from([1e-3, 0.1]),
)
def test_inference_conv_and_batch_norm_equal_keras(
    window, filters, use_bias, center, scale, epsilon
):
    # On PyTorch and TensorFlow in `predict` the batch norm is folded into
    # the convolution.
    kernel, strides, padding, shape = window
    conv = keras.layers.Conv2D(filters, kernel, strides, padding, use_bias=use_bias)
    norm = FusedBatchNormalization(center=center, scale=scale, epsilon=epsilon)
    x = np.random.default_rng(5).normal(size=shape).astype("float32")
    norm.build(conv.compute_output_shape(shape))
    _random_statistics(norm, 6)
    expected = to_numpy(norm(conv(x), training=False))
    x = keras.ops.convert_to_tensor(x)
    with _inference(conv, norm):
        got = _convolve_and_normalize(conv, norm, x, None)
        folded = _folded(conv, norm, x)
    assert _folded(conv, norm, x) is None  # outside `predict`
    np.testing.assert_allclose(to_numpy(got), expected, rtol=1e-4, atol=1e-4)
    if keras.backend.backend() == "torch":  # not where PyTorch cannot pad
        from ninlayers import _torch_kernels

        unit = _torch_kernels.inference_unit(conv, norm, x.shape, x.dtype)
        assert (folded is None) == (unit is None)
    else:
        assert (folded is None) == (keras.backend.backend() == "jax")


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="PyTorch's kernels")
def test_folded_batch_norm_is_kept_until_a_weight_changes(monkeypatch):
    import torch

    from ninlayers import _torch_kernels

    conv = keras.layers.Conv2D(4, 3, padding="same")
    norm = FusedBatchNormalization()
    x = torch.randn(2, 6, 6, 3)
    conv.build(x.shape)
    norm.build((2, 6, 6, 4))
    folds = []
    rsqrt = torch.rsqrt
    monkeypatch.setattr(torch, "rsqrt", lambda t: folds.append(1) or rsqrt(t))
    fold = lambda: _torch_kernels.conv_batch_norm(conv, norm, x)  # noqa: E731
    assert fold() is None  # outside `predict`: two kernels
    with _inference(conv, norm):
        first = fold()
        np.testing.assert_array_equal(fold(), first)
        assert len(folds) == 1
        norm.moving_variance.assign(np.full(4, 3.0, "float32"))
        expected = to_numpy(norm(conv(x), training=False))
        np.testing.assert_allclose(to_numpy(fold()), expected, rtol=1e-5, atol=1e-5)
        assert len(folds) == 2
    with torch.enable_grad(), _torch_kernels.cached_weights():
        assert fold() is None  # training


def _classifier(
    dropout: float = 0.0, dtype: str = "float32", architecture=None, **kwargs
):
    from ninlayers import NiN

    # The first block's "same" padding at stride 2 is asymmetric on 28x28.
    architecture = architecture or [(8, 3, 2, "same", 3, 2, dropout), (12, 3)]
    model = NiN(architecture=architecture, num_classes=4, dtype=dtype, **kwargs)
    return _with_random_statistics(model)


def _with_random_statistics(model: keras.Model) -> keras.Model:
    """`model`, each of its batch norms given its own random statistics."""
    for index, layer in enumerate(model._flatten_layers()):
        if isinstance(layer, FusedBatchNormalization):
            _random_statistics(layer, index)
    return model


def _count_calls(monkeypatch, *classes) -> list[str]:
    """The names of the layers of `classes` whose `__call__` runs."""
    calls = []
    for cls in classes:

        def counted(self, *args, _call=cls.__call__, **kwargs):
            calls.append(self.name)
            return _call(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__call__", counted)
    return calls


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"test_time_flip": True},
        {"dropout": 0.5},
        {"dtype": "mixed_bfloat16"},
        {"use_batch_norm": False, "head_final_activation": True},
    ],
    ids=str,
)
def test_predict_and_evaluate_equal_the_models_call(monkeypatch, kwargs):
    # On PyTorch `predict` and `evaluate` run NiN's layers through
    # `Layer.call` (no `Layer.__call__`) and fold batch norm in.
    model = _classifier(**kwargs)
    x = np.random.default_rng(7).uniform(size=(6, 28, 28, 1)).astype("float32")
    y = np.arange(6) % 4
    expected = to_numpy(model(x, training=False))
    losses = keras.losses.sparse_categorical_crossentropy(y, expected)
    model.compile(loss="sparse_categorical_crossentropy", metrics=[])
    calls = _count_calls(monkeypatch, NiNBlock, MaxPooling2D)
    got = model.predict(x, verbose=0)
    tolerance = 1e-5 if model.compute_dtype == "float32" else 1e-2
    assert got.dtype == expected.dtype == "float32"
    np.testing.assert_allclose(got, expected, atol=tolerance)
    loss = model.evaluate(x, y, verbose=0)
    np.testing.assert_allclose(loss, to_numpy(keras.ops.mean(losses)), rtol=tolerance)
    if keras.backend.backend() == "torch":
        assert calls == []


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="PyTorch's path")
def test_predict_takes_keras_call_where_a_layer_asks_for_it(monkeypatch):
    model = _classifier()
    model.get_layer("block2").activity_regularizer = keras.regularizers.L2(0.1)
    calls = _count_calls(monkeypatch, NiNBlock)
    x = np.random.default_rng(8).uniform(size=(2, 28, 28, 1)).astype("float32")
    model.predict(x, verbose=0)
    assert "block2" in calls


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="PyTorch's path")
@pytest.mark.parametrize(
    ("kwargs", "planned"),
    [
        ({}, True),
        ({"dtype": "mixed_bfloat16", "head_final_activation": True}, True),
        (
            {
                "use_batch_norm": False,
                "architecture": [(8, 3, 1, "same", 3, 2, 0.5), (12, 3, 2, "valid")],
            },
            True,
        ),
        ({"activation": "gelu"}, False),
        ({"architecture": [(8, 3, 2, "same"), (12, 3)]}, False),
    ],
    ids=str,
)
def test_predict_runs_a_plan_where_every_block_allows_it(monkeypatch, kwargs, planned):
    # The trunk and the head's block as PyTorch's calls, no block's `call`;
    # another activation than ReLU, or padding PyTorch's kernel cannot take,
    # runs the blocks' own calls.
    kwargs = {"architecture": [(8, 3, 1, "same", 3, 2), (12, 3, 2, "valid")], **kwargs}
    model = _classifier(**kwargs)
    x = np.random.default_rng(11).uniform(size=(5, 28, 28, 1)).astype("float32")
    expected = to_numpy(model(x, training=False))
    calls = []
    block_call = NiNBlock.call
    spy = lambda self, *a, **k: calls.append(self.name) or block_call(self, *a, **k)  # noqa: E731
    monkeypatch.setattr(NiNBlock, "call", spy)
    got = model.predict(x, batch_size=2, verbose=0)
    tolerance = 1e-5 if model.compute_dtype == "float32" else 1e-2
    np.testing.assert_allclose(got, expected, atol=tolerance)
    assert (calls == []) is planned


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="PyTorch's path")
def test_a_plan_is_made_once_and_its_weights_again_when_one_changes(monkeypatch):
    import torch

    from ninlayers import _torch_inference, _torch_kernels

    model = _classifier(architecture=[(8, 3), (12, 3)])
    layers = model.layers[1:]
    x = torch.rand(3, 28, 28, 1)
    structures = []
    structure = _torch_inference._structure
    spy = lambda *a: structures.append(1) or structure(*a)  # noqa: E731
    monkeypatch.setattr(_torch_inference, "_structure", spy)
    with torch.no_grad(), _torch_kernels.cached_weights():
        first = _torch_inference._plan(layers, x)
        assert _torch_inference._plan(layers, x) is first
        model.get_layer("block2").norms[0].moving_mean.assign(np.ones(12, "float32"))
        changed = _torch_inference._plan(layers, x[:1])  # the batch size: same plan
        assert changed is not first and len(changed) == len(first)
        expected = to_numpy(model(x, training=False))
        np.testing.assert_allclose(
            to_numpy(_torch_inference.run(layers, x)), expected, atol=1e-5
        )
    assert structures == [1]


@pytest.mark.skipif(keras.backend.backend() == "jax", reason="JAX does not fold")
@pytest.mark.parametrize("fold", [True, False])
def test_predict_runs_the_models_kernels_with_folding_off(monkeypatch, fold):
    from ninlayers import runtime

    monkeypatch.setattr(runtime, "FOLD_BATCH_NORM", fold)
    model = _classifier(dtype="mixed_bfloat16")
    x = np.random.default_rng(9).uniform(size=(4, 28, 28, 1)).astype("float32")
    expected = to_numpy(model(x, training=False))
    got = model.predict(x, verbose=0)
    # bfloat16 rounds the folded kernels differently from the two kernels.
    assert np.array_equal(got, expected) is not fold


def _batch_norm_kernels(monkeypatch) -> list[int]:
    """Grows by one at each call of the backend's batch norm kernel (on
    TensorFlow, as a graph is traced); stays empty on JAX."""
    norms = []
    if keras.backend.backend() == "torch":
        import torch

        module, name = torch.nn.functional, "batch_norm"
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        module, name = tf.compat.v1.nn, "fused_batch_norm"
    else:
        return norms
    kernel = getattr(module, name)
    spy = lambda *a, **k: norms.append(1) or kernel(*a, **k)  # noqa: E731
    monkeypatch.setattr(module, name, spy)
    return norms


def test_a_backbones_predict_equals_its_call(monkeypatch):
    # Features for another model: on PyTorch and TensorFlow, batch norm
    # folded in too.
    backbone = _with_random_statistics(
        NiNBackbone([(8, 3), (12, 3)], image_shape=(12, 12, 2), dtype="float32")
    )
    x = np.random.default_rng(10).uniform(size=(3, 12, 12, 2)).astype("float32")
    expected = to_numpy(backbone(x, training=False))
    norms = _batch_norm_kernels(monkeypatch)
    got = backbone.predict(x, verbose=0)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert norms == []


@pytest.mark.skipif(keras.backend.backend() == "jax", reason="JAX does not fold")
def test_predict_and_evaluate_follow_fold_batch_norm_as_it_changes(monkeypatch):
    # On TensorFlow a graph traced with one setting is traced again with
    # the other; on PyTorch each call reads it.
    from ninlayers import runtime

    # Symmetric padding only: PyTorch's kernel takes every convolution.
    model = _classifier(dtype="mixed_bfloat16", architecture=[(8, 3), (12, 3)])
    model.compile(loss="sparse_categorical_crossentropy", metrics=[])
    x = np.random.default_rng(11).uniform(size=(6, 28, 28, 1)).astype("float32")
    y = np.arange(6) % 4
    norms = _batch_norm_kernels(monkeypatch)
    folded = model.predict(x, verbose=0)
    folded_loss = model.evaluate(x, y, verbose=0)
    assert norms == []
    monkeypatch.setattr(runtime, "FOLD_BATCH_NORM", False)
    expected = to_numpy(model(x, training=False))
    np.testing.assert_array_equal(model.predict(x, verbose=0), expected)
    assert model.evaluate(x, y, verbose=0) != folded_loss
    assert norms != []
    monkeypatch.setattr(runtime, "FOLD_BATCH_NORM", True)
    np.testing.assert_array_equal(model.predict(x, verbose=0), folded)
    assert model.evaluate(x, y, verbose=0) == folded_loss
