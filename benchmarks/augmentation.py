"""Times Keras's augmentation layers against ninlayers' hand-written TF ops.

Both run where training runs them: in a `tf.data` map over batches of 64
Fashion-MNIST-sized images. For each augmentation (flip, shift, erasing, and
all three as the default recipe chains them) the two versions alternate,
repeat after repeat, in one process, and every repeat is kept.

    python benchmarks/augmentation.py --repeats 7 \
        --json docs/measurements/augmentation.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from ninlayers.app import artifacts, augment  # noqa: E402


def hand_flip(images, seed: int):
    """The hand-written flip ninlayers used before Keras's `RandomFlip`."""
    coin = tf.random.uniform([tf.shape(images)[0], 1, 1, 1], seed=seed * 7919)
    return tf.where(coin < 0.5, tf.reverse(images, axis=[2]), images)


def hand(kind: str, seed: int = 0):
    def fn(x):
        if kind in ("flip", "all"):
            x = hand_flip(x, seed)
        if kind in ("shift", "all"):
            x = augment.random_translate(x, 2, seed)
        if kind in ("erasing", "all"):
            x = augment.random_erasing(x, 0.25, seed)
        return x

    return fn


def keras_layers(kind: str, seed: int = 0):
    layers = []
    if kind in ("flip", "all"):
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if kind in ("shift", "all"):
        layers.append(
            keras.layers.RandomTranslation(
                2 / 28, 2 / 28, "constant", "nearest", seed=seed
            )
        )
    if kind in ("erasing", "all"):
        layers.append(
            keras.layers.RandomErasing(
                (0.25, 0.25), (0.02, 0.4), 0.0, (0.0, 1.0), seed=seed
            )
        )
    model = keras.Sequential(layers)

    def fn(x):
        return model(x, training=True)

    return fn


def epoch_seconds(fn, images: np.ndarray) -> float:
    ds = tf.data.Dataset.from_tensor_slices(images).batch(64)
    ds = ds.map(lambda x: fn(tf.cast(x, "float32") / 255.0), tf.data.AUTOTUNE)
    start = time.perf_counter()
    for _ in ds.prefetch(tf.data.AUTOTUNE):
        pass
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json")
    args = parser.parse_args()
    images = np.random.default_rng(0).integers(
        0, 256, (args.images, 28, 28, 1), "uint8"
    )
    result = {"images": args.images, "repeats": args.repeats, "seconds": {}}
    for kind in ("flip", "shift", "erasing", "all"):
        fns = {"hand": hand(kind), "keras": keras_layers(kind)}
        for fn in fns.values():
            epoch_seconds(fn, images)  # warm-up: tracing
        seconds = {name: [] for name in fns}
        for _ in range(args.repeats):
            for name, fn in fns.items():
                seconds[name].append(epoch_seconds(fn, images))
        result["seconds"][kind] = seconds
        medians = {k: statistics.median(v) for k, v in seconds.items()}
        print(
            f"{kind:8s} hand {args.images / medians['hand']:9.0f} img/s   "
            f"keras {args.images / medians['keras']:9.0f} img/s   "
            f"keras/hand time {medians['keras'] / medians['hand']:.2f}   "
            f"hand {[round(s, 3) for s in seconds['hand']]} "
            f"keras {[round(s, 3) for s in seconds['keras']]}",
            flush=True,
        )
    if args.json:
        artifacts.write_json(args.json, result)


if __name__ == "__main__":
    main()
