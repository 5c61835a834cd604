"""IDX parsing, the Fashion-MNIST lookup order, checksums and tf.data."""

import dataclasses
import gzip
import hashlib
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ninlayers.app import data as datasets
from ninlayers.errors import DatasetError

STEMS = list(datasets.FILES)


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def write_fake_set(directory: Path, gz: bool = True, n: int = 5) -> dict:
    """Writes four small IDX files and returns their arrays and checksums."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n - 1, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n - 1),
    }
    sums = {}
    for stem, array in arrays.items():
        data = idx_bytes(array)
        sums[stem] = hashlib.sha256(data).hexdigest()
        if gz:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (directory / stem).write_bytes(data)
    return {"arrays": arrays, "sums": sums}


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path, gz):
    array = np.random.default_rng(1).integers(0, 256, (3, 4, 5)).astype(np.uint8)
    data = idx_bytes(array)
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(gzip.compress(data) if gz else data)
    np.testing.assert_array_equal(datasets.read_idx(path), array)
    sha = hashlib.sha256(data).hexdigest()
    np.testing.assert_array_equal(datasets.read_idx(path, sha), array)


def test_read_idx_other_types(tmp_path):
    array = np.array([[1.5, -2.0], [3.25, 4.0]], dtype=">f4")
    data = bytes([0, 0, 0x0D, 2]) + struct.pack(">2I", 2, 2) + array.tobytes()
    (tmp_path / "f").write_bytes(data)
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / "f"), array)


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"", "not an IDX file"),
        (b"PK\x03\x04rest", "not an IDX file"),
        (bytes([0, 0, 0x08, 3, 0, 0]), "truncated"),
        (bytes([0, 0, 0x08, 1, 0, 0, 0, 5, 1, 2]), "wrong size"),
        (bytes([0, 0, 0x08, 1, 0, 0, 0, 2, 1, 2, 3]), "more than the 10 bytes"),
        (bytes([0, 0, 0x0E, 2, 255, 255, 255, 255, 255, 255, 255, 255]), "declares"),
    ],
)
def test_read_idx_refuses_bad_files_naming_them(tmp_path, data, fragment):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(data)
    with pytest.raises(DatasetError) as info:
        datasets.read_idx(path)
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


def test_truncated_gzip_is_refused(tmp_path):
    data = gzip.compress(idx_bytes(np.zeros((10, 28, 28))))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        datasets.read_idx(path)


def test_checksum_failure_names_file_expected_and_received(tmp_path):
    data = idx_bytes(np.arange(4))
    path = tmp_path / "labels"
    path.write_bytes(data)
    with pytest.raises(DatasetError) as info:
        datasets.read_idx(path, "0" * 64)
    message = str(info.value)
    assert str(path) in message and "0" * 64 in message
    assert hashlib.sha256(data).hexdigest() in message


def test_lookup_order(tmp_path, monkeypatch):
    explicit, env, debian, cache = (tmp_path / n for n in ("a", "b", "c", "d"))
    for directory in (explicit, env, debian, cache):
        write_fake_set(directory)
    monkeypatch.setattr(datasets, "DEBIAN_DIR", debian)
    monkeypatch.setattr(datasets, "KERAS_CACHE_DIR", cache)
    monkeypatch.setenv(datasets.ENV_VAR, str(env))
    assert datasets.find_fashion_mnist(explicit) == explicit
    assert datasets.find_fashion_mnist() == env
    monkeypatch.delenv(datasets.ENV_VAR)
    assert datasets.find_fashion_mnist() == debian
    for f in debian.iterdir():
        f.unlink()
    assert datasets.find_fashion_mnist() == cache


def test_named_directory_without_files_is_an_error(tmp_path, monkeypatch):
    write_fake_set(tmp_path / "full")
    (tmp_path / "full" / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setattr(datasets, "DEBIAN_DIR", tmp_path / "none")
    with pytest.raises(DatasetError) as info:
        datasets.find_fashion_mnist(tmp_path / "full")
    assert "t10k-labels-idx1-ubyte" in str(info.value)
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "empty"))
    with pytest.raises(DatasetError, match=datasets.ENV_VAR):
        datasets.find_fashion_mnist()


def test_nothing_found_and_download_failing_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv(datasets.ENV_VAR, raising=False)
    monkeypatch.setattr(datasets, "DEBIAN_DIR", tmp_path / "debian")
    monkeypatch.setattr(datasets, "KERAS_CACHE_DIR", tmp_path / "cache")

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    import keras

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(DatasetError) as info:
        datasets.find_fashion_mnist()
    message = str(info.value)
    assert str(tmp_path / "debian") in message and str(tmp_path / "cache") in message
    assert "network unreachable" in message and "dataset-fashion-mnist" in message


@pytest.mark.parametrize("gz", [True, False])
def test_load_from_a_directory_with_checksums(tmp_path, monkeypatch, gz):
    fake = write_fake_set(tmp_path, gz=gz)
    files = {
        "train-images-idx3-ubyte": (
            fake["sums"]["train-images-idx3-ubyte"],
            (5, 28, 28),
        ),
        "train-labels-idx1-ubyte": (fake["sums"]["train-labels-idx1-ubyte"], (5,)),
        "t10k-images-idx3-ubyte": (fake["sums"]["t10k-images-idx3-ubyte"], (4, 28, 28)),
        "t10k-labels-idx1-ubyte": (fake["sums"]["t10k-labels-idx1-ubyte"], (4,)),
    }
    monkeypatch.setattr(datasets, "FILES", files)
    (x, y), (xt, yt) = datasets.load_fashion_mnist(tmp_path)
    np.testing.assert_array_equal(x, fake["arrays"]["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(yt, fake["arrays"]["t10k-labels-idx1-ubyte"])
    assert x.dtype == np.uint8
    # A tampered file fails its checksum, naming it.
    name = "t10k-labels-idx1-ubyte" + (".gz" if gz else "")
    labels = fake["arrays"]["t10k-labels-idx1-ubyte"].copy()
    labels[0] = (labels[0] + 1) % 10
    data = idx_bytes(labels)
    (tmp_path / name).write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.*checksum"):
        datasets.load_fashion_mnist(tmp_path)
    assert datasets.load_fashion_mnist(tmp_path, verify=False)[1][1][0] == labels[0]


@pytest.mark.slow
def test_real_fashion_mnist_loads_with_its_checksums():
    (x, y), (xt, yt) = datasets.load_fashion_mnist()
    assert x.shape == (60000, 28, 28) and xt.shape == (10000, 28, 28)
    assert np.bincount(y).tolist() == [6000] * 10
    assert np.bincount(yt).tolist() == [1000] * 10


def test_make_dataset_batches_scales_and_augments():
    x = np.full((10, 8, 8), 255, np.uint8)
    x[:, :, :4] = 0  # left half dark
    y = np.arange(10)
    plain = list(datasets.make_dataset(x, y, 4))
    assert [tuple(a.shape) for a, _ in plain] == [(4, 8, 8, 1)] * 2 + [(2, 8, 8, 1)]
    np.testing.assert_array_equal(np.concatenate([b for _, b in plain]), y)
    assert float(np.max(plain[0][0])) == 1.0
    flipped = next(
        iter(datasets.make_dataset(x, y, 10, augment=True, crop_padding=0, seed=3))
    )[0].numpy()
    left_dark = flipped[:, :, :4].mean(axis=(1, 2, 3)) == 0
    assert 0 < left_dark.sum() < 10  # some images flipped, some not
    white = np.full((64, 8, 8), 255, np.uint8)

    def augmented(**kwargs):
        ds = datasets.make_dataset(white, None, 64, augment=True, flip=False, **kwargs)
        return next(iter(ds)).numpy()

    erased = augmented(crop_padding=0, erasing=1.0, seed=1)
    assert np.all(np.min(erased, axis=(1, 2, 3)) == 0.0)
    shifted = augmented(crop_padding=2, seed=2)
    zeros = (shifted == 0).sum(axis=(1, 2, 3))
    assert zeros.max() > 0 and zeros.max() <= 8 * 8 - 6 * 6
    assert len(set(zeros.tolist())) > 1  # each image gets its own shift
    resized = next(iter(datasets.make_dataset(x, y, 2, image_size=(16, 16))))[0]
    assert tuple(resized.shape) == (2, 16, 16, 1)


def test_make_dataset_shuffles_reproducibly_with_a_seed():
    x = np.arange(20, dtype=np.uint8).reshape(20, 1, 1)
    y = np.arange(20)
    first = [
        b.numpy().tolist()
        for _, b in datasets.make_dataset(x, y, 20, shuffle=True, seed=5)
    ]
    again = [
        b.numpy().tolist()
        for _, b in datasets.make_dataset(x, y, 20, shuffle=True, seed=5)
    ]
    assert first == again and first[0] != list(range(20))


def test_make_dataset_turns_tf_data_autotuning_off_unless_asked():
    x, y = np.zeros((8, 4, 4), "uint8"), np.arange(8)
    default = datasets.make_dataset(x, y, 4, shuffle=True, augment=True).repeat()
    assert default.options().autotune.enabled is False  # kept through repeat
    asked = datasets.make_dataset(x, y, 4, autotune=True)
    assert asked.options().autotune.enabled is True
    # The same batches either way.
    assert [b.numpy().tolist() for _, b in asked] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(ValueError, match="autotune"):
        datasets.make_dataset(x, y, autotune="no")


def test_make_dataset_refuses_bad_shapes():
    with pytest.raises(ValueError, match="images.shape=\\(3, 4\\)"):
        datasets.make_dataset(np.zeros((3, 4)), np.zeros(3))
    with pytest.raises(ValueError, match="3 images and 2 labels"):
        datasets.make_dataset(np.zeros((3, 4, 4)), np.zeros(2))


def make_image_folder(root: Path, per_class: int = 6, size: int = 20) -> Path:
    rng = np.random.default_rng(0)
    for index, name in enumerate(["circle", "square", "stripe"]):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (size, size), dtype=np.uint8)
            pixels[index * 5 : index * 5 + 5] = 250
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_image_folder_datasets(tmp_path):
    root = make_image_folder(tmp_path / "images")
    train, validation, names = datasets.image_folder_datasets(
        root, (28, 28), batch_size=4, validation_split=0.25, seed=1
    )
    assert names == ["circle", "square", "stripe"]
    # Untuned, as the trainer's own pipelines: no tuning thread to wait for.
    assert not train.options().autotune.enabled
    assert not validation.options().autotune.enabled
    xs = np.concatenate([x.numpy() for x, _ in train])
    vs = np.concatenate([x.numpy() for x, _ in validation])
    assert xs.shape[1:] == (28, 28, 1) and len(xs) + len(vs) == 18
    assert 0.0 <= xs.min() and xs.max() <= 1.0
    with pytest.raises(DatasetError, match="one sub-folder per class"):
        datasets.image_folder_datasets(tmp_path / "missing")


def test_image_folder_training_data_honours_the_recipe_and_limits(tmp_path):
    from ninlayers.app import recipes, trainer

    root = make_image_folder(tmp_path / "images", per_class=10)
    recipe = recipes.RECIPES["default"]
    assert recipe.validation_split == 0.0
    data = trainer.load_data(recipe, seed=0, image_folder=root)
    # An explicit 0.0 validation split means none (the held-out curve is
    # then the start of the test set); the test split is its own.
    n_test = int(30 * datasets.IMAGE_FOLDER_TEST_SPLIT)
    assert data.held_out_label == f"test (first {n_test} images)"
    assert len(data.held_out[1]) == n_test
    assert data.n_train == 30 - n_test
    assert sum(len(y) for _, y in data.test) == n_test
    assert data.image_shape == (28, 28, 1)
    assert data.class_names == ["circle", "square", "stripe"]
    limited = trainer.load_data(
        recipe.replace(validation_split=0.25),
        image_folder=root,
        train_limit=12,
        test_limit=2,
    )
    assert limited.n_train == 9 and limited.held_out_label == "validation"
    assert len(limited.held_out[1]) == 3
    assert sum(len(y) for _, y in limited.test) == 2


def test_image_folder_channels_follow_its_images(tmp_path):
    grey = make_image_folder(tmp_path / "grey")
    assert datasets.image_folder_channels(grey) == 1
    rgb = tmp_path / "rgb" / "red"
    rgb.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(rgb / "a.png")
    assert datasets.image_folder_channels(tmp_path / "rgb") == 3
    x, y, names = datasets.load_image_folder(tmp_path / "rgb", (5, 5), 3)
    assert x.shape == (1, 5, 5, 3) and names == ["red"] and y.tolist() == [0]
    empty = tmp_path / "empty" / "none"
    empty.mkdir(parents=True)
    with pytest.raises(DatasetError, match="holds none"):
        datasets.image_folder_channels(tmp_path / "empty")


def test_a_gzip_bomb_is_refused_having_read_only_its_declared_size(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    zeros = bytes(1 << 20)
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 1000))
        for _ in range(64):  # 64 MiB behind a 1,000-byte header
            f.write(zeros)
    assert path.stat().st_size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match="more than the 1008 bytes"):
            datasets.read_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"peak {peak} bytes"


def test_batch_norm_momentum_follows_the_run_length_unless_set():
    from ninlayers.app import recipes

    default = recipes.RECIPES["default"]
    assert default.batch_norm_momentum is None
    # The full run (10 epochs of 938 steps) keeps the measured 0.99; a short
    # trial gets 0.9, whose statistics keep up with the weights.
    assert recipes.batch_norm_momentum(default, 938) == 0.99
    assert recipes.batch_norm_momentum(default, 8) == 0.9
    assert (
        recipes.batch_norm_momentum(default.replace(batch_norm_momentum=0.5), 8) == 0.5
    )
    with pytest.raises(ValueError, match="batch_norm_momentum"):
        default.replace(batch_norm_momentum=1.5)


def test_the_quick_recipe_is_the_default_training_on_the_narrow_network(tmp_path):
    from ninlayers import app
    from ninlayers.app import recipes
    from ninlayers.app.ceiling import multiply_adds
    from ninlayers.model import NiN

    quick, default = recipes.RECIPES["quick"], recipes.RECIPES["default"]
    same = ("optimizer", "schedule", "label_smoothing", "weight_decay", "augment")
    assert all(getattr(quick, k) == getattr(default, k) for k in same)
    # Twice the batch at twice the peak rate (docs/recipes.md).
    assert quick.batch_size == 2 * default.batch_size
    assert quick.learning_rate == 2 * default.learning_rate
    assert (quick.epochs, quick.erasing, quick.architecture) == (
        2,
        0.0,
        "nin_28_narrow",
    )
    narrow = multiply_adds(NiN(architecture="nin_28_narrow"))
    assert narrow < 0.3 * multiply_adds(NiN(architecture="nin_28_6x6"))
    metrics = app.train(
        recipe="quick",
        output_dir=tmp_path,
        epochs=1,
        train_limit=256,
        test_limit=64,
        verbose=0,
    )
    assert metrics["recipe"]["name"] == "quick"
    assert metrics["architecture"] == "nin_28_narrow"
    assert metrics["parameters"] == NiN(architecture="nin_28_narrow").count_params()


def test_the_fast_recipe_is_the_quick_one_longer_with_shifted_views():
    from ninlayers.app import recipes

    quick, fast = recipes.RECIPES["quick"], recipes.RECIPES["fast"]
    changed = {"name", "epochs", "test_time_shift"}
    for field in dataclasses.fields(quick):
        if field.name not in changed:
            assert getattr(fast, field.name) == getattr(quick, field.name), field.name
    assert (fast.epochs, fast.test_time_shift, quick.test_time_shift) == (12, 1, 0)


def test_the_tutorial_recipe_answers_to_its_old_name_with_a_warning():
    """ "seed" means the random seed; the tutorial's recipe is "tutorial"."""
    from ninlayers.app import recipes, trainer

    assert "seed" not in recipes.RECIPES
    with pytest.warns(DeprecationWarning, match="tutorial"):
        old = trainer.resolve_recipe("seed")
    assert old == recipes.RECIPES["tutorial"]
    assert old.name == "tutorial" and old.optimizer == "adam"
