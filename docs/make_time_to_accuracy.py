"""Draws docs/img/time-to-accuracy.png: held-out accuracy against wall-clock
time, from real runs.

    python docs/make_time_to_accuracy.py LABEL=RUN_DIR [LABEL=RUN_DIR ...]
        [--wall LABEL=SECONDS ...] [--output docs/img/time-to-accuracy.png]

Each `ninlayers train` run's `metrics.json` gives, per epoch, the held-out
accuracy (`val_accuracy`: the validation split, else the first 2,000 test
images) and the wall-clock seconds since the run started
(`elapsed_seconds`), and the final test accuracy at the end of the run;
`--wall` replaces that end by a measured whole-command time (`/usr/bin/time`,
which includes Python's start-up and imports). The seed recipe's curve is
`SEED_RUN`: the figures of the seed's 10-epoch run measured on these
machines (fit 1,528 s, validation accuracy per epoch, test 0.8983), its
epochs spread evenly over the fit.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[1]

#: The seed recipe's run on these machines (TF 2.21, 2 cores, seed 0).
SEED_RUN = {
    "fit_seconds": 1528.0,
    "val_accuracy": [
        0.809,
        0.856,
        0.870,
        0.884,
        0.885,
        0.897,
        0.897,
        0.902,
        0.900,
        0.905,
    ],
    "test_accuracy": 0.8983,
}


def curve_of_run(run: Path) -> tuple[list[float], list[float], float, float]:
    """(minutes, held-out accuracies, end minute, test accuracy) of a run."""
    metrics = json.loads((run / "metrics.json").read_text())
    history = metrics["history"]
    minutes = [s / 60 for s in history["elapsed_seconds"]]
    return (
        minutes,
        history["val_accuracy"],
        metrics["wall_seconds"] / 60,
        metrics["test"]["accuracy"],
    )


def seed_curve() -> tuple[list[float], list[float], float, float]:
    epochs = len(SEED_RUN["val_accuracy"])
    step = SEED_RUN["fit_seconds"] / epochs / 60
    minutes = [step * (i + 1) for i in range(epochs)]
    return minutes, SEED_RUN["val_accuracy"], minutes[-1], SEED_RUN["test_accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR")
    parser.add_argument("--wall", nargs="*", default=[], help="LABEL=SECONDS")
    parser.add_argument("--output", default=ROOT / "docs/img/time-to-accuracy.png")
    args = parser.parse_args()
    walls = dict(item.split("=", 1) for item in args.wall)
    curves = {"seed recipe (10 epochs)": seed_curve()}
    for item in args.runs:
        label, run = item.split("=", 1)
        minutes, accuracy, end, test = curve_of_run(Path(run))
        if label in walls:
            end = float(walls[label]) / 60
        curves[label] = (minutes, accuracy, end, test)

    figure = Figure(figsize=(7.5, 4.5), dpi=120)
    ax = figure.add_subplot()
    for label, (minutes, accuracy, end, test) in curves.items():
        (line,) = ax.plot(minutes, accuracy, "-o", markersize=3, label=label)
        ax.plot([end], [test], "*", markersize=12, color=line.get_color())
        ax.annotate(
            f"{test:.4f}", (end, test), textcoords="offset points", xytext=(6, -4)
        )
    for target, limit in ((0.90, 4), (0.94, 12)):
        ax.axhline(target, color="grey", linewidth=0.6, linestyle=":")
        ax.axvline(limit, color="grey", linewidth=0.6, linestyle=":")
    ax.set_xlabel("wall-clock minutes from the start of the command")
    ax.set_ylabel("held-out accuracy (star: test accuracy at exit)")
    ax.set_ylim(0.80, 0.96)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("Fashion-MNIST: accuracy against time, 2 CPU cores")
    figure.tight_layout()
    figure.savefig(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
