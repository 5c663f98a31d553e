"""fer_hf.model.images: reading any image source as an upright RGB image, and reading big JPEGs reduced.

Real photos: tests/fixtures/photos/ (four downscaled photos from the happy/sad set), and camera-size
copies of them (conftest's large_photos).
"""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from fer_hf.faces import FaceDetector
from fer_hf.model.images import load_image

PHOTOS = Path(__file__).resolve().parent / "fixtures" / "photos"
THREE_FACES = "happy_three_women.jpg"


@pytest.fixture(scope="module")
def detector():
    """The default detector, to check that a face survives reading."""
    return FaceDetector()


@pytest.fixture(scope="module")
def happy_man():
    return load_image(PHOTOS / "happy_man.jpg")


def _close(boxes_a, boxes_b, tolerance=4):
    return len(boxes_a) == len(boxes_b) and all(
        max(abs(p - q) for p, q in zip(a.as_tuple(), b.as_tuple())) <= tolerance for a, b in zip(boxes_a, boxes_b)
    )



def _save(image, fmt, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "mode, fmt",
    [("L", "PNG"), ("LA", "PNG"), ("RGB", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("P", "GIF"),
     ("I;16", "PNG"), ("I", "TIFF"), ("F", "TIFF"), ("CMYK", "JPEG"), ("1", "PNG"), ("RGB", "WEBP")],
)
def test_every_mode_reads_as_rgb_and_keeps_the_face(detector, happy_man, mode, fmt):
    image = happy_man.convert(mode) if mode not in ("I;16", "I", "F") else _wide(happy_man, mode)
    for source in (image, _save(image, fmt)):
        loaded = load_image(source)
        assert loaded.mode == "RGB" and loaded.size == happy_man.size
        if mode != "1":  # a dithered 1-bit photo has no face left to find
            gray = np.asarray(loaded.convert("L"), np.float64)
            assert np.abs(gray - np.asarray(happy_man.convert("L"), np.float64)).mean() < 12, mode
            assert len(detector(loaded)) == 1


def _wide(image, mode):
    """The photo with 16-bit (I;16, I) or 0..1 float (F) pixels."""
    gray = np.asarray(image.convert("L"), np.float64)
    if mode == "F":
        return Image.fromarray((gray / 255.0).astype(np.float32))
    sixteen = (gray * 257).astype(np.uint16)
    return Image.fromarray(sixteen) if mode == "I;16" else Image.fromarray(sixteen.astype(np.int32))


def test_transparency_goes_on_white():
    clear = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    assert load_image(clear).getpixel((0, 0)) == (255, 255, 255)
    half = Image.new("LA", (10, 10), (0, 128))
    assert load_image(_save(half, "PNG")).getpixel((0, 0)) == (127, 127, 127)
    palette = Image.new("P", (10, 10), 0)
    palette.info["transparency"] = 0
    assert load_image(_save(palette, "PNG")).getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize(
    "array, pixel",
    [
        (np.full((6, 8), 200, np.uint8), (200, 200, 200)),
        (np.full((6, 8, 1), 200, np.uint8), (200, 200, 200)),
        (np.dstack([np.full((6, 8), v, np.uint8) for v in (10, 20, 30)]), (10, 20, 30)),
        (np.dstack([np.full((6, 8), v, np.uint8) for v in (10, 20, 30, 255)]), (10, 20, 30)),
        (np.dstack([np.full((6, 8), v, np.uint8) for v in (10, 20, 30, 0)]), (255, 255, 255)),
        (np.full((6, 8, 3), 65535, np.uint16), (255, 255, 255)),
        (np.full((6, 8), 257 * 100, np.uint16), (100, 100, 100)),
        (np.full((6, 8, 3), 0.5, np.float32), (128, 128, 128)),
        (np.full((6, 8, 4), 1.0, np.float64), (255, 255, 255)),
        (np.full((6, 8), 200.0, np.float64), (200, 200, 200)),
        (np.full((6, 8), np.nan, np.float32), (0, 0, 0)),
        (np.ones((6, 8), bool), (255, 255, 255)),
        (np.full((3, 6, 8), 0.5, np.float32), (128, 128, 128)),  # channels first, as from torch
    ],
    ids=["HxW", "HxWx1", "HxWx3", "HxWx4-opaque", "HxWx4-clear", "uint16-rgb", "uint16-gray", "float-0..1",
         "float64-rgba", "float-0..255", "float-nan", "bool", "CxHxW"],
)
def test_arrays(array, pixel):
    image = load_image(array)
    assert image.mode == "RGB" and image.size == (8, 6)
    assert image.getpixel((3, 2)) == pixel


@pytest.mark.parametrize("array", [np.zeros((4,), np.uint8), np.zeros((5, 5, 2), np.uint8), np.zeros((0, 5), np.uint8),
                                   np.zeros((2, 5, 5, 3), np.uint8), np.array([["a"]])])
def test_bad_arrays(array):
    with pytest.raises(ValueError, match="Cannot read image <array"):
        load_image(array)


def test_a_photo_array_finds_the_face(detector, happy_man):
    rgb = np.asarray(happy_man)
    opaque = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    for array in (rgb, rgb.astype(np.float32) / 255, rgb.astype(np.uint16) * 257, opaque):
        assert len(detector(array)) == 1


def test_exif_orientation_is_applied(detector, happy_man, tmp_path):
    """A camera photo stored sideways with EXIF orientation 6 reads upright."""
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "sideways.jpg"
    happy_man.transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif)
    assert Image.open(path).size == (happy_man.height, happy_man.width)
    upright = load_image(path)
    assert upright.size == happy_man.size
    assert np.abs(np.asarray(upright, np.float64) - np.asarray(happy_man, np.float64)).mean() < 5
    assert _close(detector(upright), detector(happy_man), tolerance=6)


def test_first_frame_of_an_animation():
    frames = [Image.new("RGB", (20, 10), color) for color in ("red", "blue")]
    data = _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert load_image(data).getpixel((5, 5)) == (255, 0, 0)


def test_truncated_file_names_the_file(tmp_path):
    data = (PHOTOS / "happy_man.jpg").read_bytes()
    path = tmp_path / "cut_short.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut_short.jpg.*truncated"):
        load_image(path)
    with pytest.raises(ValueError, match="cut_short.jpg"):
        FaceDetector("haar")(path)


def test_unreadable_inputs_name_the_source(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="notes.jpg"):
        load_image(text)
    with pytest.raises(ValueError, match="missing.png.*no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="12 bytes"):
        load_image(b"not an image")
    with pytest.raises(ValueError, match="Cannot read an image from a int"):
        load_image(42)


def test_pixel_limit(happy_man):
    data = _save(happy_man, "PNG")
    with pytest.raises(ValueError, match=r"320x201 = 64,320 pixels is above the limit of 10,000"):
        load_image(data, max_pixels=10_000)
    with pytest.raises(ValueError, match="above the limit"):
        load_image(np.zeros((200, 200), np.uint8), max_pixels=10_000)
    assert load_image(data, max_pixels=None).size == happy_man.size
    # The default limit is checked from the header, before any pixel is decoded.
    huge = _save(Image.new("1", (9000, 8000)), "PNG")
    with pytest.raises(ValueError, match="72,000,000 pixels"):
        load_image(huge)


def test_max_side_shrinks_while_decoding(happy_man):
    shrunk = load_image(PHOTOS / "happy_man.jpg", max_side=100)
    assert shrunk.mode == "RGB" and max(shrunk.size) == 100
    assert abs(shrunk.width / shrunk.height - happy_man.width / happy_man.height) < 0.02


def _big_progressive_jpeg(tmp_path, orientation=1, **save):
    """The three women enlarged to 3,600 px and saved as a progressive JPEG, turned as `orientation` says."""
    upright = load_image(PHOTOS / THREE_FACES)
    big = upright.resize((3600, round(3600 * upright.height / upright.width)), Image.Resampling.BICUBIC)
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = {1: big, 6: big.transpose(Image.Transpose.ROTATE_90), 3: big.transpose(Image.Transpose.ROTATE_180)}[orientation]
    path = tmp_path / f"big_progressive_{orientation}.jpg"
    stored.save(path, quality=90, progressive=True, exif=exif, **save)
    return path, big


def _decoded_at_eighth_scale(path):
    """What Pillow itself decodes at 1/8 scale (all scans), upright, in RGB."""
    with Image.open(path) as image:
        image.draft(None, (image.width // 8, image.height // 8))
        return ImageOps.exif_transpose(image.convert("RGB"))


@pytest.mark.parametrize("orientation", [1, 6, 3])
def test_big_progressive_jpeg_decodes_at_eighth_scale_upright(tmp_path, orientation):
    """With a small min_side a big JPEG decodes at 1/8 scale: Pillow's own pixels, turned upright."""
    path, big = _big_progressive_jpeg(tmp_path, orientation)
    reduced = load_image(path, max_side=1280, min_side=400)
    expected = _decoded_at_eighth_scale(path)
    assert reduced.size == expected.size == (450, round(big.height / 8 + 0.49))  # 1/8 of 3,600 px, upright
    assert np.array_equal(np.asarray(reduced), np.asarray(expected))
    assert reduced.info["original_size"] == big.size
    # The same from bytes and from a file object.
    data = path.read_bytes()
    assert np.array_equal(np.asarray(load_image(data, max_side=1280, min_side=400)), np.asarray(reduced))
    with path.open("rb") as file:
        assert np.array_equal(np.asarray(load_image(file, max_side=1280, min_side=400)), np.asarray(reduced))
    # Upright: the reduced photo looks like the enlarged original shrunk.
    small = np.asarray(big.resize(reduced.size, Image.Resampling.BOX), np.float64)
    assert np.abs(np.asarray(reduced, np.float64) - small).mean() < 4


def test_min_side_bounds_the_reduced_size(tmp_path):
    path, big = _big_progressive_jpeg(tmp_path)
    assert max(load_image(path, max_side=1280).size) == 1280  # without min_side: exactly max_side
    assert max(load_image(path, max_side=1280, min_side=1000).size) == 1280  # 1/2 scale, shrunk to 1280
    assert max(load_image(path, max_side=1280, min_side=500).size) == 900  # 1/4 scale is enough
    assert max(load_image(path, max_side=300, min_side=5000).size) == 300  # min_side above max_side: max_side
    with Image.open(path) as image:  # not a path Pillow reads itself: decoded whole, then shrunk
        assert max(load_image(image, max_side=1280, min_side=400).size) == 1280


def test_big_baseline_jpeg_decodes_reduced_and_a_cut_one_is_refused(tmp_path):
    path, big = _big_progressive_jpeg(tmp_path)
    baseline = _save(big, "JPEG", quality=90)
    assert load_image(baseline, max_side=1280, min_side=400).size == (450, round(big.height / 8 + 0.49))
    # A progressive JPEG cut short is refused, not read from whatever scans it still has.
    cut = tmp_path / "cut_progressive.jpg"
    data = path.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.8)])
    with pytest.raises(ValueError, match="cut_progressive.jpg"):
        load_image(cut, max_side=1280, min_side=400)
