"""Measures what the pretrained presets' model cards state, per class.

    python docs/make_model_cards.py

For each pretrained preset: the shipped weights on Fashion-MNIST's 10,000
test images (raw `uint8` pixels, the preset's own test-time flip), overall
and per class, printed as a Markdown table and written, with the machine, to
`docs/measurements/model-cards.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ninlayers import NiNImageClassifier, presets
from ninlayers.app import data, machine

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    _, (x, y) = data.load_fashion_mnist()
    names = [n for n, p in presets.PRESETS.items() if p.weights is not None]
    found = {"machine": machine.describe(), "presets": {}}
    for name in names:
        model = NiNImageClassifier.from_preset(name)
        predicted = model.predict(x[..., None], batch_size=500, verbose=0).argmax(-1)
        per_class = {
            label: float(np.mean(predicted[y == index] == index))
            for index, label in enumerate(model.class_names)
        }
        found["presets"][name] = {
            "accuracy": float(np.mean(predicted == y)),
            "per_class": per_class,
            "precision": model.dtype_policy.name,
        }
    print("| class | " + " | ".join(f"`{n}`" for n in names) + " |")
    print("| --- |" + " ---: |" * len(names))
    for label in presets.FASHION_MNIST_CLASSES:
        cells = [f"{found['presets'][n]['per_class'][label]:.3f}" for n in names]
        print(f"| {label} | {' | '.join(cells)} |")
    cells = [f"**{found['presets'][n]['accuracy']:.4f}**" for n in names]
    print(f"| all | {' | '.join(cells)} |")
    out = ROOT / "docs" / "measurements" / "model-cards.json"
    out.write_text(json.dumps(found, indent=2) + "\n")


if __name__ == "__main__":
    main()
