"""`ninlayers benchmark --deployment`: exported formats against the seed.

One run exports a model in every format (SavedModel, LiteRT and ONNX, float32
and int8) and times, alternating path by path within each repeat: the
seed's Keras `predict` (float32, batch 32, as the tutorial calls it; once
as Keras feeds it, once without `tf.data`'s autotuning, whose iterators
can end by waiting for their tuning thread), the model's Keras `predict`
(its own precision) and its float32 copy's, then each exported file in its
runtime. It reports images/s at batch 64 and at batch 1, p50 and p99
latency at batch 1, test accuracy, and each path's top-1 agreement with
and largest difference from the Keras float32 model. Every timed repeat is
kept in the result.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ninlayers import export, exported
from ninlayers.app import benchmark, data, inference, machine

__all__ = ["format_deployment", "run_deployment_benchmark"]

#: The exported paths: name -> (file name, int8).
FILES = {
    "saved_model_float32": ("saved_model", False),
    "litert_float32": ("nin.tflite", False),
    "litert_int8": ("nin-int8.tflite", True),
    "onnx_float32": ("nin.onnx", False),
    "onnx_int8": ("nin-int8.onnx", True),
}


def _keras_path(model: Any, batch_size: int | None = 64) -> tuple[Callable, Callable]:
    return (
        lambda x: model.predict(x, batch_size=batch_size, verbose=0),
        lambda x: model.predict_on_batch(x),
    )


def _untuned_keras_path(model: Any) -> tuple[Callable, Callable]:
    """`_keras_path` at Keras's default batch, through the pipeline Keras
    builds for the arrays without `tf.data`'s autotuning (TensorFlow)."""
    from ninlayers._tf_feeding import untuned_array_dataset

    def many(x: np.ndarray) -> Any:
        return model.predict(untuned_array_dataset(x, None), verbose=0)

    return many, lambda x: model.predict_on_batch(x)


def _exported_path(model: exported.ExportedModel) -> tuple[Callable, Callable]:
    return (lambda x: model.predict(x, batch_size=64), model.predict)


def _paths(
    model: Any, directory: Path, calibration: np.ndarray, bar: Any = None
) -> dict[str, tuple]:
    """name -> (predict many images, predict one) for every path."""
    seed = benchmark.seed_model()
    paths = {
        # The seed predicts with Keras's defaults: batch 32, float32.
        "seed_keras": _keras_path(seed, batch_size=None),
        # The same without its iterators' waits for tf.data's tuning thread.
        "seed_keras_untuned": _untuned_keras_path(seed),
        "keras": _keras_path(model),
        "keras_float32": _keras_path(export.float32_copy(model)),
    }
    for name, (file, int8) in FILES.items():
        path = export.export(
            model,
            directory / file,
            int8=int8,
            calibration=calibration if int8 else None,
        )
        paths[name] = _exported_path(exported.ExportedModel(path))
        if bar is not None:
            bar.add(1)
    return paths


def _time_paths(
    paths: dict[str, tuple], x: np.ndarray, repeats: int, single: int, bar: Any = None
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, np.ndarray]]:
    """Seconds per pass over `x` and per batch-1 call, every repeat, and the
    last pass's outputs."""
    batch_s = {name: [] for name in paths}
    latency_s = {name: [] for name in paths}
    outputs = {}
    for many, one in paths.values():  # warm-up
        many(x[:64])
        one(x[:1])
    for _ in range(repeats):
        for name, (many, _) in paths.items():
            start = time.perf_counter()
            outputs[name] = np.asarray(many(x))
            batch_s[name].append(time.perf_counter() - start)
        for name, (_, one) in paths.items():
            for i in range(single):
                start = time.perf_counter()
                one(x[i : i + 1])
                latency_s[name].append(time.perf_counter() - start)
        if bar is not None:
            bar.add(1)
    return batch_s, latency_s, outputs


def _score(outputs: dict[str, np.ndarray], y: np.ndarray) -> dict[str, dict]:
    """Accuracy, and agreement with the Keras float32 model, of each path."""
    reference = outputs["keras_float32"]
    return {
        name: {
            "accuracy": float(np.mean(out.argmax(-1) == y)),
            "agreement": float(np.mean(out.argmax(-1) == reference.argmax(-1))),
            "max_abs_diff": float(np.max(np.abs(out - reference))),
        }
        for name, out in outputs.items()
    }


def run_deployment_benchmark(
    model: Any = "fashion_mnist",
    images: int | None = None,
    repeats: int = 3,
    single: int = 256,
    test_time_flip: bool = False,
    calibration: int = 500,
    data_dir: Any = None,
    print_fn: Callable[[str], None] | None = print,
    verbose: bool = False,
) -> dict[str, Any]:
    """Times and scores every deployment path of `model` in one run.

    Args:
        model: a preset name, `.keras` file, run directory or keras.Model.
            Defaults to the pretrained `"fashion_mnist"`.
        images: int or `None`. The first `images` test images, or all
            10,000 with `None`: each round predicts them all with every path
            (batch 64; the seed's `predict` with its default 32), which
            gives both the speed and the accuracy. Defaults to `None`.
        repeats: int. Timed rounds, alternating the paths. Defaults to `3`.
        single: int. Batch-1 calls per path and round. Defaults to `256`.
        test_time_flip: bool. Export and run the model with test-time flip
            (twice the work per image). Defaults to `False`, one pass per
            image as the seed's model does. Test-time shifts are left out
            either way.
        calibration: int. Training images the int8 files are calibrated on.
        data_dir: Fashion-MNIST's directory, or `None` to look for it.
        print_fn: callable or `None`. Where the table goes.
        verbose: bool. A progress bar (Keras's `Progbar`) over the exports
            and the timed rounds. Defaults to `False`.

    Returns:
        dict: per path `images_per_second` (batch 64, median), `batch1`
        images/s (median), `p50_ms` and `p99_ms` (batch 1), `accuracy`,
        `agreement`, `max_abs_diff`, `x_seed`, `x_untuned_seed` (over
        `seed_keras_untuned`); and every timed repeat.

    Raises:
        DatasetError: if Fashion-MNIST is not found.
    """
    (x_train, _), (x_test, y_test) = data.load_fashion_mnist(data_dir)
    x = x_test[:images, ..., None].astype("float32") / 255.0
    keras_model = export.with_test_time(
        inference._as_model(model), flip=test_time_flip, shift=0
    )
    cal = x_train[:: max(len(x_train) // calibration, 1)][:calibration, ..., None]
    # One step per exported file, then per timed round.
    bar = (
        keras.utils.Progbar(len(FILES) + repeats, unit_name="step") if verbose else None
    )
    with tempfile.TemporaryDirectory(prefix="ninlayers-deploy-") as tmp:
        paths = _paths(keras_model, Path(tmp), cal, bar)
        batch_s, latency_s, outputs = _time_paths(paths, x, repeats, single, bar)
    scores = _score(outputs, y_test[: len(x)])
    result = _summarize(batch_s, latency_s, scores, len(x))
    result.update(
        model=str(model) if isinstance(model, str) else keras_model.name,
        images=len(x),
        repeats=repeats,
        single=single,
        test_time_flip=test_time_flip,
        keras_precision=keras_model.dtype_policy.name,
        machine=machine.describe(),
    )
    if print_fn is not None:
        print_fn(format_deployment(result))
    return result


def _summarize(batch_s, latency_s, scores, images) -> dict[str, Any]:
    seed = images / statistics.median(batch_s["seed_keras"])
    untuned = images / statistics.median(batch_s["seed_keras_untuned"])
    paths = {}
    for name, seconds in batch_s.items():
        rate = images / statistics.median(seconds)
        latencies = np.asarray(latency_s[name]) * 1e3
        paths[name] = {
            "images_per_second": rate,
            "x_seed": rate / seed,
            "x_untuned_seed": rate / untuned,
            "batch1_images_per_second": 1e3 / float(np.mean(latencies)),
            "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99)),
            **scores[name],
        }
    return {"paths": paths, "batch_seconds": batch_s, "latency_seconds": latency_s}


def format_deployment(result: dict[str, Any]) -> str:
    """`run_deployment_benchmark`'s result as a table, with the goal lines."""
    lines = [
        *([f"machine: {machine.one_line(result['machine'])}"] * ("machine" in result)),
        f"{result['model']}, test-time flip {result['test_time_flip']}: "
        f"{result['images']} test images at batch 64 (the seed: 32) and "
        f"{result['single']} at batch 1, median of {result['repeats']} "
        "(seed: untrained weights, speed only)",
        f"{'path':<20} {'img/s b64':>10} {'x seed':>7} {'img/s b1':>9} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'accuracy':>9} {'agree':>7} {'max diff':>9}",
    ]
    for name, p in result["paths"].items():
        seed = name.startswith("seed_keras")  # untrained: speed only
        accuracy = "-" if seed else f"{p['accuracy']:.4f}"
        agree = "-" if seed else f"{p['agreement']:.4f}"
        diff = "-" if seed else f"{p['max_abs_diff']:.1e}"
        lines.append(
            f"{name:<20} {p['images_per_second']:10.0f} {p['x_seed']:7.2f} "
            f"{p['batch1_images_per_second']:9.0f} {p['p50_ms']:7.2f} "
            f"{p['p99_ms']:7.2f} {accuracy:>9} {agree:>7} {diff:>9}"
        )
    int8, float32 = result["paths"]["litert_int8"], result["paths"]["keras_float32"]
    untuned = (
        f" ({int8['x_untuned_seed']:.2f}x without its iterators' waits)"
        if "x_untuned_seed" in int8
        else ""
    )
    lines.append(
        f"LiteRT int8: {int8['x_seed']:.2f}x the seed's Keras predict{untuned}; "
        "accuracy "
        f"{int8['accuracy']:.4f} against {float32['accuracy']:.4f} in float32 "
        f"({100 * (int8['accuracy'] - float32['accuracy']):+.2f} points); "
        f"top-1 agreement {100 * int8['agreement']:.2f}%"
    )
    return "\n".join(lines)
