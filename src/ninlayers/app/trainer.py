"""`train()`: a recipe, data, a model, a crash-safe fit, and the artifacts.

`train` reads as its table of contents; each step is a small function here:
`resolve_recipe`, `load_data` (-> `TrainData`), `build_model`, `fit`
(-> `FitResult`) and `write_artifacts`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from ninlayers import _checks, explain, runtime
from ninlayers._utils import follow_rename
from ninlayers.app import data as data_lib
from ninlayers.app import folders, machine, plots
from ninlayers.app.artifacts import (
    METRICS_FILE,
    MODEL_FILE,
    save_model_atomically,
    versions,
    weights_digest,
    write_json,
)
from ninlayers.app.backup import BACKUP_DIR, RunBackup, all_replicas_sum
from ninlayers.app.callbacks import (
    Elapsed,
    HeldOutScore,
    StopOnNaN,
    StopOnRequest,
    Throughput,
)
from ninlayers.app.images import image_channels
from ninlayers.app.inference import predict_dataset, probabilities, scores
from ninlayers.app.lock import OutputLock
from ninlayers.app.recipes import (
    RECIPES,
    RENAMED_RECIPES,
    Recipe,
    batch_norm_momentum,
    build_loss,
    build_optimizer,
)
from ninlayers.errors import DatasetError, TrainingError
from ninlayers.model import NiN

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = [
    "FitResult",
    "TrainData",
    "build_model",
    "fingerprint",
    "fit",
    "load_data",
    "resolve_recipe",
    "train",
    "write_artifacts",
]

#: Batch size of evaluation and validation passes.
EVAL_BATCH_SIZE = 500

#: Test images scored after each epoch for `history.png`'s held-out curve
#: when the recipe holds out no validation set (the full test set would add
#: about 10% to the fit; docs/recipes.md).
MONITOR_IMAGES = 2000

#: Bytes of held-out images (uint8) kept in memory for that score: larger
#: images keep fewer (445 of 224x224 RGB), so memory stays bounded.
MONITOR_BYTES = 64 * 2**20


def eval_batch_size(image_shape: Sequence[int]) -> int:
    """`EVAL_BATCH_SIZE` for 28x28 grey; larger images get smaller batches
    holding about as many values (at least 16: 16 for 224x224 RGB)."""
    values = int(np.prod(image_shape))
    return int(np.clip(EVAL_BATCH_SIZE * 784 // values, 16, EVAL_BATCH_SIZE))


def monitor_images(image_shape: Sequence[int]) -> int:
    """Held-out images scored after each epoch: `MONITOR_IMAGES`, fewer when
    they would take more than `MONITOR_BYTES`."""
    return max(1, min(MONITOR_IMAGES, MONITOR_BYTES // int(np.prod(image_shape))))


@dataclasses.dataclass
class TrainData:
    """The datasets of a run and what the model needs to know of them."""

    train: tf.data.Dataset
    held_out: tuple[np.ndarray, np.ndarray]
    test: tf.data.Dataset
    held_out_label: str
    class_names: list[str]
    image_shape: tuple[int, int, int]
    n_train: int
    steps_per_epoch: int
    #: Builds one worker's training pipeline from a `tf.distribute`
    #: `InputContext` (its share of the files, per-replica batches), for
    #: `distribute_datasets_from_function` under several workers; `None`
    #: where every worker may read everything (arrays in memory).
    train_per_worker: Callable[[Any], tf.data.Dataset] | None = None


@dataclasses.dataclass
class FitResult:
    """What `fit` measured: the whole history and this run's share of it."""

    history: dict[str, list[float]]
    fit_seconds: float
    train_seconds: float
    resumed_from: int
    epochs_run: int


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
    restart: bool = False,
    backup_every: int | None = None,
) -> dict[str, Any]:
    """Trains NiN with a recipe and writes the run's artifacts.

    Writes into `output_dir`: `model.keras`, `metrics.json` (test accuracy and
    loss, per-epoch history, wall time, images/s, parameters, versions),
    `history.png`, `confusion.png` and `cam.png`, each atomically (a
    temporary file, then a rename). Until they are written, `output_dir/backup`
    holds a checkpoint of the last epochs (see `ninlayers.app.backup`): the
    same call run again after a crash (even SIGKILL, or a full disk) resumes
    from the last completed epoch and ends with the same number of epochs. A
    call with other settings refuses to resume another run's backup, and a
    second run into an `output_dir` in use is refused (see
    `ninlayers.app.lock`).

    Args:
        recipe: str or Recipe. A name in `RECIPES` (`"default"`, `"quick"`,
            `"fast"`, `"tutorial"`) or a `Recipe`.
        output_dir: str or path. Where the artifacts go.
        epochs: int or `None`. Overrides the recipe's.
        batch_size: int or `None`. Overrides the recipe's.
        learning_rate: float or `None`. Overrides the recipe's.
        architecture: str, list of block specs or `None` (the recipe's).
        input_size: int or `None`. Resize images to this square size (`None`
            keeps Fashion-MNIST's 28, and resizes image folders to 28).
        precision: str or `None`. Overrides the recipe's precision.
        seed: int. Seeds Python, NumPy, the backend and the data order.
        deterministic: bool. Turn on TensorFlow's op determinism, so that two
            runs with the same seed on the same machine give identical
            weights (a little slower). On every backend it orders the
            `tf.data` input pipeline's random augmentation; JAX's CPU
            kernels are deterministic already, PyTorch's are only seeded.
        strategy: str. `"auto"`, `"default"`, `"mirrored"`,
            `"multiworker"` or, on JAX, `"data-parallel"` (see
            `ninlayers.runtime.get_strategy`). The batch size is the global
            one. Across several workers or processes only the chief writes
            the artifacts; the others keep their backup in
            `output_dir/.worker-N` (`.process-N` on JAX) and remove it when
            done.
        data_dir: str, path or `None`. Fashion-MNIST's directory.
        image_folder: str, path or `None`. Train on this folder's images (one
            sub-folder per class, grey or RGB as its first image) instead of
            Fashion-MNIST; `IMAGE_FOLDER_TEST_SPLIT` of them, drawn with
            `seed`, are the test set.
        train_limit: int or `None`. Use only the first training images.
        test_limit: int or `None`. Evaluate on only the first test images.
        tensorboard: bool. Write TensorBoard logs to `output_dir/logs`.
        verbose: int or `"auto"`. Keras's progress display.
        restart: bool. Delete the backup in `output_dir` and start over.
        backup_every: int or `None`. Also back up every this many steps
            within an epoch, so a run stopped in a long epoch loses at most
            that many steps (one worker only). `None`: at each epoch's end.

    Returns:
        dict, the contents of `metrics.json`.

    Raises:
        TrainingError: if the loss becomes NaN or infinite, a backup cannot
            be written, `output_dir` is in use, or its backup is another
            run's.
    """
    wall_start = time.perf_counter()
    recipe = resolve_recipe(
        recipe,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        precision=precision,
    )
    distribution = runtime.get_strategy(strategy)
    _check_distribution(backup_every, recipe.batch_size, distribution)
    output = _output_dir(output_dir)
    with OutputLock(output):
        if restart:
            shutil.rmtree(output / BACKUP_DIR, ignore_errors=True)
        _seed_everything(seed, deterministic)
        data = load_data(
            recipe, seed, data_dir, image_folder, input_size, train_limit, test_limit
        )
        data = _per_worker(data, distribution)
        with distribution.scope():
            model = build_model(recipe, data, architecture)
        run = fingerprint(recipe, data, architecture, seed, image_folder)
        # A damaged image of a streamed folder stops the run in one line.
        with folders.reading_errors():
            result = fit(
                model,
                data,
                recipe,
                output,
                run,
                tensorboard,
                verbose,
                wall_start,
                backup_every=backup_every,
            )
            if not runtime.is_chief():
                return _finish_worker(model, output, result, distribution)
            with runtime.local_model(model) as scorer:
                metrics = write_artifacts(model, data, result, output, scorer)
        metrics.update(
            # The network trained: the recipe's, or the `architecture` override.
            recipe={**recipe.__dict__},
            architecture=architecture or recipe.architecture,
            wall_seconds=time.perf_counter() - wall_start,
            seed=seed,
            deterministic=deterministic,
            strategy=runtime.strategy_name(distribution),
            replicas=distribution.num_replicas_in_sync,
            command=sys.argv,
        )
        write_json(output / METRICS_FILE, metrics)
        shutil.rmtree(output / BACKUP_DIR, ignore_errors=True)
        _barrier(distribution)
    return metrics


def _per_worker(data: TrainData, distribution: Any) -> TrainData:
    """Under several workers, each reads and decodes only its own share of a
    streamed folder (TensorFlow's automatic sharding would have every
    worker decode every image and keep 1/N of them)."""
    if (
        data.train_per_worker is None
        # Keras splits each global batch between JAX processes itself.
        or isinstance(distribution, runtime.DataParallel)
        or not runtime.spans_processes(distribution)
    ):
        return data
    train = distribution.distribute_datasets_from_function(data.train_per_worker)
    return dataclasses.replace(data, train=train)


def _check_distribution(
    backup_every: int | None, batch_size: int, distribution: Any
) -> None:
    """Refuses settings the distribution cannot honour."""
    _check_even_split(batch_size, distribution)
    if backup_every is None:
        return
    _checks.positive_int("backup_every", backup_every)
    if runtime.spans_processes(distribution):
        raise ValueError(
            "backup_every (--backup-every) works on one worker; a multi-worker "
            "run backs up at each epoch's end, where the workers agree. "
            f"Received: backup_every={backup_every} with several workers"
        )


def _check_even_split(batch_size: int, distribution: Any) -> None:
    """JAX's `DataParallel` gives every device an equal part of each batch."""
    replicas = distribution.num_replicas_in_sync
    if isinstance(distribution, runtime.DataParallel) and batch_size % replicas:
        raise ValueError(
            f"The batch size must split evenly over the {replicas} devices of "
            f"the data-parallel run. Received: batch_size={batch_size} (use a "
            f"multiple of {replicas})"
        )


def resolve_recipe(recipe: str | Recipe, **overrides: Any) -> Recipe:
    """Returns the named (or given) recipe with the non-`None` overrides."""
    recipe = follow_rename("Recipe", recipe, RENAMED_RECIPES)
    if isinstance(recipe, str):
        recipe = RECIPES[_checks.one_of("recipe", recipe, tuple(RECIPES))]
    elif not isinstance(recipe, Recipe):
        raise ValueError(
            f"`recipe` must be one of {sorted(RECIPES)} or a Recipe. "
            f"Received: recipe={recipe!r}"
        )
    return recipe.replace(**overrides)


def _output_dir(output_dir: str | os.PathLike) -> Path:
    """The run's directory; a non-chief worker's own one inside it."""
    output = Path(output_dir)
    task_dir = runtime.task_dir_name()
    if task_dir is not None:
        output = output / task_dir
    output.mkdir(parents=True, exist_ok=True)
    return output


def _seed_everything(seed: int, deterministic: bool) -> None:
    keras.utils.set_random_seed(seed)
    # TensorFlow's switch: its kernels, and the input pipeline (tf.data)
    # whatever the backend; the other backends get only the seeds here.
    if deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def load_data(
    recipe: Recipe,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    image_folder: str | os.PathLike | None = None,
    input_size: int | None = None,
    train_limit: int | None = None,
    test_limit: int | None = None,
    whole_batches: bool | None = None,
) -> TrainData:
    """Loads the images and builds the recipe's training, validation and test
    pipelines. The training pipeline repeats: `fit` keeps one iterator. An
    image folder is streamed (`ninlayers.app.folders`), never read whole.
    `whole_batches` drops each epoch's last partial training batch; `None`
    does under Keras's `DataParallel` (JAX), which splits every batch
    evenly between its devices."""
    if whole_batches is None:
        whole_batches = isinstance(
            keras.distribution.distribution(), keras.distribution.DataParallel
        )
    height, width, _ = data_lib.FASHION_MNIST_SHAPE
    size = (input_size, input_size) if input_size else (height, width)
    if image_folder is not None:
        return _image_folder_data(
            recipe, seed, image_folder, size, train_limit, test_limit, whole_batches
        )
    (x_train, y_train), (x_test, y_test) = data_lib.load_fashion_mnist(data_dir)
    x_train, y_train = x_train[:train_limit], y_train[:train_limit]
    x_test, y_test = x_test[:test_limit], y_test[:test_limit]
    resize = None if x_train.shape[1:3] == size else size
    shape = (*size, data_lib.FASHION_MNIST_SHAPE[2])
    monitor = monitor_images(shape)
    label = f"test (first {min(monitor, len(x_test)):,} images)"
    held_out = (x_test[:monitor], y_test[:monitor])
    if recipe.validation_split:
        label = "validation"
        cut = int(len(x_train) * (1 - recipe.validation_split))
        held_out = (x_train[cut:], y_train[cut:])
        x_train, y_train = x_train[:cut], y_train[:cut]
    _check_sizes(len(x_train), len(x_test), recipe.validation_split)
    train_ds = data_lib.make_dataset(
        x_train,
        y_train,
        recipe.batch_size,
        shuffle=True,
        seed=seed,
        image_size=resize,
        drop_remainder=whole_batches,
        **_augmentation(recipe),
    )
    # One iterator for the whole fit. Without `repeat`, Keras starts and
    # ends an iterator every epoch, and an autotuned iterator's end can wait
    # for its tuning thread (docs/performance.md); these are untuned, and one
    # iterator keeps it so for a dataset of any options. The shuffle still
    # reshuffles every pass.
    return TrainData(
        train=train_ds.repeat(),
        held_out=(_as_model_input(held_out[0], resize), held_out[1]),
        held_out_label=label,
        test=data_lib.make_dataset(
            x_test, y_test, eval_batch_size(shape), image_size=resize
        ),
        class_names=list(data_lib.CLASS_NAMES),
        image_shape=shape,
        n_train=len(x_train),
        steps_per_epoch=_steps(len(x_train), recipe.batch_size, whole_batches),
    )


def _steps(n_train: int, batch_size: int, whole_batches: bool) -> int:
    """Training steps per epoch: the last partial batch counts unless
    dropped (then at least one whole batch is needed)."""
    if not whole_batches:
        return -(-n_train // batch_size)
    if n_train < batch_size:
        raise DatasetError(
            f"Too few images for one whole batch: {n_train} to train on, batch "
            f"size {batch_size}; expected at least {batch_size} (use more "
            "images, or a smaller --batch-size)."
        )
    return n_train // batch_size


def _augmentation(recipe: Recipe) -> dict[str, Any]:
    """The recipe's augmentation, as both pipelines take it."""
    return dict(
        augment=recipe.augment,
        crop_padding=recipe.crop_padding,
        erasing=recipe.erasing,
    )


def _image_folder_data(
    recipe: Recipe,
    seed: int,
    image_folder: str | os.PathLike,
    size: tuple[int, int],
    train_limit: int | None,
    test_limit: int | None,
    whole_batches: bool = False,
) -> TrainData:
    """An image folder's pipelines: `IMAGE_FOLDER_TEST_SPLIT` of its files,
    drawn with `seed`, are the test set; the held-out images scored after
    each epoch (at most `monitor_images`) are the only ones read up front."""
    everything = folders.list_folder(image_folder, allow_empty=False)
    folders.check_headers(everything.files)
    channels = image_channels(everything.files[0])
    order = np.random.default_rng(seed).permutation(len(everything))
    cut = len(order) - max(1, int(len(order) * data_lib.IMAGE_FOLDER_TEST_SPLIT))
    train = everything.subset(order[:cut][:train_limit])
    test = everything.subset(order[cut:][:test_limit])
    held, label = test, "test"
    if recipe.validation_split:
        cut = int(len(train) * (1 - recipe.validation_split))
        held, label = train.subset(np.arange(cut, len(train))), "validation"
        train = train.subset(np.arange(cut))
    _check_sizes(len(train), len(test), recipe.validation_split)
    monitor = monitor_images((*size, channels))
    if len(held) > monitor or label == "test":
        label += f" (first {min(monitor, len(held)):,} images)"
    held = held.subset(np.arange(min(monitor, len(held))))

    def train_stream(batch_size: int, shard: tuple[int, int] | None = None) -> Any:
        return folders.stream(
            train,
            size,
            channels,
            batch_size,
            shuffle=True,
            seed=seed,
            shard=shard,
            drop_remainder=whole_batches,
            **_augmentation(recipe),
        ).repeat()

    def per_worker(context: Any) -> Any:
        return train_stream(
            context.get_per_replica_batch_size(recipe.batch_size),
            (context.num_input_pipelines, context.input_pipeline_id),
        )

    return TrainData(
        train=train_stream(recipe.batch_size),
        train_per_worker=per_worker,
        held_out=(folders.read_all(held.files, size, channels), held.labels),
        held_out_label=label,
        test=folders.stream(test, size, channels, eval_batch_size((*size, channels))),
        class_names=everything.class_names,
        image_shape=(*size, channels),
        n_train=len(train),
        steps_per_epoch=_steps(len(train), recipe.batch_size, whole_batches),
    )


def _as_model_input(x: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Images as a model takes them: a channel axis, and resized floats in
    [0, 1] when `size` is given (uint8 images otherwise stay uint8)."""
    x = x[..., None] if x.ndim == 3 else x
    if size is None:
        return x
    x = x.astype("float32") / 255 if x.dtype == np.uint8 else x
    return keras.ops.convert_to_numpy(keras.ops.image.resize(x, size))


def _check_sizes(n_train: int, n_test: int, validation_split: float) -> None:
    if n_train < 1 or n_test < 1:
        held_out = (
            f" after holding out {validation_split:.0%} for validation"
            if validation_split
            else ""
        )
        raise DatasetError(
            f"Too few images: {n_train} to train on{held_out} and {n_test} to "
            "test on; expected at least one of each (use more images, or a "
            "larger --train-limit)."
        )


def build_model(
    recipe: Recipe, data: TrainData, architecture: str | Sequence[Any] | None = None
) -> NiN:
    """Builds and compiles the recipe's NiN for the data (in the caller's
    strategy scope)."""
    model = NiN(
        num_classes=len(data.class_names),
        input_shape=data.image_shape,
        architecture=architecture or recipe.architecture,
        use_batch_norm=recipe.use_batch_norm,
        batch_norm_momentum=batch_norm_momentum(recipe, data.steps_per_epoch),
        head_final_activation=recipe.head_final_activation,
        test_time_flip=recipe.test_time_flip,
        test_time_shift=recipe.test_time_shift,
        precision=recipe.precision,
        class_names=data.class_names,
        # Trained on [0, 1] floats: refuse 0-255 floats instead of misreading.
        check_input_range=True,
    )
    model.compile(
        optimizer=build_optimizer(recipe, data.steps_per_epoch),
        loss=build_loss(recipe),
    )
    return model


def fingerprint(
    recipe: Recipe,
    data: TrainData,
    architecture: str | Sequence[Any] | None,
    seed: int,
    image_folder: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """What makes a run the same run: a backup is resumed only by a run with
    the same fingerprint (see `RunBackup`)."""
    settings = dataclasses.asdict(recipe)
    settings["recipe"] = settings.pop("name")
    return {
        **settings,
        "architecture": architecture or recipe.architecture,
        "input_shape": list(data.image_shape),
        "classes": data.class_names,
        "train_examples": data.n_train,
        "data": "fashion-mnist" if image_folder is None else str(image_folder),
        "seed": seed,
    }


def fit(
    model: keras.Model,
    data: TrainData,
    recipe: Recipe,
    output: Path,
    run: dict[str, Any] | None = None,
    tensorboard: bool = False,
    verbose: int | str = "auto",
    start: float | None = None,
    backup_every: int | None = None,
) -> FitResult:
    """Fits with a crash-safe backup in `output/backup`, resuming from it.

    Args:
        model: keras.Model, compiled.
        data: TrainData.
        recipe: Recipe. Its epochs.
        output: path. The run's directory.
        run: dict or `None`. The run's `fingerprint` (`None`: the recipe's).
        tensorboard: bool. Write TensorBoard logs to `output/logs`.
        verbose: int or `"auto"`. Keras's progress display.
        start: float or `None`. The run's start (`time.perf_counter()`):
            each epoch's `elapsed_seconds` in the history counts from it
            (`None`: from the start of `fit`).
        backup_every: int or `None`. Also back up every this many steps.

    Raises:
        TrainingError: if the loss or the gradient norm became non-finite,
            if a backup cannot be written, or if the backup is another run's.
    """
    timer, nan_guard = Throughput(), StopOnNaN()
    backup = RunBackup(
        output / BACKUP_DIR,
        run if run is not None else dataclasses.asdict(recipe),
        guard=nan_guard,
        restart_hint="--restart (restart=True)",
        save_every_steps=backup_every,
    )
    # In this order: the timer stops before the held-out scoring, whose
    # scores (and the time elapsed with them) join the logs before the
    # backup records them.
    held_out = HeldOutScore(
        *data.held_out,
        batch_size=eval_batch_size(data.image_shape),
        prefix="val" if data.held_out_label == "validation" else "test",
    )
    callbacks = [nan_guard, timer, held_out, Elapsed(start), backup, StopOnRequest()]
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(output / "logs")))
    fit_start = time.perf_counter()
    _fit_resuming_steps(model, data, recipe.epochs, callbacks, backup, verbose)
    fit_seconds = time.perf_counter() - fit_start
    if nan_guard.bad is not None:
        epoch, batch, value = nan_guard.bad
        raise TrainingError(
            f"Training diverged: {value} at epoch {epoch}, batch {batch}; it "
            f"stopped. The last good epoch is kept in {backup.directory} and "
            "the same command resumes from it; lower the learning rate "
            "(--learning-rate) if it happens again."
        )
    history = backup.history
    return FitResult(
        history=history,
        fit_seconds=fit_seconds,
        train_seconds=sum(timer.seconds),
        resumed_from=backup.resumed_from,
        epochs_run=len(history.get("loss", [])) - backup.resumed_from,
    )


def _fit_resuming_steps(
    model: keras.Model,
    data: TrainData,
    epochs: int,
    callbacks: list[keras.callbacks.Callback],
    backup: RunBackup,
    verbose: int | str,
) -> None:
    """`model.fit` for `epochs`; a backup taken within an epoch first runs
    the rest of that epoch, as an epoch of its own."""
    epoch, done = backup.newest_position() if backup.save_every_steps else (0, 0)
    options = dict(callbacks=callbacks, shuffle=False, verbose=verbose)
    if done:
        # `RunBackup` restores the checkpoint and sets the initial epoch.
        rest = data.steps_per_epoch - done
        model.fit(data.train, epochs=epoch + 1, steps_per_epoch=rest, **options)
        if model.stop_training or epoch + 1 >= epochs:
            return
    model.fit(
        data.train, epochs=epochs, steps_per_epoch=data.steps_per_epoch, **options
    )


def _barrier(distribution: Any) -> None:
    """Under several workers, waits until every one gets here, so that they
    leave together (a worker that leaves early looks dead to the others)."""
    if not runtime.spans_processes(distribution):
        return
    if isinstance(distribution, runtime.DataParallel):
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("ninlayers: leave together")
    else:
        all_replicas_sum(distribution, np.ones(1, "float32"))


def _finish_worker(
    model: keras.Model, output: Path, result: FitResult, distribution: Any
) -> dict[str, Any]:
    """A non-chief worker saves as the chief does (saving may read variables
    collectively), into its own directory, then removes it. (A JAX process
    holds every weight itself: it only digests them.)"""
    digest = weights_digest(model)
    if not isinstance(distribution, runtime.DataParallel):
        save_model_atomically(model, output / MODEL_FILE)
    shutil.rmtree(output, ignore_errors=True)
    _barrier(distribution)
    return {
        "chief": False,
        "weights_sha256": digest,
        "history": result.history,
        "replicas": distribution.num_replicas_in_sync,
    }


def write_artifacts(
    model: keras.Model,
    data: TrainData,
    result: FitResult,
    output: Path,
    scorer: keras.Model | None = None,
) -> dict[str, Any]:
    """Evaluates on the test set, writes the model and the three pictures,
    and returns the run's metrics (the caller adds provenance and writes
    them). `scorer` (default `model`) predicts: a copy of `model` on this
    process alone when `model` spans several (`runtime.local_model`)."""
    scorer = model if scorer is None else scorer
    probs, labels = predict_dataset(scorer, data.test)
    save_model_atomically(model, output / MODEL_FILE)
    plots.plot_history(result.history, output / "history.png", data.held_out_label)
    plots.plot_confusion_matrix(
        labels, probs.argmax(axis=-1), data.class_names, output / "confusion.png"
    )
    images = np.concatenate([np.asarray(x) for x, _ in data.test.take(1)])[:12]
    maps, cam_outputs = explain.class_activation_maps(scorer, images)
    cam_probs = probabilities(scorer, cam_outputs)
    plots.plot_class_activation_maps(
        images, maps, cam_probs, data.class_names, output / "cam.png", labels[:12]
    )
    images_seen = data.n_train * result.epochs_run
    return {
        "test": scores(probs, labels),
        "held_out": data.held_out_label,
        "history": result.history,
        "epochs_this_run": result.epochs_run,
        "resumed_from_epoch": result.resumed_from,
        "fit_seconds": result.fit_seconds,
        "train_images_per_second": (
            images_seen / result.train_seconds if result.train_seconds else None
        ),
        "train_examples": data.n_train,
        "parameters": model.count_params(),
        "precision": model.dtype_policy.name,
        "jit_compile": bool(model.jit_compile),
        "cpu_bfloat16": runtime.cpu_supports_bfloat16(),
        "chief": True,
        "weights_sha256": weights_digest(model),
        "class_names": data.class_names,
        "versions": versions(),
        # The processor and its kernel flags: a speed means nothing without.
        "machine": machine.describe(),
    }
