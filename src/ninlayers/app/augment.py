"""Training-time augmentation of image batches inside a `tf.data` graph.

Flips (Keras's `RandomFlip`), shifts by whole pixels and random erasing, each
drawn per image and applied to a whole batch at once (no Python per batch).
Each random op has its own seed derived from the pipeline's, so their draws
are independent and a seeded run repeats exactly.

benchmarks/augmentation.py times the hand-written ops against Keras's
layers (docs/performance.md): Keras's flip is as fast, so it is used; the
shift and erasing stay hand-written because Keras's `RandomTranslation`
draws continuous shifts (not whole pixels uniformly) and its `RandomErasing`
draws the erasing probability and each side's scale differently, and is
slower here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["augmenter", "random_erasing", "random_translate"]


def _seed(seed: int | None, offset: int) -> int | None:
    """A distinct op seed per random op, so that their draws are independent."""
    return None if seed is None else seed * 7919 + offset


def random_translate(images: Any, padding: int, seed: int | None = None) -> Any:
    """Shifts each image by up to `padding` whole pixels, filling with zeros."""
    import tensorflow as tf

    batch = tf.shape(images)[0]
    shifts = tf.random.uniform(
        [batch, 2], -padding, padding + 1, "int32", seed=_seed(seed, 1)
    )
    shifts = tf.cast(shifts, "float32")
    ones, zeros = tf.ones([batch]), tf.zeros([batch])
    transforms = tf.stack(
        [ones, zeros, -shifts[:, 0], zeros, ones, -shifts[:, 1], zeros, zeros],
        axis=1,
    )
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        fill_value=0.0,
        interpolation="NEAREST",
        fill_mode="CONSTANT",
    )


def random_erasing(images: Any, probability: float, seed: int | None = None) -> Any:
    """Zeroes one random rectangle per image with probability `probability`.

    The rectangle covers 2-40% of the image, with an aspect ratio drawn
    log-uniformly from [0.3, 3.3] (Zhong et al., 2017).
    """
    import tensorflow as tf

    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    fheight, fwidth = tf.cast(height, "float32"), tf.cast(width, "float32")
    area = tf.random.uniform([batch], 0.02, 0.4, seed=_seed(seed, 2))
    ratio = tf.exp(
        tf.random.uniform([batch], np.log(0.3), np.log(3.3), seed=_seed(seed, 3))
    )
    h = tf.minimum(tf.cast(tf.sqrt(area * ratio) * fheight, "int32"), height)
    w = tf.minimum(tf.cast(tf.sqrt(area / ratio) * fwidth, "int32"), width)
    corner = tf.random.uniform([batch, 2], seed=_seed(seed, 4))
    top = tf.cast(corner[:, 0] * tf.cast(height - h + 1, "float32"), "int32")
    left = tf.cast(corner[:, 1] * tf.cast(width - w + 1, "float32"), "int32")
    rows = tf.range(height)[None, :, None]
    cols = tf.range(width)[None, None, :]
    inside = (
        (rows >= top[:, None, None])
        & (rows < (top + h)[:, None, None])
        & (cols >= left[:, None, None])
        & (cols < (left + w)[:, None, None])
    )
    apply = tf.random.uniform([batch], seed=_seed(seed, 5)) < probability
    mask = inside & apply[:, None, None]
    return tf.where(mask[..., None], tf.zeros_like(images), images)


def augmenter(
    flip: bool = True,
    crop_padding: int = 2,
    erasing: float = 0.0,
    seed: int | None = None,
) -> Callable[[Any], Any]:
    """Returns a function that augments a batch of float images.

    Args:
        flip: bool. Random left-right flips. Defaults to `True`.
        crop_padding: int. Largest random shift in pixels; `0` for none.
            Defaults to `2`.
        erasing: float. Random-erasing probability. Defaults to `0.0`.
        seed: int or `None`. Seed of every random op.

    Returns:
        callable mapping a `(batch, h, w, c)` tensor to one of the same shape.
    """

    import keras

    flipper = keras.layers.RandomFlip("horizontal", seed=_seed(seed, 0))

    def augment(images: Any) -> Any:
        if flip:
            images = flipper(images, training=True)
        if crop_padding:
            images = random_translate(images, crop_padding, seed)
        if erasing:
            images = random_erasing(images, erasing, seed)
        return images

    return augment
