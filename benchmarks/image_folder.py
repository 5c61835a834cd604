"""Streamed image folders: memory against folder size, and whether the input
pipeline keeps up with the model.

Two measurements, printed with the machine (run from the repository root):

1. Peak resident memory of `ninlayers train --image-folder` (a child
   process; its `ru_maxrss`) on a folder of N generated 224x224 RGB JPEGs,
   for each N in `--memory-sizes` (default 2,000 and 20,000), one epoch of a
   small stride-4 network (the pipeline is what is measured, not the model).
2. Starvation: the pipeline's images/s alone (`folders.stream` iterated,
   nothing else running) beside the model's training images/s on tensors
   already in memory, for 28x28 grey (the default recipe's network) and
   224x224 RGB (the tutorial's 224 network), from folders of
   `--pipeline-images` generated images.

    python benchmarks/image_folder.py --output docs/measurements/image-folder.json

Generating 20,000 JPEGs takes a minute or two and about 300 MB of disk (in
a temporary folder, removed afterwards).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Small and quick at 224x224: the memory runs measure the input path.
MEMORY_ARCHITECTURE = '[[16, 11, 4, "valid"], [32, 5]]'


def generate(
    root: Path, count: int, size: int, channels: int, classes: int = 4
) -> Path:
    """`count` JPEGs (PNG for grey) of smooth shapes, `classes` folders."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(count)
    mode = "L" if channels == 1 else "RGB"
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        c = i % classes
        colour = tuple(int(v) for v in rng.integers(0, 256, channels))
        image = Image.new(mode, (size, size), colour[0] if channels == 1 else colour)
        draw = ImageDraw.Draw(image)
        x, y = rng.integers(0, size // 2, 2)
        fill = 255 - colour[0] if channels == 1 else tuple(255 - v for v in colour)
        box = (int(x), int(y), int(x) + size // 2, int(y) + size // 2)
        (draw.ellipse if c % 2 else draw.rectangle)(box, fill=fill)
        suffix = ".png" if channels == 1 else ".jpg"
        image.save(root / f"class{c}" / f"{i}{suffix}")
    return root


# The command in a child that reports its own peak resident memory.
PEAK = """
import resource, sys
from ninlayers_cli import main
try:
    code = main()
finally:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("peak_kib", peak, file=sys.stderr)
sys.exit(code)
"""


def peak_memory_of_training(folder: Path, output: Path) -> dict:
    """Runs `ninlayers train` on `folder` in a child; its peak RSS."""
    command = [
        sys.executable,
        "-c",
        PEAK,
        "train",
        "--image-folder",
        str(folder),
        "--input-size",
        "224",
        "--architecture",
        MEMORY_ARCHITECTURE,
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--verbose",
        "0",
        "--output",
        str(output),
    ]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    peak_kib = int(result.stderr.split("peak_kib")[-1].split()[0])
    metrics = json.loads((output / "metrics.json").read_text())
    return {
        "peak_rss_mib": peak_kib / 1024,
        "seconds": time.perf_counter() - start,
        "train_examples": metrics["train_examples"],
    }


def pipeline_rate(folder: Path, size: int, channels: int, batch: int) -> float:
    """Images/s of the streamed pipeline alone (no cache: every pass
    decodes), over one pass after a warm-up batch."""
    from ninlayers.app import folders

    listed = folders.list_folder(folder)
    ds = folders.stream(
        listed,
        (size, size),
        channels,
        batch,
        shuffle=True,
        seed=0,
        augment=True,
        cache=False,
    )
    next(iter(ds))
    start, count = time.perf_counter(), 0
    for x, _ in ds:
        count += int(x.shape[0])
    return count / (time.perf_counter() - start)


def model_rate(
    architecture: str, size: int, channels: int, batch: int, steps: int
) -> float:
    """Training images/s of the recipe's NiN on tensors in memory."""
    import keras

    from ninlayers import NiN

    model = NiN(
        num_classes=4, input_shape=(size, size, channels), architecture=architecture
    )
    model.compile()
    x = np.random.default_rng(0).uniform(size=(batch, size, size, channels))
    x = keras.ops.convert_to_tensor(x.astype("float32"))
    y = keras.ops.convert_to_tensor(np.arange(batch) % 4)
    model.train_on_batch(x, y)  # trace and warm up
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--memory-sizes", type=int, nargs="*", default=[2000, 20000])
    parser.add_argument("--pipeline-images", type=int, default=2000)
    parser.add_argument("--output", help="write the results as JSON here")
    args = parser.parse_args()

    from ninlayers.app import machine

    result = {"machine": machine.describe(), "memory": {}, "starvation": {}}
    print(f"machine: {machine.one_line(result['machine'])}", flush=True)
    with tempfile.TemporaryDirectory(prefix="ninlayers-folders-") as tmp:
        tmp = Path(tmp)
        for name, size, channels, architecture, batch, steps in [
            ("28x28 grey", 28, 1, "nin_28_6x6", 64, 20),
            ("224x224 RGB", 224, 3, "tutorial_224", 32, 4),
        ]:
            folder = generate(
                tmp / name.replace(" ", "-"), args.pipeline_images, size, channels
            )
            pipeline = pipeline_rate(folder, size, channels, batch)
            trained = model_rate(architecture, size, channels, batch, steps)
            result["starvation"][name] = {
                "pipeline_images_per_second": pipeline,
                "model_training_images_per_second": trained,
                "architecture": architecture,
                "batch_size": batch,
            }
            print(
                f"{name}: pipeline alone {pipeline:,.0f} img/s, {architecture} "
                f"training {trained:,.0f} img/s: the pipeline is "
                f"{pipeline / trained:.1f}x the model",
                flush=True,
            )
        for count in args.memory_sizes:
            folder = generate(tmp / f"memory-{count}", count, 224, 3)
            run = peak_memory_of_training(folder, tmp / f"run-{count}")
            result["memory"][str(count)] = run
            print(
                f"train --image-folder on {count:,} 224x224 RGB images: peak "
                f"{run['peak_rss_mib']:,.0f} MiB, {run['seconds']:.0f} s",
                flush=True,
            )
    sizes = [str(n) for n in args.memory_sizes]
    if len(sizes) >= 2:
        ratio = (
            result["memory"][sizes[-1]]["peak_rss_mib"]
            / result["memory"][sizes[0]]["peak_rss_mib"]
        )
        result["memory_ratio"] = ratio
        print(
            f"peak memory, {sizes[-1]} images over {sizes[0]}: {ratio:.2f}x "
            "(goal 1.5x or less)"
        )
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
