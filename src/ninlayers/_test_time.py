"""Test-time augmentation: the views of an image a classifier averages.

`NiNImageClassifier` (`test_time_flip`, `test_time_shift`) and
`explain.class_map_model` both take their views from `views`, so a model's
predictions and its class-map model's agree.
"""

from __future__ import annotations

from typing import Any

import keras

from ninlayers import _checks


def checked(flip: Any, shift: Any) -> tuple[bool, int]:
    """`test_time_flip` and `test_time_shift`, checked."""
    flip = _checks.boolean("test_time_flip", flip)
    return flip, _checks.non_negative_int("test_time_shift", shift)


def shifted(images: Any, rows: int, columns: int) -> Any:
    """Images moved `rows` pixels down and `columns` right (up and left if
    negative), zero-filled.

    Args:
        images: tensor of shape `(batch, height, width, channels)`.
        rows: int. The shift along the height.
        columns: int. The shift along the width.

    Returns:
        A tensor of the same shape (`images` itself for no shift). The zeros
        are black for images in [0, 1], as in the training shifts of
        `ninlayers.app.augment`.
    """
    for axis, pixels in ((1, rows), (2, columns)):
        if pixels:
            step = abs(pixels)
            pad = [[0, 0]] * 4
            pad[axis] = [step, 0] if pixels > 0 else [0, step]
            padded = keras.ops.pad(images, pad)
            kept = slice(None, -step) if pixels > 0 else slice(step, None)
            index = [slice(None)] * 4
            index[axis] = kept
            images = padded[tuple(index)]
    return images


def views(images: Any, flip: bool, shift: int) -> list[tuple[Any, bool]]:
    """The views of `images` whose outputs a classifier averages.

    Args:
        images: tensor of shape `(batch, height, width, channels)`.
        flip: bool. Add each view's mirror image.
        shift: int. Add the images moved `shift` pixels right, left, down
            and up.

    Returns:
        list of `(view, mirrored)`: the images themselves first, then their
        shifts, each followed by its mirror image when `flip`; one view
        without either, ten with both.
    """
    offsets = [(0, 0)]
    if shift:
        offsets += [(0, shift), (0, -shift), (shift, 0), (-shift, 0)]
    result = []
    for rows, columns in offsets:
        view = shifted(images, rows, columns)
        result.append((view, False))
        if flip:
            result.append((keras.ops.flip(view, axis=2), True))
    return result


def mean(outputs: list[Any]) -> Any:
    """The mean of the views' outputs (the outputs themselves for one)."""
    total = outputs[0]
    for output in outputs[1:]:
        total = total + output
    return total / len(outputs) if len(outputs) > 1 else total
