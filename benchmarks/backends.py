"""NiN's training and predict speed on the active Keras backend, per choice.

For each precision (float32, mixed_bfloat16) and `jit_compile` setting (on
and off: XLA, or `torch.compile` on PyTorch), a default
`NiN(use_batch_norm=True)` trains one epoch and predicts over the same
random images, alternating between the settings, repeat after repeat;
every repeat is kept. It measured the per-backend defaults of
`ninlayers.runtime` (docs/backends.md):

    for b in tensorflow jax torch; do
        KERAS_BACKEND=$b python benchmarks/backends.py \\
            --json docs/measurements/backend-$b.json
    done
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
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    backend = keras.backend.backend()
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(args.images, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, args.images)
    models = {}
    for precision in ("float32", "mixed_bfloat16"):
        for jit in (True, False):
            model = ninlayers.NiN(precision=precision, use_batch_norm=True)
            model.compile(optimizer="adam", jit_compile=jit)
            model.fit(x[:128], y[:128], batch_size=64, epochs=1, verbose=0)
            model.predict(x[:128], batch_size=64, verbose=0)
            models[f"{precision} jit={jit}"] = model
    results = {name: {"train_s": [], "predict_s": []} for name in models}
    for _ in range(args.repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model.fit(x, y, batch_size=64, epochs=1, verbose=0)
            middle = time.perf_counter()
            model.predict(x, batch_size=64, verbose=0)
            results[name]["train_s"].append(round(middle - start, 3))
            results[name]["predict_s"].append(round(time.perf_counter() - middle, 3))
    for name, times in results.items():
        train = args.images / statistics.median(times["train_s"])
        predict = args.images / statistics.median(times["predict_s"])
        print(
            f"{backend:10s} {name:24s} train {train:6.0f} img/s "
            f"predict {predict:6.0f} img/s  train s {times['train_s']}"
        )
    if args.json:
        artifacts.write_json(
            args.json,
            {
                "machine": machine.describe(),
                "backend": backend,
                "images": args.images,
                "results": results,
            },
        )


if __name__ == "__main__":
    main()
