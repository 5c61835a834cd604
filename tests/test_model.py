"""Tests of the NiN model: architecture, shapes, training step, XLA."""

import json
import textwrap

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import (
    SMALL,
    gradients,
    nin_params,
    run_python,
    spatial,
    spy_on_keras_predict,
    to_numpy,
    trunk_params,
)
from ninlayers import (
    ARCHITECTURES,
    BlockSpec,
    NiN,
    NiNBackbone,
    minimum_input_size,
    runtime,
)

# Runs on every Keras backend (the README's backend matrix).
pytestmark = pytest.mark.backends

#: The paper's (and the seed's) form: the counts below are for it.
PAPER = {"use_batch_norm": False, "head_final_activation": True}


def test_the_seed_network_is_the_default_trunk_without_batch_norm():
    model = NiN(precision="float32", **PAPER)
    assert model.count_params() == 1_588_198
    assert model.count_params() == nin_params(1, [(96, 3), (256, 3), (384, 3)], 10)
    assert model.input_shape == (None, 28, 28, 1)
    assert model.output_shape == (None, 10)
    assert model.minimum_input_size == 15
    assert [layer.name for layer in model.layers] == [
        "images",
        "block1",
        "pool1",
        "block2",
        "pool2",
        "block3",
        "pool3",
        "head",
    ]


def test_imagenet_variant_is_one_argument_away():
    model = NiN(architecture="nin_224", precision="float32", **PAPER)
    assert model.input_shape == (None, 224, 224, 3)
    assert model.count_params() == nin_params(3, [(96, 11), (256, 5), (384, 3)], 10)
    block1 = model.get_layer("block1")
    assert (block1.kernel_size, block1.strides, block1.padding) == (
        (11, 11),
        (4, 4),
        "valid",
    )
    assert model.get_layer("dropout3").rate == 0.5
    assert model.get_layer("head").input.shape[1:3] == (5, 5)


@given(size=st.integers(15, 80), channels=st.integers(1, 3))
def test_parameter_count_does_not_depend_on_input_size(size, channels):
    model = NiN(input_shape=(size, size + 3, channels), precision="float32", **PAPER)
    assert model.count_params() == nin_params(
        channels, [(96, 3), (256, 3), (384, 3)], 10
    )
    specs = ARCHITECTURES["nin_28"]["blocks"]
    head_input = model.get_layer("head").input.shape
    assert head_input[1:3] == (spatial(size, specs), spatial(size + 3, specs))


def test_none_spatial_dims_accept_any_size_above_minimum():
    model = NiN(input_shape=(None, None, 1), precision="float32", **PAPER)
    assert model.count_params() == 1_588_198
    for size in (15, 28, 41):
        x = np.zeros((2, size, size, 1), "float32")
        assert model.predict(x, verbose=0).shape == (2, 10)
    with pytest.raises(ValueError, match="at least 15x15"):
        model(np.zeros((1, 14, 20, 1), "float32"))


@given(size=st.integers(1, 14))
def test_input_below_minimum_is_refused_naming_it(size):
    with pytest.raises(ValueError, match=r"at least 15x15 pixels.*Received"):
        NiN(input_shape=(size, 28, 1), precision="float32")


@st.composite
def architectures(draw):
    n = draw(st.integers(1, 3))
    return [
        BlockSpec(
            filters=draw(st.integers(1, 12)),
            kernel_size=draw(st.integers(1, 5)),
            strides=draw(st.integers(1, 2)),
            padding=draw(st.sampled_from(["same", "valid"])),
            pool_size=draw(st.sampled_from([None, 2, 3])),
            pool_strides=draw(st.integers(1, 2)),
        )
        for _ in range(n)
    ]


@given(
    specs=architectures(),
    num_classes=st.integers(1, 12),
    extra=st.integers(0, 10),
    include_head=st.booleans(),
)
def test_custom_architectures_shapes_params_and_config(
    specs, num_classes, extra, include_head
):
    size = minimum_input_size(specs) + extra
    if include_head:
        model = NiN(
            num_classes=num_classes,
            input_shape=(size, size, 2),
            architecture=specs,
            precision="float32",
            **PAPER,
        )
    else:
        model = NiNBackbone(
            specs, (size, size, 2), use_batch_norm=False, dtype="float32"
        )
    blocks = [(s.filters, s.kernel_size) for s in specs]
    if include_head:
        assert model.count_params() == nin_params(2, blocks, num_classes)
        assert model.output_shape == (None, num_classes)
    else:
        assert model.count_params() == trunk_params(2, blocks)
        final = spatial(size, specs)
        assert model.output_shape == (None, final, final, specs[-1].filters)
    assert minimum_input_size(specs) >= 1
    assert spatial(minimum_input_size(specs), specs) >= 1
    assert spatial(minimum_input_size(specs) - 1, specs) < 1 or (
        minimum_input_size(specs) == 1
    )
    config = json.loads(json.dumps(model.get_config()))
    clone = type(model).from_config(config)
    assert json.dumps(clone.get_config(), sort_keys=True) == json.dumps(
        model.get_config(), sort_keys=True
    )
    assert clone.count_params() == model.count_params()


def test_the_backbone_and_head_of_a_nin_compose_to_the_nin():
    full = NiN(precision="float32")
    assert isinstance(full.backbone, NiNBackbone) and full.head is full.get_layer(
        "head"
    )
    assert (
        full.backbone.count_params() == full.count_params() - full.head.count_params()
    )
    x = np.random.default_rng(0).uniform(size=(2, 28, 28, 1)).astype("float32")
    features = full.backbone(x)
    assert tuple(features.shape) == (2, 2, 2, 384)
    np.testing.assert_allclose(
        to_numpy(full.head(features)), full.predict(x, verbose=0), rtol=1e-5
    )


def test_include_head_false_and_forward_features_are_deprecated_aliases():
    full = NiN(precision="float32")
    with pytest.warns(DeprecationWarning, match="NiNBackbone"):
        trunk = NiN(include_head=False, precision="float32")
    assert isinstance(trunk, NiNBackbone) and trunk.output_shape == (None, 2, 2, 384)
    x = np.random.default_rng(0).uniform(size=(2, 28, 28, 1)).astype("float32")
    with pytest.warns(DeprecationWarning, match="backbone"):
        features = full.forward_features(x)
    with pytest.warns(DeprecationWarning, match="head"):
        probs = full.forward_head(features)
    np.testing.assert_allclose(to_numpy(probs), full.predict(x, verbose=0), rtol=1e-5)


def test_every_trainable_weight_gets_a_gradient():
    model = NiN(
        input_shape=(16, 16, 1),
        architecture=SMALL,
        use_batch_norm=True,
        precision="float32",
    )
    x = np.random.default_rng(0).uniform(size=(4, 16, 16, 1)).astype("float32")
    weights = keras.ops.convert_to_tensor(np.arange(10, dtype="float32"))
    grads = gradients(model, x, lambda y: keras.ops.sum(y * weights))
    assert len(grads) == len(model.trainable_variables) > 0
    for variable, grad in zip(model.trainable_variables, grads, strict=True):
        assert grad is not None, variable.path
        assert float(np.sum(np.abs(grad))) > 0, variable.path


class _BuiltinStep(NiN):
    """NiN with Keras's own train_step, to compare against."""

    def train_step(self, *args):
        return keras.Model.train_step(self, *args)


def _pair(use_batch_norm=False, **kwargs):
    models = []
    for cls in (NiN, _BuiltinStep):
        model = cls(
            input_shape=(16, 16, 1),
            architecture=SMALL,
            use_batch_norm=use_batch_norm,
            precision="float32",
            **kwargs,
        )
        model.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=False)
        models.append(model)
    models[1].set_weights(models[0].get_weights())
    return models


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.uniform(size=(n, 16, 16, 1)).astype("float32"),
        rng.integers(0, 10, n),
        rng.uniform(0.0, 2.0, n).astype("float32"),
    )


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("use_batch_norm", [False, True])
def test_train_step_equals_keras_builtin(weighted, use_batch_norm):
    ours, builtin = _pair(use_batch_norm)
    x, y, w = _data()
    kwargs = {"sample_weight": w} if weighted else {}
    h1 = ours.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, **kwargs)
    h2 = builtin.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, **kwargs)
    np.testing.assert_allclose(h1.history["loss"], h2.history["loss"], rtol=1e-5)
    np.testing.assert_allclose(
        h1.history["accuracy"], h2.history["accuracy"], rtol=1e-6
    )
    for a, b in zip(ours.get_weights(), builtin.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert "gradient_norm" in h1.history


def test_sample_weights_change_the_update():
    x, y, w = _data()
    a, _ = _pair()
    b, _ = _pair()
    b.set_weights(a.get_weights())
    a.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    b.fit(x, y, sample_weight=w, batch_size=32, epochs=1, shuffle=False, verbose=0)
    assert any(
        not np.allclose(p, q)
        for p, q in zip(a.get_weights(), b.get_weights(), strict=True)
    )


def _hand_gradient_norm(model, x, y):
    def loss(y_pred):
        return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y, y_pred))

    grads = gradients(model, x, loss)
    return float(np.sqrt(sum(np.sum(np.square(g)) for g in grads)))


def test_gradient_norm_metric_and_clipping_by_global_norm():
    x, y, _ = _data(16)
    model = NiN(
        input_shape=(16, 16, 1),
        architecture=SMALL,
        precision="float32",
        gradient_clip_norm=1e-3,
        **PAPER,
    )
    model.compile(optimizer=keras.optimizers.SGD(1.0), jit_compile=False)
    before = model.get_weights()
    expected_norm = _hand_gradient_norm(model, x, y)
    assert expected_norm > 1e-3
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    np.testing.assert_allclose(
        history.history["gradient_norm"][0], expected_norm, rtol=1e-4
    )
    step = np.sqrt(
        sum(
            np.sum((a - b) ** 2)
            for a, b in zip(model.get_weights(), before, strict=True)
        )
    )
    np.testing.assert_allclose(step, 1e-3, rtol=1e-3)


# Mixed precision with XLA is TensorFlow's GPU default. On PyTorch
# `jit_compile=True` is `torch.compile` (about a minute per case on 2 cores),
# and on JAX `jit_compile=False` runs eagerly: float32 covers their switch.
XLA_PRECISIONS = ["float32"] + (
    ["mixed_bfloat16"] if keras.backend.backend() == "tensorflow" else []
)


@pytest.mark.parametrize("precision", XLA_PRECISIONS)
def test_xla_on_and_off_give_the_same_outputs(precision):
    x, y, _ = _data(16)
    results = []
    for jit in (False, True):
        keras.utils.set_random_seed(1)
        model = NiN(input_shape=(16, 16, 1), architecture=SMALL, precision=precision)
        model.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=jit)
        assert model.jit_compile is jit
        history = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        results.append((history.history["loss"][0], model.predict(x, verbose=0)))
    tolerance = 1e-4 if precision == "float32" else 3e-2
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=tolerance)
    np.testing.assert_allclose(results[0][1], results[1][1], atol=tolerance)


def test_compile_defaults_resolve_per_device():
    model = NiN(input_shape=(16, 16, 1), architecture=SMALL)
    model.compile()
    expected = runtime.resolve_jit_compile("auto")
    assert model.jit_compile is expected
    if keras.backend.backend() == "jax":
        assert expected  # XLA is how Keras runs on JAX
    elif keras.backend.backend() == "torch":
        assert not expected
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    logits = NiN(input_shape=(16, 16, 1), architecture=SMALL, output_activation=None)
    logits.compile()
    assert logits.loss.from_logits


def test_mixed_float16_wraps_the_optimizer_in_loss_scaling():
    model = NiN(input_shape=(16, 16, 1), architecture=SMALL, precision="mixed_float16")
    model.compile()  # eager JAX (jit_compile=False) takes 30 s here
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    x, y, _ = _data(16)
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert np.isfinite(history.history["gradient_norm"][0])


def shapes_task(n=256, size=16, seed=0):
    """Four classes of shapes (bars, square, diagonal) at random places."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.uniform(0, 0.2, size=(n, size, size, 1)).astype("float32")
    for i, label in enumerate(y):
        r, c = rng.integers(0, size - 6, 2)
        if label == 0:
            x[i, r + 3, c : c + 6] = 1.0
        elif label == 1:
            x[i, r : r + 6, c + 3] = 1.0
        elif label == 2:
            x[i, r : r + 4, c : c + 4] = 1.0
        else:
            x[i, np.arange(6) + r, np.arange(6) + c] = 1.0
    return x, y


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="tf.function's tracing"
)
def test_fit_traces_the_training_step_once(monkeypatch):
    # Without a strategy Keras builds the metrics and optimizer inside the
    # first trace; their new variables make `tf.function` trace again.
    from ninlayers._steps import tensorflow as steps

    traces = []
    step = steps.train_step
    monkeypatch.setattr(
        steps, "train_step", lambda *args: traces.append(1) or step(*args)
    )
    x, y, _ = _data(16)
    model = NiN(input_shape=(16, 16, 1), architecture=SMALL)
    model.compile()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert len(traces) == 1


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.data")
@pytest.mark.parametrize("autotune", [False, True])
def test_arrays_are_fed_without_tf_data_autotuning_unless_asked(monkeypatch, autotune):
    import tensorflow as tf

    from ninlayers import _keras_compat, runtime

    monkeypatch.setattr(runtime, "ARRAY_DATA_AUTOTUNE", autotune)
    read = []
    original = _keras_compat.set_array_dataset_options

    def spy(iterator, options):
        applied = original(iterator, options)
        read.append((applied, iterator._distributed_dataset.options()))
        return applied

    monkeypatch.setattr(_keras_compat, "set_array_dataset_options", spy)
    x, y, _ = _data(16)
    model = NiN(input_shape=(16, 16, 1), architecture=SMALL)
    model.compile()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # arrays
    model.evaluate(x, y, verbose=0)
    own = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)  # the caller's own
    model.fit(own, epochs=1, shuffle=False, verbose=0)
    if autotune:
        assert read == []  # Keras's own pipelines, as Keras builds them
    else:
        assert [applied for applied, _ in read] == [True, True, False]
        assert [o.autotune.enabled for _, o in read] == [False, False, None]


@pytest.mark.filterwarnings("error::UserWarning")  # none of Keras's
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.data")
@pytest.mark.parametrize("autotune", [False, True])
def test_predict_reads_arrays_without_tf_data_autotuning_unless_asked(
    monkeypatch, autotune
):
    import tensorflow as tf

    from ninlayers import runtime

    monkeypatch.setattr(runtime, "ARRAY_DATA_AUTOTUNE", autotune)
    monkeypatch.setattr(runtime, "FOLD_BATCH_NORM", False)  # `model(x)`'s kernels
    model = NiN(input_shape=(16, 16, 1), architecture=SMALL)
    x, _, _ = _data(21)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    given = spy_on_keras_predict(monkeypatch)
    got = model.predict(x, 8, verbose=0)  # batch size as Keras's second argument
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    own = tf.data.Dataset.from_tensor_slices(x).batch(4)
    model.predict(own, verbose=0)
    model.predict(x, steps=1, verbose=0)
    (arrays, args, kwargs), (dataset, _, _), (stepped, _, _) = given
    assert dataset is own and stepped is x  # the caller's own pipeline; steps
    if autotune:
        assert arrays is x and args == (8,)  # Keras's own reading
        return
    assert isinstance(arrays, tf.data.Dataset) and (args, kwargs) == (
        (),
        {"verbose": 0},
    )
    assert arrays.options().autotune.enabled is False
    assert [len(batch) for batch in arrays] == [8, 8, 5]


@pytest.mark.filterwarnings("error::UserWarning")  # none of Keras's
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's")
def test_predict_reads_arrays_in_its_own_batch_size_unless_told(monkeypatch):
    import tensorflow as tf

    from ninlayers import runtime

    monkeypatch.setitem(runtime.PREDICT_BATCH_PIXELS, "tensorflow", 40 * 16 * 16)
    model = NiN(input_shape=(16, 16, 1), architecture=SMALL)
    x, _, _ = _data(100)
    given = spy_on_keras_predict(monkeypatch)
    batches = _Batches()
    own = tf.data.Dataset.from_tensor_slices(x).batch(64)
    outputs = [
        model.predict(x, verbose=0),  # 40 images of 16x16 a batch
        model.predict(x, 50, verbose=0),  # the caller's
        model.predict(x, verbose=0, callbacks=[batches]),  # Keras's 32
        model.predict(x, verbose=0, steps=2),  # steps count Keras's batches
        model.predict(own, verbose=0),
    ]
    assert [len(outputs[i]) for i in (0, 1, 2, 4)] == [100] * 4
    (ours, _, _), (told, _, _), (called_back, _, _), stepped, dataset = given
    assert [len(batch) for batch in ours] == [40, 40, 20]
    assert [len(batch) for batch in told] == [50, 50]
    assert [len(batch) for batch in called_back] == [32, 32, 32, 4]
    assert batches.ends == [0, 1, 2, 3]
    assert stepped == (x, (), {"verbose": 0, "steps": 2})
    assert dataset[0] is own and "batch_size" not in dataset[2]
    monkeypatch.setattr(runtime, "ARRAY_DATA_AUTOTUNE", True)  # Keras's reading
    model.predict(x, verbose=0)
    assert given[-1][0] is x and given[-1][1] == (40, 0)  # batch size, verbose


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's")
@pytest.mark.parametrize(
    "shape, batch",
    [((28, 28, 1), 128), ((14, 20, 3), 358), ((56, 56, 1), 32), ((224, 224, 3), 32)],
)
def test_predicts_own_batch_holds_its_pixels_and_at_least_kerass(shape, batch):
    from ninlayers import _tf_feeding

    arguments = {"x": np.zeros((2, *shape), "uint8")}
    assert _tf_feeding._default_batch_size(arguments)
    assert arguments["batch_size"] == batch
    assert not _tf_feeding._default_batch_size({"x": np.zeros((2, 28, 28))})
    assert not _tf_feeding._default_batch_size({"x": np.zeros((2, 0, 28, 1))})


class _Batches(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.ends = []

    def on_predict_batch_end(self, batch, logs=None):
        self.ends.append(batch)


@pytest.mark.filterwarnings("error::UserWarning")  # none of Keras's
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.function")
def test_predict_runs_several_batches_per_graph_call_without_callbacks(monkeypatch):
    from ninlayers import runtime

    monkeypatch.setitem(runtime.PREDICT_STEPS_PER_EXECUTION, "tensorflow", 4)
    monkeypatch.setattr(runtime, "FOLD_BATCH_NORM", False)  # `model(x)`'s kernels
    model = NiN(input_shape=(16, 16, 1), architecture=SMALL)
    x, _, _ = _data(21)  # 11 batches of 2: calls of 4, 4 and 3
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    batches = _Batches()
    # A callback sees every batch; Keras builds its function for one each.
    np.testing.assert_allclose(
        model.predict(x, batch_size=2, verbose=0, callbacks=[batches]),
        expected,
        atol=1e-6,
    )
    assert batches.ends == list(range(11)) and model.steps_per_execution == 1
    calls = []
    single = model.predict_function
    assert single is not None and not getattr(single, "_ninlayers_multi_step", False)
    got = model.predict(x, batch_size=2, verbose=0)  # built again, for 4
    np.testing.assert_allclose(got, expected, atol=1e-6)
    several = model.predict_function
    assert several is not single and model.steps_per_execution == 1
    monkeypatch.setattr(
        model, "predict_function", lambda data: calls.append(len(data)) or several(data)
    )
    model.predict_function._ninlayers_multi_step = True
    np.testing.assert_allclose(
        model.predict(x, batch_size=2, verbose=0), expected, atol=1e-6
    )
    assert calls == [4, 4, 3]
    # The function for several batches takes one as well.
    batches.ends.clear()
    np.testing.assert_allclose(
        model.predict(x, batch_size=2, verbose=0, callbacks=[batches]),
        expected,
        atol=1e-6,
    )
    assert batches.ends == list(range(11)) and calls[3:] == [1] * 11
    np.testing.assert_allclose(model.predict_on_batch(x[:3]), expected[:3], atol=1e-6)
    # `steps` counts batches, not calls: one batch per call.
    calls.clear()
    got = model.predict(x, batch_size=2, steps=3, verbose=0)
    np.testing.assert_allclose(got, expected[:6], atol=1e-6)
    assert calls == [1, 1, 1]


def test_short_fit_on_a_learnable_task_lowers_the_loss():
    x, y = shapes_task()
    model = NiN(
        num_classes=4, input_shape=(16, 16, 1), architecture=SMALL, use_batch_norm=True
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(x, y, batch_size=32, epochs=12, verbose=0)
    assert history.history["loss"][-1] < 0.7 * history.history["loss"][0]
    assert history.history["accuracy"][-1] > 0.8
    # NiN's own step ran: it logs the gradient norm.
    assert all(np.isfinite(history.history["gradient_norm"]))


TWO_CPUS = """
import json
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
from ninlayers import NiN
rng = np.random.default_rng(0)
arch = [{"filters": 8, "kernel_size": 3}, {"filters": 16, "kernel_size": 3}]
"""


def run_on_two_cpus(body: str):
    """Runs `body` after `TWO_CPUS` in a fresh process; the JSON it printed last.

    The CPU is split into two logical devices before TensorFlow starts, which
    only a new process allows.
    """
    out = run_python(TWO_CPUS + textwrap.dedent(body))
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_train_step_under_mirrored_strategy_matches_one_device():
    results = run_on_two_cpus(
        """
        x = rng.uniform(size=(64, 16, 16, 1)).astype("float32")
        y = rng.integers(0, 10, 64)
        keras.utils.set_random_seed(0)
        init = NiN(input_shape=(16, 16, 1), architecture=arch,
                   precision="float32", use_batch_norm=False,
                   head_final_activation=True).get_weights()
        results = {}
        for name, strategy in [
            ("one", tf.distribute.get_strategy()),
            ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])),
        ]:
            with strategy.scope():
                model = NiN(input_shape=(16, 16, 1), architecture=arch,
                            precision="float32", gradient_clip_norm=0.05,
                            use_batch_norm=False, head_final_activation=True)
                model.compile(optimizer=keras.optimizers.SGD(0.1),
                              jit_compile=False)
            model.set_weights(init)
            h = model.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0)
            results[name] = {
                "replicas": strategy.num_replicas_in_sync,
                "history": h.history,
                "weights": [w.tolist() for w in model.get_weights()],
            }
        print(json.dumps(results))
        """
    )
    one, mirrored = results["one"], results["mirrored"]
    assert (one["replicas"], mirrored["replicas"]) == (1, 2)
    for key in ("loss", "accuracy", "gradient_norm"):
        np.testing.assert_allclose(
            mirrored["history"][key], one["history"][key], rtol=1e-4, atol=1e-5
        )
    assert 2.0 < one["history"]["loss"][0] < 2.6  # 10 random classes: ~ln 10
    assert one["history"]["gradient_norm"][0] > 0.05  # so clipping was active
    for a, b in zip(mirrored["weights"], one["weights"], strict=True):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_batch_norm_statistics_stay_equal_across_mirrored_replicas():
    spreads = run_on_two_cpus(
        """
        # The two replicas see very different halves of each batch.
        x = np.concatenate([rng.uniform(0, 0.1, (32, 16, 16, 1)),
                            rng.uniform(0.5, 1.0, (32, 16, 16, 1))])
        x = x.reshape(2, 2, 16, 16, 16, 1).transpose(1, 0, 2, 3, 4, 5)
        x = x.reshape(64, 16, 16, 1).astype("float32")
        y = rng.integers(0, 10, 64)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            model = NiN(input_shape=(16, 16, 1), architecture=arch,
                        precision="float32", use_batch_norm=True,
                        head_final_activation=True)
            model.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=False)
        model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
        spreads = {}
        for weight in model.weights:
            if "moving_" in weight.path:
                local = strategy.experimental_local_results(weight.value)
                values = np.stack([np.asarray(v) for v in local])
                spreads[weight.path] = float(np.ptp(values, axis=0).max())
        print(json.dumps(spreads))
        """
    )
    assert len(spreads) == 2 * 9  # 3 norms in each block and the head
    assert max(spreads.values()) < 1e-6, spreads


@pytest.mark.slow
@pytest.mark.tensorflow_only
def test_predict_folds_batch_norm_in_mirrored_replicas_too():
    # A MirroredStrategy traces each replica's step in a thread of its own.
    results = run_on_two_cpus(
        """
        from ninlayers import _tf_inference
        folded, fold = [], _tf_inference.conv_batch_norm
        def spy(conv, norm, x):
            y = fold(conv, norm, x)
            folded.append(y is not None)
            return y
        _tf_inference.conv_batch_norm = spy
        x = rng.uniform(size=(8, 16, 16, 1)).astype("float32")
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            model = NiN(input_shape=(16, 16, 1), architecture=arch,
                        precision="float32")
        predicted = model.predict(x, verbose=0)
        traced = list(folded)
        expected = np.asarray(model(x, training=False))
        print(json.dumps({"traced": traced, "after": folded[len(traced):],
                          "gap": float(np.abs(predicted - expected).max())}))
        """
    )
    # Both replicas' blocks, in their own threads; not the call after.
    assert len(results["traced"]) >= 4 and all(results["traced"]), results
    assert results["after"] and not any(results["after"]), results
    assert results["gap"] < 1e-5


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"num_classes": 0}, "Received: num_classes=0"),
        ({"architecture": "resnet"}, "architecture='resnet'"),
        ({"architecture": []}, "architecture=[]"),
        ({"architecture": [{"filters": 8}]}, "at least `filters` and `kernel_size`"),
        ({"architecture": [{"filters": 8, "kernel_size": 3, "size": 2}]}, "'size'"),
        ({"architecture": [(0, 3)]}, "Received: filters=0"),
        ({"input_shape": (28, 28)}, "input_shape=(28, 28)"),
        ({"input_shape": (28, 28, 0)}, "channels=0"),
        ({"gradient_clip_norm": -1.0}, "gradient_clip_norm=-1.0"),
        ({"precision": "float8"}, "precision='float8'"),
    ],
)
def test_model_refuses_bad_arguments(kwargs, fragment):
    with pytest.raises(ValueError) as info:
        NiN(**kwargs)
    assert fragment in str(info.value)


def test_model_refuses_wrong_rank_and_channels():
    model = NiN(precision="float32")
    with pytest.raises(ValueError, match="rank 4"):
        model(np.zeros((28, 28, 1), "float32"))
    with pytest.raises(ValueError, match="expected axis -1 of input shape"):
        model(np.zeros((1, 28, 28, 3), "float32"))


def test_test_time_flip_averages_image_and_mirror_at_inference_only(tmp_path):
    x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype("float32")
    plain = NiN(precision="float32", output_activation=None, **PAPER)
    flipping = NiN(
        precision="float32", output_activation=None, test_time_flip=True, **PAPER
    )
    flipping.set_weights(plain.get_weights())
    expected = (
        plain.predict(x, verbose=0) + plain.predict(x[:, :, ::-1], verbose=0)
    ) / 2
    np.testing.assert_allclose(flipping.predict(x, verbose=0), expected, atol=1e-5)
    # The image alone would give another answer: the mirror counts.
    assert not np.allclose(expected, plain.predict(x, verbose=0), atol=1e-5)
    reloaded = _trains_as_is_and_reloads(flipping, plain, x, expected, tmp_path)
    assert reloaded.test_time_flip is True


def _trains_as_is_and_reloads(model, plain, x, expected, tmp_path):
    """Training sees the images as they are; a saved copy predicts `expected`."""
    np.testing.assert_allclose(
        to_numpy(model(x, training=True)),
        to_numpy(plain(x, training=True)),
        atol=1e-5,
    )
    model.save(tmp_path / "views.keras")
    reloaded = keras.saving.load_model(tmp_path / "views.keras")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), expected, atol=1e-5)
    return reloaded


def _shifted(x: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """`x` moved `rows` down and `columns` right, zero-filled (NumPy's way)."""
    height, width = x.shape[1:3]
    padded = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    return padded[:, 2 - rows : 2 - rows + height, 2 - columns : 2 - columns + width]


@pytest.mark.parametrize("flip", [False, True])
def test_test_time_shift_averages_shifted_views_at_inference_only(tmp_path, flip):
    x = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype("float32")
    plain = NiN(precision="float32", output_activation=None, **PAPER)
    shifting = NiN(
        precision="float32",
        output_activation=None,
        test_time_flip=flip,
        test_time_shift=2,
        **PAPER,
    )
    shifting.set_weights(plain.get_weights())
    views = [x] + [_shifted(x, *o) for o in ((0, 2), (0, -2), (2, 0), (-2, 0))]
    views += [view[:, :, ::-1] for view in views] if flip else []
    expected = np.mean([plain.predict(v, verbose=0) for v in views], axis=0)
    np.testing.assert_allclose(shifting.predict(x, verbose=0), expected, atol=1e-5)
    # Without the shifted views the answer differs: they count.
    fewer = NiN(
        precision="float32", output_activation=None, test_time_flip=flip, **PAPER
    )
    fewer.set_weights(plain.get_weights())
    assert not np.allclose(expected, fewer.predict(x, verbose=0), atol=1e-5)
    reloaded = _trains_as_is_and_reloads(shifting, plain, x, expected, tmp_path)
    assert (reloaded.test_time_shift, reloaded.test_time_flip) == (2, flip)


@pytest.mark.parametrize("value", [-1, 1.5, "1", True])
def test_test_time_shift_must_be_a_non_negative_int(value):
    with pytest.raises(ValueError, match="test_time_shift") as info:
        NiN(test_time_shift=value)
    assert "\n" not in str(info.value)


def test_test_time_flip_without_head_is_refused():
    with pytest.raises(ValueError, match="needs the head"):
        NiN(include_head=False, test_time_flip=True)
    with pytest.raises(ValueError, match="test_time_shift.*needs the head"):
        NiN(include_head=False, test_time_shift=1)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_named_architecture_builds_with_its_hand_counted_parameters(name):
    entry = ARCHITECTURES[name]
    assert set(entry) == {"blocks", "input_shape"}
    model = NiN(architecture=name, precision="float32", **PAPER)
    channels = entry["input_shape"][2]
    blocks = [(spec.filters, spec.kernel_size) for spec in entry["blocks"]]
    assert model.input_shape == (None, *entry["input_shape"])
    assert model.count_params() == nin_params(channels, blocks, 10)
    size = minimum_input_size(name)
    assert spatial(size, entry["blocks"]) == 1
    assert spatial(size - 1, entry["blocks"]) < 1
    free = NiN(architecture=name, input_shape=(None, None, channels))
    x = np.zeros((1, size, size, channels), "float32")
    assert free.predict(x, verbose=0).shape == (1, 10)


def test_config_records_the_resolved_dtype_policy(monkeypatch):
    model = NiN(input_shape=(16, 16, 1), architecture=SMALL, precision="auto")
    config = model.get_config()
    assert config["precision"] == "auto"
    saved = keras.dtype_policies.deserialize(config["dtype"]).name
    assert saved == model.dtype_policy.name
    # Another machine whose "auto" means something else rebuilds the same.
    other = "float32" if saved != "float32" else "mixed_bfloat16"
    monkeypatch.setenv("NINLAYERS_PRECISION", other)
    assert NiN(input_shape=(16, 16, 1), architecture=SMALL).dtype_policy.name == other
    assert NiN.from_config(json.loads(json.dumps(config))).dtype_policy.name == saved


def test_the_backbone_is_the_graph_up_to_the_head():
    model = NiN(input_shape=(None, None, 1), precision="float32")
    x = np.random.default_rng(1).uniform(size=(2, 20, 20, 1)).astype("float32")
    trunk = keras.Model(model.input, model.get_layer("pool3").output)
    np.testing.assert_allclose(
        to_numpy(model.backbone(x)), to_numpy(trunk(x)), rtol=1e-6
    )
    # The size check applies to it as to the model.
    with pytest.raises(ValueError, match="at least 15x15"):
        model.backbone(np.zeros((1, 12, 12, 1), "float32"))
