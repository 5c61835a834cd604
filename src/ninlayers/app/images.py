"""Reading image files the application is given: any bit depth, any damage.

`read_image` is the one place image files are decoded (for `predict`, `cam`,
`evaluate` and `train` on an image folder). Every failure, whatever Pillow
raised inside (damaged chunks, truncated data, decompression bombs), becomes
one `ImageFileError` naming the file.

Images are read as people have them (docs/reliability.md):

- a photo's EXIF orientation is applied, so a phone photo is not sideways;
- a multi-frame file (animated GIF, multi-page TIFF) gives its first frame;
- CMYK is converted to RGB, 16-bit grey is scaled (not clipped) to 8 bits;
- transparency (an alpha channel, graded or not, or a palette's transparent
  colour) is laid over the background the model was trained on: black, or
  white when the image is to be inverted. The colour under fully transparent
  pixels never changes the result.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ninlayers.errors import ImageFileError

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "check_header",
    "image_channels",
    "read_image",
    "read_pixels",
]

#: The file suffixes read from an image folder (Keras's image folders' own,
#: with TIFF and WebP, which Pillow reads too).
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")

#: Images larger than this many pixels are refused before being decoded:
#: a few-kilobyte file can declare billions (a decompression bomb).
MAX_PIXELS = 64 * 1024 * 1024

_GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F")


def _open(path: Path) -> Any:
    """Opens an image lazily and checks its declared size."""
    from PIL import Image

    image = Image.open(path)
    width, height = image.size
    if width * height > MAX_PIXELS or min(width, height) < 1:
        image.close()
        raise ValueError(
            f"it declares {width}x{height} pixels; expected at least 1x1 and "
            f"at most {MAX_PIXELS} pixels"
        )
    return image


@contextlib.contextmanager
def _decoding(path: Path) -> Iterator[Any]:
    """The opened image; any failure while opening or decoding it (Pillow's
    plug-ins raise many types) becomes one `ImageFileError` naming the file.

    On the main thread Pillow's warnings of damage count as failures too.
    Other threads (`tf.data`'s, a thread pool's) leave the warning filters
    alone: they are one process-wide list, and turning warnings into errors
    there would turn other threads' warnings into errors as well. Bombs are
    refused before decoding either way (`MAX_PIXELS`).
    """
    strict = threading.current_thread() is threading.main_thread()
    try:
        with warnings.catch_warnings() if strict else contextlib.nullcontext():
            if strict:
                warnings.simplefilter("error")
            with _open(path) as image:
                yield image
    except Exception as error:
        raise _failure(path, error) from None


def _failure(path: Path, error: BaseException) -> ImageFileError:
    reason = " ".join(str(error).split()) or type(error).__name__
    return ImageFileError(
        f"{path} is not an image that can be read (PNG, JPEG, BMP, GIF, TIFF): "
        f"{reason[:200]}"
    )


def image_channels(path: str | os.PathLike) -> int:
    """1 if an image file is grey, else 3 (it is read as RGB).

    Raises:
        ImageFileError: if it is not an image that can be read.
    """
    with _decoding(Path(path)) as image:
        return 1 if image.mode in _GREY_MODES else 3


def read_image(
    path: str | os.PathLike,
    size: tuple[int, int],
    channels: int = 1,
    invert: bool = False,
) -> np.ndarray:
    """Reads an image file as float32 `(height, width, channels)` in [0, 1].

    The image is turned upright (EXIF orientation), its first frame taken,
    16-bit grey scaled to 8 bits (not clipped), transparency laid over the
    background (black, or white when `invert`, so black once inverted),
    converted to grey (1 channel) or RGB (3) and resized to `size`
    (bilinear).

    Args:
        path: str or path.
        size: tuple `(height, width)`.
        channels: int. 1 or 3.
        invert: bool. Use `1 - pixel`.

    Returns:
        np.ndarray, float32.

    Raises:
        ImageFileError: if the file is missing or not an image that can be
            read, or declares more than `MAX_PIXELS` pixels.

    Example:

    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "grey.png"
    >>> Image.new("L", (4, 2), 255).save(path)
    >>> read_image(path, (2, 2)).shape
    (2, 2, 1)
    """
    return read_pixels(path, size, channels, invert).astype("float32") / 255.0


def read_pixels(
    path: str | os.PathLike,
    size: tuple[int, int],
    channels: int = 1,
    invert: bool = False,
) -> np.ndarray:
    """`read_image`'s pixels as uint8 `(height, width, channels)`, 0-255.

    A quarter of the float images' memory: image folders are streamed and
    cached as these.
    """
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise ImageFileError(f"Image file {path} does not exist.")
    with _decoding(path) as image:
        image = _upright(_eight_bit(image))
        image = _opaque(image, background=255 if invert else 0)
        image = image.convert("L" if channels == 1 else "RGB")
        image = image.resize((size[1], size[0]), Image.BILINEAR)
        array = np.asarray(image, dtype="uint8")
    if channels == 1:
        array = array[..., None]
    return 255 - array if invert else array


def check_header(path: str | os.PathLike) -> None:
    """Opens an image's header only (its format and declared size): the
    cheap check of every file of a folder before streaming it.

    Raises:
        ImageFileError: if it is not an image, or declares too many pixels.
    """
    with _decoding(Path(path)):
        pass


def _eight_bit(image: Any) -> Any:
    """A 16-bit grey image (PNG, TIFF) scaled to 8 bits.

    Pillow's `convert("L")` clips such an image at 255 instead of scaling
    it, which turns all but the darkest pixels white.
    """
    if not image.mode.startswith("I"):
        return image
    from PIL import Image

    grey = np.asarray(image, dtype="float64") / 65535.0
    return Image.fromarray(np.round(np.clip(grey, 0, 1) * 255).astype(np.uint8), "L")


def _upright(image: Any) -> Any:
    """The image turned as its EXIF orientation tag says (phone photos)."""
    from PIL import ImageOps

    return ImageOps.exif_transpose(image)


_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def _opaque(image: Any, background: int) -> Any:
    """An image with transparency laid over a grey `background` (0-255).

    Alpha channels (graded or not) and a palette's or grey image's
    transparent colour are composited; the colour under fully transparent
    pixels does not reach the result.
    """
    if image.mode not in _ALPHA_MODES and "transparency" not in image.info:
        return image
    from PIL import Image

    rgba = image.convert("RGBA")
    base = Image.new("RGBA", rgba.size, (background, background, background, 255))
    return Image.alpha_composite(base, rgba).convert("RGB")
