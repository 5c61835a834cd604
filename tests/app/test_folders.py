"""Image folders streamed: decoded as the model asks, cached only when they
fit, damaged files named in one line (issue "Scale")."""

import numpy as np
import pytest
from PIL import Image

from ninlayers.app import cli, folders, images, recipes, trainer
from ninlayers.errors import ImageFileError


def make_folder(root, per_class=6, size=12):
    rng = np.random.default_rng(0)
    for index, name in enumerate(["dark", "light"]):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 40, (size, size), dtype=np.uint8) + 200 * index
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.fixture
def reads(monkeypatch):
    """The paths `read_pixels` decodes, in order."""
    seen = []
    read = images.read_pixels

    def counting(path, *args, **kwargs):
        seen.append(str(path))
        return read(path, *args, **kwargs)

    monkeypatch.setattr(folders, "read_pixels", counting)
    return seen


def test_a_stream_decodes_files_as_batches_are_asked_for(tmp_path, reads):
    listed = folders.list_folder(make_folder(tmp_path / "f", per_class=50))
    ds = folders.stream(listed, (12, 12), 1, batch_size=4, cache=False)
    x, y = next(iter(ds))
    assert x.shape == (4, 12, 12, 1) and float(np.max(x)) <= 1.0
    # Only the batches tf.data prefetches were read, not the 100 files.
    assert 4 <= len(reads) < 100


@pytest.mark.parametrize("cache", [True, False])
def test_a_stream_turns_tf_data_autotuning_off_unless_asked(tmp_path, cache):
    listed = folders.list_folder(make_folder(tmp_path / "f"))
    batches = {}
    for autotune in (False, True):
        ds = folders.stream(listed, (12, 12), 1, 5, cache=cache, autotune=autotune)
        assert ds.options().autotune.enabled is autotune
        batches[autotune] = [(x.numpy(), y.numpy()) for x, y in ds]
    for off, on in zip(batches[False], batches[True], strict=True):
        np.testing.assert_array_equal(off[0], on[0])
        np.testing.assert_array_equal(off[1], on[1])


@pytest.mark.parametrize("cache, passes_read", [(True, 1), (False, 2)])
def test_a_folder_is_cached_only_when_asked_or_it_fits(
    tmp_path, reads, monkeypatch, cache, passes_read
):
    listed = folders.list_folder(make_folder(tmp_path / "f"))
    # cache=None decides by size: 12 images of 12x12 fit in 144 bytes each.
    monkeypatch.setattr(folders, "CACHE_BYTES", 12 * 144 if cache else 12 * 144 - 1)
    ds = folders.stream(listed, (12, 12), 1, batch_size=5, shuffle=True, seed=1)
    first = sorted(int(v) for _, y in ds for v in np.asarray(y))
    second = sorted(int(v) for _, y in ds for v in np.asarray(y))
    assert first == second == sorted(listed.labels.tolist())
    assert len(reads) == passes_read * len(listed)


def test_each_worker_reads_only_its_own_share_of_the_files(tmp_path, reads):
    listed = folders.list_folder(make_folder(tmp_path / "f", per_class=5))
    shares = []
    for index in range(3):
        reads.clear()
        ds = folders.stream(listed, (12, 12), 1, batch_size=2, shard=(3, index))
        labels = [int(v) for _, y in ds for v in np.asarray(y)]
        assert sorted(reads) == sorted(str(f) for f in listed.files[index::3])
        assert labels == listed.labels[index::3].tolist()
        shares.append(set(reads))
    assert set.union(*shares) == {str(f) for f in listed.files}
    assert sum(len(share) for share in shares) == len(listed)


def test_the_trainer_gives_each_worker_its_share_and_replica_batch(tmp_path, reads):
    import tensorflow as tf

    root = make_folder(tmp_path / "f", per_class=10)
    recipe = recipes.RECIPES["quick"].replace(batch_size=4, augment=False)
    data = trainer.load_data(recipe, 0, None, root, 12, None, None)
    context = tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=4
    )
    reads.clear()
    batches = iter(data.train_per_worker(context))
    shapes = [next(batches)[0].shape[0] for _ in range(2 * data.n_train)]
    assert set(shapes) == {1}  # 4 images a step over 4 replicas
    # Many passes over worker 1's share: it read half the training files.
    assert len(set(reads)) == data.n_train // 2


def test_labels_follow_their_files_through_the_shuffle(tmp_path):
    listed = folders.list_folder(make_folder(tmp_path / "f"))
    ds = folders.stream(listed, (12, 12), 1, batch_size=3, shuffle=True, seed=2)
    for x, y in ds:
        # "light" images (label 1) are bright, "dark" ones (label 0) dark.
        brightness = np.asarray(x).mean(axis=(1, 2, 3))
        assert ((brightness > 0.5) == (np.asarray(y) == 1)).all()


def test_a_file_that_is_not_an_image_stops_training_before_the_first_step(
    tmp_path, reads
):
    root = make_folder(tmp_path / "f")
    (root / "dark" / "notes.png").write_text("not an image")
    with pytest.raises(ImageFileError, match="notes.png"):
        trainer.load_data(recipes.RECIPES["default"], image_folder=root)
    assert reads == []  # refused from the headers, nothing decoded


def test_a_file_damaged_past_its_header_stops_training_in_one_line(tmp_path, capsys):
    root = make_folder(tmp_path / "f")
    good = (root / "light" / "0.png").read_bytes()
    damaged = root / "light" / "damaged.png"
    damaged.write_bytes(good[: len(good) // 2])  # the header is whole
    images.check_header(damaged)
    status = cli.main(
        [
            "train",
            "--image-folder",
            str(root),
            "--architecture",
            "[[4, 3]]",
            "--epochs",
            "1",
            "--verbose",
            "0",
            "--output",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.count("\n") == 1 and "damaged.png" in err and "Traceback" not in err


def test_evaluate_streams_a_folder_with_its_labels(tmp_path, reads):
    from ninlayers import NiN
    from ninlayers.app import inference

    root = make_folder(tmp_path / "f")
    model = NiN(
        num_classes=2,
        input_shape=(12, 12, 1),
        architecture=[[4, 3]],
        class_names=["light", "dark"],  # not the folders' sorted order
    )
    result = inference.evaluate(model, image_folder=root, limit=8)
    assert result["examples"] == 8 and len(reads) == 8


@pytest.mark.slow
def test_the_tutorials_224_network_trains_on_rgb_photos_end_to_end(tmp_path, capsys):
    """Scale: the 224x224 RGB path, from a folder to an exported file."""
    import json

    rng = np.random.default_rng(1)
    root = tmp_path / "photos"
    for index, name in enumerate(["red", "blue"]):
        (root / name).mkdir(parents=True)
        for i in range(8):
            pixels = rng.integers(0, 60, (240, 200, 3), dtype=np.uint8)
            pixels[..., 2 * index] += 180
            Image.fromarray(pixels).save(root / name / f"{i}.jpg")
    run = tmp_path / "run"

    def command(*argv):
        status = cli.main([str(a) for a in argv])
        out, err = capsys.readouterr()
        assert status == 0, err
        return out

    command(
        "train",
        "--image-folder",
        root,
        "--architecture",
        "tutorial_224",
        "--input-size",
        224,
        "--epochs",
        1,
        "--batch-size",
        8,
        "--verbose",
        0,
        "--output",
        run,
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["class_names"] == ["blue", "red"]
    assert (
        json.loads(command("evaluate", run, "--image-folder", root))["examples"] == 16
    )
    photo = root / "red" / "0.jpg"
    assert command("predict", run, photo).startswith(f"{photo}: ")
    command("cam", run, photo, "--output", tmp_path / "cam.png")
    assert (tmp_path / "cam.png").stat().st_size > 0
    command("export", run, tmp_path / "nin.tflite")
    out = command("predict", tmp_path / "nin.tflite", photo)
    assert out.startswith(f"{photo}: ")
