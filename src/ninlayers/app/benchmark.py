"""`ninlayers benchmark`: a plain Keras NiN against ninlayers' defaults.

One run times, on the same data slice and alternating between them, the
classic NiN tutorial's model and recipe ("the seed": a Sequential model,
float32, `fit` and `predict` with Keras's defaults) and ninlayers' default
path (`NiN()`, `compile()` with its defaults, `fit`, `predict`), and reports
images/s and the ratios. Speed is never asserted in tests: this prints
figures. benchmarks/ at the repository root holds the scripts behind
docs/measurements.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from ninlayers.model import NiN

__all__ = ["benchmark_images", "run_benchmark", "seconds", "seed_model"]


def seed_model() -> keras.Sequential:
    """The classic NiN tutorial's model, as plain Keras layers, in float32.

    Three NiN blocks of 96, 256 and 384 filters (a 3x3 convolution and two
    1x1, ReLU), each followed by 3x3/2 max pooling, a 10-channel block, global
    average pooling and softmax: 1,588,198 parameters.

    Returns:
        keras.Sequential, compiled as the tutorial compiles it (Adam 1e-3,
        sparse categorical cross-entropy, accuracy).
    """

    def block(filters: int, kernel: int) -> list[keras.layers.Layer]:
        return [
            keras.layers.Conv2D(
                filters, kernel, padding="same", activation="relu", dtype="float32"
            ),
            keras.layers.Conv2D(filters, 1, activation="relu", dtype="float32"),
            keras.layers.Conv2D(filters, 1, activation="relu", dtype="float32"),
        ]

    model = keras.Sequential(
        [keras.Input((28, 28, 1))]
        + block(96, 3)
        + [keras.layers.MaxPooling2D(3, 2, dtype="float32")]
        + block(256, 3)
        + [keras.layers.MaxPooling2D(3, 2, dtype="float32")]
        + block(384, 3)
        + [keras.layers.MaxPooling2D(3, 2, dtype="float32")]
        + block(10, 3)
        + [
            keras.layers.GlobalAveragePooling2D(dtype="float32"),
            keras.layers.Activation("softmax", dtype="float32"),
        ],
        name="seed_nin",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def benchmark_images(count: int) -> tuple[np.ndarray, np.ndarray, str]:
    """The images every benchmark times: Fashion-MNIST's first `count`
    training images where it is found, else random ones (they time the
    same), as `(n, 28, 28, 1)` floats in [0, 1], their labels and the name
    of their source."""
    from ninlayers.app import data
    from ninlayers.errors import DatasetError

    try:
        (x, y), _ = data.load_fashion_mnist()
        x, y, source = x[:count], y[:count], "Fashion-MNIST"
    except DatasetError:
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, count)
        source = "random images"
    return (x.astype("float32") / 255.0)[..., None], y, source


def _untuned_seed(
    x: np.ndarray, y: np.ndarray, batch_size: int
) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """`fit` and `predict` of another seed model over the pipelines Keras
    builds for the arrays, without `tf.data`'s autotuning (TensorFlow):
    the seed's compute without the waits of its iterators' tuning thread."""
    from ninlayers._tf_feeding import untuned_array_dataset

    seed = seed_model()
    train = untuned_array_dataset(x, batch_size, y, shuffle=True)
    test = untuned_array_dataset(x, None)
    return (
        lambda: seed.fit(train, epochs=1, verbose=0, shuffle=False),
        lambda: seed.predict(test, verbose=0),
    )


def _ninlayers_model() -> keras.Model:
    model = NiN()
    model.compile()
    return model


def seconds(fn: Callable[[], Any]) -> float:
    """The wall-clock seconds one call of `fn` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


#: The plain-framework peers: name -> (module run with `-m`, the Keras
#: backend its process imports `ninlayers` with, the package it needs).
PLAIN_PEERS = {
    "plain_torch": ("ninlayers.app._torch_peer", "torch", "torch"),
    "plain_jax": ("ninlayers.app._jax_peer", "jax", "jax"),
}

#: How a Keras-backend peer's process is started (after the Python executable).
_KERAS_PEER = ["-m", "ninlayers.app._keras_peer"]


class _Peer:
    """A benchmark path in a child process, timed from here.

    The child gets the data in a `.npz` file, prints `ready`, then answers
    each line it reads (`fit` or `predict`) with one line when done: the
    parent times the round trip, so peers alternate with the in-process
    paths as they do with each other.
    """

    def __init__(
        self,
        args: list[str],
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        env: dict[str, str] | None = None,
    ) -> None:
        import os
        import subprocess
        import sys
        import tempfile

        self._dir = tempfile.TemporaryDirectory(prefix="ninlayers-bench-")
        data = f"{self._dir.name}/data.npz"
        np.savez(data, x=x, y=y)
        # The child's stderr (TensorFlow's start-up lines) goes to a file,
        # shown only if the child fails.
        self._stderr = open(f"{self._dir.name}/stderr.txt", "w+")  # noqa: SIM115
        self._process = subprocess.Popen(
            [sys.executable, *args, data, str(batch_size)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env={"TF_CPP_MIN_LOG_LEVEL": "3", **os.environ, **(env or {})},
        )
        if self._process.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError(
                f"The benchmark process {args} did not start: {self._errors}"
            )

    def ask(self, command: str) -> str:
        """Sends one command and returns the reply when the child is done."""
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        reply = self._process.stdout.readline()
        if not reply:
            raise RuntimeError(f"A benchmark process ended early: {self._errors}")
        return reply.strip()

    @property
    def _errors(self) -> str:
        """The last lines the child wrote to its stderr."""
        self._stderr.flush()
        self._stderr.seek(0)
        lines = self._stderr.read().strip().splitlines()
        return " / ".join(lines[-5:]) or "no message"

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()
            self._process.wait(timeout=60)
        self._stderr.close()
        self._dir.cleanup()


def _plain_peers(x: np.ndarray, y: np.ndarray, batch_size: int) -> dict:
    """The same network written in plain PyTorch and plain JAX, each in its
    own process, for every one of the two that is installed."""
    import importlib.util

    return {
        name: _Peer(["-m", module], x, y, batch_size, {"KERAS_BACKEND": backend})
        for name, (module, backend, package) in PLAIN_PEERS.items()
        if importlib.util.find_spec(package) is not None
    }


def _backend_peers(x: np.ndarray, y: np.ndarray, batch_size: int) -> dict:
    """ninlayers' NiN on every other installed Keras backend, by name."""
    import importlib.util

    active = keras.backend.backend()
    return {
        f"ninlayers_{backend}": _Peer(
            _KERAS_PEER, x, y, batch_size, {"KERAS_BACKEND": backend}
        )
        for backend in ("tensorflow", "jax", "torch")
        if backend != active and importlib.util.find_spec(backend) is not None
    }


def run_benchmark(
    images: int = 2048,
    repeats: int = 3,
    batch_size: int = 64,
    with_plain: bool = True,
    print_fn: Callable[[str], None] | None = print,
    with_backends: bool = True,
    with_ceiling: bool = True,
    verbose: bool = False,
) -> dict[str, Any]:
    """Times training and inference of the seed and of ninlayers' defaults.

    Both paths get the same `images` images (Fashion-MNIST's first training
    images when it is found, random ones otherwise). Each repeat runs, in
    turn, one `fit` epoch of each, then one `predict` of each; the first
    epoch and predict of each model are warm-up and not timed. The figures
    are medians over the repeats. Each `predict` takes its model's default
    batch size: Keras's 32, ninlayers' own on TensorFlow
    (`runtime.PREDICT_BATCH_PIXELS`: 128 images of 28x28).

    Args:
        images: int. Images per timed epoch. Defaults to `2048`.
        repeats: int. Timed rounds. Defaults to `3`.
        batch_size: int. Training batch size of both. Defaults to `64`.
        with_plain: bool. Add the same network written in plain PyTorch
            (bfloat16 autocast, channels-last) and plain JAX (`jax.jit`,
            float32) as peers, `plain_torch` and `plain_jax`, each where
            its framework is installed. Defaults to `True`.
        print_fn: callable or `None`. Where the table goes.
        with_backends: bool. Add ninlayers' NiN (with its per-backend
            defaults) on every other installed Keras backend, each in its own
            process, as `ninlayers_<backend>`. Defaults to `True`.
        with_ceiling: bool. Also measure the machine's float32 and bfloat16
            ceilings (`ninlayers.app.ceiling`, TensorFlow) and report each
            model's training GFLOP/s as a fraction of the bfloat16 one.
            Defaults to `True`.
        verbose: bool. A progress bar (Keras's `Progbar`): one step for the
            warm-up, one per timed round, one for the ceiling. Defaults to
            `False`.

    On TensorFlow the seed also runs as `seed_untuned`: another seed model
    fed the same pipelines Keras builds for arrays without `tf.data`'s
    autotuning, whose iterators can end by waiting for their tuning thread
    (docs/performance.md). ninlayers feeds its arrays so; the ratio over it
    (`versus_untuned_seed`) compares the two models' compute alone.

    Returns:
        dict: images/s per path for `train` and `predict` (medians), every
        timed repeat in seconds, and the ratios of ninlayers (and torch) to
        the seed.
    """
    from ninlayers import runtime
    from ninlayers.app import machine

    x, y, source = benchmark_images(images)
    models = {"seed": seed_model(), "ninlayers": _ninlayers_model()}
    train_fns = {
        name: (lambda m=m: m.fit(x, y, batch_size=batch_size, epochs=1, verbose=0))
        for name, m in models.items()
    }
    predict_fns = {
        name: (lambda m=m: m.predict(x, verbose=0)) for name, m in models.items()
    }
    if keras.backend.backend() == "tensorflow":
        train_fns["seed_untuned"], predict_fns["seed_untuned"] = _untuned_seed(
            x, y, batch_size
        )
    peers = _backend_peers(x, y, batch_size) if with_backends else {}
    peers.update(_plain_peers(x, y, batch_size) if with_plain else {})
    for name, peer in peers.items():
        train_fns[name] = lambda p=peer: p.ask("fit")
        predict_fns[name] = lambda p=peer: p.ask("predict")

    steps = 1 + repeats + int(with_ceiling)
    bar = keras.utils.Progbar(steps, unit_name="round") if verbose else None
    try:
        train_s, predict_s = _time_rounds(train_fns, predict_fns, repeats, bar)
    finally:
        for peer in peers.values():
            peer.close()

    train = {k: images / statistics.median(v) for k, v in train_s.items()}
    predict = {k: images / statistics.median(v) for k, v in predict_s.items()}
    result = {
        "images": images,
        "repeats": repeats,
        "batch_size": batch_size,
        "predict_batch_size": _predict_batch_sizes(x.shape),
        "data": source,
        "backend": keras.backend.backend(),
        "ninlayers_precision": models["ninlayers"].dtype_policy.name,
        "ninlayers_jit_compile": bool(models["ninlayers"].jit_compile),
        "cpu_bfloat16": runtime.cpu_supports_bfloat16(),
        "machine": machine.describe(),
        "train_images_per_second": train,
        "predict_images_per_second": predict,
        "train_seconds": train_s,
        "predict_seconds": predict_s,
        "train_ratio": {k: v / train["seed"] for k, v in train.items()},
        "predict_ratio": {k: v / predict["seed"] for k, v in predict.items()},
    }
    result["versus_plain"] = _versus_plain(train, predict)
    if "seed_untuned" in train:
        result["versus_untuned_seed"] = {
            "train": train["ninlayers"] / train["seed_untuned"],
            "predict": predict["ninlayers"] / predict["seed_untuned"],
        }
    if with_ceiling:
        result.update(_against_ceiling(models, train))
        if bar is not None:
            bar.add(1)
    if print_fn is not None:
        print_fn(format_result(result))
    return result


def _time_rounds(
    train_fns: dict[str, Callable[[], Any]],
    predict_fns: dict[str, Callable[[], Any]],
    repeats: int,
    bar: Any = None,
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """A warm-up of every path, then `repeats` rounds, each path timed once in
    turn, training then predict: seconds per path, every round kept."""
    train_s: dict[str, list[float]] = {name: [] for name in train_fns}
    predict_s: dict[str, list[float]] = {name: [] for name in predict_fns}
    tick = bar.add if bar is not None else lambda _: None
    for fn in (*train_fns.values(), *predict_fns.values()):
        fn()
    tick(1)
    for _ in range(repeats):
        for name, fn in train_fns.items():
            train_s[name].append(seconds(fn))
        for name, fn in predict_fns.items():
            predict_s[name].append(seconds(fn))
        tick(1)
    return train_s, predict_s


def _versus_plain(train: dict, predict: dict) -> dict:
    """ninlayers on each backend over the same network in that framework."""
    pairs = {"plain_torch": "ninlayers_torch", "plain_jax": "ninlayers_jax"}
    if keras.backend.backend() in ("torch", "jax"):
        pairs[f"plain_{keras.backend.backend()}"] = "ninlayers"
    return {
        plain: {
            "ninlayers": ours,
            "train": train[ours] / train[plain],
            "predict": predict[ours] / predict[plain],
        }
        for plain, ours in pairs.items()
        if plain in train and ours in train
    }


def _against_ceiling(models: dict[str, keras.Model], train: dict) -> dict:
    """The ceiling, and each in-process model's training GFLOP/s against it."""
    from ninlayers.app.ceiling import measure_ceiling, training_flop_per_image

    ceiling = measure_ceiling()
    gflops = {
        name: train[name] * training_flop_per_image(model) / 1e9
        for name, model in models.items()
    }
    return {
        "ceiling": ceiling,
        "training_gflop_per_image": {
            name: training_flop_per_image(model) / 1e9 for name, model in models.items()
        },
        "training_gflops": gflops,
        "fraction_of_bfloat16_ceiling": {
            name: value / ceiling["bfloat16"] for name, value in gflops.items()
        },
    }


def machine_line(info: dict[str, Any]) -> str:
    from ninlayers.app import machine

    return f"machine: {machine.one_line(info)}"


#: Keras's `predict` batch where the caller names none.
_KERAS_PREDICT_BATCH = 32


def _predict_batch_sizes(shape: tuple) -> dict[str, int]:
    """Each path's `predict` batch: Keras's default (the plain peers' too),
    and ninlayers' own on TensorFlow."""
    sizes = {"seed": _KERAS_PREDICT_BATCH, "ninlayers": _KERAS_PREDICT_BATCH}
    if keras.backend.backend() == "tensorflow":
        from ninlayers._tf_feeding import predict_batch_size

        sizes["ninlayers"] = predict_batch_size(shape) or _KERAS_PREDICT_BATCH
    return sizes


def _predict_batch_line(result: dict[str, Any]) -> str:
    """ ", predict batch 32 (ninlayers 128)" where they differ."""
    sizes = result.get("predict_batch_size")
    if not sizes or sizes["ninlayers"] == sizes["seed"]:
        return ""
    return f" (predict {sizes['seed']}, ninlayers {sizes['ninlayers']})"


def format_result(result: dict[str, Any]) -> str:
    """Formats `run_benchmark`'s result as a table."""
    lines = [
        *([machine_line(result["machine"])] if "machine" in result else []),
        f"{result['images']} {result['data']}, batch {result['batch_size']}"
        f"{_predict_batch_line(result)}, "
        f"median of {result['repeats']}; on {result['backend']}, ninlayers "
        f"precision {result['ninlayers_precision']}, XLA "
        f"{result['ninlayers_jit_compile']} (peers: their backend's defaults)",
        "seed: the NiN tutorial's plain Keras model (Sequential, no batch norm, "
        "float32), the baseline of every ratio",
        f"{'path':<20} {'train img/s':>12} {'x seed':>7} "
        f"{'predict img/s':>14} {'x seed':>7}",
    ]
    for name, rate in result["train_images_per_second"].items():
        predict = result["predict_images_per_second"].get(name)
        p_text = (
            f"{predict:14.0f} {result['predict_ratio'][name]:7.2f}" if predict else ""
        )
        lines.append(
            f"{name:<20} {rate:12.0f} {result['train_ratio'][name]:7.2f} {p_text}"
        )
    if "versus_untuned_seed" in result:
        ratio = result["versus_untuned_seed"]
        lines.append(
            "seed_untuned: the seed fed without tf.data's autotuning (no waits "
            f"for its tuning thread); ninlayers / seed_untuned: training "
            f"{ratio['train']:.2f}x, predict {ratio['predict']:.2f}x"
        )
    for plain, ratio in result.get("versus_plain", {}).items():
        lines.append(
            f"{ratio['ninlayers']} / {plain}: training {ratio['train']:.2f}x, "
            f"predict {ratio['predict']:.2f}x"
        )
    if "ceiling" in result:
        gflops = result["ceiling"]["gflops"]
        lines.append(
            "ceiling (GFLOP/s, median of "
            f"{result['ceiling']['repeats']}): "
            + ", ".join(
                f"{op} {precision} {value:.0f}"
                for precision, ops in gflops.items()
                for op, value in ops.items()
            )
        )
        for name, fraction in result["fraction_of_bfloat16_ceiling"].items():
            lines.append(
                f"{name} training: {result['training_gflops'][name]:.0f} GFLOP/s "
                f"({result['training_gflop_per_image'][name]:.3f} GFLOP per image) "
                f"= {fraction:.2f} of the bfloat16 ceiling "
                f"({result['ceiling']['bfloat16']:.0f} GFLOP/s)"
            )
    return "\n".join(lines)
