"""Export NiN for serving (SavedModel) and for phones (TFLite), and check both.

python examples/export.py [--output DIR]
"""

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import ninlayers  # noqa: E402
from ninlayers import export  # noqa: E402


def main(output: str) -> dict:
    model = ninlayers.NiN()  # train it first in real use
    images = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype("float32")
    reference = export.float32_copy(model).predict(images, verbose=0)

    saved = export.export_saved_model(model, Path(output) / "saved_model")
    loaded = tf.saved_model.load(str(saved))  # keep it: it owns the variables
    served = loaded.serve(tf.constant(images)).numpy()

    path = export.to_tflite(model, Path(output) / "nin.tflite")
    interpreter = tf.lite.Interpreter(model_path=str(path))
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, images)
    interpreter.invoke()
    lite = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    errors = {
        "saved_model": float(np.abs(served - model.predict(images, verbose=0)).max()),
        "tflite": float(np.abs(lite - reference).max()),
    }
    print(
        f"SavedModel in {saved}, TFLite in {path} "
        f"({path.stat().st_size / 1e6:.1f} MB); largest differences {errors}"
    )
    return errors


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default=tempfile.mkdtemp())
    main(parser.parse_args().output)
