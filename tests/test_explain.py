"""Class activation maps from the head's per-class maps."""

import keras
import numpy as np
import pytest

from helpers import SMALL
from ninlayers import NiN, NiNBlock, NiNClassifierHead, explain

# Runs on every Keras backend (the README's backend matrix).
pytestmark = pytest.mark.backends


def test_class_map_model_outputs_the_head_maps_and_predictions():
    model = NiN(input_shape=(28, 28, 1), precision="float32")
    cam = explain.class_map_model(model)
    x = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype("float32")
    maps, probs = cam.predict(x, verbose=0)
    assert maps.shape == (3, 2, 2, 10)
    np.testing.assert_allclose(probs, model.predict(x, verbose=0), rtol=1e-5)
    # Pooling the maps and a softmax give the predictions back.
    pooled = maps.mean(axis=(1, 2))
    softmax = np.exp(pooled) / np.exp(pooled).sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(softmax, probs, rtol=1e-4, atol=1e-6)


def test_maps_show_the_predicted_class_or_the_asked_one():
    model = NiN(
        num_classes=4,
        input_shape=(16, 16, 1),
        architecture=SMALL,
        head_final_activation=False,
        precision="float32",
    )
    x = np.random.default_rng(1).uniform(size=(5, 16, 16, 1)).astype("float32")
    raw, probs = explain.class_map_model(model).predict(x, verbose=0)
    maps, probs2 = explain.class_activation_maps(model, x)
    assert maps.shape == (5, 16, 16)
    np.testing.assert_allclose(probs, probs2, rtol=1e-6)
    assert np.allclose(maps.min(axis=(1, 2)), 0) and np.allclose(
        maps.max(axis=(1, 2)), 1
    )
    predicted = probs.argmax(axis=-1)
    for i in range(5):
        chosen = raw[i, :, :, predicted[i]]
        others = [raw[i, :, :, c] for c in range(4) if c != predicted[i]]
        # The brightest upsampled pixel sits where the chosen map peaks.
        peak = np.unravel_index(chosen.argmax(), chosen.shape)
        scale = 16 / chosen.shape[0]
        bright = np.unravel_index(maps[i].argmax(), maps[i].shape)
        assert abs(bright[0] / scale - peak[0]) <= 1.0
        assert abs(bright[1] / scale - peak[1]) <= 1.0
        assert any(not np.allclose(chosen, o) for o in others)
    forced, _ = explain.class_activation_maps(model, x, class_index=0)
    want = raw[:, :, :, 0]
    for i in range(5):
        if predicted[i] != 0 and np.ptp(want[i]) > 0:
            corr = np.corrcoef(
                keras.ops.image.resize(want[i][None, ..., None], (16, 16))
                .numpy()
                .ravel(),
                forced[i].ravel(),
            )[0, 1]
            assert corr > 0.99


def test_functional_and_sequential_models_with_a_head():
    model = keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            NiNBlock(4, 3),
            NiNClassifierHead(3),
        ]
    )
    maps, probs = explain.class_activation_maps(model, np.ones((2, 12, 12, 1)))
    assert maps.shape == (2, 12, 12) and probs.shape == (2, 3)


def test_models_without_a_head_are_refused():
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(2)]
    )
    with pytest.raises(ValueError, match="NiNClassifierHead"):
        explain.class_map_model(model)
    with pytest.raises(ValueError, match="images.shape"):
        explain.class_activation_maps(NiN(), np.ones((28, 28)))


def test_a_shifting_models_class_map_model_predicts_as_it_does():
    model = NiN(
        input_shape=(28, 28, 1),
        precision="float32",
        test_time_flip=True,
        test_time_shift=1,
    )
    x = np.random.default_rng(2).uniform(size=(3, 28, 28, 1)).astype("float32")
    maps, probs = explain.class_map_model(model).predict(x, verbose=0)
    np.testing.assert_allclose(probs, model.predict(x, verbose=0), atol=1e-6)
    # The maps stay the image's own, as without shifts.
    plain = NiN(input_shape=(28, 28, 1), precision="float32")
    plain.set_weights(model.get_weights())
    own, plain_probs = explain.class_map_model(plain).predict(x, verbose=0)
    np.testing.assert_allclose(maps, own, atol=1e-6)
    assert not np.allclose(probs, plain_probs, atol=1e-6)


def test_maps_of_a_flipping_model_are_what_it_predicts_from():
    model = NiN(input_shape=(28, 28, 1), precision="float32", test_time_flip=True)
    x = np.random.default_rng(1).uniform(size=(3, 28, 28, 1)).astype("float32")
    maps, probs = explain.class_activation_maps(model, x)
    np.testing.assert_allclose(probs, model.predict(x, verbose=0), atol=1e-6)
    _, mapper_probs = explain.class_map_model(model).predict(x, verbose=0)
    np.testing.assert_allclose(mapper_probs, probs, atol=1e-6)
    # The shown map is the image's own; with average_mirror, the mean of the
    # image's and the mirror's, flipped back.
    plain = NiN(input_shape=(28, 28, 1), precision="float32")
    plain.set_weights(model.get_weights())
    raw, _ = explain.class_map_model(plain).predict(x, verbose=0)
    mirror, _ = explain.class_map_model(plain).predict(x[:, :, ::-1], verbose=0)
    chosen = probs.argmax(-1)
    averaged, _ = explain.class_activation_maps(model, x, average_mirror=True)
    for shown, source in ((maps, raw), (averaged, (raw + mirror[:, :, ::-1]) / 2)):
        for i, c in enumerate(chosen):
            up = keras.ops.image.resize(source[i, :, :, c][None, ..., None], (28, 28))
            up = np.asarray(up)[0, ..., 0]
            up = (up - up.min()) / max(up.max() - up.min(), 1e-12)
            np.testing.assert_allclose(shown[i], up, atol=1e-5)
