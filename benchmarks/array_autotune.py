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

With `--predict`, `predict` of the same arrays (batch 32, Keras's
default) instead of `fit` epochs.

Each round also says whether it ended just after 10 ms x (2**k - 1)
seconds: with autotuning, an iterator starts a tuning thread whose sleeps
double from 10 ms, and the iterator's end can wait for the current one to
run out (the main thread then sits in the iterator's destructor, joining
that thread). Slow rounds land there; the count of such rounds is printed
for each way (checked for fits of up to 20 s).

With `--image-folder cache` or `stream`, the same over an image-folder
pipeline (`ninlayers.app.folders.stream`, as `ninlayers train
--image-folder` builds it, with its `autotune` argument): `--images`
generated 28x28 grey PNGs of 4 classes in a temporary folder, decoded once
and cached, or decoded every pass.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import ninlayers  # noqa: E402
from ninlayers import runtime  # noqa: E402
from ninlayers.app import artifacts, folders, machine  # noqa: E402
from ninlayers.app.benchmark import benchmark_images  # noqa: E402


def on_tuning_period(seconds: float, tolerance: float = 0.03) -> bool:
    """Whether `seconds` ends at one of the tuning thread's wake-ups, 10 ms x
    (2**k - 1) (the sum of its doubling sleeps), from 1% before it (the
    wake-ups came up to 2 ms early) to `tolerance` after it."""
    period = 0.01 * (2 ** round(math.log2(seconds / 0.01 + 1)) - 1)
    return -0.01 * period <= seconds - period <= tolerance * period


def _array_epochs(images: int) -> tuple[Callable[[bool], None], str]:
    x, y, source = benchmark_images(images)
    model = ninlayers.NiN()
    model.compile()
    model.fit(x[:256], y[:256], batch_size=64, epochs=1, verbose=0)  # traces
    default = runtime.ARRAY_DATA_AUTOTUNE

    def epoch(autotune: bool) -> None:
        runtime.ARRAY_DATA_AUTOTUNE = autotune
        try:
            model.fit(x, y, batch_size=64, epochs=1, verbose=0)
        finally:
            runtime.ARRAY_DATA_AUTOTUNE = default

    return epoch, source


def _array_predicts(images: int) -> tuple[Callable[[bool], None], str]:
    x, _, source = benchmark_images(images)
    model = ninlayers.NiN()
    model.compile()
    model.predict(x[:64], verbose=0)  # traces
    default = runtime.ARRAY_DATA_AUTOTUNE

    def predict(autotune: bool) -> None:
        runtime.ARRAY_DATA_AUTOTUNE = autotune
        try:
            model.predict(x, verbose=0)
        finally:
            runtime.ARRAY_DATA_AUTOTUNE = default

    return predict, source


@contextlib.contextmanager
def _folder_epochs(
    images: int, cache: bool
) -> Iterator[tuple[Callable[[bool], None], str]]:
    from image_folder import generate  # benchmarks/image_folder.py

    with tempfile.TemporaryDirectory() as tmp:
        listed = folders.list_folder(generate(Path(tmp), images, 28, 1))
        sets = {
            autotune: folders.stream(
                listed,
                (28, 28),
                1,
                64,
                shuffle=True,
                seed=0,
                augment=True,
                cache=cache,
                autotune=autotune,
            )
            for autotune in (False, True)
        }
        model = ninlayers.NiN(num_classes=4)
        model.compile()
        for ds in sets.values():
            model.fit(ds, epochs=1, verbose=0)  # traces, fills the caches
        kind = "cached" if cache else "decoded every pass"
        yield (
            lambda autotune: model.fit(sets[autotune], epochs=1, verbose=0),
            f"{images} generated 28x28 PNGs, {kind}",
        )


def main(
    rounds: int,
    images: int,
    json_path: str | None,
    image_folder: str | None = None,
    predict: bool = False,
) -> dict:
    with contextlib.ExitStack() as stack:
        if predict:
            epoch, source = _array_predicts(images)
        elif image_folder is None:
            epoch, source = _array_epochs(images)
        else:
            folder = _folder_epochs(images, image_folder == "cache")
            epoch, source = stack.enter_context(folder)
        ways = {"autotune_off": False, "autotune_on": True}
        seconds: dict[str, list[float]] = {name: [] for name in ways}
        for round_ in range(rounds):
            for name, autotune in ways.items():
                start = time.perf_counter()
                epoch(autotune)
                seconds[name].append(time.perf_counter() - start)
            print(round_, {k: round(v[-1], 3) for k, v in seconds.items()}, flush=True)
    rates = {name: [images / s for s in v] for name, v in seconds.items()}
    result = {
        "machine": machine.describe(),
        "data": source,
        "task": "predict" if predict else "fit",
        "images": images,
        "rounds": rates,
        "medians": {name: statistics.median(v) for name, v in rates.items()},
        "seconds": seconds,
        "total_seconds": {name: sum(v) for name, v in seconds.items()},
        "rounds_on_a_tuning_period": {
            name: sum(map(on_tuning_period, v)) for name, v in seconds.items()
        },
    }
    keys = ("medians", "total_seconds", "rounds_on_a_tuning_period")
    print(json.dumps({k: result[k] for k in keys}, indent=1))
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
    parser.add_argument("--image-folder", choices=["cache", "stream"])
    parser.add_argument("--predict", action="store_true", help="predict, not fit")
    args = parser.parse_args()
    main(args.rounds, args.images, args.json, args.image_folder, args.predict)
