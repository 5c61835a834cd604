"""`ninlayers export`, exported files in evaluate/predict, and the
deployment benchmark."""

import json

import keras
import numpy as np
import pytest
from PIL import Image

from helpers import SMALL, synthetic
from ninlayers import NiN
from ninlayers.app import cli, deploy_benchmark

CLASSES = ["noise", "square"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small trained `.keras` model and an image folder of its task."""
    root = tmp_path_factory.mktemp("deploy")
    keras.utils.set_random_seed(3)
    x, y = synthetic(512, 3)
    model = NiN(
        num_classes=2, input_shape=(16, 16, 1), architecture=SMALL, class_names=CLASSES
    )
    model.compile()
    model.fit(x, y, epochs=4, verbose=0)
    model.save(root / "model.keras")
    x_test, y_test = synthetic(60, 4)
    for i, (image, label) in enumerate(zip(x_test, y_test, strict=True)):
        folder = root / "images" / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.round(image[..., 0] * 255).astype(np.uint8)
        Image.fromarray(pixels, "L").save(folder / f"{i}.png")
    return root


def run(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_export_then_evaluate_and_predict_the_file(saved, tmp_path, capsys):
    images = saved / "images"
    status, out, err = run(
        capsys, "evaluate", saved / "model.keras", "--image-folder", images
    )
    assert status == 0, err
    keras_accuracy = json.loads(out)["accuracy"]
    assert keras_accuracy >= 0.9
    for name, extra in [
        ("m.tflite", ["--int8", "--input-type", "uint8"]),
        ("m.onnx", ["--int8"]),
        ("m.onnx", []),
        ("saved", []),
    ]:
        target = tmp_path / name
        status, out, err = run(
            capsys,
            "export",
            saved / "model.keras",
            target,
            "--image-folder",
            images,
            "--calibration-images",
            "40",
            *extra,
        )
        assert status == 0, err
        assert out.startswith(f"wrote {target}") and "ninlayers evaluate" in out
        assert ("int8" in out) == ("--int8" in extra)
        status, out, err = run(capsys, "evaluate", target, "--image-folder", images)
        assert status == 0, err
        assert abs(json.loads(out)["accuracy"] - keras_accuracy) <= 1 / 60 + 1e-9, name
    picture = next((images / "square").iterdir())
    status, out, err = run(capsys, "predict", tmp_path / "m.tflite", picture)
    assert status == 0, err
    assert out.startswith(f"{picture}: square (square ")


@pytest.mark.parametrize(
    ("options", "views", "said"),
    [
        ([], (False, 0), "does one pass per image"),
        (
            ["--test-time-shift", "1"],
            (False, 1),
            "itself moved 1 pixels each way (5 passes",
        ),
        (
            ["--test-time-flip", "--test-time-shift", "2"],
            (True, 2),
            "its mirror image and itself moved 2 pixels each way (10 passes",
        ),
    ],
)
def test_export_sets_and_says_the_test_time_views(
    saved, tmp_path, capsys, options, views, said
):
    from ninlayers.exported import ExportedModel

    target = tmp_path / "m.tflite"
    status, out, err = run(capsys, "export", saved / "model.keras", target, *options)
    assert status == 0, err
    assert said in out
    metadata = ExportedModel(target).metadata
    assert (metadata["test_time_flip"], metadata["test_time_shift"]) == views


@pytest.mark.parametrize("value", ["-1", "x"])
def test_export_refuses_a_bad_test_time_shift(saved, tmp_path, capsys, value):
    with pytest.raises(SystemExit):
        run(
            capsys,
            "export",
            saved / "model.keras",
            tmp_path / "m.tflite",
            "--test-time-shift",
            value,
        )
    assert "--test-time-shift" in capsys.readouterr().err
    assert not (tmp_path / "m.tflite").exists()


@pytest.mark.parametrize("option", [["--test-time-flip"], ["--test-time-shift", "1"]])
def test_export_refuses_test_time_views_of_another_model(tmp_path, capsys, option):
    plain = keras.Sequential(
        [keras.Input((16, 16, 1)), keras.layers.Flatten(), keras.layers.Dense(2)]
    )
    plain.save(tmp_path / "plain.keras")
    target = tmp_path / "m.tflite"
    status, out, err = run(capsys, "export", tmp_path / "plain.keras", target, *option)
    assert status != 0 and not target.exists()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "a Sequential has none" in lines[0], err


def test_exported_files_refuse_what_they_cannot_do(saved, tmp_path, capsys):
    status, _, err = run(capsys, "export", saved / "model.keras", tmp_path / "m.onnx")
    assert status == 0, err
    picture = next((saved / "images" / "square").iterdir())
    for argv, fragment in [
        (["cam", tmp_path / "m.onnx", picture], "need the Keras model"),
        (
            ["export", tmp_path / "m.onnx", tmp_path / "again.tflite"],
            "already exported",
        ),
        (
            ["export", saved / "model.keras", tmp_path / "s", "--int8"],
            "not SavedModels",
        ),
        (
            [
                "export",
                saved / "model.keras",
                tmp_path / "u.tflite",
                "--input-type",
                "uint8",
            ],
            "add int8=True",
        ),
    ]:
        status, _, err = run(capsys, *argv)
        assert status == 2 and fragment in err and err.count("\n") == 1, err
    assert not (tmp_path / "again.tflite").exists()


@pytest.mark.parametrize("name", ["m.onnx", "m.tflite"])
def test_export_shows_its_stages_and_calibration_progress(
    saved, tmp_path, capsys, name
):
    from ninlayers.app.deploy import export_model

    export_model(
        saved / "model.keras",
        tmp_path / name,
        int8=True,
        calibration_images=40,
        image_folder=saved / "images",
        verbose=True,
    )
    out = capsys.readouterr().out
    assert "Loading 40 calibration images" in out
    assert f"to {name[2:]} (int8, calibrated on 40 images)" in out
    assert "40/40" in out


@pytest.mark.slow
def test_deployment_benchmark_compares_every_path_with_the_seed(tmp_path, capsys):
    result = deploy_benchmark.run_deployment_benchmark(
        images=256, repeats=1, single=4, verbose=True
    )
    paths = result["paths"]
    assert set(paths) == {
        "seed_keras",
        "seed_keras_untuned",
        "keras",
        "keras_float32",
        *deploy_benchmark.FILES,
    }
    assert paths["seed_keras"]["x_seed"] == 1.0
    assert paths["seed_keras_untuned"]["x_untuned_seed"] == 1.0
    seed = paths["seed_keras"]["images_per_second"]
    untuned = paths["seed_keras_untuned"]["images_per_second"]
    for p in paths.values():  # both ratios of every path, over the same rate
        assert p["x_untuned_seed"] == pytest.approx(p["x_seed"] * seed / untuned)
    for name, p in paths.items():
        assert p["images_per_second"] > 0 and 0 < p["p50_ms"] <= p["p99_ms"], name
    for name in ("saved_model_float32", "litert_float32", "onnx_float32"):
        assert paths[name]["max_abs_diff"] < 1e-4, name
    for name in ("litert_int8", "onnx_int8"):
        assert paths[name]["agreement"] >= 0.98, name
    assert paths["keras_float32"]["accuracy"] >= 0.9  # the pretrained preset
    printed = capsys.readouterr().out
    assert "LiteRT int8:" in printed and "x the seed's Keras predict" in printed
    untuned = paths["litert_int8"]["x_untuned_seed"]
    assert f"({untuned:.2f}x without its iterators' waits)" in printed
    # The progress bar: one step per exported file, then per timed round.
    steps = len(deploy_benchmark.FILES) + 1
    assert f"{steps}/{steps}" in printed
