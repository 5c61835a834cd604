"""Turns a `ninlayers train` run into a shipped preset's weights file.

    python docs/make_preset.py RUN_DIR [--preset fashion_mnist]

Loads `RUN_DIR/model.keras`, copies its weights into the preset's model
(`NiNImageClassifier.from_preset(name, load_weights=False)`, built from
`ninlayers.presets.PRESETS[name]`'s configs, so the two must match),
checks that both predict the same, and writes
`src/ninlayers/weights/<name>.weights.h5` (weights only, no optimizer state)
and `docs/measurements/preset-<name>.json` (the run's `metrics.json`). It
prints the file's SHA-256 for `PRESETS[name].sha256`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from ninlayers import NiNImageClassifier, presets
from ninlayers.saving import load_model

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--preset", default="fashion_mnist")
    args = parser.parse_args()
    trained = load_model(args.run / "model.keras")
    model = NiNImageClassifier.from_preset(args.preset, load_weights=False)
    model.set_weights(trained.get_weights())
    x = np.random.default_rng(0).integers(0, 256, (64, *model.input_shape[1:]))
    x = x.astype("uint8")
    np.testing.assert_allclose(
        model.predict(x, verbose=0), trained.predict(x / 255, verbose=0), atol=2e-2
    )
    target = presets.weights_path(args.preset)
    target.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    measurements = ROOT / "docs" / "measurements" / f"preset-{args.preset}.json"
    shutil.copy(args.run / "metrics.json", measurements)
    test = json.loads(measurements.read_text())["test"]
    print(f"{target}: {target.stat().st_size:,} bytes, sha256 {digest}")
    print(f"run's test accuracy {test['accuracy']:.4f} on {test['examples']} images")


if __name__ == "__main__":
    main()
