"""Export NiN for serving (SavedModel), phones (LiteRT, int8) and ONNX, and
run each file in its runtime.

python examples/export.py [--output DIR]
"""

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import ninlayers  # noqa: E402
from ninlayers import export  # noqa: E402
from ninlayers.exported import ExportedModel  # noqa: E402


def main(output: str) -> dict:
    model = ninlayers.NiN.from_preset("fashion_mnist")  # pretrained, in the package
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)  # raw pixels
    calibration = rng.integers(
        0, 256, (100, 28, 28, 1), dtype=np.uint8
    )  # use real ones
    reference = export.float32_copy(model).predict(images, verbose=0)

    errors = {}
    for name, options in [
        ("saved_model", {}),
        ("nin.tflite", {}),
        ("nin.onnx", {}),
        ("nin-int8.tflite", {"int8": True, "calibration": calibration}),
    ]:
        path = export.export(model, Path(output) / name, **options)
        scores = ExportedModel(path).predict(images)  # LiteRT, onnxruntime, TF
        errors[name] = float(np.abs(scores - reference).max())
    print(f"exported to {output}; largest differences from Keras: {errors}")
    return errors


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default=tempfile.mkdtemp())
    main(parser.parse_args().output)
