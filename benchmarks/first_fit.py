"""The first `fit` of `NiN()` on TensorFlow: one trace of the step or two.

`NiNImageClassifier` builds its loss, metrics and optimizer from the
batches' shapes before `fit` traces the training step. Keras's own hook
(`keras.Model._maybe_symbolic_build`) leaves them to the first trace when no
`tf.distribute` strategy is set, and `tf.function` then traces the step a
second time. This script alternates, in one process, the first `fit` (one
step of `--batch` images) of a fresh `NiN()` with each hook, after one
untimed warm-up, counts the traces of the step, and prints every repeat,
the medians and their ratio:

    python benchmarks/first_fit.py --repeats 6 --json first-fit.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERAS_BACKEND"] = "tensorflow"

import keras  # noqa: E402
import numpy as np  # noqa: E402

import ninlayers  # noqa: E402
from ninlayers import classifier  # noqa: E402
from ninlayers._steps import tensorflow as steps  # noqa: E402
from ninlayers.app import artifacts, machine  # noqa: E402

HOOKS = {
    "two traces (Keras's hook)": keras.Model._maybe_symbolic_build,
    "one trace (ninlayers)": classifier.NiNImageClassifier._maybe_symbolic_build,
}


def main(repeats: int, batch: int, json_path: str | None) -> dict:
    x = np.random.default_rng(0).uniform(size=(batch, 28, 28, 1)).astype("float32")
    y = np.arange(batch) % 10
    traces: list[int] = []
    step = steps.train_step
    steps.train_step = lambda *args: traces.append(1) or step(*args)
    warm_up = ninlayers.NiN()  # the process's one-time costs, not timed
    warm_up.compile()
    warm_up.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    seconds: dict[str, list[float]] = {name: [] for name in HOOKS}
    counts: dict[str, list[int]] = {name: [] for name in HOOKS}
    for repeat in range(repeats):
        order = list(HOOKS) if repeat % 2 == 0 else list(reversed(HOOKS))
        for name in order:
            classifier.NiNImageClassifier._maybe_symbolic_build = HOOKS[name]
            model = ninlayers.NiN()
            model.compile()
            traces.clear()
            start = time.perf_counter()
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
            seconds[name].append(time.perf_counter() - start)
            counts[name].append(len(traces))
        print(repeat, {k: round(v[-1], 2) for k, v in seconds.items()}, flush=True)
    medians = {name: statistics.median(v) for name, v in seconds.items()}
    old, new = medians.values()
    result = {
        "machine": machine.describe(),
        "batch": batch,
        "seconds": seconds,
        "traces": counts,
        "medians": medians,
        "ratio": old / new,
    }
    for name in HOOKS:
        print(f"{name}: median {medians[name]:.2f} s, traces {counts[name]}")
    print(f"first fit {old / new:.2f}x as fast with one trace")
    if json_path:
        artifacts.write_json(json_path, result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    main(args.repeats, args.batch, args.json)
