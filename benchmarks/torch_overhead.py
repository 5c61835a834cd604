"""PyTorch: where a `NiN()` forward pass spends its time beyond the kernels.

Times, alternating in one process, the same images through four ways, from
the bare kernels to Keras's whole `predict`, and prints milliseconds per
batch for every repeat and the medians:

- `plain`: plain PyTorch's NiN (the benchmark's peer), bfloat16 autocast;
- `layer_call`: NiN's layers called with `Layer.call` directly (its own
  kernel paths, no Keras `Layer.__call__`), weights converted once;
- `model_call`: `model(x)` under `torch.no_grad()` inside
  `cached_weights()`, what `predict` runs per batch (weights converted
  once, batch norm folded, the layers through `Layer.call`);
- `model_call_uncached`: the same outside it (each layer's
  `Layer.__call__`, a batch norm kernel each, weights converted per call);
- `predict`: `model.predict`.

    python benchmarks/torch_overhead.py --batch-size 2 --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from contextlib import nullcontext

os.environ["KERAS_BACKEND"] = "torch"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import ninlayers  # noqa: E402
from ninlayers import _torch_kernels  # noqa: E402
from ninlayers.app import artifacts, machine  # noqa: E402
from ninlayers.app._torch_peer import _network, predict_all  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="write every repeat here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x = np.random.default_rng(0).uniform(size=(args.images, 28, 28, 1))
    x = x.astype("float32")
    ways = _ways(ninlayers.NiN(), x, args.batch_size)
    batches = -(-args.images // args.batch_size)
    for way in ways.values():
        way()  # warm-up
    ms: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.repeats):
        for name, way in ways.items():
            start = time.perf_counter()
            way()
            ms[name].append((time.perf_counter() - start) / batches * 1000)
    medians = {name: statistics.median(v) for name, v in ms.items()}
    for name, values in ms.items():
        repeats = " ".join(f"{v:6.2f}" for v in values)
        print(f"{name:20} {repeats}  median {medians[name]:6.2f} ms/batch")
    if args.json:
        result = {
            "machine": machine.describe(),
            "batch_size": args.batch_size,
            "threads": torch.get_num_threads(),
            "ms_per_batch": ms,
            "medians": medians,
        }
        artifacts.write_json(args.json, result)


def _ways(model: keras.Model, x: np.ndarray, batch_size: int) -> dict:
    net = _network().to(memory_format=torch.channels_last).eval()
    x_nchw = torch.from_numpy(x).permute(0, 3, 1, 2)
    starts = range(0, len(x), batch_size)
    dtype = getattr(torch, model.compute_dtype)

    def plain() -> None:
        predict_all(net, x_nchw, batch_size)

    def layer_call() -> None:
        with torch.no_grad(), _torch_kernels.cached_weights():
            for i in starts:
                h = torch.from_numpy(x[i : i + batch_size]).to(dtype)
                for layer in model.layers[1:]:
                    pool = isinstance(layer, keras.layers.MaxPooling2D)
                    h = layer.call(h) if pool else layer.call(h, training=False)
                h.float().numpy()

    def model_call(cached: bool) -> None:
        weights = _torch_kernels.cached_weights() if cached else nullcontext()
        with torch.no_grad(), weights:
            for i in starts:
                model(x[i : i + batch_size], training=False).numpy()

    return {
        "plain": plain,
        "layer_call": layer_call,
        "model_call": lambda: model_call(True),
        "model_call_uncached": lambda: model_call(False),
        "predict": lambda: model.predict(x, batch_size=batch_size, verbose=0),
    }


if __name__ == "__main__":
    main()
