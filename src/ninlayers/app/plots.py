"""Pictures of a run: learning curves, confusion matrix, class activation maps.

Each function draws on its own `matplotlib.figure.Figure` (no pyplot, so the
caller's matplotlib backend and open figures are left alone, in a notebook
too), writes a PNG atomically and returns its path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ninlayers.app.artifacts import atomic_path

__all__ = ["plot_class_activation_maps", "plot_confusion_matrix", "plot_history"]


def _figure(**kwargs):
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _label(text: str) -> str:
    """Text drawn as it is: `$` would start matplotlib's math mode, and
    control characters (from a model file's class names) are escaped."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return text.replace("$", r"\$")


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    return Path(path)


def plot_history(
    history: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    held_out_label: str = "validation",
) -> Path:
    """Plots loss and accuracy per epoch, training and held out.

    Args:
        history: dict. `keras.callbacks.History.history`; its `val_` (or,
            for test images, `test_`) keys are the held-out curves.
        path: str or path. The PNG to write.
        held_out_label: str. What the held-out images were, for the legend.

    Returns:
        Path of the PNG.
    """
    fig = _figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix, style in (("", "-o"), ("val_", "-s"), ("test_", "-s")):
            values = history.get(prefix + key)
            if values:
                epochs = np.arange(1, len(values) + 1)
                label = _label(held_out_label) if prefix else "training"
                ax.plot(epochs, values, style, label=label, markersize=3)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def plot_confusion_matrix(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
) -> Path:
    """Plots the confusion matrix, with counts, true classes as rows.

    Args:
        y_true: array of int. True labels.
        y_pred: array of int. Predicted labels.
        class_names: list of str. One name per class.
        path: str or path. The PNG to write.

    Returns:
        Path of the PNG.
    """
    n = len(class_names)
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
    fig = _figure(figsize=(1.0 + 0.75 * n, 0.8 + 0.7 * n))
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    labels = [_label(name) for name in class_names]
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)
    ax.set_title(f"confusion matrix (accuracy {accuracy:.4f})")
    threshold = matrix.max() / 2
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                matrix[i, j],
                ha="center",
                va="center",
                fontsize=7,
                color="white" if matrix[i, j] > threshold else "black",
            )
    return _save(fig, path)


def plot_class_activation_maps(
    images: np.ndarray,
    maps: np.ndarray,
    probabilities: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    labels: np.ndarray | None = None,
    columns: int = 6,
) -> Path:
    """Draws each image with its class activation map overlaid.

    Args:
        images: array `(n, h, w, c)` in [0, 1].
        maps: array `(n, h, w)` in [0, 1], from `class_activation_maps`.
        probabilities: array `(n, classes)`.
        class_names: list of str.
        path: str or path. The PNG to write.
        labels: array of `n` ints or `None`. True labels, shown when given.
        columns: int. Images per row. Defaults to `6`.

    Returns:
        Path of the PNG.
    """
    n = len(images)
    rows = max(1, -(-n // columns))
    cols = min(columns, max(n, 1))
    fig = _figure(figsize=(2.1 * cols, 2.4 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index >= n:
            continue
        image = images[index]
        image = image[..., 0] if image.shape[-1] == 1 else image
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
        ax.imshow(maps[index], cmap="jet", alpha=0.45)
        predicted = int(np.argmax(probabilities[index]))
        name = _label(class_names[predicted])
        title = f"{name} {probabilities[index, predicted]:.2f}"
        if labels is not None:
            mark = "ok" if int(labels[index]) == predicted else "x"
            title += f"\n(true: {_label(class_names[int(labels[index])])}, {mark})"
        ax.set_title(title, fontsize=8)
    fig.suptitle("class activation maps of the predicted class", fontsize=10)
    return _save(fig, path)
