"""Draws docs/img/architecture.png: the default NiN, stage by stage.

Run `python docs/make_architecture.py`; the shapes come from the model itself.
"""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

import ninlayers  # noqa: E402


def main(path: Path) -> None:
    model = ninlayers.NiN(precision="float32")
    stages = [("input", "images", model.input_shape[1:], 0)]
    for layer in model.layers[1:]:
        kind = type(layer).__name__
        if kind == "NiNBlock":
            text = (
                f"NiNBlock {layer.filters}\n{layer.kernel_size[0]}x"
                f"{layer.kernel_size[1]} conv\n+ 2 x 1x1 conv\nReLU"
            )
        elif kind == "MaxPooling2D":
            text = "max pool\n3x3/2"
        else:
            text = "head\nNiN block 10\n= class maps\nGAP, softmax"
        stages.append((kind, text, layer.output.shape[1:], layer.count_params()))
    colours = {
        "input": "#dddddd",
        "NiNBlock": "#8ecae6",
        "MaxPooling2D": "#ffb703",
        "NiNClassifierHead": "#90be6d",
    }
    fig, ax = plt.subplots(figsize=(13, 3.2))
    width, gap = 1.45, 0.22
    for i, (kind, text, shape, params) in enumerate(stages):
        x = i * (width + gap)
        ax.add_patch(
            FancyBboxPatch(
                (x, 0.3),
                width,
                1.6,
                boxstyle="round,pad=0.03",
                facecolor=colours[kind],
                edgecolor="#333",
            )
        )
        ax.text(x + width / 2, 1.35, text, ha="center", va="center", fontsize=7.2)
        ax.text(
            x + width / 2,
            0.62,
            "x".join(str(d) for d in shape),
            ha="center",
            va="center",
            fontsize=7.5,
            weight="bold",
        )
        if params:
            ax.text(x + width / 2, 0.1, f"{params:,} params", ha="center", fontsize=6.5)
        if i:
            ax.annotate(
                "",
                (x - 0.01, 1.1),
                (x - gap + 0.01, 1.1),
                arrowprops={"arrowstyle": "->"},
            )
    ax.set_xlim(-0.1, len(stages) * (width + gap))
    ax.set_ylim(-0.1, 2.2)
    ax.axis("off")
    ax.set_title(
        f"ninlayers.NiN(): the classic Fashion-MNIST network, "
        f"{model.count_params():,} parameters, no dense layer"
    )
    fig.savefig(path, dpi=120, bbox_inches="tight")


if __name__ == "__main__":
    main(Path(__file__).parent / "img" / "architecture.png")
