"""Inputs nobody here wrote: each gets one plain `ninlayers: error:` line
naming what was wrong (exit 2), or the right answer; never a traceback, a
terminal code, or a silently wrong result."""

import struct
import zipfile
import zlib

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ninlayers import NiN, _checks, explain
from ninlayers.app import cli, images, plots
from ninlayers.app.artifacts import load_model
from ninlayers.errors import ImageFileError, ModelFileError

TINY = [{"filters": 8, "kernel_size": 3}]


def run(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_error_line(status, err, *fragments):
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ninlayers: error: "), err
    assert "\x1b" not in err and "Traceback" not in err
    for fragment in fragments:
        assert str(fragment) in lines[0], err


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.keras"
    NiN(input_shape=(28, 28, 1), architecture=TINY, precision="float32").save(path)
    return path


def png_bytes(size=(28, 28), mode="L"):
    from io import BytesIO

    buffer = BytesIO()
    Image.new(mode, size, 128).save(buffer, format="PNG")
    return buffer.getvalue()


def chunk(tag, data):
    return (
        struct.pack(">I", len(data))
        + tag
        + data
        + struct.pack(">I", zlib.crc32(tag + data))
    )


def bomb_png():
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    pixels = zlib.compress(bytes(100_001 * 8), 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", pixels)
        + chunk(b"IEND", b"")
    )


def broken_chunk_png():
    data = bytearray(png_bytes())
    data[data.index(b"IDAT") + 6] ^= 0xFF
    return bytes(data)


def damaged_tiff(tmp_path):
    Image.new("L", (28, 28), 128).save(tmp_path / "ok.tif")
    data = (tmp_path / "ok.tif").read_bytes()
    return data[:8] + bytes(40) + data[48:]


@pytest.mark.parametrize("kind", ["broken chunk", "damaged tiff", "bomb", "empty"])
def test_damaged_images_get_one_line_naming_the_file(
    tmp_path, capsys, model_file, kind
):
    path = tmp_path / f"{kind.replace(' ', '-')}.png"
    contents = {
        "broken chunk": broken_chunk_png,
        "damaged tiff": lambda: damaged_tiff(tmp_path),
        "bomb": bomb_png,
        "empty": bytes,
    }[kind]()
    path.write_bytes(contents)
    for extra in ([], ["-o", tmp_path / "c.png"]):
        command = "cam" if extra else "predict"
        status, _, err = run(capsys, command, model_file, path, *extra)
        assert_one_error_line(status, err, path)
    assert not (tmp_path / "c.png").exists()


def test_a_damaged_image_in_an_image_folder_is_named(tmp_path, capsys, model_file):
    for name in ("a", "b"):
        (tmp_path / "folder" / name).mkdir(parents=True)
        (tmp_path / "folder" / name / "good.png").write_bytes(png_bytes())
    bad = tmp_path / "folder" / "b" / "bad.png"
    bad.write_bytes(broken_chunk_png())
    status, _, err = run(
        capsys, "evaluate", model_file, "--image-folder", tmp_path / "folder"
    )
    assert_one_error_line(status, err, bad)


def test_a_damaged_deflated_model_file_is_refused_in_one_line(
    tmp_path, capsys, model_file
):
    deflated = tmp_path / "deflated.keras"
    with (
        zipfile.ZipFile(model_file) as source,
        zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        for name in source.namelist():
            target.writestr(name, source.read(name))
    data = bytearray(deflated.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    deflated.write_bytes(bytes(data))
    image = tmp_path / "x.png"
    image.write_bytes(png_bytes())
    status, _, err = run(capsys, "predict", deflated, image)
    assert_one_error_line(status, err, deflated)


def test_a_model_file_compressed_in_an_unreadable_way_is_named(
    tmp_path, capsys, model_file
):
    """Reliability III: a member whose compression method Python cannot read
    was `unexpected NotImplementedError`, without the file."""
    odd = tmp_path / "odd.keras"
    data = bytearray(model_file.read_bytes())
    # Method 99 (AES, which Python cannot read) in every header.
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        start = data.find(signature)
        while start != -1:
            data[start + offset : start + offset + 2] = struct.pack("<H", 99)
            start = data.find(signature, start + 4)
    odd.write_bytes(bytes(data))
    image = tmp_path / "x.png"
    image.write_bytes(png_bytes())
    status, _, err = run(capsys, "predict", odd, image)
    assert_one_error_line(status, err, odd, "compression")


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_a_model_of_flat_vectors_gets_one_line_not_an_unpacking_error(
    tmp_path, capsys, command
):
    """Reliability III: a Dense model on (784,) was `not enough values to
    unpack (expected 4, got 2)`."""
    flat = tmp_path / "flat.keras"
    keras.Sequential([keras.Input((784,)), keras.layers.Dense(10)]).save(flat)
    image = tmp_path / "x.png"
    image.write_bytes(png_bytes())
    extra = [image] if command == "predict" else ["--limit", 50]
    status, _, err = run(capsys, command, flat, *extra)
    assert_one_error_line(status, err, "image models", "(None, 784)")


def test_models_that_do_not_fit_the_data_get_one_line(tmp_path, capsys):
    three = tmp_path / "three.keras"
    NiN(num_classes=3, input_shape=(28, 28, 1), architecture=TINY).save(three)
    status, _, err = run(capsys, "evaluate", three, "--limit", 50)
    assert_one_error_line(status, err, "3 classes", "10")
    rgb = tmp_path / "rgb.keras"
    NiN(input_shape=(28, 28, 3), architecture=TINY).save(rgb)
    status, _, err = run(capsys, "evaluate", rgb, "--limit", 50)
    assert_one_error_line(status, err, "3-channel", "1-channel")
    dense = tmp_path / "dense.keras"
    keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    ).save(dense)
    image = tmp_path / "x.png"
    image.write_bytes(png_bytes())
    status, _, err = run(capsys, "cam", dense, image, "-o", tmp_path / "c.png")
    assert_one_error_line(status, err, "NiNClassifierHead")


def test_a_training_set_too_small_to_split_gets_one_line(tmp_path, capsys):
    status, _, err = run(
        capsys,
        "train",
        "--recipe",
        "tutorial",
        "--train-limit",
        1,
        "--epochs",
        1,
        "--output",
        tmp_path / "run",
    )
    assert_one_error_line(status, err, "Too few images", "0 to train on")


@pytest.mark.parametrize("value", ["inf", "nan", "1e400", "-1", "10**400"])
def test_non_finite_learning_rates_are_refused(capsys, value):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--learning-rate", value])
    assert info.value.code == 2
    assert "finite positive number" in capsys.readouterr().err


def test_huge_integers_are_refused_not_overflowing():
    with pytest.raises(ValueError, match="finite positive number"):
        _checks.positive_number("learning_rate", 10**400)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        _checks.fraction("rate", 10**400)


def test_class_names_from_a_model_file_are_printed_safely(tmp_path, capsys):
    names = ["\x1b]0;owned\x07coat", "bag\x1b[2J"] + [f"c{i}" for i in range(8)]
    path = tmp_path / "names.keras"
    NiN(input_shape=(28, 28, 1), architecture=TINY, class_names=names).save(path)
    image = tmp_path / "x\x1b[31m.png"
    image.write_bytes(png_bytes())
    status, out, err = run(capsys, "predict", path, image, "--top", 10)
    assert status == 0, err
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b]0;owned\\x07coat" in out


def test_error_messages_become_one_plain_line():
    message = "\x1b[1mValueError\x1b[0m: bad\n  shape\t(1, 2)\n\n • arg=\x07"
    assert cli.one_line(message) == "ValueError: bad shape (1, 2) • arg=\\x07"
    assert len(cli.one_line("x" * 5000)) == 600


def test_dollar_signs_in_class_names_are_drawn_as_text(tmp_path):
    names = ["$a$", "b$", "$\\nocommand{$"]
    labels = np.array([0, 1, 2, 0])
    plots.plot_confusion_matrix(labels, labels[::-1], names, tmp_path / "c.png")
    maps = np.random.default_rng(0).random((4, 28, 28))
    probs = np.eye(3)[labels]
    plots.plot_class_activation_maps(
        np.zeros((4, 28, 28, 1)), maps, probs, names, tmp_path / "cam.png", labels
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "cam.png"]


def test_cam_into_a_directory_writes_cam_png_and_nothing_else(
    tmp_path, capsys, model_file
):
    image = tmp_path / "x.png"
    image.write_bytes(png_bytes())
    (tmp_path / "existing").mkdir()
    for target in (tmp_path / "new", tmp_path / "existing"):
        status, out, err = run(capsys, "cam", model_file, image, "-o", f"{target}/")
        assert status == 0, err
        assert sorted(p.name for p in target.iterdir()) == ["cam.png"]


def test_an_out_of_range_class_index_is_a_value_error():
    model = NiN(input_shape=(28, 28, 1), architecture=TINY, num_classes=4)
    x = np.zeros((2, 28, 28, 1), "float32")
    for bad in (4, -1, [0, 1, 2], 1.5, [[0]]):
        with pytest.raises(
            ValueError, match=r"`class_index` must be an int in \[0, 4\)"
        ):
            explain.class_activation_maps(model, x, class_index=bad)
    maps, _ = explain.class_activation_maps(model, x, class_index=[3, 0])
    assert maps.shape == (2, 28, 28)


def test_nin_is_channels_last_whatever_the_global_setting():
    keras.config.set_image_data_format("channels_first")
    try:
        model = NiN(input_shape=(28, 28, 1), architecture=TINY, num_classes=4)
        assert model.output_shape == (None, 4)
        assert model.predict(np.zeros((2, 28, 28, 1)), verbose=0).shape == (2, 4)
    finally:
        keras.config.set_image_data_format("channels_last")


# Fuzzing: every mutant of a valid file gets a documented error, or loads.

MUTATION = st.lists(
    st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
    min_size=1,
    max_size=8,
)


def mutate(data: bytes, edits, cut) -> bytes:
    data = bytearray(data)
    for position, value in edits:
        data[position % len(data)] = value
    return bytes(data[: max(1, len(data) - cut)])


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(edits=MUTATION, cut=st.integers(min_value=0, max_value=64))
def test_mutated_images_load_or_raise_image_file_error(tmp_path, edits, cut):
    for name, source in (("a.png", png_bytes()), ("b.png", png_bytes(mode="RGB"))):
        path = tmp_path / name
        path.write_bytes(mutate(source, edits, cut))
        try:
            array = images.read_image(path, (28, 28), 1)
        except ImageFileError as error:
            assert str(path) in str(error) and "\n" not in str(error)
        else:
            assert array.shape == (28, 28, 1) and np.isfinite(array).all()


@settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    deadline=None,
    max_examples=10,
)
@given(edits=MUTATION, cut=st.integers(min_value=0, max_value=4096))
def test_mutated_model_files_load_or_raise_model_file_error(
    tmp_path, model_file, edits, cut
):
    path = tmp_path / "mutant.keras"
    path.write_bytes(mutate(model_file.read_bytes(), edits, cut))
    try:
        model = load_model(path)
    except ModelFileError as error:
        assert str(path) in str(error)
    else:
        assert model.output_shape == (None, 10)


_EXPORTED_FUZZ = """
import sys
import numpy as np
from ninlayers.errors import ModelFileError
from ninlayers.exported import ExportedModel

source, cases = sys.argv[1], int(sys.argv[2])
data = open(source, "rb").read()
rng = np.random.default_rng(0)
outcomes = {"refused": 0, "ran": 0}
for case in range(cases):
    mutant = bytearray(data)
    for _ in range(int(rng.integers(1, 16))):
        mutant[int(rng.integers(len(mutant)))] = int(rng.integers(256))
    cut = int(rng.integers(0, len(mutant) // 2)) if case % 3 == 0 else 0
    path = source + f".mutant{case}" + source[source.rindex("."):]
    open(path, "wb").write(bytes(mutant[: len(mutant) - cut]))
    print("case", case, flush=True)  # the last line names a crashing case
    try:
        model = ExportedModel(path)
        model.predict(np.zeros((1, 16, 16, 1), "uint8"))
    except ModelFileError as error:
        assert path in str(error), error
        outcomes["refused"] += 1
    except ValueError:  # metadata that does not fit the graph, refused
        outcomes["refused"] += 1
    else:
        outcomes["ran"] += 1
print(outcomes)
"""


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".tflite", ".onnx"])
def test_mutated_exported_files_load_or_are_refused_never_crashing(tmp_path, suffix):
    """The runtimes are C++: a damaged file must give one error naming it,
    never kill the process. Run in a child, so a crash fails this test."""
    import subprocess
    import sys

    from ninlayers import export

    source = tmp_path / f"model{suffix}"
    export.export(
        NiN(input_shape=(16, 16, 1), architecture=TINY, precision="float32"), source
    )
    result = subprocess.run(
        [sys.executable, "-c", _EXPORTED_FUZZ, str(source), "60"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    last = (result.stdout.strip().splitlines() or ["nothing"])[-1]
    assert result.returncode == 0, f"{last}: {result.stderr[-2000:]}"
    assert "refused" in last


def test_a_labelled_folder_is_scored_by_its_names_not_its_order():
    """Reliability III: a score against the wrong labels is the worst silent
    answer. Sub-folders are matched to the model's class names."""
    from ninlayers.app.inference import labels_by_name

    model = NiN(
        num_classes=2,
        input_shape=(28, 28, 1),
        architecture=TINY,
        class_names=["zebra", "apple"],
    )
    # load_image_folder numbers sub-folders in sorted order: apple 0, zebra 1.
    labels = labels_by_name(model, ["apple", "zebra"], np.array([0, 0, 1]), "f")
    assert labels.tolist() == [1, 1, 0]
    unnamed = NiN(num_classes=2, input_shape=(28, 28, 1), architecture=TINY)
    assert labels_by_name(unnamed, ["a", "b"], np.array([1, 0]), "f").tolist() == [
        1,
        0,
    ]


def test_a_folder_of_other_classes_is_refused_in_one_line(tmp_path, capsys):
    model = tmp_path / "named.keras"
    NiN(
        num_classes=2,
        input_shape=(28, 28, 1),
        architecture=TINY,
        class_names=["cat", "dog"],
    ).save(model)
    for name in ("cat", "wolf"):
        (tmp_path / "folder" / name).mkdir(parents=True)
        (tmp_path / "folder" / name / "x.png").write_bytes(png_bytes())
    status, _, err = run(
        capsys, "evaluate", model, "--image-folder", tmp_path / "folder"
    )
    assert_one_error_line(status, err, "wolf", "cat, dog")
    # Fashion-MNIST is scored by name too: a model of other classes is refused.
    status, _, err = run(capsys, "evaluate", model, "--limit", 20)
    assert_one_error_line(status, err, "Fashion-MNIST", "T-shirt/top")
