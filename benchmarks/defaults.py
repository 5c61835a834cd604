"""Does `NiN().compile().fit(...)` learn on every seed? Measures the options.

For each model option set and seed: a fresh `NiN(**options)`, `compile()`
with its defaults, `fit` with Keras's defaults (batch 32), on

- `synthetic`: 2 classes, a bright 6x6 square somewhere on noise or noise
  alone, 16x16 grey, 512 training images, 4 epochs; scored on 512 new ones;
- `fashion`: the first 4,096 Fashion-MNIST training images, 3 epochs;
  scored on the first 2,000 test images.

A run "learned" when its held-out accuracy is at least 0.9 (synthetic) or
0.7 (fashion). Prints a table and writes every run to `--json`.

    python benchmarks/defaults.py --seeds 10 --json docs/measurements/defaults.json
"""

from __future__ import annotations

import argparse
import json
import time

import keras
import numpy as np

from ninlayers import NiN
from ninlayers.app import artifacts, data

OPTIONS = {
    "paper": {"use_batch_norm": False, "head_final_activation": True},
    "batch norm 0.99, linear maps": {
        "use_batch_norm": True,
        "batch_norm_momentum": 0.99,
        "head_final_activation": False,
    },
    "batch norm 0.9, ReLU maps": {
        "use_batch_norm": True,
        "batch_norm_momentum": 0.9,
        "head_final_activation": True,
    },
    "batch norm 0.9, linear maps": {
        "use_batch_norm": True,
        "batch_norm_momentum": 0.9,
        "head_final_activation": False,
    },
}
#: The option sets measured on Fashion-MNIST (the slower task).
FASHION_OPTIONS = ("paper", "batch norm 0.9, linear maps")
LEARNED = {"synthetic": 0.9, "fashion": 0.7}


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 0.5, (n, 16, 16, 1)).astype("float32")
    y = rng.integers(0, 2, n)
    for i in np.flatnonzero(y):
        r, c = rng.integers(0, 11, 2)
        x[i, r : r + 6, c : c + 6] = 1.0
    return x, y


def tasks(seed: int) -> dict[str, tuple]:
    (x_train, y_train), (x_test, y_test) = data.load_fashion_mnist()
    fashion = (
        x_train[:4096, ..., None].astype("float32") / 255,
        y_train[:4096],
        x_test[:2000, ..., None].astype("float32") / 255,
        y_test[:2000],
        3,
    )
    return {
        "synthetic": (*synthetic(512, seed), *synthetic(512, 10_000 + seed), 4),
        "fashion": fashion,
    }


def run(task: str, options: dict, seed: int, arrays: tuple) -> dict:
    x, y, x_test, y_test, epochs = arrays
    keras.utils.set_random_seed(seed)
    model = NiN(num_classes=int(y.max()) + 1, input_shape=x.shape[1:], **options)
    model.compile()
    start = time.perf_counter()
    history = model.fit(x, y, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - start
    accuracy = float(np.mean(model.predict(x_test, verbose=0).argmax(-1) == y_test))
    return {
        "task": task,
        "seed": seed,
        "final_loss": history.history["loss"][-1],
        "test_accuracy": accuracy,
        "learned": accuracy >= LEARNED[task],
        "fit_seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--tasks", nargs="+", default=list(LEARNED))
    parser.add_argument("--options", nargs="+", default=list(OPTIONS))
    parser.add_argument("--json")
    args = parser.parse_args()
    runs = []
    for seed in range(args.seeds):
        arrays = tasks(seed)
        for task in args.tasks:
            for name in args.options:
                if task == "fashion" and name not in FASHION_OPTIONS:
                    continue
                result = {
                    "options": name,
                    **run(task, OPTIONS[name], seed, arrays[task]),
                }
                runs.append(result)
                print(json.dumps(result), flush=True)
    print("\n| task | options | learned | held-out accuracy (min-max) |")
    print("| --- | --- | --- | --- |")
    for task in args.tasks:
        for name in args.options:
            rows = [r for r in runs if r["task"] == task and r["options"] == name]
            if not rows:
                continue
            accuracies = [r["test_accuracy"] for r in rows]
            print(
                f"| {task} | {name} | {sum(r['learned'] for r in rows)}/{len(rows)} "
                f"| {min(accuracies):.3f}-{max(accuracies):.3f} |"
            )
    if args.json:
        artifacts.write_json(
            args.json, {"command": "benchmarks/defaults.py", "runs": runs}
        )


if __name__ == "__main__":
    main()
