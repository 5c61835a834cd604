"""How long a `tf.data` iterator takes to end, with and without autotuning.

TensorFlow alone, no Keras, no model: each round makes an iterator over a
tiny pipeline (`Dataset.range(n).map(...).prefetch(AUTOTUNE)`), reads an
element every `--step` seconds (`time.sleep` standing in for a training
step) for `--steps` elements, then drops the iterator and times the drop.
With autotuning, the iterator runs a tuning thread that sleeps between
tunings, each sleep twice the last from 10 ms; dropping the iterator joins
that thread. Alternating, autotuning on and off:

    python benchmarks/iterator_end.py --rounds 10 --steps 40 --step 0.07

prints every round's seconds to read the elements and to end the
iterator, and whether the iterator's whole life ended just after one of
the tuning thread's wake-ups, 10 ms x (2**k - 1)
(`array_autotune.on_tuning_period`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402
from array_autotune import on_tuning_period  # noqa: E402

from ninlayers.app import artifacts, machine  # noqa: E402


def one_round(autotune: bool, steps: int, step: float) -> dict[str, float]:
    """Reads `steps` elements `step` seconds apart, then ends the iterator."""
    options = tf.data.Options()
    options.autotune.enabled = autotune
    dataset = tf.data.Dataset.range(steps).map(lambda i: i * 2)
    dataset = dataset.prefetch(tf.data.AUTOTUNE).with_options(options)
    start = time.perf_counter()
    iterator = iter(dataset)
    for _ in range(steps):
        next(iterator)
        time.sleep(step)
    read = time.perf_counter()
    del iterator
    end = time.perf_counter()
    return {"read": read - start, "end": end - read, "life": end - start}


def main(rounds: int, steps: int, step: float, json_path: str | None) -> dict:
    ways = {"autotune_off": False, "autotune_on": True}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in ways}
    for round_ in range(rounds):
        for name, autotune in ways.items():
            runs[name].append(one_round(autotune, steps, step))
        print(
            round_,
            {k: round(v[-1]["end"], 3) for k, v in runs.items()},
            flush=True,
        )
    result = {
        "machine": machine.describe(),
        "tensorflow": tf.__version__,
        "steps": steps,
        "step_seconds": step,
        "rounds": runs,
        "median_end_seconds": {
            name: statistics.median(r["end"] for r in v) for name, v in runs.items()
        },
        "rounds_ending_on_a_tuning_period": {
            name: sum(on_tuning_period(r["life"]) for r in v)
            for name, v in runs.items()
        },
    }
    keys = ("median_end_seconds", "rounds_ending_on_a_tuning_period")
    print(json.dumps({k: result[k] for k in keys}, indent=1))
    for name, v in runs.items():
        print(
            name,
            "end seconds, sorted:",
            [round(r["end"], 3) for r in sorted(v, key=lambda r: r["end"])],
        )
    if json_path:
        artifacts.write_json(json_path, result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--step", type=float, default=0.07)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    main(args.rounds, args.steps, args.step, args.json)
