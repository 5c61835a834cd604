"""Train, evaluate and explain NiN end to end: what `ninlayers` runs.

Every CLI command is one function here, usable from Python:

- `train()` trains a recipe on Fashion-MNIST (or an image folder) and writes
  `model.keras`, `metrics.json`, `history.png`, `confusion.png`, `cam.png`;
- `evaluate()` measures a saved model on the test set;
- `predict()` classifies image files;
- `explain()` draws class activation maps of image files.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ninlayers import __version__, datasets, explain, plots, runtime
from ninlayers.errors import ImageFileError, ModelFileError, TrainingError
from ninlayers.model import NiN
from ninlayers.training import (
    RECIPES,
    Recipe,
    SparseSmoothedCrossentropy,
    build_optimizer,
)

__all__ = [
    "evaluate",
    "explain_images",
    "load_images",
    "load_model",
    "predict",
    "train",
]

MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_model_atomically(model: keras.Model, path: str | os.PathLike) -> Path:
    """Saves a `.keras` file through a temporary file and a rename.

    A crash while saving leaves the previous file (or none), never half of one.

    Args:
        model: keras.Model.
        path: str or path ending in `.keras`.

    Returns:
        Path of the file.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    try:
        model.save(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_model(path: str | os.PathLike) -> keras.Model:
    """Loads a `.keras` file safely (`safe_mode=True`), with clear errors.

    Args:
        path: str or path.

    Returns:
        keras.Model.

    Raises:
        ModelFileError: if the file is missing, not a `.keras` (zip) archive,
            truncated, or names classes that are not registered.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"Model file {path} does not exist.")
    if path.suffix != ".keras":
        raise ModelFileError(
            f"Model file {path} must end in .keras (the Keras 3 format). "
            f"Received: {path.suffix or 'no extension'}"
        )
    if not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"Model file {path} is not a .keras archive (a zip file): it is "
            "truncated or not a model."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ModelFileError(f"Model file {path} is corrupt: {error}") from None
    if bad is not None:
        raise ModelFileError(
            f"Model file {path} is corrupt: its member {bad!r} fails its CRC."
        )
    if "config.json" not in names:
        raise ModelFileError(
            f"Model file {path} has no config.json: expected a model saved "
            "with model.save('x.keras')."
        )
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as error:  # Keras raises many types here.
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ModelFileError(
            f"Cannot load model file {path}: {type(error).__name__}: {message}. "
            "If it uses your own classes, import the module that registers "
            "them first."
        ) from error


def _class_names(model: keras.Model, num_classes: int) -> list[str]:
    names = getattr(model, "class_names", None)
    if names:
        return list(names)
    if num_classes == len(datasets.CLASS_NAMES):
        return list(datasets.CLASS_NAMES)
    return [f"class {i}" for i in range(num_classes)]


def _spatial_size(model: keras.Model) -> tuple[int, int, int]:
    _, height, width, channels = model.input_shape
    return (height or 28, width or 28, channels)


def load_images(
    paths: Sequence[str | os.PathLike],
    size: tuple[int, int] = (28, 28),
    channels: int = 1,
    invert: bool = False,
) -> np.ndarray:
    """Reads PNG/JPEG (or any Pillow) images as float arrays in [0, 1].

    Each image is converted to grey (1 channel) or RGB (3), resized to `size`
    with bilinear filtering and scaled to [0, 1].

    Args:
        paths: list of str or path.
        size: tuple `(height, width)`. Defaults to `(28, 28)`.
        channels: int. 1 or 3. Defaults to `1`.
        invert: bool. Use `1 - pixel`, for dark objects on a light background
            (Fashion-MNIST has light clothes on black). Defaults to `False`.

    Returns:
        np.ndarray of shape `(n, height, width, channels)`, float32.

    Raises:
        ImageFileError: if a file is missing or is not an image.
    """
    from PIL import Image, UnidentifiedImageError

    if channels not in (1, 3):
        raise ValueError(f"`channels` must be 1 or 3. Received: channels={channels}")
    arrays = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ImageFileError(f"Image file {path} does not exist.")
        try:
            with Image.open(path) as image:
                image = image.convert("L" if channels == 1 else "RGB")
                image = image.resize((size[1], size[0]), Image.BILINEAR)
                array = np.asarray(image, dtype="float32") / 255.0
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise ImageFileError(
                f"{path} is not an image Pillow can read (PNG, JPEG, ...): {error}"
            ) from None
        if channels == 1:
            array = array[..., None]
        arrays.append(1.0 - array if invert else array)
    return np.stack(arrays)


def predict(
    model_path: str | os.PathLike,
    image_paths: Sequence[str | os.PathLike],
    top: int = 3,
    invert: bool = False,
) -> list[dict[str, Any]]:
    """Classifies image files with a saved model.

    Args:
        model_path: str or path of a `.keras` file.
        image_paths: list of image files, any size.
        top: int. How many classes to report per image. Defaults to `3`.
        invert: bool. See `load_images`. Defaults to `False`.

    Returns:
        list of dicts, one per image: `image`, `class`, `probability`, `top`
        (a list of `[class, probability]`).
    """
    model = load_model(model_path)
    height, width, channels = _spatial_size(model)
    images = load_images(image_paths, (height, width), channels, invert)
    probs = np.asarray(model.predict(images, verbose=0), dtype="float64")
    names = _class_names(model, probs.shape[-1])
    results = []
    for path, p in zip(image_paths, probs, strict=True):
        order = np.argsort(-p)[: max(1, top)]
        results.append(
            {
                "image": str(path),
                "class": names[order[0]],
                "probability": float(p[order[0]]),
                "top": [[names[i], float(p[i])] for i in order],
            }
        )
    return results


def explain_images(
    model_path: str | os.PathLike,
    image_paths: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    invert: bool = False,
) -> Path:
    """Draws the class activation maps of image files into one PNG.

    Args:
        model_path: str or path of a `.keras` file.
        image_paths: list of image files.
        output: str or path of the PNG to write.
        invert: bool. See `load_images`. Defaults to `False`.

    Returns:
        Path of the PNG.
    """
    model = load_model(model_path)
    height, width, channels = _spatial_size(model)
    images = load_images(image_paths, (height, width), channels, invert)
    maps, probs = explain.class_activation_maps(model, images)
    names = _class_names(model, probs.shape[-1])
    return plots.plot_class_activation_maps(images, maps, probs, names, output)


def _test_arrays(data_dir, limit) -> tuple[np.ndarray, np.ndarray]:
    _, (x_test, y_test) = datasets.load_fashion_mnist(data_dir)
    if limit:
        x_test, y_test = x_test[:limit], y_test[:limit]
    return x_test, y_test


def _scores(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    probs = np.asarray(probs, dtype="float64")
    labels = np.asarray(labels).astype(int)
    picked = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1.0)
    return {
        "accuracy": float(np.mean(probs.argmax(axis=-1) == labels)),
        "loss": float(-np.mean(np.log(picked))),
        "examples": len(labels),
    }


def _predict_dataset(model: keras.Model, ds) -> tuple[np.ndarray, np.ndarray]:
    probs, labels = [], []
    for x, y in ds:
        probs.append(np.asarray(model(x, training=False), dtype="float32"))
        labels.append(np.asarray(y))
    return np.concatenate(probs), np.concatenate(labels)


def evaluate(
    model: keras.Model | str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    image_folder: str | os.PathLike | None = None,
    limit: int | None = None,
    batch_size: int = 500,
) -> dict[str, float]:
    """Measures accuracy and cross-entropy on the test set.

    Args:
        model: keras.Model or the path of a `.keras` file.
        data_dir: str, path or `None`. Fashion-MNIST's directory (see
            `ninlayers.datasets.find_fashion_mnist`).
        image_folder: str, path or `None`. Evaluate on all images of this
            folder (one sub-folder per class) instead.
        limit: int or `None`. Use only the first `limit` test images.
        batch_size: int. Defaults to `500`.

    Returns:
        dict with `accuracy`, `loss` (unsmoothed cross-entropy) and
        `examples`.
    """
    if not isinstance(model, keras.Model):
        model = load_model(model)
    height, width, channels = _spatial_size(model)
    if image_folder is not None:
        ds, _, _ = datasets.image_folder_datasets(
            image_folder,
            (height, width),
            "grayscale" if channels == 1 else "rgb",
            batch_size,
            0.0,
        )
    else:
        x_test, y_test = _test_arrays(data_dir, limit)
        resize = None if (height, width) == (28, 28) else (height, width)
        ds = datasets.make_dataset(x_test, y_test, batch_size, image_size=resize)
    probs, labels = _predict_dataset(model, ds)
    return _scores(probs, labels)


class _Throughput(keras.callbacks.Callback):
    """Times the training part of each epoch (validation excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._validation = 0.0

    def on_test_begin(self, logs=None):
        self._test_start = time.perf_counter()

    def on_test_end(self, logs=None):
        self._validation += time.perf_counter() - self._test_start

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start - self._validation)


class _StopOnNaN(keras.callbacks.Callback):
    """Stops at the first non-finite loss or gradient and remembers where.

    The gradient norm is checked too: NaN weights can give a finite loss
    (a ReLU maps NaN to 0, so the network outputs uniform scores). Under
    loss scaling (mixed_float16) non-finite gradients are expected now and
    then and the optimizer skips them, so only the loss is checked there.
    """

    def __init__(self) -> None:
        super().__init__()
        self.bad: tuple[int, int, str] | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_begin(self, logs=None):
        self._keys = ["loss"]
        if not isinstance(self.model.optimizer, keras.optimizers.LossScaleOptimizer):
            self._keys.append("gradient_norm")

    def on_train_batch_end(self, batch, logs=None):
        for key in self._keys:
            value = (logs or {}).get(key)
            if value is not None and not np.isfinite(float(value)):
                self.bad = (self._epoch + 1, batch + 1, f"{key} {float(value)}")
                self.model.stop_training = True
                return


class _GuardedBackup(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` that never saves NaN weights, nor deletes itself.

    Keras's callback saves at the end of the epoch in which training stopped;
    after a NaN loss that would replace the last good state with NaN weights.
    The backup is kept when `fit` returns: `train()` removes it only once
    every artifact is written, so a crash in between loses nothing.
    """

    def __init__(self, backup_dir: Path, guard: _StopOnNaN) -> None:
        super().__init__(
            str(backup_dir), delete_checkpoint=False, double_checkpoint=True
        )
        self.guard = guard

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.bad is None:
            super().on_epoch_end(epoch, logs)


class _HistoryLog(keras.callbacks.Callback):
    """Keeps the per-epoch logs across interrupted and resumed runs.

    Writes them after each epoch (atomically, before the backup is taken);
    on resuming, keeps the entries of the epochs the backup holds.
    """

    def __init__(self, backup_dir: Path) -> None:
        super().__init__()
        self.path = backup_dir / "history.json"
        self.metadata = backup_dir / "training_metadata.json"
        self.history: dict[str, list[float]] = {}
        self.resumed_from = 0

    def on_train_begin(self, logs=None):
        if self.metadata.is_file() and self.path.is_file():
            self.resumed_from = int(json.loads(self.metadata.read_text())["epoch"])
            saved = json.loads(self.path.read_text())
            self.history = {k: v[: self.resumed_from] for k, v in saved.items()}

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(self.path, json.dumps(self.history))


def _strategy_name(strategy: Any) -> str:
    """The public class name: TF's MultiWorkerMirroredStrategy is an alias."""
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"
    return type(strategy).__name__.lstrip("_")


def _weights_digest(model: keras.Model) -> str:
    """SHA-256 of all weights: equal digests mean identical replicas."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    import tensorflow as tf

    return {
        "ninlayers": __version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def train(
    recipe: str | Recipe = "default",
    output_dir: str | os.PathLike = "runs/fashion-mnist",
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    architecture: str | Sequence[Any] | None = None,
    input_size: int | None = None,
    precision: str | None = None,
    seed: int = 0,
    deterministic: bool = False,
    strategy: str = "auto",
    data_dir: str | os.PathLike | None = None,
    image_folder: str | os.PathLike | None = None,
    train_limit: int | None = None,
    test_limit: int | None = None,
    tensorboard: bool = False,
    verbose: int | str = "auto",
) -> dict[str, Any]:
    """Trains NiN with a recipe and writes the run's artifacts.

    Writes into `output_dir`: `model.keras`, `metrics.json` (test accuracy and
    loss, per-epoch history, wall time, images/s, parameters, versions),
    `history.png`, `confusion.png` and `cam.png`, each atomically (a
    temporary file, then a rename). Until they are written, `output_dir/backup`
    holds Keras's `BackupAndRestore` state and the history: the same call run
    again after a crash (even SIGKILL) resumes from the last completed epoch
    and ends with the same number of epochs.

    Args:
        recipe: str or Recipe. `"default"` (the fast, accurate one) or
            `"seed"` (the seed tutorial's), or a `Recipe`.
        output_dir: str or path. Where the artifacts go.
        epochs: int or `None`. Overrides the recipe's.
        batch_size: int or `None`. Overrides the recipe's.
        learning_rate: float or `None`. Overrides the recipe's.
        architecture: str, list of block specs or `None` (`"fashion_mnist"`).
        input_size: int or `None`. Resize images to this square size
            (`None` keeps 28, or 28 for image folders).
        precision: str or `None`. Overrides the recipe's precision.
        seed: int. Seeds Python, NumPy, TensorFlow and the data order.
        deterministic: bool. Turn on TensorFlow's op determinism, so that two
            runs with the same seed on the same machine give identical
            weights (a little slower).
        strategy: str. `"auto"`, `"default"`, `"mirrored"` or
            `"multiworker"` (see `ninlayers.runtime.get_strategy`). The batch
            size is the global one. Under `"multiworker"` only the chief writes
            the artifacts; other workers keep their backup in
            `output_dir/.worker-N` and remove it when done.
        data_dir: str, path or `None`. Fashion-MNIST's directory.
        image_folder: str, path or `None`. Train on this folder's images (one
            sub-folder per class) instead of Fashion-MNIST.
        train_limit: int or `None`. Use only the first images (for tests).
        test_limit: int or `None`. Evaluate on only the first test images.
        tensorboard: bool. Write TensorBoard logs to `output_dir/logs`.
        verbose: int or `"auto"`. Keras's progress display.

    Returns:
        dict, the contents of `metrics.json`.

    Raises:
        TrainingError: if the loss becomes NaN or infinite.
    """
    wall_start = time.perf_counter()
    if isinstance(recipe, str):
        if recipe not in RECIPES:
            raise ValueError(
                f"`recipe` must be one of {sorted(RECIPES)} or a Recipe. "
                f"Received: recipe={recipe!r}"
            )
        recipe = RECIPES[recipe]
    recipe = recipe.replace(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        precision=precision,
    )
    distribution = runtime.get_strategy(strategy)
    chief = runtime.is_chief()
    output = Path(output_dir)
    if not chief:
        task = json.loads(os.environ["TF_CONFIG"])["task"]
        output = output / f".{task.get('type', 'worker')}-{task.get('index', 0)}"
    output.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    if deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    size = input_size or 28
    resize = None if size == 28 else (size, size)

    # === Data ===
    if image_folder is not None:
        train_ds, test_ds, class_names = datasets.image_folder_datasets(
            image_folder,
            (size, size),
            "grayscale",
            recipe.batch_size,
            recipe.validation_split or 0.2,
            seed,
        )
        validation_ds = None
        n_train = sum(int(x.shape[0]) for x, _ in train_ds)
        channels = 1
    else:
        (x_train, y_train), (x_test, y_test) = datasets.load_fashion_mnist(data_dir)
        if train_limit:
            x_train, y_train = x_train[:train_limit], y_train[:train_limit]
        if test_limit:
            x_test, y_test = x_test[:test_limit], y_test[:test_limit]
        validation_ds = None
        if recipe.validation_split:
            cut = int(len(x_train) * (1 - recipe.validation_split))
            validation_ds = datasets.make_dataset(
                x_train[cut:], y_train[cut:], 500, image_size=resize
            )
            x_train, y_train = x_train[:cut], y_train[:cut]
        train_ds = datasets.make_dataset(
            x_train,
            y_train,
            recipe.batch_size,
            shuffle=True,
            seed=seed,
            augment=recipe.augment,
            crop_padding=recipe.crop_padding,
            erasing=recipe.erasing,
            image_size=resize,
        )
        test_ds = datasets.make_dataset(x_test, y_test, 500, image_size=resize)
        class_names = list(datasets.CLASS_NAMES)
        n_train = len(x_train)
        channels = 1
    steps_per_epoch = -(-n_train // recipe.batch_size)
    # One iterator for the whole fit. Without `repeat`, Keras starts a new
    # iterator every epoch, and on the project's 2-core machines many epochs
    # with a fresh iterator ran 1.8x slower from start to end
    # (docs/performance.md). The shuffle still reshuffles every pass.
    # (Keras's `evaluate` makes a new iterator for each validation anyway.)
    train_ds = train_ds.repeat()

    # === Model, in the strategy's scope ===
    with distribution.scope():
        model = NiN(
            num_classes=len(class_names),
            input_shape=(size, size, channels),
            architecture=architecture or "fashion_mnist",
            use_batch_norm=recipe.use_batch_norm,
            head_final_activation=recipe.head_final_activation,
            test_time_flip=recipe.test_time_flip,
            precision=recipe.precision,
            class_names=class_names,
        )
        loss = (
            SparseSmoothedCrossentropy(recipe.label_smoothing)
            if recipe.label_smoothing
            else "auto"
        )
        model.compile(optimizer=build_optimizer(recipe, steps_per_epoch), loss=loss)

    # === Fit ===
    timer, nan_guard = _Throughput(), _StopOnNaN()
    backup_dir = output / "backup"
    history_log = _HistoryLog(backup_dir)
    callbacks = [nan_guard, history_log, _GuardedBackup(backup_dir, nan_guard), timer]
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(output / "logs")))
    fit_start = time.perf_counter()
    model.fit(
        train_ds,
        epochs=recipe.epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=validation_ds,
        callbacks=callbacks,
        shuffle=False,  # the pipeline shuffles
        verbose=verbose,
    )
    fit_seconds = time.perf_counter() - fit_start
    if nan_guard.bad is not None:
        epoch, batch, value = nan_guard.bad
        raise TrainingError(
            f"Training diverged: {value} at epoch {epoch}, batch {batch}; it "
            f"stopped. The last good epoch is kept in {output / 'backup'} and "
            "the same command resumes from it; lower the learning rate "
            "(--learning-rate) if it happens again."
        )
    history = history_log.history
    digest = _weights_digest(model)
    if not chief:
        # Saving may read variables collectively: do it as the chief does,
        # into this worker's own directory, then clean up.
        save_model_atomically(model, output / MODEL_FILE)
        shutil.rmtree(output, ignore_errors=True)
        return {
            "chief": False,
            "weights_sha256": digest,
            "history": history,
            "replicas": distribution.num_replicas_in_sync,
        }

    # === Evaluate and write ===
    probs, labels = _predict_dataset(model, test_ds)
    test = _scores(probs, labels)
    save_model_atomically(model, output / MODEL_FILE)
    plots.plot_history(history, output / "history.png")
    plots.plot_confusion_matrix(
        labels, probs.argmax(axis=-1), class_names, output / "confusion.png"
    )
    test_images = np.concatenate([np.asarray(x) for x, _ in test_ds.take(1)])[:12]
    maps, cam_probs = explain.class_activation_maps(model, test_images)
    plots.plot_class_activation_maps(
        test_images,
        maps,
        cam_probs,
        class_names,
        output / "cam.png",
        labels=labels[:12],
    )
    train_seconds = sum(timer.seconds)
    epochs_run = len(history.get("loss", [])) - history_log.resumed_from
    metrics = {
        "recipe": {**recipe.__dict__},
        "test": test,
        "history": history,
        "epochs_this_run": epochs_run,
        "resumed_from_epoch": history_log.resumed_from,
        "fit_seconds": fit_seconds,
        "wall_seconds": time.perf_counter() - wall_start,
        "train_images_per_second": (
            n_train * epochs_run / train_seconds if train_seconds else None
        ),
        "train_examples": n_train,
        "parameters": model.count_params(),
        "precision": model.dtype_policy.name,
        "jit_compile": bool(model.jit_compile),
        "cpu_bfloat16": runtime.cpu_supports_bfloat16(),
        "seed": seed,
        "deterministic": deterministic,
        "chief": True,
        "strategy": _strategy_name(distribution),
        "replicas": distribution.num_replicas_in_sync,
        "weights_sha256": digest,
        "class_names": class_names,
        "command": sys.argv,
        "versions": _versions(),
    }
    _atomic_write_text(output / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    shutil.rmtree(backup_dir, ignore_errors=True)
    return metrics
