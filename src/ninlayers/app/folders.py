"""Image folders streamed: files listed once, decoded while the model trains.

A folder of 50,000 photos at 224x224 RGB is about 30 GB as float32 arrays;
`stream` never holds it. It lists the files once, shuffles their names (the
only buffer that grows with the folder, a few bytes a file), decodes and
resizes each with the one image reader (`ninlayers.app.images.read_pixels`:
EXIF orientation, bombs, damaged files) on parallel `tf.data` calls, batches
and prefetches. The decoded images are cached in memory only when they fit
in `CACHE_BYTES` (as uint8, a quarter of floats), so small folders decode
once and large ones stream every epoch.

Every file's header (its format and declared size) is checked before the
first step (`check_headers`), so a file that is not an image, or a bomb,
stops the run at once, naming it; a file damaged past its header stops it
when it is read, with the same one line (`reading_errors`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ninlayers.app import data
from ninlayers.app.augment import augmenter
from ninlayers.app.images import check_header, read_pixels
from ninlayers.errors import ImageFileError

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = [
    "CACHE_BYTES",
    "ImageFolder",
    "check_headers",
    "list_folder",
    "read_all",
    "reading_errors",
    "stream",
]

#: Decoded images (uint8) up to this size are cached in memory after the
#: first pass; larger folders are decoded again every epoch.
CACHE_BYTES = 2 * 2**30

# The reading failures of the current pipelines: `tf.data` turns a Python
# exception into its own error type; `reading_errors` raises the original.
_FAILURES: list[ImageFileError] = []


@dataclasses.dataclass
class ImageFolder:
    """A folder's image files, their labels and its class names."""

    files: list[Path]
    labels: np.ndarray
    class_names: list[str]

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageFolder:
        """The files at `indices`, in that order."""
        return ImageFolder(
            [self.files[i] for i in indices], self.labels[indices], self.class_names
        )

    def __len__(self) -> int:
        return len(self.files)


def list_folder(directory: str | os.PathLike, allow_empty: bool = True) -> ImageFolder:
    """Lists a folder with one sub-folder per class (see
    `ninlayers.app.data.load_image_folder` for what is read and refused).

    Raises:
        DatasetError: if the folder does not exist or holds no images, or a
            class folder cannot be a class (see `allow_empty`).
    """
    files, labels, names = data._image_files(data._image_folder(directory), allow_empty)
    return ImageFolder(files, np.asarray(labels, "int32"), names)


def _threads() -> int:
    return max(2, min(8, 2 * (os.cpu_count() or 1)))


def check_headers(files: Sequence[Path]) -> None:
    """Opens every file's header (format and declared size), in threads.

    Raises:
        ImageFileError: for the first file (in order) that is not an image.
    """
    with ThreadPoolExecutor(_threads()) as pool:
        list(pool.map(check_header, files))


def read_all(files: Sequence[Path], size: tuple[int, int], channels: int) -> np.ndarray:
    """Reads a few files (a held-out set, calibration images) as uint8
    `(n, height, width, channels)`, in threads."""
    with ThreadPoolExecutor(_threads()) as pool:
        images = list(pool.map(lambda f: read_pixels(f, size, channels), files))
    return np.stack(images) if images else np.zeros((0, *size, channels), "uint8")


def _decoder(size: tuple[int, int], channels: int) -> Any:
    import tensorflow as tf

    def read(path: bytes) -> np.ndarray:
        try:
            return read_pixels(os.fsdecode(path), size, channels)
        except ImageFileError as error:
            _FAILURES.append(error)
            raise

    def decode(path: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image = tf.numpy_function(read, [path], tf.uint8, stateful=False)
        image.set_shape((*size, channels))
        return image, label

    return decode


def stream(
    folder: ImageFolder,
    size: tuple[int, int],
    channels: int,
    batch_size: int,
    shuffle: bool = False,
    seed: int | None = None,
    augment: bool = False,
    crop_padding: int = 2,
    erasing: float = 0.0,
    cache: bool | None = None,
    shard: tuple[int, int] | None = None,
    drop_remainder: bool = False,
    autotune: bool = False,
) -> tf.data.Dataset:
    """A batched, prefetched dataset of `(float images in [0, 1], labels)`.

    Args:
        folder: ImageFolder. The files and labels.
        size: `(height, width)` the images are resized to.
        channels: 1 (grey) or 3 (RGB).
        batch_size: int.
        shuffle: bool. Reshuffle every pass (the file names).
        seed: int or `None`. Seed of the shuffling and augmentation.
        augment: bool. Flips, shifts and erasing, as
            `ninlayers.app.data.make_dataset` does.
        crop_padding: int. Largest random shift when augmenting.
        erasing: float. Random-erasing probability when augmenting.
        cache: bool or `None`. Keep the decoded images in memory after the
            first pass; `None` does when they fit in `CACHE_BYTES`.
        shard: `(count, index)` or `None`. Only every `count`-th file from
            the `index`-th, chosen before any is read: one worker's share
            under several workers.
        drop_remainder: bool. Drop each pass's last partial batch.
        autotune: bool. Let `tf.data` autotune the decoding's parallelism
            and the buffers (`data.prefetched`). Defaults to `False`.

    Returns:
        tf.data.Dataset.
    """
    import tensorflow as tf

    if shard is not None:
        count, index = shard
        folder = folder.subset(np.arange(index, len(folder), count))
    paths = [os.fsencode(path) for path in folder.files]
    ds = tf.data.Dataset.from_tensor_slices((paths, folder.labels))
    decoded_bytes = len(folder) * size[0] * size[1] * channels
    cache = decoded_bytes <= CACHE_BYTES if cache is None else cache
    decode = _decoder(size, channels)
    # Cached: decode once, then shuffle the decoded images. Streamed: shuffle
    # the names, then decode every pass.
    if cache:
        ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE).cache()
    if shuffle:
        ds = ds.shuffle(len(folder), seed=seed, reshuffle_each_iteration=True)
    if not cache:
        ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    transform = augmenter(True, crop_padding, erasing, seed) if augment else None

    def prepare(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x = tf.cast(x, "float32") / 255.0
        return (transform(x) if transform is not None else x), y

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return data.prefetched(ds, autotune)


@contextlib.contextmanager
def reading_errors() -> Iterator[None]:
    """Raises the `ImageFileError` of a file a pipeline failed to read (one
    line naming it) in place of TensorFlow's error that wraps it."""
    import tensorflow as tf

    _FAILURES.clear()
    try:
        yield
    except tf.errors.OpError:
        if _FAILURES:
            raise _FAILURES[0] from None
        raise
