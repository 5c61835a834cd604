"""Class activation maps: where NiN saw each class.

Trains a quick NiN on a slice of Fashion-MNIST (or loads --model) and draws
the maps of the first test images.

    python examples/cam.py [--model runs/fashion-mnist/model.keras] [--quick]
"""

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

import ninlayers  # noqa: E402
from ninlayers.app import data, plots  # noqa: E402


def main(model_path: str | None, quick: bool, output: str) -> Path:
    (x, y), (x_test, y_test) = data.load_fashion_mnist()
    x, x_test = x[..., None] / 255.0, x_test[..., None] / 255.0
    if model_path:
        model = keras.saving.load_model(model_path)
    else:
        model = ninlayers.NiN(use_batch_norm=True, head_final_activation=False)
        model.compile()
        n = 2048 if quick else 60000
        model.fit(x[:n], y[:n], epochs=1 if quick else 3, batch_size=64, verbose=0)
    images = x_test[:12].astype("float32")
    maps, probs = ninlayers.explain.class_activation_maps(model, images)
    path = plots.plot_class_activation_maps(
        images,
        maps,
        probs,
        data.CLASS_NAMES,
        Path(output) / "cam.png",
        labels=y_test[:12],
    )
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", default=tempfile.mkdtemp())
    args = parser.parse_args()
    main(args.model, args.quick, args.output)
