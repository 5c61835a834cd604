"""ninlayers' NiN on another Keras backend: a peer of `ninlayers benchmark`.

Run as a child process by `ninlayers.app.benchmark`, with `KERAS_BACKEND`
set (Keras picks its backend once per process):

    KERAS_BACKEND=jax python -m ninlayers.app._keras_peer DATA.npz BATCH_SIZE

It builds `NiN()` with `compile()`'s defaults on that backend, loads `x`
(NHWC float32) and `y` from DATA.npz, prints `ready`, then for each line
read from stdin runs one `fit` epoch (`fit`) or one `predict` (`predict`)
and prints `done`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import numpy as np


def serve(fit: Callable[[], None], predict: Callable[[], None]) -> None:
    """Every peer's protocol: `ready`, then `done` after each `fit` or
    `predict` read from stdin."""
    print("ready", flush=True)
    for line in sys.stdin:
        (predict if line.strip() == "predict" else fit)()
        print("done", flush=True)


def main(argv: list[str]) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import ninlayers

    data = np.load(argv[0])
    batch_size = int(argv[1])
    x, y = data["x"], data["y"]
    model = ninlayers.NiN()
    model.compile()
    serve(
        lambda: model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0),
        lambda: model.predict(x, verbose=0),
    )


if __name__ == "__main__":
    main(sys.argv[1:])
