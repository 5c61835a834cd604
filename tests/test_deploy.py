"""Export to every format, run in its runtime, against Keras's predictions.

A small NiN trained on a learnable task (so that its top-1 answers have
margins worth comparing) in the default precision (mixed_bfloat16 on these
CPUs), exported by Keras's `model.export` and by `ninlayers.export.export`,
float32 and int8, each file run by `ninlayers.exported.ExportedModel`
(LiteRT, onnxruntime, TensorFlow).
"""

import sys

import keras
import numpy as np
import pytest

from helpers import SMALL, synthetic
from ninlayers import NiN, NiNBlock, NiNClassifierHead, export
from ninlayers.errors import MissingDependencyError, ModelFileError
from ninlayers.exported import ExportedModel, is_exported

CLASSES = ["noise", "square"]


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(1)
    x, y = synthetic(512, 1)
    # mixed_bfloat16: the policy Keras's own exports fail on (precision
    # "auto" picks it on CPUs with bfloat16).
    model = NiN(
        num_classes=2,
        input_shape=(16, 16, 1),
        architecture=SMALL,
        class_names=CLASSES,
        precision="mixed_bfloat16",
    )
    model.compile()
    model.fit(x, y, epochs=4, verbose=0)
    x_test, y_test = synthetic(256, 2)
    reference = export.float32_copy(model).predict(x_test, verbose=0)
    assert np.mean(reference.argmax(-1) == y_test) >= 0.95  # margins to compare
    return model, x, x_test, reference


@pytest.mark.parametrize(
    "format, name",
    [("tf_saved_model", "saved"), ("onnx", "m.onnx"), ("litert", "m.tflite")],
)
def test_keras_model_export_runs_in_each_runtime(trained, tmp_path, format, name):
    model, _, x_test, reference = trained
    model.export(tmp_path / name, format=format, verbose=False)
    served = ExportedModel(tmp_path / name)
    np.testing.assert_allclose(served.predict(x_test), reference, atol=1e-4)
    assert served.int8 is False  # no metadata: read from the file itself
    # Keras's files carry no input range: raw pixels would be read as
    # 0-255 floats, so they are refused rather than answered wrongly.
    with pytest.raises(ValueError, match="input range"):
        served.predict(np.zeros((1, 16, 16, 1), "uint8"))


def test_a_default_nin_exports_in_every_keras_format(tmp_path):
    model = NiN(test_time_flip=True)  # mixed_bfloat16 where the CPU has it
    x = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype("float32")
    expected = export.float32_copy(model).predict(x, verbose=0)
    for format, name in [
        ("tf_saved_model", "s"),
        ("onnx", "m.onnx"),
        ("litert", "m.tflite"),
    ]:
        model.export(tmp_path / name, format=format, verbose=False)
        got = ExportedModel(tmp_path / name).predict(x)
        np.testing.assert_allclose(got, expected, atol=1e-4, err_msg=format)


@pytest.mark.parametrize("name", ["saved", "m.tflite", "m.onnx"])
def test_float_files_predict_like_keras_and_keep_the_metadata(trained, tmp_path, name):
    model, _, x_test, reference = trained
    path = export.export(model, tmp_path / name)
    assert is_exported(path)
    served = ExportedModel(path)
    np.testing.assert_allclose(
        served.predict(x_test, batch_size=7), reference, atol=1e-4
    )
    assert served.class_names == CLASSES and served.int8 is False
    assert served.input_shape == (None, 16, 16, 1) and served.output_shape == (None, 2)
    # Numbers that cannot be pixels are refused, and the next batch runs.
    with pytest.raises(ValueError, match="NaN"):
        served.predict(np.full((1, 16, 16, 1), np.nan, "float32"))
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        served.predict(np.full((1, 16, 16, 1), 4000, "int32"))
    # Raw pixels are mapped as the Keras model maps them.
    pixels = np.round(x_test * 255).astype("uint8")
    np.testing.assert_allclose(
        served.predict(pixels),
        export.float32_copy(model).predict(pixels, verbose=0),
        atol=1e-4,
    )


@pytest.mark.parametrize(
    "name, input_type, output_type",
    [
        ("q.tflite", "float32", "float32"),
        ("q.tflite", "uint8", "uint8"),
        ("q.tflite", "int8", "int8"),
        ("q.onnx", "float32", "float32"),
    ],
)
def test_int8_files_agree_with_keras(trained, tmp_path, name, input_type, output_type):
    model, x, x_test, reference = trained
    path = export.export(
        model,
        tmp_path / name,
        int8=True,
        calibration=x[:100],
        input_type=input_type,
        output_type=output_type,
    )
    served = ExportedModel(path)
    assert served.int8 is True
    got = served.predict(x_test)
    assert got.dtype == np.float32 and got.shape == reference.shape
    agreement = np.mean(got.argmax(-1) == reference.argmax(-1))
    assert agreement >= 0.99, agreement
    assert np.abs(got - reference).max() < 0.1  # quantized, not another model


def test_a_uint8_file_takes_raw_pixels_exactly(trained, tmp_path):
    model, x, x_test, _ = trained
    path = export.export(
        model, tmp_path / "p.tflite", int8=True, calibration=x[:100], input_type="uint8"
    )
    served = ExportedModel(path)
    pixels = np.round(x_test * 255).astype("uint8")
    np.testing.assert_array_equal(
        served.predict(pixels), served.predict(pixels / 255.0)
    )


def test_any_functional_model_exports_and_flip_can_be_set(tmp_path):
    inputs = keras.Input((16, 16, 1))
    hidden = NiNBlock(8, 3, dtype="mixed_bfloat16")(inputs)
    user = keras.Model(inputs, NiNClassifierHead(3, dtype="mixed_bfloat16")(hidden))
    x = np.random.default_rng(0).uniform(size=(4, 16, 16, 1)).astype("float32")
    served = ExportedModel(export.export(user, tmp_path / "u.onnx"))
    expected = export.float32_copy(user).predict(x, verbose=0)
    np.testing.assert_allclose(served.predict(x), expected, atol=1e-4)
    assert served.class_names is None

    plain = NiN(num_classes=3, input_shape=(16, 16, 1), architecture=SMALL)
    flipped = export.export(plain, tmp_path / "f.tflite", test_time_flip=True)
    expected = export.with_test_time_flip(export.float32_copy(plain), True)
    np.testing.assert_allclose(
        ExportedModel(flipped).predict(x), expected.predict(x, verbose=0), atol=1e-4
    )
    shifted = ExportedModel(
        export.export(plain, tmp_path / "s.onnx", test_time_shift=1)
    )
    assert (
        shifted.metadata["test_time_shift"],
        shifted.metadata["test_time_flip"],
    ) == (
        1,
        False,
    )
    expected = export.with_test_time(export.float32_copy(plain), shift=1)
    assert expected.test_time_shift == 1 and not expected.test_time_flip
    np.testing.assert_allclose(
        shifted.predict(x), expected.predict(x, verbose=0), atol=1e-4
    )
    # The shifted views count: one pass per image answers otherwise.
    assert not np.allclose(
        shifted.predict(x), export.float32_copy(plain).predict(x, verbose=0), atol=1e-4
    )


def test_bad_requests_say_what_was_expected(trained, tmp_path):
    model, x, *_ = trained
    cases = [
        (dict(format="tflite", int8=True), "needs calibration images"),
        (dict(format="saved_model", int8=True, calibration=x), "not SavedModels"),
        (dict(format="tflite", input_type="uint8"), "add int8=True"),
        (dict(format="onnx", int8=True, calibration=x, input_type="uint8"), "float32"),
        (dict(format="coreml"), "format"),
        (dict(format="tflite", int8=True, calibration=x[:, :8]), "shaped like"),
        (dict(format="tflite", int8=True, calibration=x * 255), "expects floats"),
    ]
    for kwargs, fragment in cases:
        with pytest.raises(ValueError, match=fragment):
            export.export(model, tmp_path / "x.tflite", **kwargs)
    assert not (tmp_path / "x.tflite").exists()


def test_bad_files_and_missing_runtimes_are_one_clear_error(
    trained, tmp_path, monkeypatch
):
    model, *_ = trained
    with pytest.raises(ModelFileError, match="does not exist"):
        ExportedModel(tmp_path / "missing.tflite")
    for name in ("junk.tflite", "junk.onnx"):
        (tmp_path / name).write_bytes(b"not a model" * 10)
        with pytest.raises(ModelFileError, match=name):
            ExportedModel(tmp_path / name)
    path = export.export(model, tmp_path / "m.tflite")
    with pytest.raises(ValueError, match="only predicts"):
        ExportedModel(path)(np.zeros((1, 16, 16, 1), "float32"), training=True)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(MissingDependencyError, match=r"ninlayers\[litert\]"):
        ExportedModel(path)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingDependencyError, match=r"ninlayers\[onnx\]"):
        ExportedModel(export.export(model, tmp_path / "m.onnx"))


def test_an_export_that_fails_leaves_the_previous_file_whole(
    trained, tmp_path, monkeypatch
):
    """Reliability III: exports are atomic, like training's artifacts."""
    model = trained[0]
    path = export.export(model, tmp_path / "m.tflite")
    before = path.read_bytes()

    import pathlib

    def half_then_full_disk(self, data):
        with open(self, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_bytes", half_then_full_disk)
    with pytest.raises(OSError, match="No space"):
        export.export(model, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite"]


def test_a_saved_model_never_mixes_into_a_folder_of_other_things(trained, tmp_path):
    model = trained[0]
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"mine")
    with pytest.raises(ValueError, match="not a SavedModel") as info:
        export.export(model, folder, format="saved_model")
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in folder.iterdir()) == ["holiday.jpg"]
    # Over its own earlier export (or an empty folder) it replaces it whole.
    served = tmp_path / "served"
    served.mkdir()
    export.export(model, served, format="saved_model")
    export.export(model, served, format="saved_model", test_time_flip=True)
    assert ExportedModel(served).metadata["test_time_flip"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos", "served"]


@pytest.mark.parametrize("name", ["m.tflite", "m.onnx"])
def test_exported_models_refuse_what_the_keras_model_refuses(trained, tmp_path, name):
    """Reliability III: shapes, ranks, channels and dtypes refused as
    ValueError naming what was expected; the next batch still runs."""
    model, _, x_test, reference = trained
    served = ExportedModel(export.export(model, tmp_path / name))
    cases = [
        (x_test[0], r"shape \(n, 16, 16, 1\) \(one image needs a batch axis"),
        (x_test[:, :8], r"shape \(n, 16, 16, 1\)\. Received: shape \(256, 8, 16, 1\)"),
        (np.repeat(x_test, 3, axis=-1), r"Received: shape \(256, 16, 16, 3\)"),
        (x_test[..., 0], r"Received: shape \(256, 16, 16\)"),
        (x_test.astype(str), "integers or floats. Received: images of dtype <U"),
        (x_test > 0, "integers or floats. Received: images of dtype bool"),
    ]
    for x, fragment in cases:
        with pytest.raises(ValueError, match=fragment):
            served.predict(x)
    np.testing.assert_allclose(served.predict(x_test), reference, atol=0.02)


@pytest.mark.parametrize(
    "edit, fragment",
    [
        ({"class_names": ["only one"]}, "class_names, a list of 2 strings"),
        ({"class_names": "ab"}, "class_names, a list of 2 strings"),
        ({"class_names": [1, 2]}, "class_names, a list of 2 strings"),
        ({"input_range": [1, 0]}, "input_range, a pair of finite numbers"),
        ({"input_range": ["a", "b"]}, "input_range, a pair of finite numbers"),
        ({"input_range": 5}, "input_range, a pair of finite numbers"),
        ({"input_range": [0, float("inf")]}, "input_range, a pair of finite"),
    ],
)
def test_metadata_that_does_not_fit_the_file_is_refused_naming_it(
    trained, tmp_path, edit, fragment
):
    import json

    import onnx

    path = export.export(trained[0], tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    (entry,) = [p for p in proto.metadata_props if p.key == export.METADATA_KEY]
    entry.value = json.dumps({**json.loads(entry.value), **edit})
    onnx.save(proto, str(path))
    with pytest.raises(ModelFileError, match=rf"m\.onnx's metadata .*{fragment}"):
        ExportedModel(path)


def test_metadata_that_is_not_an_object_is_refused_naming_the_file(trained, tmp_path):
    import onnx

    path = export.export(trained[0], tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    (entry,) = [p for p in proto.metadata_props if p.key == export.METADATA_KEY]
    entry.value = "[1, 2]"
    onnx.save(proto, str(path))
    with pytest.raises(ModelFileError, match=r"m\.onnx's ninlayers metadata is not"):
        ExportedModel(path)
