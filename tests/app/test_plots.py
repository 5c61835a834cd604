"""Pictures are drawn on their own figures and leave the caller's matplotlib alone."""

import matplotlib
import numpy as np
from PIL import Image

from ninlayers.app import plots


def test_plots_keep_the_callers_backend_and_figures(tmp_path):
    import matplotlib.pyplot as plt

    backend = matplotlib.get_backend()
    figures = plt.get_fignums()
    history = {"loss": [1.0, 0.5], "val_loss": [1.1, 0.7], "accuracy": [0.5, 0.8]}
    paths = [
        plots.plot_history(history, tmp_path / "history.png"),
        plots.plot_confusion_matrix(
            np.array([0, 1, 1]), np.array([0, 1, 0]), ["a", "b"], tmp_path / "c.png"
        ),
        plots.plot_class_activation_maps(
            np.zeros((2, 8, 8, 1)),
            np.zeros((2, 8, 8)),
            np.array([[0.9, 0.1], [0.2, 0.8]]),
            ["a", "b"],
            tmp_path / "cam.png",
            labels=np.array([0, 0]),
        ),
    ]
    assert matplotlib.get_backend() == backend
    assert plt.get_fignums() == figures
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "c.png",
        "cam.png",
        "history.png",
    ]


def test_history_draws_the_held_out_curve_with_its_label(tmp_path, monkeypatch):
    drawn = []
    original = plots._save

    def keep(fig, path):
        drawn.append(fig)
        return original(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    history = {
        "loss": [1.0, 0.5],
        "accuracy": [0.6, 0.8],
        "val_loss": [1.1, 0.7],
        "val_accuracy": [0.5, 0.7],
    }
    plots.plot_history(history, tmp_path / "h.png", "test (first 2,000 images)")
    for ax in drawn[0].axes:
        labels = [line.get_label() for line in ax.get_lines()]
        assert labels == ["training", "test (first 2,000 images)"]
