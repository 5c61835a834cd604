"""The `ninlayers` command end to end, on a small slice of the real data."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ninlayers import app
from ninlayers.app import cli, machine


def run_cli(*args, timeout=600, env=None, module="ninlayers.app.cli"):
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = run_cli(
        "train",
        "--epochs",
        "2",
        "--train-limit",
        "640",
        "--test-limit",
        "300",
        "--output",
        out,
        "--verbose",
        "2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


@pytest.mark.slow
def test_train_writes_every_artifact(trained):
    out, result = trained
    assert "test accuracy" in result.stdout
    for name in (
        "model.keras",
        "metrics.json",
        "history.png",
        "confusion.png",
        "cam.png",
    ):
        assert (out / name).is_file(), name
    for name in ("history.png", "confusion.png", "cam.png"):
        with Image.open(out / name) as image:
            image.verify()
            assert image.format == "PNG"
        with Image.open(out / name) as image:
            assert min(image.size) > 200
    assert not list(out.glob(".*tmp*")), "temporary files left behind"
    assert not (out / "backup").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["parameters"] > 1_500_000
    assert metrics["test"]["examples"] == 300
    assert len(metrics["history"]["loss"]) == 2
    # Scores on test images are named so, not validation (issue 23).
    assert metrics["held_out"].startswith("test (first")
    assert len(metrics["history"]["test_accuracy"]) == 2
    assert not any(key.startswith("val_") for key in metrics["history"])
    # Wall-clock time since the run's start at each epoch's end (held-out
    # scoring included): it contains every epoch's training time. (Not the
    # whole fit: the last epoch's backup is written after it.)
    elapsed = metrics["history"]["elapsed_seconds"]
    assert 0 < elapsed[0] < elapsed[1] <= metrics["wall_seconds"]
    train_seconds = 2 * metrics["train_examples"] / metrics["train_images_per_second"]
    assert elapsed[1] >= train_seconds * (1 - 1e-9)
    assert metrics["train_images_per_second"] > 0
    assert metrics["versions"]["keras"].startswith("3.")
    # The machine that measured the figures, named (issue 23).
    assert metrics["machine"]["processor"] and metrics["machine"]["vcpus"] >= 1
    assert set(metrics["machine"]["kernel_flags"]) <= set(machine.KERNEL_FLAGS)
    assert metrics["recipe"]["name"] == "default"


@pytest.mark.slow
def test_metrics_accuracy_equals_reloaded_model_evaluation(trained):
    out, _ = trained
    metrics = json.loads((out / "metrics.json").read_text())
    scores = app.evaluate(out / "model.keras", limit=300)
    assert scores["accuracy"] == metrics["test"]["accuracy"]
    assert scores["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-6)
    result = run_cli("evaluate", out / "model.keras", "--limit", "300")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        json.loads(result.stdout.strip().splitlines()[-1])["accuracy"]
        == (metrics["test"]["accuracy"])
    )


@pytest.mark.slow
def test_predict_and_cam_take_images_of_any_size(trained, tmp_path):
    out, _ = trained
    rng = np.random.default_rng(0)
    paths = []
    for i, (size, mode) in enumerate([((50, 37), "L"), ((28, 28), "RGB")]):
        pixels = rng.integers(0, 255, size + ((3,) if mode == "RGB" else ()))
        path = tmp_path / f"img{i}.{'png' if i == 0 else 'jpg'}"
        Image.fromarray(pixels.astype(np.uint8), mode).save(path)
        paths.append(path)
    result = run_cli("predict", out / "model.keras", *paths, "--top", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and all(
        str(p) in line for p, line in zip(paths, lines, strict=True)
    )
    result = run_cli("cam", out / "model.keras", *paths, "-o", tmp_path / "c.png")
    assert result.returncode == 0, result.stderr[-2000:]
    with Image.open(tmp_path / "c.png") as image:
        image.verify()


def test_bad_files_give_one_line_errors(tmp_path, capsys):
    not_zip = tmp_path / "x.keras"
    not_zip.write_text("hello")
    not_image = tmp_path / "notes.png"
    not_image.write_text("not a picture")
    cases = [
        (["evaluate", str(tmp_path / "missing.keras")], "does not exist"),
        (["evaluate", str(not_zip)], "not a .keras archive"),
        (["predict", str(tmp_path / "m.h5"), "a.png"], "does not exist"),
    ]
    for argv, fragment in cases:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert fragment in err and err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(Exception, match="not a .keras archive"):
        cli.main(["--debug", "evaluate", str(not_zip)])
    with pytest.raises(Exception, match="not an image"):
        app.load_images([not_image])


def test_argument_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--epochs", "0"])
    assert info.value.code == 2
    assert "Received: '0'" in capsys.readouterr().err


@pytest.mark.slow
def test_train_makes_no_new_iterator_per_epoch(tmp_path, monkeypatch):
    # A fresh iterator per epoch ran whole epochs 1.8x slower on these
    # machines (docs/performance.md): train() repeats its datasets instead.
    import tensorflow as tf

    original = tf.data.Dataset.__iter__
    iterators = {}
    for epochs in (1, 3):
        made = iterators[epochs] = []

        def spy(self, made=made):
            made.append(int(self.cardinality()))
            return original(self)

        monkeypatch.setattr(tf.data.Dataset, "__iter__", spy)
        metrics = app.train(
            "default",
            tmp_path / str(epochs),
            epochs=epochs,
            train_limit=320,
            test_limit=100,
            verbose=0,
        )
        assert len(metrics["history"]["loss"]) == epochs
    assert metrics["train_examples"] == 320
    assert len(iterators[3]) == len(iterators[1])
    # The training data (5 batches a pass) is only ever iterated endlessly.
    assert 5 not in iterators[3]


@pytest.mark.slow
# JAX's run of the command is in tests/app/test_distributed.py (two
# processes) and tests/app/test_resume.py (SIGTERM).
@pytest.mark.parametrize("backend", ["torch"])
def test_train_runs_end_to_end_on_another_backend(tmp_path, backend):
    out = tmp_path / backend
    result = run_cli(
        "--backend",
        backend,
        "train",
        "--epochs",
        "2",
        "--train-limit",
        "256",
        "--test-limit",
        "100",
        # A small trunk: this is about the command on the backend, and
        # JAX's float32 CPU kernels take minutes over the default one.
        "--architecture",
        "[[32, 3], [64, 3]]",
        "--output",
        out,
        "--verbose",
        "0",
        # The command's default cache, in a folder of the test's own.
        env={
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "JAX_COMPILATION_CACHE_DIR": "",
        },
        # The console script's launcher, which starts on the asked backend
        # (`python -m ninlayers.app.cli --backend` starts a second process:
        # tests/app/test_resume.py's SIGTERM test).
        module="ninlayers_cli",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test accuracy" in result.stdout
    # Only JAX's compiled programs are kept for the next command (other
    # libraries, such as matplotlib, may keep theirs beside).
    assert not (tmp_path / "cache" / "ninlayers").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["versions"]["keras_backend"] == backend
    assert "tensorflow" not in metrics["versions"]
    assert metrics["strategy"] == "SingleDevice"
    history = metrics["history"]
    assert len(history["loss"]) == 2 and len(history["gradient_norm"]) == 2
    assert {"model.keras", "cam.png", "history.png"} <= {p.name for p in out.iterdir()}
    # A tf.distribute strategy on this backend: one line saying what it needs.
    refused = run_cli(
        "--backend", backend, "train", "--strategy", "mirrored", module="ninlayers_cli"
    )
    assert refused.returncode == 2
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("ninlayers: error:") and "needs the TensorFlow" in last
    assert "Traceback" not in refused.stderr


def test_a_logits_model_reports_probabilities_and_the_true_loss(tmp_path):
    from ninlayers import NiN

    x = np.random.default_rng(0).uniform(size=(6, 16, 16, 1)).astype("float32")
    kwargs = {"input_shape": (16, 16, 1), "architecture": [(8, 3)]}
    logits = NiN(output_activation=None, precision="float32", **kwargs)
    softmax = NiN(precision="float32", **kwargs)
    softmax.set_weights(logits.get_weights())
    expected = softmax.predict(x, verbose=0)
    np.testing.assert_allclose(
        app.inference.probabilities(logits, logits.predict(x, verbose=0)),
        expected,
        rtol=1e-5,
    )
    # A softmax model's outputs are taken as they are.
    np.testing.assert_array_equal(
        app.inference.probabilities(softmax, expected), expected.astype("float64")
    )
    paths = []
    for i, image in enumerate(x):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray((image[..., 0] * 255).astype(np.uint8)).save(paths[-1])
    from_logits, from_softmax = (
        app.predict(model, paths, top=10) for model in (logits, softmax)
    )
    for a, b in zip(from_logits, from_softmax, strict=True):
        assert a["class"] == b["class"]
        assert a["probability"] == pytest.approx(b["probability"], rel=1e-4)
        assert sum(p for _, p in a["top"]) == pytest.approx(1.0, abs=1e-5)
    # The loss evaluate reports is the cross-entropy of the probabilities.
    scores = [app.evaluate(model, limit=64) for model in (logits, softmax)]
    assert scores[0]["loss"] == pytest.approx(scores[1]["loss"], rel=1e-4)
    assert scores[0]["accuracy"] == scores[1]["accuracy"]


def test_sixteen_bit_grey_images_load_scaled_not_white(tmp_path):
    ramp = np.linspace(0, 65535, 28 * 28).reshape(28, 28).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    Image.fromarray((ramp // 257).astype(np.uint8)).save(tmp_path / "flat.png")
    for channels in (1, 3):
        deep, flat = app.load_images(
            [tmp_path / "deep.png", tmp_path / "flat.png"], channels=channels
        )
        np.testing.assert_allclose(deep, flat, atol=1 / 255 + 1e-6)
        assert deep.mean() == pytest.approx(0.5, abs=0.01)


def test_preset_names_work_wherever_a_model_file_does(tmp_path, capsys):
    from ninlayers.app import data

    _, (x, y) = data.load_fashion_mnist()
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(x[i]).save(paths[-1])
    assert cli.main(["predict", "fashion_mnist", *map(str, paths)]) == 0
    lines = capsys.readouterr().out.splitlines()
    predicted = [line.split(": ")[1].split(" (")[0] for line in lines]
    assert predicted == [data.CLASS_NAMES[label] for label in y[:3]]
    assert cli.main(["cam", "fashion_mnist", str(paths[0]), "-o", str(tmp_path)]) == 0
    assert (tmp_path / "cam.png").is_file()
    assert cli.main(["evaluate", "fashion_mnist", "--limit", "1000"]) == 0
    scores = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert scores["examples"] == 1000 and scores["accuracy"] > 0.9
    assert cli.main(["predict", "fashion_mnsit", str(paths[0])]) == 2
    error = capsys.readouterr().err
    assert "Unknown preset 'fashion_mnsit'" in error and "fashion_mnist" in error


def test_test_set_scoring_runs_the_compiled_predict_with_every_view(monkeypatch):
    # The trainer's and `ninlayers evaluate`'s scores come from the model's
    # own `predict` (compiled, each batch's views averaged), agreeing with
    # calling the model image by image.
    import keras

    from ninlayers import NiN
    from ninlayers.app import data, inference

    model = NiN(architecture="nin_28_narrow", test_time_flip=True, test_time_shift=1)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (24, 28, 28), dtype=np.uint8), rng.integers(0, 10, 24)
    calls = []
    predict = model.predict
    monkeypatch.setattr(
        model,
        "predict",
        lambda images, **kw: calls.append(len(images)) or predict(images, **kw),
    )
    probs, labels = inference.predict_dataset(model, data.make_dataset(x, y, 10))
    assert calls == [10, 10, 4] and (labels == y).all()
    expected = keras.ops.convert_to_numpy(model(x[..., None] / 255, training=False))
    np.testing.assert_allclose(probs, expected, atol=0.02)  # bfloat16 kernels
