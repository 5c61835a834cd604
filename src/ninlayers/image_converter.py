"""`NiNImageConverter`: what a model's pixels must be, as a layer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from ninlayers import _checks, pixels

__all__ = ["NiNImageConverter"]


@keras.saving.register_keras_serializable(package="ninlayers")
class NiNImageConverter(keras.layers.Layer):
    """Maps images as they are stored onto the floats a model computes on.

    Integer images (`uint8` 0-255, `uint16` 0-65535, other integer types
    0-255) are mapped linearly onto `input_range`; float images are taken as
    already in it. With `image_size`, images of another size are resized to
    it. With `check_range=True`, `check()` refuses NumPy float images far
    outside `input_range` (0-255 floats given to a model trained on 0-1),
    which a `NiNImageClassifier` runs on NumPy input to `predict`, `fit`,
    `evaluate` and calls. A classifier without a converter takes any floats.

    Args:
        input_range: pair of floats. The range of the floats the model
            computes on. Defaults to `(0.0, 1.0)`.
        image_size: pair of ints or `None`. Resize images to `(height,
            width)`; `None` keeps their size. Defaults to `None`.
        interpolation: str. Resizing interpolation (`keras.ops.image.resize`).
            Defaults to `"bilinear"`.
        check_range: bool. Refuse NumPy float images outside `input_range`
            (by more than 2% of its width) in `check()`. Defaults to `False`.
        **kwargs: Base layer arguments (`name`, `dtype`).

    Input shape:
        `(batch, height, width, channels)`, any dtype.

    Output shape:
        `(batch, *image_size, channels)` (or the input's size), float32 for
        integer input.

    Example:

    >>> import keras, numpy as np
    >>> converter = NiNImageConverter(input_range=(-1.0, 1.0))
    >>> mapped = converter(np.array([[[[0], [255]]]], "uint8"))
    >>> keras.ops.convert_to_numpy(mapped).ravel().tolist()
    [-1.0, 1.0]
    >>> NiNImageConverter(check_range=True).check(np.full((1, 2, 2, 1), 255.0))
    Traceback (most recent call last):
    ...
    ValueError: The images' values span [255, 255] but this model expects ...
    """

    def __init__(
        self,
        input_range: Sequence[float] = pixels.DEFAULT_INPUT_RANGE,
        image_size: Sequence[int] | None = None,
        interpolation: str = "bilinear",
        check_range: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.input_range = check_input_range(input_range)
        self.image_size = _checks.optional(_checks.pair, "image_size", image_size)
        self.interpolation = _checks.one_of(
            "interpolation",
            interpolation,
            ("nearest", "bilinear", "bicubic", "lanczos3", "lanczos5", "area"),
        )
        self.check_range = _checks.boolean("check_range", check_range)
        self.built = True

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        # NumPy integers are mapped before Keras converts them: PyTorch has
        # no uint16 tensors (Keras would pass int32, read as 0-255 pixels).
        if isinstance(inputs, np.ndarray):
            inputs = pixels.to_input_range(inputs, self.input_range)
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs):
        images = pixels.to_input_range(inputs, self.input_range)
        if self.image_size is not None and tuple(images.shape[1:3]) != tuple(
            self.image_size
        ):
            images = keras.ops.image.resize(
                images,
                self.image_size,
                interpolation=self.interpolation,
                data_format="channels_last",
            )
        return images

    def check(self, images: Any) -> Any:
        """Checks NumPy images and maps integer ones onto `input_range`.

        Other inputs (tensors, datasets) pass unchanged: the mapping then
        happens in `call`.

        Raises:
            ValueError: for numbers that cannot be pixels (NaN, infinities,
                integers outside their dtype's pixel range), and with
                `check_range` for NumPy floats far outside `input_range`.
        """
        if not isinstance(images, np.ndarray):
            return images
        pixels.check_pixels(images)
        if self.check_range:
            pixels.check_float_range(images, self.input_range)
        # Mapped here: PyTorch has no uint16 tensors (Keras would pass int32).
        return pixels.to_input_range(images, self.input_range)

    def compute_output_shape(self, input_shape) -> tuple:
        if self.image_size is None:
            return tuple(input_shape)
        return (input_shape[0], *self.image_size, input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "input_range": list(self.input_range),
                "image_size": (
                    None if self.image_size is None else list(self.image_size)
                ),
                "interpolation": self.interpolation,
                "check_range": self.check_range,
            }
        )
        return config


def check_input_range(input_range: Any) -> tuple[float, float]:
    """`input_range` as two finite floats `(low, high)` with `low < high`.

    Raises:
        ValueError: naming what was received.
    """
    try:
        low, high = (float(v) for v in input_range)
        valid = not isinstance(input_range, str) and low < high
        valid = valid and bool(np.isfinite([low, high]).all())
    except (TypeError, ValueError, OverflowError):
        valid = False
    if not valid:
        raise ValueError(
            "`input_range` must be two finite floats (low, high) with low < "
            f"high. Received: input_range={input_range!r}"
        )
    return (low, high)
