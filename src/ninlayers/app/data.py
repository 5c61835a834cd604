"""The application's data: Fashion-MNIST, image folders, tf.data pipelines.

`load_fashion_mnist()` looks for the four original IDX files (gzipped or not)
in this order: the `data_dir` argument, the `NINLAYERS_FASHION_MNIST_DIR`
environment variable, Debian's `/usr/share/datasets/fashion-mnist/` (package
`dataset-fashion-mnist`), Keras's cache `~/.keras/datasets/fashion-mnist`, and
last Keras's own download. It parses IDX itself and checks the SHA-256 of each
file's decompressed bytes, so differently gzipped copies all pass.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ninlayers import _checks, _tf_feeding
from ninlayers.app.augment import augmenter
from ninlayers.app.images import IMAGE_SUFFIXES, image_channels, read_image
from ninlayers.errors import DatasetError
from ninlayers.presets import FASHION_MNIST_CLASSES

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = [
    "CLASS_NAMES",
    "FASHION_MNIST_SHAPE",
    "IMAGE_FOLDER_TEST_SPLIT",
    "find_fashion_mnist",
    "image_folder_channels",
    "image_folder_datasets",
    "load_fashion_mnist",
    "load_image_folder",
    "make_dataset",
    "prefetched",
    "read_idx",
]

#: Fashion-MNIST's image shape: 28x28 pixels, one grey channel.
FASHION_MNIST_SHAPE = (28, 28, 1)

#: The share of an image folder that `ninlayers train` holds out as its test
#: set (an image folder has no separate test set).
IMAGE_FOLDER_TEST_SPLIT = 0.2

#: Fashion-MNIST's ten classes, in label order.
CLASS_NAMES = FASHION_MNIST_CLASSES

#: SHA-256 of each file's decompressed bytes, and its expected shape.
FILES = {
    "train-images-idx3-ubyte": (
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        (60000, 28, 28),
    ),
    "train-labels-idx1-ubyte": (
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        (60000,),
    ),
    "t10k-images-idx3-ubyte": (
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        (10000, 28, 28),
    ),
    "t10k-labels-idx1-ubyte": (
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        (10000,),
    ),
}

ENV_VAR = "NINLAYERS_FASHION_MNIST_DIR"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
KERAS_CACHE_DIR = Path("~/.keras/datasets/fashion-mnist")

_IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


#: The largest IDX file read (decompressed): reading stops there, so a
#: small gzip file that inflates to gigabytes (a gzip bomb) costs no memory.
MAX_IDX_BYTES = 1 << 30


def _idx_size(header: bytes) -> int | None:
    """The total size an IDX header declares, or `None` if it is not one."""
    if len(header) < 4 or header[0:2] != b"\x00\x00" or header[2] not in _IDX_DTYPES:
        return None
    ndim = header[3]
    if len(header) < 4 + 4 * ndim:
        return None
    shape = struct.unpack(f">{ndim}I", header[4 : 4 + 4 * ndim])
    itemsize = np.dtype(_IDX_DTYPES[header[2]]).itemsize
    return 4 + 4 * ndim + int(np.prod(shape, dtype=object)) * itemsize


def _read_bytes(path: Path) -> bytes:
    """The file's (decompressed) bytes, read no further than its header's
    size plus one byte (so a longer file is seen to be one)."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    try:
        with gzip.open(path, "rb") if gzipped else open(path, "rb") as f:
            header = f.read(4)
            header += f.read(4 * header[3]) if len(header) == 4 else b""
            size = _idx_size(header)
            if size is None:
                return header
            if size > MAX_IDX_BYTES:
                raise DatasetError(
                    f"{path} declares {size} bytes in its IDX header; at most "
                    f"{MAX_IDX_BYTES} are read. It is not a data set file."
                )
            data = header + f.read(size - len(header) + 1)
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetError(
            f"Cannot read {path}: the gzip stream is truncated or corrupt "
            f"({error}). Expected a complete IDX file, gzipped or not."
        ) from None
    if len(data) > size:
        raise DatasetError(
            f"{path} holds more than the {size} bytes its IDX header "
            "declares: it is damaged or not an IDX file."
        )
    return data


def _parse_idx(data: bytes, path: Path | str) -> np.ndarray:
    if len(data) < 4 or data[0:2] != b"\x00\x00" or data[2] not in _IDX_DTYPES:
        raise DatasetError(
            f"{path} is not an IDX file: expected a magic number 0x0000TTNN "
            f"(TT a type code, NN the rank). Received: {data[:4].hex() or 'empty'}"
        )
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(
            f"{path} is truncated: its header needs {header} bytes for "
            f"{ndim} dimensions. Received: {len(data)} bytes"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DatasetError(
            f"{path} has the wrong size for its header's shape {shape}: "
            f"expected {expected} bytes. Received: {len(data)} bytes"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike, sha256: str | None = None) -> np.ndarray:
    """Reads an IDX file (gzipped or not) into a NumPy array.

    Args:
        path: str or path. The file.
        sha256: str or `None`. When given, the SHA-256 of the decompressed
            bytes must equal it.

    Returns:
        np.ndarray with the file's shape and type.

    Raises:
        DatasetError: if the file is truncated, not IDX, or fails the checksum.

    Example:

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
    >>> _ = path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
    >>> read_idx(path)
    array([7, 8, 9], dtype=uint8)
    """
    path = Path(path)
    data = _read_bytes(path)
    if sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise DatasetError(
                f"{path} fails its checksum: expected SHA-256 {sha256} of the "
                f"decompressed bytes. Received: {digest}. The file is corrupt "
                "or not the original; delete it and fetch it again."
            )
    return _parse_idx(data, path)


def _file_in(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def _complete(directory: Path) -> bool:
    return all(_file_in(directory, stem) for stem in FILES)


def find_fashion_mnist(data_dir: str | os.PathLike | None = None) -> Path:
    """Returns the directory holding the four Fashion-MNIST IDX files.

    Looks, in order, in `data_dir`, `$NINLAYERS_FASHION_MNIST_DIR`, Debian's
    `/usr/share/datasets/fashion-mnist`, and Keras's cache
    `~/.keras/datasets/fashion-mnist`; if none has them, downloads them with
    Keras into its cache.

    Args:
        data_dir: str, path or `None`. A directory to use; when given (or when
            the environment variable is set), it must hold the files.

    Returns:
        Path.

    Raises:
        DatasetError: if a named directory lacks files, or nothing is found
            and the download fails.
    """
    for explicit, origin in (
        (data_dir, "data_dir"),
        (os.environ.get(ENV_VAR), ENV_VAR),
    ):
        if explicit:
            directory = Path(explicit).expanduser()
            if not _complete(directory):
                missing = [s for s in FILES if not _file_in(directory, s)]
                raise DatasetError(
                    f"{origin} names {directory}, which lacks the Fashion-MNIST "
                    f"files {missing} (expected each as NAME or NAME.gz)."
                )
            return directory
    looked = [DEBIAN_DIR, KERAS_CACHE_DIR.expanduser()]
    for directory in looked:
        if _complete(directory):
            return directory
    try:
        import keras

        for stem in FILES:
            keras.utils.get_file(
                stem + ".gz",
                origin="https://storage.googleapis.com/tensorflow/"
                f"tf-keras-datasets/{stem}.gz",
                cache_subdir="datasets/fashion-mnist",
            )
    except Exception as error:
        raise DatasetError(
            "Fashion-MNIST was not found: looked in "
            + ", ".join(str(d) for d in looked)
            + f" and ${ENV_VAR}, and Keras's download failed ({error}). Install "
            "Debian's dataset-fashion-mnist package, or pass data_dir."
        ) from None
    return KERAS_CACHE_DIR.expanduser()


def load_fashion_mnist(
    data_dir: str | os.PathLike | None = None, verify: bool = True
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Loads Fashion-MNIST's 60,000 training and 10,000 test images.

    Args:
        data_dir: str, path or `None`. Where the IDX files are; `None` looks in
            the usual places (see `find_fashion_mnist`). Defaults to `None`.
        verify: bool. Check each file's SHA-256. Defaults to `True`.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: uint8 images of shape
        `(n, 28, 28)` and uint8 labels of shape `(n,)`, as
        `keras.datasets.fashion_mnist.load_data()` returns them.

    Raises:
        DatasetError: if a file is missing, truncated, corrupt or fails its
            checksum; the message names the file and what was expected.
    """
    directory = find_fashion_mnist(data_dir)
    arrays = {}
    for stem, (digest, shape) in FILES.items():
        path = _file_in(directory, stem)
        array = read_idx(path, digest if verify else None)
        if array.shape != shape:
            raise DatasetError(
                f"{path} holds an array of the wrong shape: expected {shape}. "
                f"Received: {array.shape}"
            )
        arrays[stem] = array
    return (
        (arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"]),
        (arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"]),
    )


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray | None = None,
    batch_size: int = 64,
    shuffle: bool = False,
    seed: int | None = None,
    augment: bool = False,
    flip: bool = True,
    crop_padding: int = 2,
    erasing: float = 0.0,
    image_size: Sequence[int] | None = None,
    drop_remainder: bool = False,
    autotune: bool = False,
) -> tf.data.Dataset:
    """Builds a batched, prefetched `tf.data.Dataset` of float images in [0, 1].

    Images of shape `(n, h, w)` gain a channel axis; uint8 images are divided
    by 255. Augmentation runs on whole batches inside the TensorFlow graph (no
    Python per batch): horizontal flips, random shifts of up to `crop_padding`
    pixels (a random crop of the zero-padded image), and random erasing with
    probability `erasing`.

    Args:
        images: np.ndarray. `(n, h, w)` or `(n, h, w, c)`, uint8 or float.
        labels: np.ndarray or `None`. Integer labels.
        batch_size: int. Defaults to `64`.
        shuffle: bool. Reshuffle every epoch. Defaults to `False`.
        seed: int or `None`. Seed of the shuffling and augmentation.
        augment: bool. Apply the augmentations. Defaults to `False`.
        flip: bool. Random horizontal flips when augmenting. Defaults to `True`.
        crop_padding: int. Largest random shift, in pixels, when augmenting.
            Defaults to `2`.
        erasing: float. Random-erasing probability when augmenting.
            Defaults to `0.0`.
        image_size: tuple of 2 ints or `None`. Resize to this size.
        drop_remainder: bool. Drop the last partial batch. Defaults to `False`.
        autotune: bool. Let `tf.data` autotune the pipeline's buffers and
            parallelism. Defaults to `False` (why: docs/performance.md).

    Returns:
        tf.data.Dataset of `images` or `(images, labels)` batches.

    Example:

    >>> import numpy as np
    >>> ds = make_dataset(np.zeros((10, 28, 28), "uint8"), np.arange(10), 4)
    >>> len(list(ds)), tuple(next(iter(ds))[0].shape)
    (3, (4, 28, 28, 1))
    """
    import tensorflow as tf

    batch_size = _checks.positive_int("batch_size", batch_size)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(
            "`images` must have shape (n, height, width) or (n, height, width, "
            f"channels). Received: images.shape={images.shape}"
        )
    if labels is not None and len(labels) != len(images):
        raise ValueError(
            "`images` and `labels` must have the same length. Received: "
            f"{len(images)} images and {len(labels)} labels"
        )
    scale = 1 / 255 if images.dtype == np.uint8 else 1.0
    tensors = images if labels is None else (images, labels)
    ds = tf.data.Dataset.from_tensor_slices(tensors)
    if shuffle:
        ds = ds.shuffle(
            min(len(images), 60000), seed=seed, reshuffle_each_iteration=True
        )
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    transform = augmenter(flip, crop_padding, erasing, seed) if augment else None

    def prepare(x, *rest):
        x = tf.cast(x, "float32") * scale
        if image_size is not None:
            x = tf.image.resize(x, image_size)
        if transform is not None:
            x = transform(x)
        return (x, *rest) if rest else x

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return prefetched(ds, autotune)


def prefetched(ds: tf.data.Dataset, autotune: bool = False) -> tf.data.Dataset:
    """`ds` prefetched, with `tf.data`'s autotuning only if `autotune`.

    With autotuning on, a `tf.data` iterator runs a tuning thread that
    sleeps in doubling periods, and the iterator's end (each epoch's, each
    `evaluate`'s) can wait for the current sleep to run out: on a small CPU
    about half of such epochs ended on one of those periods, up to twice
    their time (docs/performance.md). Off, `AUTOTUNE` values take
    `tf.data`'s fixed defaults.

    Args:
        ds: tf.data.Dataset.
        autotune: bool. Defaults to `False`.

    Returns:
        tf.data.Dataset.

    Example:

    >>> import tensorflow as tf
    >>> prefetched(tf.data.Dataset.range(3)).options().autotune.enabled
    False
    """
    import tensorflow as tf

    options = _tf_feeding.autotune_options(_checks.boolean("autotune", autotune))
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def image_folder_datasets(
    directory: str | os.PathLike,
    image_size: Sequence[int] = FASHION_MNIST_SHAPE[:2],
    color_mode: str = "grayscale",
    batch_size: int = 64,
    validation_split: float = 0.2,
    seed: int = 0,
    autotune: bool = False,
) -> tuple[tf.data.Dataset, tf.data.Dataset | None, list[str]]:
    """Loads images from one sub-folder per class, for training NiN on them.

    Wraps `keras.utils.image_dataset_from_directory`, scales pixels to [0, 1]
    and prefetches (`prefetched`: without `tf.data`'s autotuning unless
    `autotune`).

    Args:
        directory: str or path. A folder with one sub-folder per class.
        image_size: tuple of 2 ints. Images are resized to it.
            Defaults to `(28, 28)`.
        color_mode: str. `"grayscale"`, `"rgb"` or `"rgba"`.
            Defaults to `"grayscale"`.
        batch_size: int. Defaults to `64`.
        validation_split: float. Fraction kept for validation; `0` for none.
            Defaults to `0.2`.
        seed: int. Seed of the split and shuffling. Defaults to `0`.
        autotune: bool. Let `tf.data` autotune the buffers. Defaults to
            `False`.

    Returns:
        `(train, validation, class_names)`; `validation` is `None` when
        `validation_split` is 0.

    Raises:
        DatasetError: if the folder does not exist or holds no images.
    """
    import keras
    import tensorflow as tf

    directory = _image_folder(directory)
    common = {
        "image_size": tuple(image_size),
        "color_mode": color_mode,
        "batch_size": batch_size,
        "seed": seed,
        "label_mode": "int",
        "verbose": False,
    }
    try:
        if validation_split:
            train, validation = keras.utils.image_dataset_from_directory(
                directory,
                validation_split=validation_split,
                subset="both",
                **common,
            )
        else:
            train = keras.utils.image_dataset_from_directory(directory, **common)
            validation = None
    except ValueError as error:
        raise DatasetError(f"Cannot read images from {directory}: {error}") from None
    class_names = list(train.class_names)

    def scale(x, y):
        return tf.cast(x, "float32") / 255.0, y

    train = prefetched(train.map(scale), autotune)
    if validation is not None:
        validation = prefetched(validation.map(scale), autotune)
    return train, validation, class_names


def _image_folder(directory: str | os.PathLike) -> Path:
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(
            "The image folder must be a directory with one sub-folder per "
            f"class. Received: {directory}"
        )
    return directory


def _image_files(
    directory: Path, allow_empty: bool = True
) -> tuple[list[Path], list[int], list[str]]:
    """The image files of a folder's class sub-folders, their labels (the
    sorted sub-folder names' indices) and the sub-folder names.

    Files are found by suffix (`IMAGE_SUFFIXES`) in each class folder and its
    sub-folders; symbolic links to folders inside a class folder are not
    followed (so a link loop is harmless), and entries that are not regular
    files (a folder named `x.png`, a dangling link) are skipped. A class
    folder whose name is not valid UTF-8 or holds control characters (class
    names are saved in the model as text) is refused, as is an empty class
    folder unless `allow_empty` (scoring a model may skip a class).
    """
    folders = sorted((p for p in directory.iterdir() if p.is_dir()), key=_sort_key)
    files, labels, names = [], [], []
    for label, folder in enumerate(folders):
        names.append(_class_name(folder))
        found = [
            path
            for path in sorted(folder.rglob("*"), key=_sort_key)
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
        ]
        if not found and not allow_empty:
            raise DatasetError(
                f"The class folder {folder} holds no images; expected "
                f"{', '.join(IMAGE_SUFFIXES)} files in it. Remove it or add "
                "images."
            )
        files += found
        labels += [label] * len(found)
    if not files:
        raise DatasetError(
            f"Cannot read images from {directory}: it holds none. Expected one "
            f"sub-folder per class holding {', '.join(IMAGE_SUFFIXES)} files."
        )
    return files, labels, names


def _sort_key(path: Path) -> bytes:
    """Paths sorted by their bytes (names that are not UTF-8 sort too)."""
    return os.fsencode(path)


def _class_name(folder: Path) -> str:
    """A class folder's name as a class name, or `DatasetError`."""
    name = folder.name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise DatasetError(
            f"The class folder {folder} has a name that is not valid UTF-8; "
            "class names are saved with the model as text: rename it."
        ) from None
    if not name.isprintable():
        raise DatasetError(
            f"The class folder {str(folder)!r} has a name with control characters "
            "(a newline, a tab); expected a printable name: rename it."
        )
    return name


def image_folder_channels(directory: str | os.PathLike) -> int:
    """Returns 1 if a folder's first image is grey, else 3 (RGB).

    Raises:
        DatasetError: if the folder holds no image.
        ImageFileError: if its first image cannot be read (naming it).
    """
    files, _, _ = _image_files(_image_folder(directory))
    return image_channels(files[0])


def load_image_folder(
    directory: str | os.PathLike,
    image_size: Sequence[int] = FASHION_MNIST_SHAPE[:2],
    channels: int = 1,
    allow_empty: bool = True,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Reads every image of a folder with one sub-folder per class.

    Reads the files Keras's image folders read (`IMAGE_SUFFIXES`), each with
    `ninlayers.app.images.read_image`.

    Args:
        directory: str or path.
        image_size: tuple of 2 ints. Images are resized to it (bilinear).
        channels: int. 1 (grey) or 3 (RGB). Defaults to `1`.
        allow_empty: bool. Accept class folders without images (as when
            scoring a model); `False` refuses them (as for training).
            Defaults to `True`.

    Returns:
        `(images, labels, class_names)`: float32 images in [0, 1] of shape
        `(n, height, width, channels)`, int32 labels (the sorted sub-folder
        names' indices), and the sub-folder names.

    Raises:
        DatasetError: if the folder does not exist or holds no images, or a
            class folder's name cannot be a class name.
        ImageFileError: if one of its images cannot be read (naming it).
    """
    channels = _checks.one_of("channels", channels, (1, 3))
    files, labels, class_names = _image_files(_image_folder(directory), allow_empty)
    size = (int(image_size[0]), int(image_size[1]))
    images = np.stack([read_image(path, size, channels) for path in files])
    return images, np.asarray(labels, dtype="int32"), class_names
