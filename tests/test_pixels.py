"""Images as they are stored: integer pixels and floats give one answer."""

import numpy as np
import pytest

from helpers import SMALL, to_numpy
from ninlayers import NiN, explain, pixels

pytestmark = pytest.mark.backends


@pytest.fixture(scope="module")
def model():
    return NiN(
        input_shape=(16, 16, 1),
        architecture=SMALL,
        precision="float32",
        use_batch_norm=True,
    )


@pytest.fixture(scope="module")
def raw():
    return np.random.default_rng(0).integers(0, 256, (4, 16, 16, 1)).astype("uint8")


def test_uint8_and_float_images_give_the_same_predictions(model, raw):
    floats = raw.astype("float32") / 255
    expected = model.predict(floats, verbose=0)
    np.testing.assert_allclose(model.predict(raw, verbose=0), expected, atol=1e-6)
    np.testing.assert_allclose(to_numpy(model(raw)), expected, atol=1e-6)
    maps_raw, _ = explain.class_activation_maps(model, raw)
    maps_float, _ = explain.class_activation_maps(model, floats)
    np.testing.assert_allclose(maps_raw, maps_float, atol=1e-5)


def test_uint16_images_map_their_full_range(model, raw):
    wide = raw.astype("uint16") * 257  # 0-255 -> 0-65535
    np.testing.assert_allclose(
        model.predict(wide, verbose=0), model.predict(raw, verbose=0), atol=1e-6
    )


def test_floats_outside_the_range_are_refused_when_the_model_asks(raw):
    checked = NiN(
        input_shape=(16, 16, 1),
        architecture=SMALL,
        precision="float32",
        check_input_range=True,
    )
    for call in (checked.predict, checked.evaluate, checked):
        with pytest.raises(ValueError, match=r"span \[0, 255\].*floats in \[0, 1\]"):
            call(raw.astype("float32"))
    # Interpolation overshoot just outside the range passes.
    checked.predict(np.full((1, 16, 16, 1), 1.01, "float32"), verbose=0)
    restored = NiN.from_config(checked.get_config())
    assert restored.preprocessor.check_range


def test_a_default_nin_takes_standardised_floats_from_numpy_as_from_a_tensor(model):
    """Every Keras model takes standardised images; a plain NiN does too."""
    import keras

    x = np.random.default_rng(1).standard_normal((3, 16, 16, 1)).astype("float32")
    np.testing.assert_allclose(
        model.predict(x, verbose=0),
        to_numpy(model(keras.ops.convert_to_tensor(x))),
        atol=1e-5,
    )


def test_a_model_with_another_range_maps_integers_onto_it(raw):
    model = NiN(
        input_shape=(16, 16, 1),
        architecture=SMALL,
        input_range=(-1, 1),
        precision="float32",
    )
    floats = raw.astype("float32") / 127.5 - 1
    np.testing.assert_allclose(
        model.predict(raw, verbose=0), model.predict(floats, verbose=0), atol=1e-6
    )
    restored = NiN.from_config(model.get_config())
    assert restored.input_range == (-1.0, 1.0)
    assert model.get_config()["input_range"] == [-1.0, 1.0]


@pytest.mark.parametrize("bad", [(1, 0), (0, float("inf")), "01", (0,), None])
def test_bad_input_ranges_are_refused(bad):
    with pytest.raises(ValueError, match="input_range"):
        NiN(input_shape=(16, 16, 1), architecture=SMALL, input_range=bad)


def test_pixel_maximum_by_dtype():
    assert pixels.pixel_maximum("uint8") == 255.0
    assert pixels.pixel_maximum("int64") == 255.0
    assert pixels.pixel_maximum("uint16") == 65535.0
    assert pixels.pixel_maximum("bfloat16") is None


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (np.full((1, 16, 16, 1), np.nan, "float32"), "NaN or infinite"),
        (np.full((1, 16, 16, 1), np.inf, "float64"), "NaN or infinite"),
        (np.full((1, 16, 16, 1), 300, "int32"), r"\[0, 255\]"),
        (np.full((1, 16, 16, 1), -1, "int16"), r"\[0, 255\]"),
    ],
)
def test_numbers_that_cannot_be_pixels_are_refused_by_every_numpy_entry(
    model, bad, fragment
):
    """Reliability III: an int32 image of 0-65535 was read as 0-255 pixels."""
    for call in (
        lambda: model.predict(bad, verbose=0),
        lambda: model(bad),
        lambda: model.evaluate(bad, np.zeros(len(bad)), verbose=0),
    ):
        with pytest.raises(ValueError, match=fragment):
            call()
    # The full ranges of their dtypes pass.
    model.predict(np.full((1, 16, 16, 1), 65535, "uint16"), verbose=0)
    model.predict(np.full((1, 16, 16, 1), 255, "int32"), verbose=0)
