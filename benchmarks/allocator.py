"""`predict` under glibc's allocator in its two states, alternating.

PyTorch's CPU allocator keeps no pool: each batch's activations (several
megabytes each at batch 32) come from glibc's `malloc`. glibc serves a
block of at least its mmap threshold with fresh pages from the kernel
(zeroed, faulted in on first touch) and moves the threshold up to the
largest block freed so far. So a process that has trained (larger blocks
freed) predicts faster than one that has not. This script alternates,
round by round, `mallopt(M_MMAP_THRESHOLD)` (and the trim threshold) at
glibc's starting 128 KiB against 64 MiB, and times `predict` of `NiN()`
on the active Keras backend and, on PyTorch, of plain PyTorch's NiN (the
benchmark's peer), printing images/s and writing every round to `--json`:

    KERAS_BACKEND=torch python benchmarks/allocator.py --rounds 6

Linux with glibc only. Setting either threshold turns glibc's moving
threshold off for the rest of the process.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import ninlayers  # noqa: E402
from ninlayers.app import artifacts, machine  # noqa: E402
from ninlayers.app.benchmark import seconds  # noqa: E402

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: The two states, by name: (mmap threshold, trim threshold) in bytes.
STATES = {
    "pages_per_batch": (128 << 10, 128 << 10),
    "pages_kept": (64 << 20, 128 << 20),
}


def _set_state(libc: ctypes.CDLL, name: str) -> None:
    mmap, trim = STATES[name]
    if not (
        libc.mallopt(_M_MMAP_THRESHOLD, mmap) and libc.mallopt(_M_TRIM_THRESHOLD, trim)
    ):
        raise SystemExit("mallopt refused the thresholds: is this glibc?")


def _paths(images: int) -> dict[str, Callable[[], object]]:
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(images, 28, 28, 1)).astype("float32")
    model = ninlayers.NiN()
    model.compile()
    backend = keras.backend.backend()
    paths = {f"ninlayers_{backend}": lambda: model.predict(x, verbose=0)}
    if backend == "torch":
        import torch

        from ninlayers.app._torch_peer import _network, predict_all

        net = _network().to(memory_format=torch.channels_last).eval()
        x_nchw = torch.from_numpy(x).permute(0, 3, 1, 2)
        paths["plain_torch"] = lambda: predict_all(net, x_nchw)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--json", help="write every round here")
    args = parser.parse_args()
    libc = ctypes.CDLL("libc.so.6")
    paths = _paths(args.images)
    for fn in paths.values():
        fn()  # warm-up
    rates = {f"{p}_{s}": [] for p in paths for s in STATES}
    for round_ in range(args.rounds):
        order = list(STATES) if round_ % 2 == 0 else list(reversed(STATES))
        for state in order:
            _set_state(libc, state)
            for name, fn in paths.items():
                fn()  # settle into this state's pages
                rates[f"{name}_{state}"].append(args.images / seconds(fn))
    medians = {name: statistics.median(v) for name, v in rates.items()}
    for name, values in rates.items():
        repeats = " ".join(f"{v:6.0f}" for v in values)
        print(f"{name:32} {repeats}  median {medians[name]:6.0f} img/s")
    ratios = {
        p: medians[f"{p}_pages_kept"] / medians[f"{p}_pages_per_batch"] for p in paths
    }
    for name, ratio in ratios.items():
        print(f"{name}: pages kept / pages per batch {ratio:.2f}x")
    if args.json:
        result = {
            "machine": machine.describe(),
            "backend": keras.backend.backend(),
            "images": args.images,
            "states": STATES,
            "images_per_second": rates,
            "medians": medians,
            "ratios": ratios,
        }
        print(f"wrote {artifacts.write_json(args.json, result)}")


if __name__ == "__main__":
    main()
