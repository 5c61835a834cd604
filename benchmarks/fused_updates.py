"""Keras's optimizer update against the fused kernels, on `NiN()`.

`NiNImageClassifier.compile` runs Keras's Adam and SGD updates through one
fused kernel per variable where the backend has one
(`ninlayers.fused_updates`). This script alternates, in one process, the
two ways on the backend of `KERAS_BACKEND`:

- the update alone: `optimizer.apply` on `NiN()`'s 35 variables (1.59 M
  parameters) with fixed gradients, `--updates` calls per repeat;
- training: one `fit` epoch of `--images` images, batch 64, of two `NiN()`
  models compiled alike but for `fused_updates`.

It prints every repeat, the medians and their ratios:

    KERAS_BACKEND=tensorflow python benchmarks/fused_updates.py --json fused.json
    KERAS_BACKEND=torch python benchmarks/fused_updates.py --optimizer adam
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import ninlayers  # noqa: E402
from ninlayers import fused_updates  # noqa: E402
from ninlayers.app import artifacts, machine  # noqa: E402

WAYS = ("keras", "fused")


def make_optimizer(name: str) -> keras.optimizers.Optimizer:
    """Adam 1e-3 (`compile()`'s default), or SGD with the default recipe's
    Nesterov momentum and weight decay at a constant rate (the update's
    kernels do not depend on the rate or its schedule)."""
    if name == "adam":
        return keras.optimizers.Adam(1e-3)
    return keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)


def time_updates(optimizer_name: str, updates: int) -> dict[str, float]:
    """Seconds per `apply` of each way, on `NiN()`'s variables."""
    variables = ninlayers.NiN().trainable_variables
    rng = np.random.default_rng(0)
    grads = [
        keras.ops.convert_to_tensor(rng.normal(size=v.shape).astype("float32") * 1e-3)
        for v in variables
    ]
    seconds = {}
    for way in WAYS:
        optimizer = make_optimizer(optimizer_name)
        if way == "fused":
            fused_updates.fuse(optimizer)
        optimizer.build(variables)

        def apply(optimizer=optimizer):
            optimizer.apply(grads, variables)

        if keras.backend.backend() == "tensorflow":  # as in `fit`: in a graph
            import tensorflow as tf

            apply = tf.function(apply)
        apply()  # warm-up
        start = time.perf_counter()
        for _ in range(updates):
            apply()
        seconds[way] = (time.perf_counter() - start) / updates
    return seconds


def main(args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(args.images, 28, 28, 1)).astype("float32")
    y = np.arange(args.images) % 10
    models = {}
    for way in WAYS:
        models[way] = ninlayers.NiN()
        models[way].compile(
            make_optimizer(args.optimizer), fused_updates=way == "fused"
        )
        models[way].fit(x[:128], y[:128], batch_size=64, epochs=1, verbose=0)
    update_s: dict[str, list[float]] = {way: [] for way in WAYS}
    train_s: dict[str, list[float]] = {way: [] for way in WAYS}
    for repeat in range(args.repeats):
        for way, s in time_updates(args.optimizer, args.updates).items():
            update_s[way].append(s)
        for way in WAYS if repeat % 2 == 0 else WAYS[::-1]:
            start = time.perf_counter()
            models[way].fit(x, y, batch_size=64, epochs=1, verbose=0)
            train_s[way].append(time.perf_counter() - start)
        print(
            repeat,
            {w: f"{update_s[w][-1] * 1e3:.2f} ms" for w in WAYS},
            {w: f"{args.images / train_s[w][-1]:.0f} img/s" for w in WAYS},
            flush=True,
        )
    update_ms = {w: statistics.median(v) * 1e3 for w, v in update_s.items()}
    train = {w: args.images / statistics.median(v) for w, v in train_s.items()}
    result = {
        "machine": machine.describe(),
        "backend": keras.backend.backend(),
        "optimizer": args.optimizer,
        "images": args.images,
        "update_seconds": update_s,
        "train_seconds": train_s,
        "update_ms_median": update_ms,
        "train_images_per_second": train,
        "update_ratio": update_ms["keras"] / update_ms["fused"],
        "train_ratio": train["fused"] / train["keras"],
    }
    print(
        f"{result['backend']}, {args.optimizer}: update {update_ms['keras']:.2f} ms "
        f"-> {update_ms['fused']:.2f} ms ({result['update_ratio']:.2f}x); training "
        f"{train['keras']:.0f} -> {train['fused']:.0f} img/s "
        f"({result['train_ratio']:.3f}x)"
    )
    if args.json:
        artifacts.write_json(args.json, result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--json", help="write every repeat here")
    main(parser.parse_args())
