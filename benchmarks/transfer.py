"""Does the pretrained Fashion-MNIST trunk help on images it never saw?

scikit-learn's handwritten digits (1,797 8x8 images, ink 0-16, shipped with
scikit-learn, nothing here trained on them), scaled to [0, 1] and upsampled
to 28x28 (bilinear), split once per class into a labelled pool (half) and a
held-out test set (the other half, 898 images). For 10, 50 and all (about
90) labelled images per class and each seed, three arms with the same
budget (`--steps` Adam steps of 32 images, learning rate 1e-3, sampled from
the labelled images with replacement; compile()'s other defaults):

- `scratch`: the preset's network from random weights;
- `pretrained`: `NiNImageClassifier.from_preset("fashion_mnist",
  num_classes=10)`, every weight trained;
- `frozen trunk`: the same with `backbone.trainable = False` (the head alone).

Every arm's batch norms use momentum 0.9 (NiN's default): with the preset's
0.99, a few hundred steps leave the moving statistics that inference uses
far behind the weights, and the scratch arm scored 0.10-0.17 (chance).

Prints held-out accuracy per arm (mean and every seed) and writes every run,
with the machine, to `--json`.

    pip install -e ".[bench]"
    python benchmarks/transfer.py --json docs/measurements/transfer-digits.json
"""

from __future__ import annotations

import argparse
import json
import time

import keras
import numpy as np

from ninlayers import NiNBackbone, NiNImageClassifier, presets
from ninlayers.app import artifacts, machine

ARMS = ("scratch", "pretrained", "frozen trunk")


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`(pool_x, pool_y, test_x, test_y)`: 28x28x1 floats in [0, 1]."""
    from sklearn.datasets import load_digits

    found = load_digits()
    images = (found.images / 16.0).astype("float32")[..., None]
    images = np.asarray(keras.ops.image.resize(images, (28, 28))).clip(0, 1)
    rng = np.random.default_rng(1234)  # one split for every run
    pool, test = [], []
    for label in range(10):
        members = rng.permutation(np.flatnonzero(found.target == label))
        half = len(members) // 2
        pool.extend(members[:half])
        test.extend(members[half:])
    pool, test = np.array(pool), np.array(test)
    return images[pool], found.target[pool], images[test], found.target[test]


def labelled(x, y, per_class: int | None, seed: int):
    """The first `per_class` images of each class in a seeded order."""
    if per_class is None:
        return x, y
    rng = np.random.default_rng(seed)
    keep = np.concatenate(
        [rng.permutation(np.flatnonzero(y == c))[:per_class] for c in range(10)]
    )
    return x[keep], y[keep]


MOMENTUM = 0.9


def model_for(arm: str) -> NiNImageClassifier:
    if arm == "scratch":
        preset = presets.get("fashion_mnist")
        return NiNImageClassifier(
            NiNBackbone(**{**preset.backbone, "batch_norm_momentum": MOMENTUM}),
            num_classes=10,
            head_final_activation=False,
        )
    model = NiNImageClassifier.from_preset(
        "fashion_mnist", num_classes=10, batch_norm_momentum=MOMENTUM
    )
    model.backbone.trainable = arm != "frozen trunk"
    return model


def run(arm, x, y, test_x, test_y, steps: int, seed: int) -> dict:
    keras.utils.set_random_seed(seed)
    model = model_for(arm)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    draw = np.random.default_rng(seed).integers(0, len(x), steps * 32)
    start = time.perf_counter()
    model.fit(x[draw], y[draw], batch_size=32, epochs=1, shuffle=False, verbose=0)
    seconds = time.perf_counter() - start
    probs = model.predict(test_x, batch_size=256, verbose=0)
    accuracy = float(np.mean(probs.argmax(-1) == test_y))
    return {"arm": arm, "seed": seed, "accuracy": accuracy, "fit_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--json")
    args = parser.parse_args()
    pool_x, pool_y, test_x, test_y = digits()
    info = machine.describe()
    print(f"{machine.one_line(info)}; {len(test_x)} held-out digits")
    runs = []
    for per_class in (10, 50, None):
        for seed in range(args.seeds):
            x, y = labelled(pool_x, pool_y, per_class, seed)
            for arm in ARMS:
                result = run(arm, x, y, test_x, test_y, args.steps, seed)
                result.update(per_class=per_class or "all", labelled=len(x))
                runs.append(result)
                print(json.dumps(result), flush=True)
    print(f"\n| labelled per class | {' | '.join(ARMS)} |")
    print("| --- |" + " ---: |" * len(ARMS))
    for per_class in (10, 50, "all"):
        cells = []
        for arm in ARMS:
            found = [
                r["accuracy"]
                for r in runs
                if r["per_class"] == per_class and r["arm"] == arm
            ]
            seeds = ", ".join(f"{a:.3f}" for a in found)
            cells.append(f"{np.mean(found):.3f} ({seeds})")
        print(f"| {per_class} | {' | '.join(cells)} |")
    if args.json:
        artifacts.write_json(
            args.json, {"machine": info, "steps": args.steps, "runs": runs}
        )


if __name__ == "__main__":
    main()
