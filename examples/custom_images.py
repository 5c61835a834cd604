"""Train NiN on your own pictures: one sub-folder per class.

Without --images it writes a small folder of generated pictures first.

    python examples/custom_images.py [--images DIR] [--quick] [--output DIR]
"""

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from ninlayers import app  # noqa: E402


def make_folder(root: Path, per_class: int) -> Path:
    """Writes PNGs of three classes (horizontal, vertical, diagonal lines)."""
    rng = np.random.default_rng(0)
    for name in ("horizontal", "vertical", "diagonal"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 40, (40, 40)).astype(np.uint8)
            r, c = rng.integers(5, 30, 2)
            if name == "horizontal":
                pixels[r : r + 3, 5:35] = 255
            elif name == "vertical":
                pixels[5:35, c : c + 3] = 255
            else:
                for k in range(30):
                    pixels[5 + k, 5 + k : 8 + k] = 255
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def main(images: str | None, quick: bool, output: str) -> dict:
    folder = (
        Path(images)
        if images
        else make_folder(Path(output) / "images", 40 if quick else 200)
    )
    metrics = app.train(
        "default",
        Path(output) / "run",
        image_folder=folder,
        input_size=28,
        epochs=2 if quick else 10,
        batch_size=16,
        learning_rate=0.05,
        verbose=0,
    )
    print(
        f"classes {metrics['class_names']}: validation accuracy "
        f"{metrics['test']['accuracy']:.3f}; model in {output}/run/model.keras"
    )
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", default=tempfile.mkdtemp())
    args = parser.parse_args()
    main(args.images, args.quick, args.output)
