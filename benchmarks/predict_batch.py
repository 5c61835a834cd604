"""`predict` of `NiN()` at several batch sizes, alternating, on one backend.

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
from ninlayers.app import artifacts, machine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 256]
    )
    parser.add_argument("--json", help="write every round here")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(args.images, 28, 28, 1)).astype("float32")
    model = ninlayers.NiN()
    model.compile()
    sizes = args.batch_sizes
    for size in sizes:
        model.predict(x, batch_size=size, verbose=0)  # warm-up
    rates: dict[int, list[float]] = {size: [] for size in sizes}
    for round_ in range(args.rounds):
        for size in sizes if round_ % 2 == 0 else reversed(sizes):
            start = time.perf_counter()
            model.predict(x, batch_size=size, verbose=0)
            rates[size].append(args.images / (time.perf_counter() - start))
    medians = {size: statistics.median(v) for size, v in rates.items()}
    backend = keras.backend.backend()
    for size, values in rates.items():
        repeats = " ".join(f"{v:6.0f}" for v in values)
        ratio = medians[size] / medians[sizes[0]]
        print(
            f"{backend} batch {size:4d} {repeats}  median {medians[size]:6.0f}", end=""
        )
        print(f" img/s, {ratio:.2f}x batch {sizes[0]}")
    if args.json:
        result = {
            "machine": machine.describe(),
            "backend": backend,
            "images": args.images,
            "images_per_second": {str(k): v for k, v in rates.items()},
            "medians": {str(k): v for k, v in medians.items()},
        }
        print(f"wrote {artifacts.write_json(args.json, result)}")


if __name__ == "__main__":
    main()
