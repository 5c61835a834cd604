"""Test accuracy of trained NiNs at each set of test-time views.

For each model (a preset name, a `.keras` file or a `ninlayers train`
output directory), predicts Fashion-MNIST's 10,000 test images with one
view (the image), two (`test_time_flip`), five (`test_time_shift=1`) and ten
(both), the same weights each time (`ninlayers.export.with_test_time`), and
prints accuracy and images/s per model, with every figure written to
`--json`:

    python benchmarks/test_time_views.py fashion_mnist fashion_mnist_narrow \
        runs/fast-seed0 --json docs/measurements/test-time-views.json

Time is measured once per cell, not alternated: read it as the cost ratio
of the views (about 1:2:5:10), not as a speed measurement.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from ninlayers import NiNImageClassifier, export  # noqa: E402
from ninlayers.app import artifacts, data, machine  # noqa: E402

#: (test_time_flip, test_time_shift) pairs, fewest views first.
VIEWS = ((False, 0), (True, 0), (False, 1), (True, 1))


def score(model, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy and images/s of one `predict` of the test set."""
    start = time.perf_counter()
    probabilities = model.predict(x, batch_size=500, verbose=0)
    seconds = time.perf_counter() - start
    accuracy = float(np.mean(probabilities.argmax(-1) == y))
    return {"accuracy": accuracy, "images_per_second": len(x) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="presets, .keras files, run dirs")
    parser.add_argument("--data-dir")
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args()

    _, (x, y) = data.load_fashion_mnist(args.data_dir)
    x = x[..., None]
    results = []
    print("model | 1 view | flip (2) | shifts (5) | flip and shifts (10)")
    for name in args.models:
        trained = NiNImageClassifier.from_preset(name)
        cells = []
        for flip, shift in VIEWS:
            model = export.with_test_time(trained, flip, shift)
            cells.append({"flip": flip, "shift": shift, **score(model, x, y)})
        results.append({"model": name, "views": cells})
        print(
            name,
            *(f"{c['accuracy']:.4f} ({c['images_per_second']:,.0f}/s)" for c in cells),
            sep=" | ",
        )
    if args.json:
        artifacts.write_json(
            args.json,
            {"machine": machine.describe(), "test_images": len(x), "models": results},
        )


if __name__ == "__main__":
    main()
