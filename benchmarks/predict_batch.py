"""`predict` of `NiN()` at several batch sizes, alternating, on one backend.

With `--steps-per-call 1 8` on TensorFlow, each batch size also at each
number of batches per call of the graph
(`ninlayers.runtime.PREDICT_STEPS_PER_EXECUTION`; by default ninlayers').

Keras's `predict` defaults to batches of 32. Each batch costs the backend a
fixed price (a graph execution on TensorFlow, a jitted call on JAX, Keras's
Python per batch on PyTorch) besides the kernels, and larger batches make
larger activations (on PyTorch each is a fresh allocation: see
benchmarks/allocator.py). This script alternates `predict` of `--images`
random 28x28 images at each of `--batch-sizes`, round by round in reversed
order every other round, on the backend `KERAS_BACKEND` names, and prints
images/s with every round written to `--json`:

    KERAS_BACKEND=torch python benchmarks/predict_batch.py --json batch.json
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
from ninlayers.app import artifacts, machine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 256]
    )
    parser.add_argument(
        "--steps-per-call", type=int, nargs="+", help="TensorFlow; default: ninlayers'"
    )
    parser.add_argument("--json", help="write every round here")
    args = parser.parse_args()
    backend = keras.backend.backend()
    steps = args.steps_per_call or [runtime.PREDICT_STEPS_PER_EXECUTION.get(backend, 1)]
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(args.images, 28, 28, 1)).astype("float32")
    model = ninlayers.NiN()
    model.compile()
    ways = [(size, n) for size in args.batch_sizes for n in steps]

    def predict(size: int, n: int) -> None:
        runtime.PREDICT_STEPS_PER_EXECUTION[backend] = n
        model.predict(x, batch_size=size, verbose=0)

    for way in ways:
        predict(*way)  # warm-up
    rates: dict[tuple[int, int], list[float]] = {way: [] for way in ways}
    for round_ in range(args.rounds):
        for way in ways if round_ % 2 == 0 else reversed(ways):
            start = time.perf_counter()
            predict(*way)
            rates[way].append(args.images / (time.perf_counter() - start))
    medians = {way: statistics.median(v) for way, v in rates.items()}
    names = {way: f"batch {way[0]}, {way[1]} per call" for way in ways}
    first = names[ways[0]]
    for way, values in rates.items():
        repeats = " ".join(f"{v:6.0f}" for v in values)
        ratio = medians[way] / medians[ways[0]]
        print(f"{backend} {names[way]:22} {repeats}", end="")
        print(f"  median {medians[way]:6.0f} img/s, {ratio:.2f}x {first}")
    if args.json:
        result = {
            "machine": machine.describe(),
            "backend": backend,
            "images": args.images,
            "images_per_second": {names[k]: v for k, v in rates.items()},
            "medians": {names[k]: v for k, v in medians.items()},
        }
        print(f"wrote {artifacts.write_json(args.json, result)}")


if __name__ == "__main__":
    main()
