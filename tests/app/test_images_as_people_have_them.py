"""Photos and folders as people have them: EXIF orientation, frames, CMYK,
transparency, and image folders assembled by hand."""

import os

import numpy as np
import pytest
from PIL import Image

from ninlayers.app import data
from ninlayers.app.images import read_image
from ninlayers.errors import DatasetError

# Orientation tag values (EXIF 0x0112) and what a viewer does to the stored
# pixels to show them upright.
EXIF_ORIENTATION = 0x0112
VIEWED = {
    1: lambda a: a,
    3: lambda a: np.rot90(a, 2),
    6: lambda a: np.rot90(a, -1),  # rotate 90 degrees clockwise
    8: lambda a: np.rot90(a, 1),
}


def corner_image() -> np.ndarray:
    """A 4x6 grey image, bright in one corner, so turns can be told apart."""
    stored = np.zeros((4, 6), np.uint8)
    stored[:2, :2] = 255
    return stored


@pytest.mark.parametrize("orientation", sorted(VIEWED))
def test_a_photo_is_read_upright_as_its_exif_orientation_says(tmp_path, orientation):
    stored = corner_image()
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    path = tmp_path / "photo.png"
    Image.fromarray(stored, "L").save(path, exif=exif)
    upright = VIEWED[orientation](stored)
    read = read_image(path, upright.shape)[..., 0]
    np.testing.assert_array_equal(read, upright / 255.0)


def test_a_multi_frame_file_gives_its_first_frame(tmp_path):
    path = tmp_path / "animated.gif"
    first, second = Image.new("L", (4, 4), 30), Image.new("L", (4, 4), 220)
    first.save(path, save_all=True, append_images=[second])
    assert Image.open(path).n_frames == 2
    np.testing.assert_allclose(read_image(path, (4, 4)), 30 / 255.0, atol=1e-6)


def test_a_multi_page_tiff_gives_its_first_page(tmp_path):
    path = tmp_path / "pages.tiff"
    first, second = Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4))
    first.save(path, save_all=True, append_images=[second])
    read = read_image(path, (4, 4), channels=3)
    np.testing.assert_allclose(read[..., 0], 1.0)
    np.testing.assert_allclose(read[..., 1:], 0.0)


def test_cmyk_images_are_converted_to_rgb(tmp_path):
    path = tmp_path / "print.jpg"
    # Full cyan: no red, full green and blue.
    Image.new("CMYK", (8, 8), (255, 0, 0, 0)).save(path, quality=100)
    read = read_image(path, (8, 8), channels=3)
    np.testing.assert_allclose(read.mean(axis=(0, 1)), [0.0, 1.0, 1.0], atol=0.02)


def rgba(hidden: tuple[int, int, int], alpha: int) -> Image.Image:
    """A 4x4 image: one opaque white pixel, the rest `hidden` colour at
    `alpha`."""
    pixels = np.zeros((4, 4, 4), np.uint8)
    pixels[...] = (*hidden, alpha)
    pixels[0, 0] = (255, 255, 255, 255)
    return Image.fromarray(pixels, "RGBA")


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("invert", [False, True])
def test_colour_under_transparent_pixels_never_changes_the_answer(
    tmp_path, channels, invert
):
    reads = []
    for hidden in [(255, 0, 0), (12, 200, 77), (255, 255, 255)]:
        path = tmp_path / f"{hidden}.png"
        rgba(hidden, alpha=0).save(path)
        reads.append(read_image(path, (4, 4), channels, invert=invert))
    for read in reads[1:]:
        np.testing.assert_array_equal(read, reads[0])
    # The transparent pixels show the model's background: black (after
    # inverting, when inverting); the opaque white pixel stays itself.
    background = reads[0][1:, 1:]
    np.testing.assert_array_equal(background, 0.0)
    assert reads[0][0, 0, 0] == (0.0 if invert else 1.0)


def test_graded_transparency_blends_with_the_background(tmp_path):
    path = tmp_path / "half.png"
    rgba((200, 200, 200), alpha=128).save(path)
    read = read_image(path, (4, 4), channels=1)
    np.testing.assert_allclose(read[1:, 1:], 200 * 128 / 255 / 255, atol=1 / 255)


@pytest.mark.parametrize("mode", ["P", "L"])
def test_a_transparent_colour_of_a_palette_or_grey_image_is_background(tmp_path, mode):
    path = tmp_path / "keyed.png"
    image = Image.new("L", (4, 4), 90)
    image.putpixel((0, 0), 250)
    image = image.convert(mode) if mode == "L" else image.convert("P")
    transparent = image.getpixel((1, 1))
    image.save(path, transparency=transparent)
    read = read_image(path, (4, 4), channels=1)
    np.testing.assert_array_equal(read[1:, 1:], 0.0)
    np.testing.assert_allclose(read[0, 0], 250 / 255.0, atol=1e-6)


def write(path, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (4, 4), value).save(path)


def test_an_empty_class_folder_is_refused_for_training_naming_it(tmp_path):
    write(tmp_path / "cat" / "a.png")
    (tmp_path / "dog").mkdir()
    with pytest.raises(DatasetError, match=r"dog holds no images"):
        data.load_image_folder(tmp_path, (4, 4), allow_empty=False)
    # Scoring may skip it: the labels still count the empty class.
    _, labels, names = data.load_image_folder(tmp_path, (4, 4))
    assert names == ["cat", "dog"] and labels.tolist() == [0]


def test_symlink_loops_and_directories_named_like_images_are_skipped(tmp_path):
    write(tmp_path / "cat" / "a.png")
    (tmp_path / "cat" / "folder.png").mkdir()
    os.symlink("..", tmp_path / "cat" / "loop")
    os.symlink("itself.png", tmp_path / "cat" / "itself.png")
    os.symlink("missing.png", tmp_path / "cat" / "dangling.png")
    images, labels, names = data.load_image_folder(tmp_path, (4, 4))
    assert images.shape == (1, 4, 4, 1) and names == ["cat"]


def test_files_whose_names_are_not_utf8_are_read(tmp_path):
    folder = tmp_path / "cat"
    write(folder / "a.png")
    write(folder / os.fsdecode(b"caf\xe9.png"), value=255)
    write(folder / "line\nbreak.png", value=0)
    images, labels, _ = data.load_image_folder(tmp_path, (4, 4))
    assert len(images) == 3 and labels.tolist() == [0, 0, 0]


def test_a_class_folder_named_in_bytes_that_are_not_utf8_is_refused(tmp_path):
    write(tmp_path / os.fsdecode(b"caf\xe9") / "a.png")
    with pytest.raises(DatasetError, match="not valid UTF-8"):
        data.load_image_folder(tmp_path, (4, 4))


def test_a_class_folder_named_with_a_newline_is_refused(tmp_path):
    write(tmp_path / "two\nlines" / "a.png")
    with pytest.raises(DatasetError, match=r"'.*two\\nlines' has a name with control"):
        data.load_image_folder(tmp_path, (4, 4))


def test_a_damaged_image_with_a_non_utf8_name_is_named_printably(tmp_path, capsys):
    from ninlayers.app import cli

    folder = tmp_path / "cat"
    write(folder / "a.png")
    (folder / os.fsdecode(b"bad\xff.png")).write_bytes(b"not an image")
    status = cli.main(["evaluate", "fashion_mnist", "--image-folder", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert "bad\\udcff.png" in err and "not an image that can be read" in err


def test_decoding_off_the_main_thread_leaves_the_warning_filters_alone(
    tmp_path, monkeypatch
):
    """tf.data decodes on its own threads; the warning filters are one list
    for the whole process, so turning warnings into errors there turned the
    main thread's warnings into errors too (a training run stopped on a
    NumPy DeprecationWarning)."""
    import threading
    import warnings

    from ninlayers.app import images

    write(tmp_path / "a.png")
    seen = {}
    open_image = images._open

    def spying(path):
        seen[threading.current_thread().name] = list(warnings.filters)
        return open_image(path)

    monkeypatch.setattr(images, "_open", spying)
    before = list(warnings.filters)
    thread = threading.Thread(
        target=read_image, args=(tmp_path / "a.png", (4, 4)), name="decoder"
    )
    thread.start()
    thread.join()
    assert seen["decoder"] == before
    # On the main thread Pillow's warnings still count as failures.
    read_image(tmp_path / "a.png", (4, 4))
    assert seen[threading.main_thread().name][0][0] == "error"
