"""Seconds of `ninlayers train`'s per-epoch held-out score, each image alone
against every test-time view.

For each model (a preset name, a `.keras` file or a `ninlayers train`
output directory), times `HeldOutScore.on_epoch_end` on the first 2,000
Fashion-MNIST test images (what the trainer scores after each epoch when a
recipe holds out no validation set) with `all_views=False` (the trainer's
choice: each image alone) and `all_views=True` (what the model predicts,
averaged over its `test_time_flip` and `test_time_shift` views),
alternating, and prints every repeat and the ratio of the medians:

    python benchmarks/held_out_score.py fashion_mnist runs/fast-seed0 \
        --test-time-shift 1 --repeats 5 --json held-out-score.json

`--test-time-flip` and `--test-time-shift` set the views of every model
(`ninlayers.export.with_test_time`); by default each keeps its own.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from ninlayers import NiNImageClassifier, export  # noqa: E402
from ninlayers.app import artifacts, data, machine, trainer  # noqa: E402
from ninlayers.app.callbacks import HeldOutScore  # noqa: E402


def seconds(callback: HeldOutScore) -> float:
    """Wall seconds of one epoch's score."""
    start = time.perf_counter()
    callback.on_epoch_end(0, {})
    return time.perf_counter() - start


def time_model(model, x, y, repeats: int) -> dict[str, list[float]]:
    """Every repeat of each way of scoring, alternating, after one warm-up
    each (which traces the predict functions)."""
    callbacks = {
        name: HeldOutScore(x, y, batch_size=trainer.EVAL_BATCH_SIZE, all_views=views)
        for name, views in (("one_view", False), ("all_views", True))
    }
    for callback in callbacks.values():
        callback.set_model(model)
        seconds(callback)
    times: dict[str, list[float]] = {name: [] for name in callbacks}
    for _ in range(repeats):
        for name, callback in callbacks.items():
            times[name].append(seconds(callback))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="presets, .keras files, run dirs")
    parser.add_argument("--test-time-flip", choices=("yes", "no"))
    parser.add_argument("--test-time-shift", type=int)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-dir")
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args()

    _, (x, y) = data.load_fashion_mnist(args.data_dir)
    x, y = x[: trainer.MONITOR_IMAGES, ..., None], y[: trainer.MONITOR_IMAGES]
    flip = None if args.test_time_flip is None else args.test_time_flip == "yes"
    results = []
    print(f"{len(x)} images; seconds per score, every repeat")
    for name in args.models:
        model = NiNImageClassifier.from_preset(name)
        model = export.with_test_time(model, flip=flip, shift=args.test_time_shift)
        times = time_model(model, x, y, args.repeats)
        ratio = statistics.median(times["all_views"]) / statistics.median(
            times["one_view"]
        )
        views = (1 + model.test_time_flip) * (1 + 4 * (model.test_time_shift > 0))
        print(
            f"{name} ({views} views): each image alone "
            f"{', '.join(f'{t:.2f}' for t in times['one_view'])}; all views "
            f"{', '.join(f'{t:.2f}' for t in times['all_views'])}; "
            f"all views / alone = {ratio:.2f}x (medians)"
        )
        results.append({"model": name, "views": views, "seconds": times})
    if args.json:
        artifacts.write_json(
            args.json,
            {"machine": machine.describe(), "images": len(x), "models": results},
        )


if __name__ == "__main__":
    main()
