"""The trainer's final test score: each batch through `predict` or called.

`ninlayers.app.inference.predict_dataset` (the final score of `ninlayers
train` and `ninlayers evaluate`) runs each batch through the model's
compiled `predict`; it used to call the model, which on TensorFlow runs it
op by op. This script alternates both ways over the 10,000 Fashion-MNIST
test images in batches of 500 (the trainer's), for `--rounds` rounds in
one process, printing every round's seconds and the medians' ratio, and
checks that both give the same accuracy (each way's time includes
turning outputs into probabilities):

    python benchmarks/scoring.py runs/fast/model.keras --rounds 5 \
        --json test-set-scoring.json
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

from ninlayers.app import artifacts, data, inference, machine  # noqa: E402


def _called(model, ds):
    """The way it was: each batch called, then its probabilities."""
    outputs = [model(np.asarray(x), training=False) for x, _ in ds]
    return inference.probabilities(model, np.concatenate(outputs))


def _predicted(model, ds):
    """The way it is: the trainer's own `predict_dataset`."""
    return inference.predict_dataset(model, ds)[0]


def main(path: str, rounds: int) -> dict:
    model = keras.saving.load_model(path)
    _, (x, y) = data.load_fashion_mnist()
    ds = data.make_dataset(x, y, 500)
    ways = {"called": _called, "predict": _predicted}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    accuracy = {}
    for round_ in range(rounds):
        for name, way in ways.items():
            start = time.perf_counter()
            probs = way(model, ds)
            seconds[name].append(time.perf_counter() - start)
            accuracy[name] = inference.scores(probs, y)["accuracy"]
        print(round_, {k: round(v[-1], 2) for k, v in seconds.items()}, flush=True)
    medians = {name: statistics.median(v) for name, v in seconds.items()}
    ratio = medians["called"] / medians["predict"]
    print(
        f"called {medians['called']:.2f} s, predict {medians['predict']:.2f} s: "
        f"{ratio:.2f}x; accuracy {accuracy}"
    )
    return {
        "machine": machine.describe(),
        "backend": keras.backend.backend(),
        "model": path,
        "seconds": seconds,
        "medians": medians,
        "ratio": ratio,
        "accuracy": accuracy,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a .keras file")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", default=None, help="write every round here")
    args = parser.parse_args()
    result = main(args.model, args.rounds)
    if args.json:
        artifacts.write_json(args.json, result)
    print(json.dumps(result["medians"], indent=1))
