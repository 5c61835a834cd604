"""SavedModel and TFLite export (the 0.2.0 helpers), and summaries before
any data. tests/test_deploy.py covers every format and runtime."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import SMALL
from ninlayers import NiN, NiNBlock, NiNClassifierHead, export


def user_model():
    inputs = keras.Input((16, 16, 1))
    x = NiNBlock(8, 3, use_batch_norm=True)(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    return keras.Model(inputs, NiNClassifierHead(4)(x))


def images(n=4):
    return np.random.default_rng(0).uniform(size=(n, 16, 16, 1)).astype("float32")


@pytest.mark.parametrize(
    "build, precision, tolerance",
    [
        (
            lambda: NiN(
                input_shape=(16, 16, 1),
                architecture=SMALL,
                use_batch_norm=True,
                precision="float32",
            ),
            "float32",
            1e-5,
        ),
        (
            lambda: NiN(
                input_shape=(16, 16, 1), architecture=SMALL, precision="mixed_bfloat16"
            ),
            "mixed_bfloat16",
            2e-2,
        ),
        (user_model, "float32", 1e-5),
    ],
)
def test_saved_model_serves_the_keras_predictions(
    tmp_path, build, precision, tolerance
):
    model = build()
    x = images()
    expected = model.predict(x, verbose=0)
    path = export.export_saved_model(model, tmp_path / "saved")
    served = tf.saved_model.load(str(path))
    got = served.serve(tf.constant(x)).numpy()
    np.testing.assert_allclose(got, expected, atol=tolerance)
    signature = served.signatures["serving_default"]
    (out,) = signature(tf.constant(x)).values()
    np.testing.assert_allclose(out.numpy(), expected, atol=tolerance)


def test_float32_copy_of_a_mixed_model_has_the_same_weights():
    model = NiN(input_shape=(16, 16, 1), architecture=SMALL, precision="mixed_bfloat16")
    copy = export.float32_copy(model)
    assert copy.dtype_policy.name == "float32"
    assert all(layer.dtype_policy.compute_dtype == "float32" for layer in copy.layers)
    for a, b in zip(copy.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    x = images()
    np.testing.assert_allclose(
        copy.predict(x, verbose=0), model.predict(x, verbose=0), atol=2e-2
    )
    plain = NiN(input_shape=(16, 16, 1), architecture=SMALL, precision="float32")
    assert export.float32_copy(plain) is plain


@pytest.mark.slow
def test_tflite_predictions_match_a_trained_nin(tmp_path):
    model = NiN(
        num_classes=4, input_shape=(16, 16, 1), architecture=SMALL, use_batch_norm=True
    )
    model.compile()
    x = images(64)
    model.fit(x, np.arange(64) % 4, epochs=2, verbose=0)
    reference = export.float32_copy(model).predict(x[:5], verbose=0)
    path = export.to_tflite(model, tmp_path / "nin.tflite")
    # LiteRT's interpreter: TensorFlow's tf.lite.Interpreter is deprecated.
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, (5, 16, 16, 1))
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x[:5])
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, reference, atol=1e-5)


def summary_text(model):
    lines = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    return "\n".join(lines)


def test_summary_shows_every_block_before_any_data():
    paper = {"use_batch_norm": False, "head_final_activation": True}
    text = summary_text(NiN(precision="float32", **paper))
    for name, shape, params in [
        ("block1", "(None, 28, 28, 96)", "19,584"),
        ("block2", "(None, 13, 13, 256)", "353,024"),
        ("block3", "(None, 6, 6, 384)", "1,180,800"),
        ("head", "(None, 10)", "34,790"),
    ]:
        line = next(line for line in text.splitlines() if name in line)
        assert shape in line and params in line
    text = summary_text(user_model())
    line = next(line for line in text.splitlines() if "NiNBlock" in line)
    assert "(None, 16, 16, 8)" in line
    # Block: 3x3x1x8 + 2 x 8x8 kernels, 3 x 4 x 8 batch-norm weights; head:
    # 3x3x8x4 + 4 and 2 x (4x4 + 4).
    expected = (9 * 8 + 2 * 64 + 3 * 4 * 8) + (9 * 8 * 4 + 4 + 2 * (16 + 4))
    assert f"Total params: {expected:,}" in text


@pytest.mark.parametrize("views", [{"test_time_flip": True}, {"test_time_shift": 1}])
def test_test_time_views_of_another_model_are_refused_before_any_file(tmp_path, views):
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten()])
    with pytest.raises(ValueError, match="a Sequential has none"):
        export.export(model, tmp_path / "plain.tflite", **views)
    assert not list(tmp_path.iterdir())
    # Asking for none is what the model does: it exports.
    path = export.export(
        model, tmp_path / "plain.tflite", test_time_flip=False, test_time_shift=0
    )
    assert path.is_file()
