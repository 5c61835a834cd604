"""`NiNBackbone`: the trunk alone, at any size, with every stage's output."""

import json

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import (
    SMALL,
    check_backbone,
    config_json,
    spatial,
    spy_on_keras_predict,
    to_numpy,
    trunk_params,
)
from ninlayers import ARCHITECTURES, BlockSpec, NiN, NiNBackbone, minimum_input_size

pytestmark = pytest.mark.backends


def test_backbone_passes_the_keras_hub_backbone_checks(tmp_path):
    x = np.random.default_rng(0).uniform(size=(2, 16, 16, 1)).astype("float32")
    specs = [BlockSpec.from_config(s) for s in SMALL]
    final = spatial(16, specs)
    check_backbone(
        NiNBackbone,
        {"architecture": SMALL, "image_shape": (16, 16, 1), "dtype": "float32"},
        x,
        (2, final, final, 16),
        tmp_path,
    )


@given(
    size=st.integers(15, 60),
    channels=st.integers(1, 4),
    use_batch_norm=st.booleans(),
)
def test_output_size_and_parameters_follow_the_hand_written_formulas(
    size, channels, use_batch_norm
):
    backbone = NiNBackbone(
        "nin_28",
        image_shape=(size, size + 1, channels),
        use_batch_norm=use_batch_norm,
        dtype="float32",
    )
    specs = ARCHITECTURES["nin_28"]["blocks"]
    assert backbone.output_shape == (
        None,
        spatial(size, specs),
        spatial(size + 1, specs),
        384,
    )
    blocks = [(s.filters, s.kernel_size) for s in specs]
    if not use_batch_norm:
        assert backbone.count_params() == trunk_params(channels, blocks)
    for index, spec in enumerate(specs, 1):
        assert backbone.stage_outputs[f"stage{index}"].shape[-1] == spec.filters


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_named_trunk_takes_its_smallest_input(name):
    channels = ARCHITECTURES[name]["input_shape"][2]
    backbone = NiNBackbone(name, image_shape=(None, None, channels), dtype="float32")
    size = minimum_input_size(name)
    x = np.zeros((1, size, size, channels), "float32")
    assert tuple(backbone(x).shape)[1:3] == (1, 1)
    with pytest.raises(ValueError, match=f"at least {size}x{size}"):
        backbone(np.zeros((1, size - 1, size - 1, channels), "float32"))


def test_the_old_architecture_names_still_build_the_same_trunks_with_a_warning():
    with pytest.warns(DeprecationWarning, match="nin_28_narrow"):
        old = NiNBackbone("fashion_mnist_narrow", dtype="float32")
    assert old.architecture == "nin_28_narrow"
    assert old.count_params() == NiNBackbone("nin_28_narrow").count_params()
    # A config saved under the old name loads, silently, as the new one.
    config = {**old.get_config(), "architecture": "imagenet"}
    config["image_shape"] = [224, 224, 3]
    assert NiNBackbone.from_config(config).architecture == "nin_224"


@pytest.mark.parametrize("name", ["fashion_mnist", "fashion_mnist_narrow"])
def test_a_pretrained_trunk_is_the_classifiers_trunk(name):
    backbone = NiNBackbone.from_preset(name, dtype="float32")
    full = NiN.from_preset(name, precision="float32")
    for mine, theirs in zip(backbone.weights, full.backbone.weights, strict=True):
        np.testing.assert_array_equal(to_numpy(mine), to_numpy(theirs))
    free = NiNBackbone.from_preset(name, image_shape=(None, None, 1))
    assert (
        tuple(free(np.zeros((1, 40, 40, 1), "float32")).shape)[-1]
        == (full.backbone.output_shape[-1])
    )


def test_a_backbone_composes_into_a_users_own_model(tmp_path):
    """The mission's promise: a pretrained trunk in one call, in any model."""
    backbone = NiNBackbone.from_preset("fashion_mnist_narrow", dtype="float32")
    backbone.trainable = False
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    assert len(model.trainable_weights) == 2  # the Dense layer's alone
    model.compile("adam", "sparse_categorical_crossentropy")
    images = np.random.default_rng(0).uniform(size=(8, 28, 28, 1)).astype("float32")
    model.fit(images, np.arange(8) % 3, epochs=1, verbose=0)
    model.save(tmp_path / "mine.keras")
    restored = keras.saving.load_model(tmp_path / "mine.keras")
    np.testing.assert_allclose(
        restored.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-5
    )
    assert config_json(restored.layers[1]) == config_json(backbone)
    # Frozen it was saved, frozen it loads: every layer of the trunk.
    assert len(restored.trainable_weights) == 2
    assert json.loads(json.dumps(backbone.get_config()))["image_shape"] == [28, 28, 1]


@pytest.mark.filterwarnings("error::UserWarning")  # none of Keras's
@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.function")
def test_a_backbones_predict_feeds_tensorflow_as_a_classifiers_does(monkeypatch):
    # Arrays without tf.data's autotuning, several batches per graph call.
    import tensorflow as tf

    from ninlayers import runtime

    monkeypatch.setitem(runtime.PREDICT_STEPS_PER_EXECUTION, "tensorflow", 4)
    backbone = NiNBackbone(SMALL, image_shape=(16, 16, 1), dtype="float32")
    x = np.random.default_rng(3).uniform(size=(7, 16, 16, 1)).astype("float32")
    given = spy_on_keras_predict(monkeypatch)
    got = backbone.predict(x, batch_size=2, verbose=0)
    np.testing.assert_allclose(got, to_numpy(backbone(x)), rtol=1e-5, atol=1e-6)
    (dataset, args, kwargs), *_ = given
    assert isinstance(dataset, tf.data.Dataset) and "batch_size" not in kwargs
    assert dataset.options().autotune.enabled is False
    assert [len(batch) for batch in dataset] == [2, 2, 2, 1]
    assert backbone.predict_function._ninlayers_multi_step
