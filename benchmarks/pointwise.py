"""1x1 convolutions as convolutions or as one matrix product, alternating.

Builds `NiN()` twice in one process on the active Keras backend, once with
`ninlayers.layers.POINTWISE_AS_MATMUL` off and once `"always"` (each model
keeps the step it was traced with), then alternates one `fit` epoch and one `predict`
of each for `--rounds` rounds, printing images/s and the process's CPU
seconds per epoch, and writing every round to `--json`:

    python benchmarks/pointwise.py --rounds 12 --images 2048
    KERAS_BACKEND=jax python benchmarks/pointwise.py --rounds 4 --images 512
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import ninlayers  # noqa: E402
from ninlayers import layers  # noqa: E402
from ninlayers.app import artifacts, machine  # noqa: E402


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def main(rounds: int, images: int, json_path: str | None) -> dict:
    backend = keras.backend.backend()
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(images, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, images)
    models, default = {}, layers.POINTWISE_AS_MATMUL
    for name, when in (("convolution", {}), ("matmul", {backend: "always"})):
        layers.POINTWISE_AS_MATMUL = when
        model = ninlayers.NiN()
        model.compile()
        model.fit(x[:256], y[:256], batch_size=64, epochs=1, verbose=0)  # traces
        model.predict(x[:64], verbose=0)
        models[name] = model
    layers.POINTWISE_AS_MATMUL = default
    runs = {k: {"train": [], "predict": [], "cpu_s": []} for k in models}
    for round_ in range(rounds):
        for name, model in models.items():
            cpu, start = _cpu_seconds(), time.perf_counter()
            model.fit(x, y, batch_size=64, epochs=1, verbose=0)
            runs[name]["train"].append(images / (time.perf_counter() - start))
            runs[name]["cpu_s"].append(_cpu_seconds() - cpu)
            start = time.perf_counter()
            model.predict(x, verbose=0)
            runs[name]["predict"].append(images / (time.perf_counter() - start))
        print(round_, {k: round(v["train"][-1]) for k, v in runs.items()}, flush=True)
    result = {
        "machine": machine.describe(),
        "backend": backend,
        "images": images,
        "rounds": runs,
        "medians": {
            name: {key: statistics.median(v) for key, v in run.items()}
            for name, run in runs.items()
        },
    }
    print(json.dumps(result["medians"], indent=1))
    if json_path:
        artifacts.write_json(json_path, result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    main(args.rounds, args.images, args.json)
