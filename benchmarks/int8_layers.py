"""Where int8 inference time goes: each NiN stage alone, in LiteRT, against
the multiply-adds it does.

Each layer of the pretrained `fashion_mnist` preset (no test-time flip) is
converted alone to a full-integer `.tflite` file (int8 in and out,
calibrated on 200 training images) and timed in LiteRT (XNNPACK, every
core) at batch 64, alternating between layers, repeat after repeat. It
prints microseconds per image and GMAC/s per stage, and what the whole
network would reach if every stage ran at the best stage's rate: the
ceiling of int8 inference for this network with this runtime on this
machine.

    python benchmarks/int8_layers.py --json docs/measurements/int8-layers.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from ninlayers import NiN, export  # noqa: E402
from ninlayers.app import artifacts, data  # noqa: E402
from ninlayers.app.ceiling import multiply_adds_per_layer  # noqa: E402


def stage_interpreters(model: keras.Model, calibration: np.ndarray, directory: str):
    """Each layer alone as an int8 `.tflite` file (int8 in, int8 out),
    calibrated on what the layers before it make of `calibration`; its
    LiteRT interpreter set up for batch 64, by name."""
    from ai_edge_litert.interpreter import Interpreter

    interpreters, x = {}, calibration.astype("float32") / 255.0
    for layer in model.layers[1:]:
        inputs = keras.Input(layer.input.shape[1:])
        alone = keras.Model(inputs, layer(inputs))
        path = f"{directory}/{layer.name}.tflite"
        export.export(
            alone, path, int8=True, calibration=x, input_type="int8", output_type="int8"
        )
        x = np.asarray(alone.predict(x, verbose=0))
        interpreter = Interpreter(path, num_threads=os.cpu_count())
        index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(index, (64, *layer.input.shape[1:]))
        interpreter.allocate_tensors()
        interpreter.set_tensor(index, np.zeros((64, *layer.input.shape[1:]), "int8"))
        interpreters[layer.name] = interpreter
    return interpreters


def main(repeats: int, json_path: str | None) -> dict:
    import tempfile

    (x_train, _), _ = data.load_fashion_mnist()
    model = export.float32_copy(NiN.from_preset("fashion_mnist", test_time_flip=False))
    macs = multiply_adds_per_layer(model)
    calls = 32  # batches of 64 per timing
    with tempfile.TemporaryDirectory() as tmp:
        interpreters = stage_interpreters(model, x_train[:200, ..., None], tmp)
        seconds = {name: [] for name in interpreters}
        for interpreter in interpreters.values():
            interpreter.invoke()
        for _ in range(repeats):
            for name, interpreter in interpreters.items():
                start = time.perf_counter()
                for _ in range(calls):
                    interpreter.invoke()
                seconds[name].append(time.perf_counter() - start)
    rows = {}
    for name, values in seconds.items():
        alone = statistics.median(values) / (calls * 64)
        rows[name] = {
            "us_per_image": alone * 1e6,
            "macs_per_image": macs[name],
            "gmacs_per_second": macs[name] / alone / 1e9,
        }
    best = max(r["gmacs_per_second"] for r in rows.values())
    total_macs = sum(macs.values())
    total_s = sum(r["us_per_image"] for r in rows.values()) / 1e6
    result = {
        "stages": rows,
        "repeats": repeats,
        "stages_images_per_second": 1 / total_s,
        "best_stage_gmacs_per_second": best,
        "ceiling_images_per_second": best * 1e9 / total_macs,
        "every_repeat_seconds": seconds,
    }
    print(f"{'stage':<8} {'us/image':>9} {'M MACs':>8} {'GMAC/s':>8}")
    for name, r in rows.items():
        print(
            f"{name:<8} {r['us_per_image']:9.1f} {r['macs_per_image'] / 1e6:8.1f} "
            f"{r['gmacs_per_second']:8.0f}"
        )
    print(
        f"stages one after another: {result['stages_images_per_second']:.0f} "
        f"images/s; every stage at the best stage's {best:.0f} GMAC/s: "
        f"{result['ceiling_images_per_second']:.0f} images/s"
    )
    if json_path:
        artifacts.write_json(json_path, result)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()
    main(args.repeats, args.json)
