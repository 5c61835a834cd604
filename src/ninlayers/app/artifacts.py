"""What a run leaves on disk: one atomic writer, model files, provenance.

Every file the application writes goes through `atomic_path`: it is written
to a temporary file beside its destination, flushed to disk, then renamed
over it, so a crash leaves the previous file (or none), never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ninlayers import __version__
from ninlayers.saving import load_model

__all__ = [
    "METRICS_FILE",
    "MODEL_FILE",
    "atomic_path",
    "atomic_write_text",
    "load_model",
    "save_model_atomically",
    "versions",
    "weights_digest",
    "write_json",
]

#: The trained model, in a run's output directory.
MODEL_FILE = "model.keras"
#: The run's figures and provenance, in its output directory.
METRICS_FILE = "metrics.json"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path to write; on success it replaces `path`.

    The temporary file sits beside `path` with the same name after a
    `.tmp-` prefix (so writers that choose a format by suffix, as
    `model.save` and `model.save_weights` do, work). It is
    flushed to disk before the rename and removed if the writer fails.

    Example:

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "note.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes a text file atomically (see `atomic_path`); returns its path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Writes `data` as indented JSON, atomically; returns the path."""
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def save_model_atomically(model: keras.Model, path: str | os.PathLike) -> Path:
    """Saves a `.keras` file atomically (see `atomic_path`).

    Args:
        model: keras.Model.
        path: str or path ending in `.keras`.

    Returns:
        Path of the file.
    """
    with atomic_path(path) as tmp:
        model.save(tmp)
    return Path(path)


def weights_digest(model: keras.Model) -> str:
    """SHA-256 of all weights: equal digests mean identical replicas."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def versions() -> dict[str, str]:
    """The versions of ninlayers, its backend and Python, for provenance."""
    found = {
        "ninlayers": __version__,
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        found["tensorflow"] = tf.__version__
    return found
