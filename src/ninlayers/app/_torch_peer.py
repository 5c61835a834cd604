"""Plain PyTorch's NiN, bfloat16 autocast and channels-last: a benchmark peer.

The same network as `ninlayers.NiN()` (three NiN blocks of 96, 256 and 384
filters, each convolution followed by batch norm and ReLU, 3x3/2 max
pooling after each, a 10-class NiN head without the last batch norm and
ReLU, global average pooling), written the way PyTorch's documentation
recommends for CPUs: channels-last memory, bfloat16 autocast, Adam 1e-3.

Run as a child process by `ninlayers.app.benchmark` (TensorFlow and PyTorch
each bring their own oneDNN and OpenMP, and training both in one process has
crashed):

    python -m ninlayers.app._torch_peer DATA.npz BATCH_SIZE

It loads `x` (NHWC float32) and `y` from DATA.npz, prints `ready`, then for
each line read from stdin trains one epoch (`fit`) or predicts every image
in batches of 32, Keras's default (`predict`), and prints `done`.
"""

from __future__ import annotations

import sys

import numpy as np

from ninlayers.app._keras_peer import serve


def _network():
    from torch import nn

    def unit(c_in: int, filters: int, kernel: int, last: bool = False) -> list:
        conv = nn.Conv2d(c_in, filters, kernel, padding=kernel // 2, bias=last)
        return [conv] if last else [conv, nn.BatchNorm2d(filters), nn.ReLU()]

    def block(c_in: int, filters: int, kernel: int, head: bool = False) -> list:
        return [
            *unit(c_in, filters, kernel),
            *unit(filters, filters, 1),
            *unit(filters, filters, 1, last=head),
        ]

    return nn.Sequential(
        *block(1, 96, 3),
        nn.MaxPool2d(3, 2),
        *block(96, 256, 3),
        nn.MaxPool2d(3, 2),
        *block(256, 384, 3),
        nn.MaxPool2d(3, 2),
        *block(384, 10, 3, head=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def predict_all(net, x, batch_size: int = 32) -> None:
    """Plain PyTorch's inference: class probabilities of every image of `x`
    (NCHW in channels-last memory), in batches under bfloat16 autocast, as
    NumPy arrays (the peer's `predict`; benchmarks/ time it too)."""
    import torch

    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for i in range(0, len(x), batch_size):
            torch.softmax(net(x[i : i + batch_size]).float(), -1).numpy()


def train_epoch(net, optimizer, x, y, batch_size: int) -> None:
    """Plain PyTorch's training: one pass over `x` (NCHW in channels-last
    memory) and `y` in batches under bfloat16 autocast (the peer's `fit`;
    benchmarks/ profile it too)."""
    import torch

    net.train()
    for i in range(0, len(x), batch_size):
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = net(x[i : i + batch_size])
            loss = torch.nn.functional.cross_entropy(logits, y[i : i + batch_size])
        loss.backward()
        optimizer.step()


def peer(x: np.ndarray, y: np.ndarray) -> tuple:
    """The peer ready to train: `x` (NHWC float32) as PyTorch's
    channels-last NCHW, `y` as int64, the network in channels-last memory
    and its Adam (1e-3); what `train_epoch` takes."""
    import torch

    net = _network().to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    # NHWC in memory, seen as NCHW: PyTorch's channels-last format.
    images = torch.from_numpy(x).permute(0, 3, 1, 2)
    return images, torch.from_numpy(y.astype(np.int64)), net, optimizer


def main(argv: list[str]) -> None:
    data = np.load(argv[0])
    batch_size = int(argv[1])
    x, y, net, optimizer = peer(data["x"], data["y"])

    def predict() -> None:
        net.eval()
        predict_all(net, x)

    serve(lambda: train_epoch(net, optimizer, x, y, batch_size), predict)


if __name__ == "__main__":
    main(sys.argv[1:])
