"""`fit` on NumPy arrays with and without tf.data's autotuning, alternating.

Keras turns arrays into a `tf.data` pipeline whose prefetch buffer tf.data
autotunes. On these 2-core machines about half of such epochs ran at one
fixed slow rate (about 400 images/s for `NiN()`, about 200 for the seed's
model, whatever the state of the rest of the machine), and none did with
autotuning off. `NiNImageClassifier` now turns it off for the arrays it is
given on TensorFlow (`ninlayers.runtime.ARRAY_DATA_AUTOTUNE`). This script
trains one `NiN()` and alternates, round by round, one `fit` epoch over the
same arrays with the switch off (ninlayers' default) and on (Keras's own
pipeline), printing images/s and writing every round to `--json`:

    python benchmarks/array_autotune.py --rounds 12 --images 1024
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import ninlayers  # noqa: E402
from ninlayers import runtime  # noqa: E402
from ninlayers.app import artifacts, machine  # noqa: E402
from ninlayers.app.benchmark import benchmark_images  # noqa: E402


def main(rounds: int, images: int, json_path: str | None) -> dict:
    x, y, source = benchmark_images(images)
    model = ninlayers.NiN()
    model.compile()
    model.fit(x[:256], y[:256], batch_size=64, epochs=1, verbose=0)  # traces
    ways = {"autotune_off": False, "autotune_on": True}
    rates: dict[str, list[float]] = {name: [] for name in ways}
    default = runtime.ARRAY_DATA_AUTOTUNE
    try:
        for round_ in range(rounds):
            for name, autotune in ways.items():
                runtime.ARRAY_DATA_AUTOTUNE = autotune
                start = time.perf_counter()
                model.fit(x, y, batch_size=64, epochs=1, verbose=0)
                rates[name].append(images / (time.perf_counter() - start))
            print(round_, {k: round(v[-1]) for k, v in rates.items()}, flush=True)
    finally:
        runtime.ARRAY_DATA_AUTOTUNE = default
    result = {
        "machine": machine.describe(),
        "data": source,
        "images": images,
        "rounds": rates,
        "medians": {name: statistics.median(v) for name, v in rates.items()},
        "total_seconds": {
            name: sum(images / r for r in v) for name, v in rates.items()
        },
    }
    print(json.dumps({k: result[k] for k in ("medians", "total_seconds")}, indent=1))
    for name, v in rates.items():
        print(name, "sorted:", [round(r) for r in sorted(v)])
    if json_path:
        artifacts.write_json(json_path, result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    main(args.rounds, args.images, args.json)
