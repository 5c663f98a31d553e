"""Reading images: any image source as an upright RGB PIL image, read safely.

    from fer_hf.model.images import load_image

    image = load_image("photo.jpg")                              # RGB, EXIF-rotated, alpha on white
    small = load_image("photo.jpg", max_side=1280, min_side=640)  # a big JPEG decoded at reduced scale

Sources: a path, bytes, a file object, a PIL image or a NumPy array (HxW, HxWxC, or channels-first
CxHxW as a torch tensor's .numpy() gives). Reading refuses images above a pixel limit before decoding
them, applies the EXIF orientation, turns every PIL mode into RGB (transparency composited on white,
16-bit and float pixels scaled to 8 bits, with the converters of the model's image processor),
keeps the first frame of animated images, and can decode a large JPEG at 1/2, 1/4 or 1/8 scale.
Every failure is an ImageReadError (a ValueError) that names the file.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any, BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps

from .image_processing_fer import array_to_pil, to_8_bit

ImageSource = Union[str, os.PathLike, bytes, bytearray, BinaryIO, np.ndarray, Image.Image]

# Refuse images above 64 megapixels (8000x8000): decoding one takes ~200 MB as RGB. The largest
# real photo here is 7,360x4,912 (36 MP). Pillow's own bomb guard starts at 89 MP, above this.
MAX_IMAGE_PIXELS = 64_000_000

_EXIF_ORIENTATION = 0x0112


class ImageReadError(ValueError):
    """An image that cannot be read or is refused; the message names the file."""


def load_image(
    source: ImageSource,
    *,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
    max_side: int | None = None,
    min_side: int | None = None,
) -> Image.Image:
    """Reads a photo from a path, bytes, file object, NumPy array or PIL image as an RGB PIL image.

    Applies the EXIF orientation, keeps only the first frame of animated images, composites
    transparency on white and scales 16-bit, 32-bit and float pixels to 8 bits. Arrays are HxW,
    HxWx1, HxWx3 (RGB, not OpenCV's BGR) or HxWx4 (RGBA), channels-first also accepted, of bool,
    integer or float dtype (floats are read as 0..1 when they fit, else as 0..255).

    Args:
        source: The image.
        max_pixels: Refuse images with more pixels than this (checked before decoding); None for no limit.
        max_side: If given, shrink the result so that its longer side is at most this; JPEG files are
            then decoded at reduced scale, several times faster for large photos.
        min_side: With max_side, let a large JPEG file come out smaller than max_side, but with its
            longer side at least this, when that decodes faster: JPEG decodes at 1/2, 1/4 or 1/8 scale.
            None: max_side.

    Returns:
        A new RGB image the caller owns (a PIL source is left as it was).

    Raises:
        ImageReadError (a ValueError): for unreadable, truncated or too large input, naming the file.
    """
    if isinstance(source, np.ndarray):
        name = f"<array of shape {source.shape} and dtype {source.dtype}>"
        try:
            image = array_to_pil(source)
        except ValueError as err:
            raise ImageReadError(f"Cannot read image {name}: {err}") from None
        _check_pixels(image.size, max_pixels, name)
        return _shrink(_to_rgb(image), max_side)
    if isinstance(source, Image.Image):
        name = getattr(source, "filename", "") or "<PIL image>"
        _check_pixels(source.size, max_pixels, name)
        frame = source.tell()
        try:
            return _decode(source, name, max_side, owned=False)
        finally:
            if source.tell() != frame:
                source.seek(frame)

    name, stream = _open_stream(source)
    try:
        with Image.open(stream) as image:
            _check_pixels(image.size, max_pixels, name)
            return _decode(image, name, max_side, owned=True, min_side=min_side)
    except ImageReadError:
        raise
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, ... for bad files
        raise ImageReadError(f"Cannot read image {name}: {err}") from err
    finally:
        if isinstance(stream, io.BytesIO) and stream is not source:
            stream.close()


def _open_stream(source: Any) -> tuple[str, Any]:
    """Returns a printable name for the source and something Image.open accepts."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageReadError(f"Cannot read image {path}: no such file")
        return str(path), path
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>", io.BytesIO(bytes(source))
    if hasattr(source, "read"):
        return str(getattr(source, "name", "<file object>")), source
    raise ImageReadError(f"Cannot read an image from a {type(source).__name__}.")


def _check_pixels(size: tuple[int, int], max_pixels: int | None, name: str) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageReadError(f"Cannot read image {name}: it is empty ({width}x{height}).")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageReadError(
            f"Refusing image {name}: {width}x{height} = {width * height:,} pixels is above the limit of "
            f"{max_pixels:,} (pass max_pixels=None to read it anyway)."
        )


def _decode(
    image: Image.Image,
    name: str,
    max_side: int | None,
    owned: bool,
    min_side: int | None = None,
) -> Image.Image:
    """Frame 0 of an image, reduced for max_side, upright and in RGB; `owned` if we opened the file."""
    try:
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        original = image.size  # before any reduced-scale decoding
        if owned and max_side is not None and max(image.size) > max_side:
            # JPEG can decode at 1/2, 1/4 or 1/8 scale: a 36 MP photo loads in a fraction of the time.
            # Pillow picks the smallest scale that still gives at least the requested size.
            side = max_side if min_side is None else max(1, min(min_side, max_side))
            scale = side / max(image.size)
            request = (math.ceil(image.width * scale), math.ceil(image.height * scale))
            image.draft(None, request)
        image.load()  # raises for truncated files
        upright = image
        try:
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
            if orientation != 1:
                upright = ImageOps.exif_transpose(image)  # the copy keeps the file's EXIF block
                if orientation in (5, 6, 7, 8):  # turned a quarter: width and height swap
                    original = original[::-1]
        except Exception:  # a corrupt EXIF block should not make the pixels unreadable
            pass
        return _shrink(_to_rgb(upright), max_side, original)
    except Exception as err:
        raise ImageReadError(f"Cannot read image {name}: {err}") from err


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to a new RGB image: alpha over white, wide modes scaled to 8 bits, the rest by Pillow."""
    # convert() copies even when the mode is already RGB, so the caller always owns the result.
    return to_8_bit(image).convert("RGB")


def _shrink(image: Image.Image, max_side: int | None, original: tuple[int, int] | None = None) -> Image.Image:
    """`image` with its longer side at most `max_side`; a reduced image keeps the (upright) size of the
    photo it came from in `info["original_size"]`, so boxes found on it can be mapped back."""
    original = original or image.size
    if max_side is not None and max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    if image.size != tuple(original):
        image.info["original_size"] = tuple(original)
    return image


__all__ = ["MAX_IMAGE_PIXELS", "ImageReadError", "ImageSource", "load_image"]
