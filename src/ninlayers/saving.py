"""Loading `.keras` files safely, with one clear error for every bad file.

`load_model` checks that the file is a complete `.keras` (zip) archive whose
members pass their CRC before Keras reads it (`safe_mode=True`: no code from
the file runs), and turns whatever Keras raises into one `ModelFileError`
naming the file.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
import zlib
from pathlib import Path

import keras

from ninlayers.errors import ModelFileError

__all__ = ["file_sha256", "load_model"]


def _check_archive(path: Path) -> None:
    if not path.is_file():
        raise ModelFileError(f"Model file {path} does not exist.")
    if path.suffix != ".keras":
        raise ModelFileError(
            f"Model file {path} must end in .keras (the Keras 3 format). "
            f"Received: {path.suffix or 'no extension'}"
        )
    if not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"Model file {path} is not a .keras archive (a zip file): it is "
            "truncated or not a model."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
        raise ModelFileError(f"Model file {path} is corrupt: {error}") from None
    except (NotImplementedError, RuntimeError) as error:
        # A compression method Python cannot read, or an encrypted member.
        raise ModelFileError(
            f"Model file {path} cannot be read: {error}. Expected a .keras "
            "archive as Keras writes it (stored or deflated members)."
        ) from None
    if bad is not None:
        raise ModelFileError(
            f"Model file {path} is corrupt: its member {bad!r} fails its CRC."
        )
    if "config.json" not in names:
        raise ModelFileError(
            f"Model file {path} has no config.json: expected a model saved "
            "with model.save('x.keras')."
        )


def load_model(path: str | os.PathLike) -> keras.Model:
    """Loads a `.keras` file safely (`safe_mode=True`), with clear errors.

    Args:
        path: str or path.

    Returns:
        keras.Model.

    Raises:
        ModelFileError: if the file is missing, not a `.keras` (zip) archive,
            truncated, or names classes that are not registered.
    """
    path = Path(path)
    _check_archive(path)
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as error:  # Keras raises many types here.
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ModelFileError(
            f"Cannot load model file {path}: {type(error).__name__}: {message}. "
            "If it uses your own classes, import the module that registers "
            "them first."
        ) from error


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
