"""`NiNImageConverter`: stored pixels onto the floats a model computes on."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import check_layer, to_numpy
from ninlayers import NiNImageConverter

pytestmark = pytest.mark.backends


def test_converter_passes_the_layer_checks():
    check_layer(
        NiNImageConverter,
        {"input_range": (-1.0, 1.0), "image_size": (8, 6)},
        (2, 16, 16, 3),
        (2, 8, 6, 3),
        expected_num_params=0,
        check_gradients=False,
    )


@given(
    low=st.floats(-10, 10),
    width=st.floats(0.1, 100),
    dtype=st.sampled_from(["uint8", "uint16", "int32"]),
)
def test_integer_pixels_map_linearly_onto_the_range(low, width, dtype):
    top = 65535 if dtype == "uint16" else 255
    converter = NiNImageConverter(input_range=(low, low + width))
    pixels = np.array([0, top // 2, top], dtype).reshape(1, 1, 3, 1)
    mapped = to_numpy(converter(pixels)).ravel()
    expected = low + width * np.array([0, top // 2, top]) / top
    np.testing.assert_allclose(mapped, expected, rtol=1e-5, atol=1e-4 * width)


def test_floats_pass_unchanged_and_are_checked_only_when_asked():
    standardised = np.random.default_rng(0).standard_normal((2, 4, 4, 1))
    np.testing.assert_array_equal(NiNImageConverter().check(standardised), standardised)
    with pytest.raises(ValueError, match=r"floats in \[0, 1\]"):
        NiNImageConverter(check_range=True).check(standardised * 255)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"input_range": (1, 0)}, "input_range"),
        ({"image_size": (0, 4)}, "image_size"),
        ({"interpolation": "cubic"}, "interpolation"),
        ({"check_range": "yes"}, "check_range"),
    ],
)
def test_bad_arguments_are_refused_naming_them(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        NiNImageConverter(**kwargs)
