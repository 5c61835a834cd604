"""`NiNImageClassifier`: a trunk, a dense-free head, presets and fine-tuning."""

import numpy as np
import pytest

from helpers import SMALL, check_task, synthetic, to_numpy
from ninlayers import NiN, NiNBackbone, NiNImageClassifier, NiNImageConverter, export

pytestmark = pytest.mark.backends


def small_backbone(**kwargs):
    return NiNBackbone(SMALL, (16, 16, 1), dtype="float32", **kwargs)


def test_classifier_passes_the_keras_hub_task_checks(tmp_path):
    x, y = synthetic(8, 0)
    check_task(
        NiNImageClassifier,
        {
            "backbone": small_backbone(),
            "num_classes": 2,
            "preprocessor": NiNImageConverter(check_range=True),
            "class_names": ["noise", "square"],
            "test_time_flip": True,
        },
        x,
        y,
        tmp_path,
    )


def test_a_classifier_without_a_converter_takes_any_floats():
    model = NiNImageClassifier(small_backbone(), num_classes=2)
    x = np.random.default_rng(0).standard_normal((2, 16, 16, 1)).astype("float32")
    assert model.predict(x * 300, verbose=0).shape == (2, 2)
    assert export.metadata(model)["input_range"] is None


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"backbone": "nin_28"}, "NiNBackbone"),
        ({"preprocessor": "pixels"}, "NiNImageConverter"),
        ({"class_names": "0123456789"}, "not a string"),
        ({"class_names": ["a", "b"]}, "one name per class"),
        ({"num_classes": 0}, "num_classes"),
    ],
)
def test_bad_pieces_are_refused_in_one_line(kwargs, fragment):
    arguments = {"backbone": small_backbone(), "num_classes": 3, **kwargs}
    with pytest.raises(ValueError, match=fragment) as info:
        NiNImageClassifier(**arguments)
    assert "\n" not in str(info.value)


def test_nin_refuses_a_string_of_class_names():
    """Reliability III: "0123456789" is not ten names."""
    with pytest.raises(ValueError, match="not a string"):
        NiN(class_names="0123456789")


def test_a_preset_with_a_fresh_head_keeps_the_pretrained_trunk():
    pretrained = NiNImageClassifier.from_preset("fashion_mnist", dtype="float32")
    fresh = NiNImageClassifier.from_preset(
        "fashion_mnist", num_classes=5, dtype="float32"
    )
    assert fresh.output_shape == (None, 5) and fresh.class_names is None
    assert not fresh.test_time_flip  # mirror images belong to the data
    for mine, theirs in zip(
        fresh.backbone.weights, pretrained.backbone.weights, strict=True
    ):
        np.testing.assert_array_equal(to_numpy(mine), to_numpy(theirs))
    named = NiN.from_preset("fashion_mnist", class_names=list("abc"))
    assert named.output_shape == (None, 3) and named.class_names == ["a", "b", "c"]
    # The preset's pixel contract comes along: 0-255 floats are refused.
    with pytest.raises(ValueError, match=r"floats in \[0, 1\]"):
        fresh.predict(np.full((1, 28, 28, 1), 200.0), verbose=0)


def test_the_calls_a_new_user_tries_first_work():
    """Issue 22's three calls, as a new user typed them."""
    assert NiN.from_preset("fashion_mnist", num_classes=5).output_shape == (None, 5)
    with pytest.warns(DeprecationWarning, match="NiNBackbone"):
        trunk = NiN.from_preset("fashion_mnist", include_head=False)
    assert isinstance(trunk, NiNBackbone)
    none = NiN.from_preset("fashion_mnist", num_classes=5, class_names=None)
    assert none.output_shape == (None, 5)


def test_freezing_the_trunk_trains_the_head_alone():
    model = NiNImageClassifier.from_preset(
        "fashion_mnist_narrow", num_classes=2, dtype="float32"
    )
    model.backbone.trainable = False
    model.compile()
    trunk = [to_numpy(w).copy() for w in model.backbone.weights]
    head = [to_numpy(w).copy() for w in model.head.trainable_weights]
    x = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1)).astype("uint8")
    model.fit(x, np.arange(8) % 2, epochs=1, verbose=0)
    for before, after in zip(trunk, model.backbone.weights, strict=True):
        np.testing.assert_array_equal(before, to_numpy(after))
    assert any(
        not np.allclose(b, to_numpy(a))
        for b, a in zip(head, model.head.trainable_weights, strict=True)
    )


def test_a_resizing_converter_takes_images_of_another_size():
    model = NiNImageClassifier(
        NiNBackbone(SMALL, (None, None, 1), dtype="float32"),
        num_classes=2,
        preprocessor=NiNImageConverter(image_size=(16, 16)),
    )
    big = np.random.default_rng(0).integers(0, 256, (2, 40, 40, 1)).astype("uint8")
    small = to_numpy(model.preprocessor(big))
    assert small.shape == (2, 16, 16, 1)
    np.testing.assert_allclose(
        model.predict(big, verbose=0), model.predict(small, verbose=0), atol=1e-5
    )
