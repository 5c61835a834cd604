"""PyTorch's eager NiN, trained in bfloat16 autocast: the benchmark's peer.

Run as a child process by `ninlayers.app.benchmark` (TensorFlow and PyTorch
each bring their own oneDNN and OpenMP, and training both in one process has
crashed):

    python -m ninlayers.app._torch_peer DATA.npz BATCH_SIZE

It loads `x` (NHWC float32) and `y` from DATA.npz, prints `ready`, then
trains one epoch per line read from stdin and prints the last loss.
"""

from __future__ import annotations

import sys

import numpy as np


def _network():
    from torch import nn

    def block(c_in: int, filters: int, kernel: int) -> list:
        return [
            nn.Conv2d(c_in, filters, kernel, padding=kernel // 2),
            nn.ReLU(),
            nn.Conv2d(filters, filters, 1),
            nn.ReLU(),
            nn.Conv2d(filters, filters, 1),
            nn.ReLU(),
        ]

    return nn.Sequential(
        *block(1, 96, 3),
        nn.MaxPool2d(3, 2),
        *block(96, 256, 3),
        nn.MaxPool2d(3, 2),
        *block(256, 384, 3),
        nn.MaxPool2d(3, 2),
        *block(384, 10, 3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def main(argv: list[str]) -> None:
    import torch

    data = np.load(argv[0])
    batch_size = int(argv[1])
    x = torch.from_numpy(np.transpose(data["x"], (0, 3, 1, 2)).copy())
    y = torch.from_numpy(data["y"].astype(np.int64))
    net = _network()
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    print("ready", flush=True)
    for _ in sys.stdin:
        net.train()
        for i in range(0, len(x), batch_size):
            optimizer.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = net(x[i : i + batch_size])
                loss = torch.nn.functional.cross_entropy(logits, y[i : i + batch_size])
            loss.backward()
            optimizer.step()
        print(loss.item(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
