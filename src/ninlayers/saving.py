"""Loading `.keras` files safely, with one clear error for every bad file.

`load_model` checks that the file is a complete `.keras` (zip) archive whose
members pass their CRC before Keras reads it (`safe_mode=True`: no code from
the file runs), and turns whatever Keras raises into one `ModelFileError`
naming the file.

A model file from elsewhere is data, not instructions: before Keras builds
anything, its members' declared sizes and its config are checked against the
limits below (docs/reliability.md), so a file asking for a billion filters, an
input of a million pixels a side, a config nested thousands deep or a config
of hundreds of MB that compresses to kilobytes is refused in one line, in
bounded time and memory.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras

from ninlayers.errors import ModelFileError

__all__ = ["LIMITS", "file_sha256", "load_model"]

#: What a `.keras` file may ask for; anything beyond is refused unread.
LIMITS = {
    # Uncompressed bytes, as the archive declares them (zip reads no more).
    "config_bytes": 16 * 2**20,
    "member_bytes": 2 * 2**30,
    # Uncompressed over compressed size, for members over 16 MiB.
    "compression_ratio": 1_000,
    # Nesting of the config's JSON objects and lists.
    "depth": 100,
    # Channels of one layer (`filters`, `units`, `num_classes`).
    "width": 65_536,
    # A kernel's, pool's or stride's side.
    "side": 1_024,
    # Values of one input (the product of an input shape's known sides).
    "input_values": 2**28,
    # Parameters, estimated from the widths in the config's order.
    "parameters": 2 * 10**9,
}

_WIDTH_KEYS = ("filters", "units", "num_classes")
_SIDE_KEYS = ("kernel_size", "head_kernel_size", "pool_size", "strides")
_SHAPE_KEYS = ("input_shape", "batch_shape", "batch_input_shape", "shape")


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
            _check_sizes(path, archive)
            bad = archive.testzip()
            names = set(archive.namelist())
            if bad is None and "config.json" in names:
                _check_config(path, _read_config(path, archive))
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


def _check_sizes(path: Path, archive: zipfile.ZipFile) -> None:
    """Refuses members whose declared size is beyond `LIMITS`, before any
    is decompressed."""
    for info in archive.infolist():
        kind = "config_bytes" if info.filename.endswith(".json") else "member_bytes"
        limit = LIMITS[kind]
        if info.file_size > limit:
            raise ModelFileError(
                f"Model file {path} is refused: its member {info.filename!r} "
                f"declares {info.file_size:,} bytes; expected at most {limit:,} "
                "(ninlayers.saving.LIMITS)."
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > 2**24 and ratio > LIMITS["compression_ratio"]:
            raise ModelFileError(
                f"Model file {path} is refused: its member {info.filename!r} "
                f"declares {info.file_size:,} bytes from {info.compress_size:,} "
                f"(over {LIMITS['compression_ratio']:,} to 1: a zip bomb)."
            )


def _refuse(
    path: Path, what: str, value: Any, limit: Any, unit: str = ""
) -> ModelFileError:
    return ModelFileError(
        f"Model file {path} is refused: its config asks for {what} {value:,}"
        f"{unit}; expected at most {limit:,} (ninlayers.saving.LIMITS)."
    )


def _nodes(path: Path, config: Any) -> Iterator[tuple[str | None, Any]]:
    """`(key, value)` of every value in the config, in document order
    (a list's items take the list's key); refuses deep nesting."""
    stack: list[tuple[str | None, Any, int]] = [(None, config, 0)]
    while stack:
        key, node, depth = stack.pop()
        if depth > LIMITS["depth"]:
            raise _refuse(path, "nesting", depth, LIMITS["depth"])
        yield key, node
        if isinstance(node, dict):
            stack += [(k, v, depth + 1) for k, v in reversed(node.items())]
        elif isinstance(node, list):
            stack += [(key, v, depth + 1) for v in reversed(node)]


def _ints(value: Any) -> list[int]:
    items = value if isinstance(value, list) else [value]
    return [v for v in items if isinstance(v, int) and not isinstance(v, bool)]


def _check_config(path: Path, config: Any) -> None:
    """Refuses sizes beyond `LIMITS` in a parsed config: each value, then
    the parameters the widths add up to."""
    for key, value in _nodes(path, config):
        if key in _WIDTH_KEYS or key in _SIDE_KEYS:
            limit = LIMITS["width" if key in _WIDTH_KEYS else "side"]
            for v in _ints(value):
                if v > limit:
                    raise _refuse(path, f"{key} of", v, limit)
        elif key in _SHAPE_KEYS and isinstance(value, list):
            values = math.prod(v for v in _ints(value) if v > 0)
            if values > LIMITS["input_values"]:
                raise _refuse(path, f"an {key} of", values, LIMITS["input_values"])
    parameters = _parameters(path, config)
    if parameters > LIMITS["parameters"]:
        raise _refuse(path, "about", parameters, LIMITS["parameters"], " parameters")


def _parameters(path: Path, config: Any) -> int:
    """Weights of the layers with `filters` or `units`, each fed by the one
    before it in the config (an upper estimate for branching models)."""
    parameters, width = 0, 3
    for _, value in _nodes(path, config):
        if isinstance(value, dict) and ("filters" in value or "units" in value):
            kernel = value.get("kernel_size", 1)
            area = math.prod(_ints(kernel) or [1])
            area = area**2 if isinstance(kernel, int) else area
            for i, out in enumerate(_ints(value.get("filters", value.get("units")))):
                parameters += (area if i == 0 else 1) * width * out
                width = out
    return parameters


def _read_config(path: Path, archive: zipfile.ZipFile) -> Any:
    try:
        return json.loads(archive.read("config.json"))
    except RecursionError:
        depth = LIMITS["depth"]
        raise _refuse(path, "nesting beyond", depth, depth) from None
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelFileError(
            f"Model file {path} has a config.json that is not JSON: {error}"
        ) from None


def load_model(path: str | os.PathLike) -> keras.Model:
    """Loads a `.keras` file safely (`safe_mode=True`), with clear errors.

    Args:
        path: str or path.

    Returns:
        keras.Model.

    Raises:
        ModelFileError: if the file is missing, not a `.keras` (zip) archive,
            truncated, asks for sizes beyond `LIMITS`, or names classes that
            are not registered.
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
