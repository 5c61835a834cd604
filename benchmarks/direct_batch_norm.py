"""PyTorch: NiN's batch norms through Keras's `Layer.__call__` or directly.

On the torch backend `NiNBlock` calls each batch norm's PyTorch kernel
itself (`ninlayers.layers._normalize`) instead of through Keras's
`Layer.__call__`. This script alternates, in one process, the two ways on
`NiN()` (`predict` of `--images` images, batch 32, and one `fit` epoch,
batch 64), with plain PyTorch's NiN predict (the benchmark's peer) as the
yardstick, and prints every repeat, the medians and their ratios:

    python benchmarks/direct_batch_norm.py --json direct-batch-norm.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ["KERAS_BACKEND"] = "torch"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import ninlayers  # noqa: E402
from ninlayers import layers  # noqa: E402
from ninlayers.app import artifacts, machine  # noqa: E402
from ninlayers.app._torch_peer import _network  # noqa: E402

WAYS = {
    "layer_call": lambda norm, x, training: norm(x, training=training),
    "direct": layers._normalize,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--json", help="write every repeat here")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(args.images, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, args.images)
    model = ninlayers.NiN()
    model.compile()
    net = _network().to(memory_format=torch.channels_last).eval()
    x_nchw = torch.from_numpy(x).permute(0, 3, 1, 2)

    def plain() -> None:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            for i in range(0, len(x), 32):
                torch.softmax(net(x_nchw[i : i + 32]).float(), -1).numpy()

    tasks = {
        "predict": lambda: model.predict(x, verbose=0),
        "fit": lambda: model.fit(x, y, batch_size=64, epochs=1, verbose=0),
    }
    rates: dict[str, list[float]] = {"plain_torch_predict": []}
    rates.update({f"{t}_{w}": [] for t in tasks for w in WAYS})
    plain()
    for task in tasks.values():
        task()  # warm-up
    for repeat in range(args.repeats):
        rates["plain_torch_predict"].append(args.images / _seconds(plain))
        order = list(WAYS) if repeat % 2 == 0 else list(reversed(WAYS))
        for task_name, task in tasks.items():
            for way in order:
                layers._normalize = WAYS[way]
                rates[f"{task_name}_{way}"].append(args.images / _seconds(task))
        layers._normalize = WAYS["direct"]
    medians = {name: statistics.median(v) for name, v in rates.items()}
    for name, values in rates.items():
        repeats = " ".join(f"{v:6.0f}" for v in values)
        print(f"{name:22} {repeats}  median {medians[name]:6.0f} img/s")
    ratios = {t: medians[f"{t}_direct"] / medians[f"{t}_layer_call"] for t in tasks}
    for task, ratio in ratios.items():
        print(f"{task}: direct / layer call {ratio:.2f}x")
    versus = medians["predict_direct"] / medians["plain_torch_predict"]
    print(f"predict, direct, against plain PyTorch: {versus:.2f}x")
    if args.json:
        result = {
            "machine": machine.describe(),
            "images": args.images,
            "images_per_second": rates,
            "medians": medians,
            "ratios": ratios,
            "predict_direct_versus_plain_torch": versus,
        }
        artifacts.write_json(args.json, result)


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
