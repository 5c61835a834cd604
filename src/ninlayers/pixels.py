"""Images as they are stored: integer pixels mapped to a model's input range.

A NiN records the range of the float images it computes on (`input_range`,
`(0, 1)` by default) in its config. Integer images (`uint8` and the other
integer types: 0-255; `uint16`: 0-65535) are mapped to that range inside the
model, so `model.predict(uint8_images)` is right; float images are taken to
be in the range already, and `NiN.predict` refuses a NumPy float array far
outside it (0-255 floats given to a 0-1 model) instead of answering wrongly.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

__all__ = [
    "DEFAULT_INPUT_RANGE",
    "check_float_range",
    "check_pixels",
    "pixel_maximum",
    "to_input_range",
]

#: The float range NiN's images are in, unless the model says otherwise.
DEFAULT_INPUT_RANGE = (0.0, 1.0)


def pixel_maximum(dtype: Any) -> float | None:
    """The largest pixel value of an integer image dtype; `None` for floats.

    >>> pixel_maximum("uint8"), pixel_maximum("uint16"), pixel_maximum("float32")
    (255.0, 65535.0, None)
    """
    dtype = keras.backend.standardize_dtype(dtype)
    if dtype == "uint16":
        return 65535.0
    if dtype.startswith(("uint", "int")):
        return 255.0
    return None


def to_input_range(images: Any, input_range: tuple[float, float]) -> Any:
    """Integer images mapped linearly onto `input_range` (as float32); float
    images unchanged. Works on tensors of any backend and symbolic ones.

    >>> import numpy as np
    >>> to_input_range(np.array([0, 255], "uint8"), (0.0, 1.0)).tolist()
    [0.0, 1.0]
    """
    top = pixel_maximum(getattr(images, "dtype", "float32"))
    if top is None:
        return images
    low, high = input_range
    scaled = keras.ops.cast(images, "float32") * ((high - low) / top) + low
    return (
        keras.ops.convert_to_numpy(scaled) if isinstance(images, np.ndarray) else scaled
    )


def check_float_range(images: Any, input_range: tuple[float, float]) -> None:
    """Raises if a NumPy float array lies far outside `input_range`.

    Values up to 2% of the range beyond it pass (interpolation overshoot).

    Raises:
        ValueError: for example for 0-255 floats given to a 0-1 model.
    """
    if (
        not isinstance(images, np.ndarray)
        or images.dtype.kind != "f"
        or not images.size
    ):
        return
    low, high = input_range
    margin = 0.02 * (high - low)
    found_low, found_high = float(np.nanmin(images)), float(np.nanmax(images))
    if found_low < low - margin or found_high > high + margin:
        raise ValueError(
            f"The images' values span [{found_low:g}, {found_high:g}] but this "
            f"model expects floats in [{low:g}, {high:g}]. Pass integer pixels "
            "(uint8 0-255) as they are, or scale floats to that range "
            f"(0-255 floats: divide by 255). Received: images of dtype {images.dtype}"
        )


def check_pixels(images: Any) -> None:
    """Raises if a NumPy array holds numbers that cannot be pixels.

    Floats must be finite; integers must lie in the range their dtype is
    mapped from (`pixel_maximum`: 0-255, or 0-65535 for `uint16`): an
    `int32` image holding 0-65535, or negative values, would otherwise be
    mapped as if it held 0-255 and answered silently wrong.

    Raises:
        ValueError: naming what was found and what was expected.

    >>> check_pixels(np.array([0, 300], "int32"))
    Traceback (most recent call last):
    ...
    ValueError: Integer images of dtype int32 must hold pixels in [0, 255]...
    """
    if not isinstance(images, np.ndarray) or not images.size:
        return
    if images.dtype.kind == "f":
        if not np.isfinite(images).all():
            bad = int(np.size(images) - np.count_nonzero(np.isfinite(images)))
            raise ValueError(
                f"The images hold {bad} NaN or infinite value(s): pixels must "
                f"be finite numbers. Received: images of dtype {images.dtype}"
            )
        return
    top = pixel_maximum(images.dtype)
    if top is None or images.dtype.kind not in "iu":
        return
    low, high = int(images.min()), int(images.max())
    if low < 0 or high > top:
        raise ValueError(
            f"Integer images of dtype {images.dtype} must hold pixels in "
            f"[0, {top:g}] (uint16: [0, 65535]). Received: values in "
            f"[{low}, {high}]; pass uint16 for 16-bit pixels, or floats in the "
            "model's range"
        )
