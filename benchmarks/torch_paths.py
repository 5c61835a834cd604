"""PyTorch: NiN's own paths around Keras's, each against the way before it.

Alternates, in one process, the two ways of one change on `NiN()`
(`predict` of `--images` images, batch 32, and one `fit` epoch, batch 64),
with plain PyTorch's NiN predict (the benchmark's peer) as the yardstick,
and prints every repeat, the medians and their ratios. The changes:

- `direct-batch-norm`: `NiNBlock` calls its batch norms' PyTorch kernel
  itself (`ninlayers.layers._normalize`), against Keras's `Layer.__call__`.
- `weights`: a convolution's kernel laid out in PyTorch's channels-last
  weight format once per call, and, in `predict` and `evaluate`,
  converted once while it is unchanged
  (`ninlayers._torch_kernels.cached_weights`), against a cast per call,
  which PyTorch then relaid out in the forward and the backward pass.
- `folded-batch-norm`: in `predict` and `evaluate`, each batch norm folded
  into the convolution before it and ReLU in place
  (`ninlayers._torch_kernels.conv_batch_norm`, `relu`), against a batch
  norm kernel and a new tensor per ReLU.
- `layer-call`: in `predict` and `evaluate`, the classifier's layers run
  through `Layer.call` (`ninlayers._torch_inference`), against Keras's
  functional call of each layer's `Layer.__call__`.
- `inference`: the last two together, against neither.
- `plan`: in `predict` and `evaluate`, the trunk and the head's block run
  as a plan of PyTorch calls made once while no weight changes
  (`ninlayers._torch_inference._plan`), against each block's `Layer.call`.

    python benchmarks/torch_paths.py --change weights --json weights.json
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics

os.environ["KERAS_BACKEND"] = "torch"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import ninlayers  # noqa: E402
from ninlayers import (  # noqa: E402
    _torch_inference,
    _torch_kernels,
    classifier,
    layers,
)
from ninlayers.app import artifacts, machine  # noqa: E402
from ninlayers.app._torch_peer import _network, predict_all  # noqa: E402
from ninlayers.app.benchmark import seconds  # noqa: E402


def _kernel_cast_per_call(kernel, dtype):
    # The conversion before `weights`: Keras's (autocast) read, then a cast.
    return keras.ops.convert_to_tensor(kernel).to(dtype).permute(3, 2, 0, 1)


_UNFOLDED = [
    (_torch_kernels, "conv_batch_norm", lambda conv, norm, x: None),
    (_torch_kernels, "relu", torch.relu),
]
_FOLDED = [
    (_torch_kernels, "conv_batch_norm", _torch_kernels.conv_batch_norm),
    (_torch_kernels, "relu", _torch_kernels.relu),
]
_FUNCTIONAL = [(_torch_inference, "chain", lambda model, inputs: None)]
_LAYER_CALL = [(_torch_inference, "chain", _torch_inference.chain)]

#: For each change, its two ways: (module, attribute, value) to set.
CHANGES: dict[str, dict[str, list[tuple]]] = {
    "direct-batch-norm": {
        "before": [
            (layers, "_normalize", lambda norm, x, training: norm(x, training=training))
        ],
        "after": [(layers, "_normalize", layers._normalize)],
    },
    "weights": {
        "before": [
            (_torch_kernels, "_kernel", _kernel_cast_per_call),
            (classifier, "inference_weights", contextlib.nullcontext),
        ],
        "after": [
            (_torch_kernels, "_kernel", _torch_kernels._kernel),
            (classifier, "inference_weights", classifier.inference_weights),
        ],
    },
    "folded-batch-norm": {"before": _UNFOLDED, "after": _FOLDED},
    "layer-call": {"before": _FUNCTIONAL, "after": _LAYER_CALL},
    "inference": {"before": _UNFOLDED + _FUNCTIONAL, "after": _FOLDED + _LAYER_CALL},
    "plan": {
        "before": [(_torch_inference, "_plan", lambda layers, x: None)],
        "after": [(_torch_inference, "_plan", _torch_inference._plan)],
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--change", choices=sorted(CHANGES), required=True)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument(
        "--predict-batch-size",
        type=int,
        default=32,
        help="predict's batch size, for both (Keras's default: 32)",
    )
    parser.add_argument("--json", help="write every repeat here")
    args = parser.parse_args()
    ways = CHANGES[args.change]
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(args.images, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, args.images)
    model = ninlayers.NiN()
    model.compile()
    net = _network().to(memory_format=torch.channels_last).eval()
    x_nchw = torch.from_numpy(x).permute(0, 3, 1, 2)

    def plain() -> None:
        predict_all(net, x_nchw, args.predict_batch_size)

    tasks = {
        "predict": lambda: model.predict(
            x, batch_size=args.predict_batch_size, verbose=0
        ),
        "fit": lambda: model.fit(x, y, batch_size=64, epochs=1, verbose=0),
    }
    rates: dict[str, list[float]] = {"plain_torch_predict": []}
    rates.update({f"{t}_{w}": [] for t in tasks for w in ways})
    plain()
    for task in tasks.values():
        task()  # warm-up
    for repeat in range(args.repeats):
        rates["plain_torch_predict"].append(args.images / seconds(plain))
        order = list(ways) if repeat % 2 == 0 else list(reversed(ways))
        for task_name, task in tasks.items():
            for way in order:
                _install(ways[way])
                rates[f"{task_name}_{way}"].append(args.images / seconds(task))
        _install(ways["after"])
    _report(args, rates, list(tasks))


def _install(settings: list[tuple]) -> None:
    for module, name, value in settings:
        setattr(module, name, value)


def _report(args: argparse.Namespace, rates: dict[str, list[float]], tasks) -> None:
    medians = {name: statistics.median(v) for name, v in rates.items()}
    for name, values in rates.items():
        repeats = " ".join(f"{v:6.0f}" for v in values)
        print(f"{name:22} {repeats}  median {medians[name]:6.0f} img/s")
    ratios = {t: medians[f"{t}_after"] / medians[f"{t}_before"] for t in tasks}
    faster = {
        t: sum(
            a > b
            for a, b in zip(rates[f"{t}_after"], rates[f"{t}_before"], strict=True)
        )
        for t in tasks
    }
    for task, ratio in ratios.items():
        print(f"{task}: after / before {ratio:.2f}x", end=", ")
        print(f"faster in {faster[task]} of {args.repeats} repeats")
    versus = medians["predict_after"] / medians["plain_torch_predict"]
    print(f"predict, after, against plain PyTorch: {versus:.2f}x")
    if args.json:
        result = {
            "machine": machine.describe(),
            "change": args.change,
            "images": args.images,
            "predict_batch_size": args.predict_batch_size,
            "images_per_second": rates,
            "medians": medians,
            "ratios": ratios,
            "faster_repeats": faster,
            "predict_after_versus_plain_torch": versus,
        }
        artifacts.write_json(args.json, result)


if __name__ == "__main__":
    main()
