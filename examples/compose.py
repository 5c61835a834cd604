"""Compose NiNBlock and NiNClassifierHead into your own Keras model.

Trains a small functional NiN on a synthetic shapes task, saves it, and
reloads it without custom_objects.

    python examples/compose.py [--quick] [--output DIR]
"""

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import ninlayers  # noqa: E402


def shapes(n, size=16, seed=0):
    """Bars, squares and diagonals at random places: four classes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.uniform(0, 0.2, (n, size, size, 1)).astype("float32")
    for i, label in enumerate(y):
        r, c = rng.integers(0, size - 6, 2)
        if label == 0:
            x[i, r + 3, c : c + 6] = 1
        elif label == 1:
            x[i, r : r + 6, c + 3] = 1
        elif label == 2:
            x[i, r : r + 4, c : c + 4] = 1
        else:
            x[i, np.arange(6) + r, np.arange(6) + c] = 1
    return x, y


def main(quick: bool, output: str) -> float:
    x, y = shapes(1024 if quick else 4096)
    inputs = keras.Input((16, 16, 1))
    h = ninlayers.NiNBlock(16, 3, use_batch_norm=True, batch_norm_momentum=0.9)(inputs)
    h = keras.layers.MaxPooling2D(2)(h)
    h = ninlayers.NiNBlock(32, 3, use_batch_norm=True, batch_norm_momentum=0.9)(h)
    outputs = ninlayers.NiNClassifierHead(
        4, final_activation=False, use_batch_norm=True
    )(h)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=5 if quick else 8, batch_size=32, verbose=0)
    path = os.path.join(output, "compose.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    x_test, y_test = shapes(256, seed=1)
    accuracy = float(np.mean(reloaded.predict(x_test, verbose=0).argmax(-1) == y_test))
    print(f"saved {path}; reloaded test accuracy {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", default=tempfile.mkdtemp())
    args = parser.parse_args()
    main(args.quick, args.output)
