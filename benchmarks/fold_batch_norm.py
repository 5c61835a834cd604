"""`predict` with batch norm folded into the convolutions, and without.

`ninlayers.runtime.FOLD_BATCH_NORM` (on by default) makes a NiN model's
`predict` and `evaluate` on TensorFlow and PyTorch run each convolution
and the batch norm after it as one convolution with a bias. This script
alternates both settings in one process on a preset's (or a `.keras`
file's) `predict` of the 10,000 Fashion-MNIST test images, two copies of
the model so that neither is traced again, round by round in reversed
order every other round, and prints every round's images/s, the medians'
ratio, each setting's accuracy, how many top-1 answers differ and the
largest difference between the probabilities:

    python benchmarks/fold_batch_norm.py --rounds 6 --json fold.json
    KERAS_BACKEND=torch python benchmarks/fold_batch_norm.py
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
from ninlayers import runtime  # noqa: E402
from ninlayers.app import artifacts, data, machine  # noqa: E402


def main(model: str, rounds: int, batch_size: int, images: int) -> dict:
    _, (x, y) = data.load_fashion_mnist()
    x, y = x[:images, :, :, None], y[:images]
    models = {fold: ninlayers.NiN.from_preset(model) for fold in (True, False)}
    probabilities, rates = {}, {fold: [] for fold in models}
    for fold, copy in models.items():  # warm-up: each copy traced once
        runtime.FOLD_BATCH_NORM = fold
        probabilities[fold] = copy.predict(x, batch_size=batch_size, verbose=0)
    for round_ in range(rounds):
        for fold in (True, False) if round_ % 2 == 0 else (False, True):
            runtime.FOLD_BATCH_NORM = fold
            start = time.perf_counter()
            models[fold].predict(x, batch_size=batch_size, verbose=0)
            rates[fold].append(len(x) / (time.perf_counter() - start))
    runtime.FOLD_BATCH_NORM = True
    medians = {fold: statistics.median(v) for fold, v in rates.items()}
    accuracy = {
        fold: float(np.mean(p.argmax(-1) == y)) for fold, p in probabilities.items()
    }
    changed = int(
        np.sum(probabilities[True].argmax(-1) != probabilities[False].argmax(-1))
    )
    largest = float(np.abs(probabilities[True] - probabilities[False]).max())
    for fold, values in rates.items():
        name = "folded" if fold else "two kernels"
        repeats = " ".join(f"{v:6.0f}" for v in values)
        print(f"{name:11} {repeats}  median {medians[fold]:6.0f} img/s", end="")
        print(f", accuracy {accuracy[fold]:.4f}")
    ratio = medians[True] / medians[False]
    print(
        f"{keras.backend.backend()}: folded {ratio:.2f}x the two kernels; "
        f"{changed} of {len(x)} answers differ; probabilities differ by at "
        f"most {largest:.4f}"
    )
    return {
        "machine": machine.describe(),
        "backend": keras.backend.backend(),
        "model": model,
        "batch_size": batch_size,
        "images": len(x),
        "images_per_second": {"folded": rates[True], "two_kernels": rates[False]},
        "medians": {"folded": medians[True], "two_kernels": medians[False]},
        "ratio": ratio,
        "accuracy": {"folded": accuracy[True], "two_kernels": accuracy[False]},
        "answers_changed": changed,
        "largest_probability_difference": largest,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model", default="fashion_mnist", help="a preset or a .keras file"
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument(
        "--batch-size", type=int, default=32, help="Keras's default: 32"
    )
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--json", default=None, help="write every round here")
    args = parser.parse_args()
    result = main(args.model, args.rounds, args.batch_size, args.images)
    if args.json:
        print(f"wrote {artifacts.write_json(args.json, result)}")
