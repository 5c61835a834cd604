"""Training speed of one architecture under each precision and 1x1 path.

Builds `NiN(architecture=...)` once per variant in one process on the
active Keras backend (each model keeps the step it was traced with), then
alternates one `fit` epoch of each over the same arrays for `--rounds`
rounds, printing every round's images/s and, at the end, each variant's
median against the first's (ninlayers' own choice on this machine):

- `default`: what `NiN()` picks here (`precision="auto"`, 1x1 convolutions
  as `ninlayers.layers.POINTWISE_AS_MATMUL` says);
- `float32`: `precision="float32"`;
- `1x1 as convolutions`: the default precision, `POINTWISE_AS_MATMUL`
  empty.

    python benchmarks/train_variants.py --architecture nin_28_narrow \
        --batch-size 128 --rounds 8 --json train-variants-narrow.json
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

VARIANTS = {
    "default": ({}, None),
    "float32": ({"precision": "float32"}, None),
    "1x1 as convolutions": ({}, {}),
}


def _build(architecture: str, options: dict, pointwise: dict | None, x, y, batch):
    default = layers.POINTWISE_AS_MATMUL
    if pointwise is not None:
        layers.POINTWISE_AS_MATMUL = pointwise
    try:
        model = ninlayers.NiN(architecture=architecture, **options)
        model.compile()
        model.fit(x[: 2 * batch], y[: 2 * batch], batch_size=batch, verbose=0)
    finally:
        layers.POINTWISE_AS_MATMUL = default
    return model


def main(architecture: str, batch: int, rounds: int, images: int) -> dict:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (images, 28, 28, 1)).astype("uint8")
    y = rng.integers(0, 10, images)
    models = {
        name: _build(architecture, options, pointwise, x, y, batch)
        for name, (options, pointwise) in VARIANTS.items()
    }
    runs: dict[str, list[float]] = {name: [] for name in models}
    for round_ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
            runs[name].append(images / (time.perf_counter() - start))
        print(round_, {k: round(v[-1]) for k, v in runs.items()}, flush=True)
    medians = {name: statistics.median(v) for name, v in runs.items()}
    first = medians["default"]
    for name, median in medians.items():
        print(f"{name}: {median:,.0f} images/s, {median / first:.2f}x the default")
    return {
        "machine": machine.describe(),
        "backend": keras.backend.backend(),
        "architecture": architecture,
        "batch_size": batch,
        "images": images,
        "precision": {n: m.dtype_policy.name for n, m in models.items()},
        "rounds": runs,
        "medians": medians,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--architecture", default="nin_28")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--json", default=None, help="write every round here")
    args = parser.parse_args()
    result = main(args.architecture, args.batch_size, args.rounds, args.images)
    if args.json:
        artifacts.write_json(args.json, result)
    print(json.dumps(result["medians"], indent=1))
