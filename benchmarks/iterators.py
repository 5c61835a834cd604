"""Epoch times with a new input iterator per epoch, and with one for all.

    python benchmarks/iterators.py --epochs 20 --images 8192

Trains the default NiN (batch norm, the per-device precision) on the first
`--images` Fashion-MNIST training images with the default augmentation, for
`--epochs` short epochs, twice, each in a fresh process:

- `per-epoch`: `fit(dataset, epochs=N)`, so Keras makes a new iterator every
  epoch (what `fit` does with any finite dataset);
- `one`: `fit(dataset.repeat(), epochs=N, steps_per_epoch=S)`, one iterator
  for the whole fit (what `ninlayers train` does).

It prints every epoch's seconds and, per mode, the median, the share of
epochs over 1.4x the fastest one, and the ratio of the total times. See
docs/performance.md for the figures measured on this project's machines.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

MODES = ("per-epoch", "one")


def _child(mode: str, epochs: int, images: int) -> list[float]:
    import keras

    from ninlayers import NiN
    from ninlayers.app import data as datasets

    (x, y), _ = datasets.load_fashion_mnist()
    x, y = x[:images], y[:images]
    keras.utils.set_random_seed(0)
    model = NiN(num_classes=10, use_batch_norm=True, head_final_activation=False)
    model.compile(
        optimizer=keras.optimizers.SGD(0.02, momentum=0.9, nesterov=True),
        loss="sparse_categorical_crossentropy",
    )
    ds = datasets.make_dataset(
        x, y, 64, shuffle=True, seed=0, augment=True, erasing=0.25
    )
    seconds: list[float] = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.start)
            print(f"{mode} epoch {epoch + 1}: {seconds[-1]:.2f} s", flush=True)

    if mode == "one":
        steps = -(-images // 64)
        model.fit(
            ds.repeat(),
            epochs=epochs,
            steps_per_epoch=steps,
            callbacks=[Timer()],
            verbose=0,
        )
    else:
        model.fit(ds, epochs=epochs, callbacks=[Timer()], verbose=0)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--json")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.epochs, args.images)))
        return
    result = {}
    for mode in MODES:
        out = (
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    mode,
                    "--epochs",
                    str(args.epochs),
                    "--images",
                    str(args.images),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()
        )
        print("\n".join(out[:-1]), flush=True)
        result[mode] = json.loads(out[-1])
    fastest = min(min(s) for s in result.values())
    print(f"\n{'iterators':>10} {'median s':>9} {'slow epochs':>12} {'total s':>8}")
    for mode, seconds in result.items():
        slow = sum(s > 1.4 * fastest for s in seconds)
        print(
            f"{mode:>10} {statistics.median(seconds):9.2f} "
            f"{slow:>5} of {len(seconds):<4} {sum(seconds):8.1f}"
        )
    ratio = sum(result["per-epoch"]) / sum(result["one"])
    print(f"one iterator is {ratio:.2f}x as fast over the whole run")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {"images": args.images, "epochs_seconds": result, "ratio": ratio},
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
