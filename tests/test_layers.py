"""Tests of NiNBlock, NiNClassifierHead and FusedBatchNormalization."""

import math

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import check_layer, to_numpy
from ninlayers import FusedBatchNormalization, NiNBlock, NiNClassifierHead

# Runs on every Keras backend (the README's backend matrix).
pytestmark = pytest.mark.backends


def conv_out(size: int, kernel: int, stride: int, padding: str) -> int:
    if padding == "same":
        return math.ceil(size / stride)
    return (size - kernel) // stride + 1


def block_params(c_in, f, k, mlp, batch_norm):
    """Hand-written count: the paper's formula, or BN's 4 weights a channel."""
    if batch_norm:
        return k * k * c_in * f + mlp * f * f + (1 + mlp) * 4 * f
    return k * k * c_in * f + f + mlp * (f * f + f)


@st.composite
def block_cases(draw):
    kernel = draw(st.integers(1, 5))
    stride = draw(st.integers(1, 3))
    padding = draw(st.sampled_from(["same", "valid"]))
    height = draw(st.integers(kernel, 12))
    width = draw(st.integers(kernel, 12))
    return {
        "kwargs": {
            "filters": draw(st.integers(1, 12)),
            "kernel_size": kernel,
            "strides": stride,
            "padding": padding,
            "num_mlp_layers": draw(st.integers(0, 3)),
            "use_batch_norm": draw(st.booleans()),
            "activation": draw(st.sampled_from(["relu", "gelu", "elu"])),
        },
        "input_shape": (2, height, width, draw(st.integers(1, 4))),
    }


@given(block_cases())
def test_block_shapes_params_config_gradients(case):
    kw = case["kwargs"]
    batch, height, width, channels = case["input_shape"]
    k, s, p = kw["kernel_size"], kw["strides"], kw["padding"]
    expected_shape = (
        batch,
        conv_out(height, k, s, p),
        conv_out(width, k, s, p),
        kw["filters"],
    )
    check_layer(
        NiNBlock,
        kw,
        case["input_shape"],
        expected_shape,
        block_params(
            channels, kw["filters"], k, kw["num_mlp_layers"], kw["use_batch_norm"]
        ),
        # Batch norm's moving mean and variance after every convolution.
        expected_num_non_trainable=(
            2 * (1 + kw["num_mlp_layers"]) if kw["use_batch_norm"] else 0
        ),
    )


LAYER_CASES = [
    (NiNBlock, {"filters": 6, "kernel_size": 3}, (2, 7, 7, 3), (2, 7, 7, 6)),
    (
        NiNBlock,
        {"filters": 4, "kernel_size": 3, "strides": 2, "use_batch_norm": True},
        (2, 9, 9, 2),
        (2, 5, 5, 4),
    ),
    (NiNClassifierHead, {"num_classes": 5}, (2, 4, 4, 8), (2, 5)),
    (
        NiNClassifierHead,
        {"num_classes": 3, "use_batch_norm": True, "output_activation": None},
        (2, 3, 3, 4),
        (2, 3),
    ),
    (FusedBatchNormalization, {}, (2, 3, 3, 4), (2, 3, 3, 4)),
]


@pytest.mark.parametrize(
    "layer_cls, kwargs, input_shape, output_shape",
    LAYER_CASES,
    ids=lambda v: getattr(v, "__name__", None),
)
def test_layers_fit_and_keep_mixed_precision_dtypes(
    layer_cls, kwargs, input_shape, output_shape
):
    check_layer(layer_cls, kwargs, input_shape, output_shape, check_training=True)


def test_block_defaults_are_the_paper_micro_network():
    block = NiNBlock(96, 3)
    block.build((None, 28, 28, 1))
    assert [conv.kernel_size for conv in block.convs] == [(3, 3), (1, 1), (1, 1)]
    assert all(conv.use_bias for conv in block.convs)
    assert block.count_params() == 3 * 3 * 1 * 96 + 96 + 2 * (96 * 96 + 96)
    # Each convolution is followed by a ReLU: no output is negative.
    y = block(np.random.default_rng(1).normal(size=(2, 28, 28, 1)))
    assert float(np.min(to_numpy(y))) >= 0.0


def test_block_matches_numpy():
    block = NiNBlock(4, 3, num_mlp_layers=1, padding="valid")
    x = np.random.default_rng(2).normal(size=(1, 5, 5, 2)).astype("float32")
    y = to_numpy(block(x))
    (k0, b0), (k1, b1) = [c.get_weights() for c in block.convs]
    first = np.zeros((1, 3, 3, 4), "float32")
    for i in range(3):
        for j in range(3):
            patch = x[0, i : i + 3, j : j + 3, :]
            first[0, i, j] = np.tensordot(patch, k0, axes=3) + b0
    first = np.maximum(first, 0)
    expected = np.maximum(first @ k1[0, 0] + b1, 0)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_block_channels_first_equals_channels_last(batch_norm):
    first = NiNBlock(
        6, 3, strides=2, data_format="channels_first", use_batch_norm=batch_norm
    )
    last = NiNBlock(6, 3, strides=2, use_batch_norm=batch_norm)
    x = np.random.default_rng(3).normal(size=(2, 9, 9, 3)).astype("float32")
    last(x)
    first(np.transpose(x, (0, 3, 1, 2)))
    first.set_weights(last.get_weights())
    y_last = to_numpy(last(x, training=batch_norm))
    y_first = to_numpy(first(np.transpose(x, (0, 3, 1, 2)), training=batch_norm))
    assert y_first.shape == (2, 6, 5, 5)
    np.testing.assert_allclose(
        np.transpose(y_first, (0, 2, 3, 1)), y_last, rtol=1e-4, atol=1e-4
    )


def test_block_final_activation_off_allows_negative_outputs():
    block = NiNBlock(8, 3, final_activation=False)
    y = block(np.random.default_rng(4).normal(size=(4, 6, 6, 3)))
    assert float(np.min(to_numpy(y))) < 0.0


@given(
    num_classes=st.integers(1, 12),
    kernel=st.integers(1, 4),
    size=st.integers(1, 7),
    channels=st.integers(1, 16),
    logits=st.booleans(),
)
def test_head_shapes_params_and_probabilities(
    num_classes, kernel, size, channels, logits
):
    head = check_layer(
        NiNClassifierHead,
        {
            "num_classes": num_classes,
            "kernel_size": kernel,
            "output_activation": None if logits else "softmax",
        },
        (3, size, size, channels),
        (3, num_classes),
        block_params(channels, num_classes, kernel, 2, False),
        expected_num_non_trainable=0,
    )
    x = np.random.default_rng(5).normal(size=(3, size, size, channels))
    scores = to_numpy(head(x))
    maps = to_numpy(head.class_maps(x))
    assert maps.shape == (3, size, size, num_classes)
    pooled = maps.mean(axis=(1, 2))
    if logits:
        np.testing.assert_allclose(scores, pooled, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_allclose(scores.sum(axis=-1), 1.0, rtol=1e-5)
        softmax = np.exp(pooled) / np.exp(pooled).sum(axis=-1, keepdims=True)
        np.testing.assert_allclose(scores, softmax, rtol=1e-5, atol=1e-6)


def test_head_softmax_is_float32_under_mixed_precision():
    head = NiNClassifierHead(10, dtype="mixed_bfloat16")
    probs = head(np.ones((2, 3, 3, 8), "float32"))
    assert keras.backend.standardize_dtype(probs.dtype) == "float32"
    maps = head.class_maps(np.ones((2, 3, 3, 8)))
    assert keras.backend.standardize_dtype(maps.dtype) == "bfloat16"


@given(
    shape=st.tuples(
        st.integers(2, 6), st.integers(1, 5), st.integers(1, 5), st.integers(1, 6)
    ),
    shift=st.floats(-3, 3),
    scale=st.floats(0.1, 5),
)
def test_fused_batch_norm_equals_keras(shape, shift, scale):
    x = (np.random.default_rng(6).normal(size=shape) * scale + shift).astype("float32")
    fused = FusedBatchNormalization(momentum=0.5)
    plain = keras.layers.BatchNormalization(momentum=0.5)
    fused.build(shape)
    plain.build(shape)
    gamma = np.random.default_rng(7).uniform(0.5, 2, shape[-1]).astype("float32")
    for layer in (fused, plain):
        layer.gamma.assign(gamma)
    np.testing.assert_allclose(
        to_numpy(fused(x, training=True)),
        to_numpy(plain(x, training=True)),
        rtol=1e-4,
        atol=1e-4,
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(fused.moving_mean),
        keras.ops.convert_to_numpy(plain.moving_mean),
        rtol=1e-5,
        atol=1e-6,
    )
    # The moving variance follows the biased batch variance on every backend
    # (TensorFlow's fused kernel returns the unbiased one; the layer undoes
    # its n / (n - 1)), so TensorFlow trains the statistics JAX and PyTorch
    # train.
    biased = x.var(axis=(0, 1, 2))
    for layer in (fused, plain):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(layer.moving_variance),
            0.5 * 1.0 + 0.5 * biased,
            rtol=1e-3,
            atol=1e-4,
        )
    for layer in (fused, plain):
        layer.moving_variance.assign(np.full(shape[-1], 2.0, "float32"))
    np.testing.assert_allclose(
        to_numpy(fused(x, training=False)),
        to_numpy(plain(x, training=False)),
        rtol=1e-4,
        atol=1e-4,
    )


@given(shape=st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 6)))
def test_fused_batch_norm_passes_the_layer_checks(shape):
    check_layer(
        FusedBatchNormalization,
        {},
        (2, *shape),
        (2, *shape),
        expected_num_params=4 * shape[-1],
        expected_num_non_trainable=2,
    )


def test_fused_batch_norm_bfloat16_keeps_dtype_and_float32_weights():
    layer = FusedBatchNormalization(dtype="mixed_bfloat16")
    y = layer(np.ones((2, 3, 3, 4), "float32"), training=True)
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    assert all(w.dtype == "float32" for w in layer.weights)


def test_fused_batch_norm_falls_back_for_2d_inputs():
    layer = FusedBatchNormalization()
    x = np.random.default_rng(8).normal(size=(8, 5)).astype("float32")
    y = to_numpy(layer(x, training=True))
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"filters": 0, "kernel_size": 3}, "Received: filters=0"),
        ({"filters": 2.5, "kernel_size": 3}, "Received: filters=2.5"),
        ({"filters": True, "kernel_size": 3}, "Received: filters=True"),
        ({"filters": 4, "kernel_size": 0}, "Received: kernel_size=0"),
        ({"filters": 4, "kernel_size": (3, 3, 3)}, "kernel_size=(3, 3, 3)"),
        ({"filters": 4, "kernel_size": 3, "strides": -1}, "Received: strides=-1"),
        ({"filters": 4, "kernel_size": 3, "padding": "full"}, "padding='full'"),
        ({"filters": 4, "kernel_size": 3, "activation": "nope"}, "activation='nope'"),
        ({"filters": 4, "kernel_size": 3, "data_format": "NHWC"}, "data_format='NHWC'"),
        ({"filters": 4, "kernel_size": 3, "num_mlp_layers": -1}, "num_mlp_layers=-1"),
    ],
)
def test_block_refuses_bad_arguments(kwargs, fragment):
    with pytest.raises(ValueError) as info:
        NiNBlock(**kwargs)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"num_classes": 0}, "Received: num_classes=0"),
        ({"num_classes": "10"}, "Received: num_classes='10'"),
        ({"num_classes": 10, "output_activation": "sigmoid"}, "'sigmoid'"),
    ],
)
def test_head_refuses_bad_arguments(kwargs, fragment):
    with pytest.raises(ValueError) as info:
        NiNClassifierHead(**kwargs)
    assert fragment in str(info.value)


def test_block_refuses_wrong_channel_count_once_built():
    block = NiNBlock(4, 3)
    block(np.zeros((1, 5, 5, 3), "float32"))
    with pytest.raises(ValueError, match="expected axis -1 of input shape"):
        block(np.zeros((1, 5, 5, 2), "float32"))
    with pytest.raises(ValueError, match="expected ndim=4"):
        block(np.zeros((5, 5, 3), "float32"))
