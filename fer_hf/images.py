"""Reading images: any image source as an upright RGB PIL image, read safely.

    from fer_hf.images import load_image

    image = load_image("photo.jpg")                              # RGB, EXIF-rotated, alpha on white
    small = load_image("photo.jpg", max_side=1280, min_side=640)  # a big JPEG decoded at reduced scale

Sources: a path, bytes, a file object, a PIL image or a NumPy array (HxW, HxWxC, or channels-first
CxHxW as a torch tensor's .numpy() gives). Reading refuses images above a pixel limit before decoding
them, applies the EXIF orientation, turns every PIL mode into RGB (transparency composited on white,
16-bit and float pixels scaled to 8 bits), keeps the first frame of animated images, and can decode a
large JPEG at 1/2, 1/4 or 1/8 scale, a progressive one at 1/8 from its DC scans alone. Every failure
is an ImageReadError (a ValueError) that names the file.
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
from pathlib import Path
from typing import Any, BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps

ImageSource = Union[str, os.PathLike, bytes, bytearray, BinaryIO, np.ndarray, Image.Image]

# Refuse images above 64 megapixels (8000x8000): decoding one takes ~200 MB as RGB. The largest
# real photo here is 7,360x4,912 (36 MP). Pillow's own bomb guard starts at 89 MP, above this.
MAX_IMAGE_PIXELS = 64_000_000

_EXIF_ORIENTATION = 0x0112
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


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
            longer side at least this, when that decodes faster: JPEG decodes at 1/2, 1/4 or 1/8 scale,
            and at 1/8 a progressive JPEG needs only its DC coefficients, so most of the file is
            skipped (a 7,360x4,912 progressive photo: ~120 ms instead of ~250 ms). None: max_side.
            The pixels of the smaller result are the same as those of a full decode shrunk to its size.

    Returns:
        A new RGB image the caller owns (a PIL source is left as it was).

    Raises:
        ImageReadError (a ValueError): for unreadable, truncated or too large input, naming the file.
    """
    if isinstance(source, np.ndarray):
        name = f"<array of shape {source.shape} and dtype {source.dtype}>"
        image = _array_to_image(source, name)
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


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


def reuse_freed_memory(limit: int = 1 << 30) -> bool:
    """Makes glibc keep freed memory (up to `limit` bytes a block) for reuse; False where it cannot.

    Even at 1/8 scale, libjpeg decodes a progressive JPEG into coefficient buffers for the whole
    image: about 200 MB for a 7,360x4,912 photo. glibc maps blocks that size afresh and unmaps them
    when freed, so every such photo pays ~50,000 page faults (40-90 ms of a ~150 ms read). Kept, the
    next photo reuses the same pages. One malloc arena for all threads, because a thread's own arena
    cannot hold a block above 64 MB and maps it afresh (Gradio runs handlers in threads).

    The cost: the process keeps its peak heap instead of returning it. It is a process-wide setting,
    so the application calls it, once, before starting threads (app.py and `python -m fer_hf` do), not
    the library.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt  # glibc's; macOS and Windows have none
    except (OSError, AttributeError):
        return False
    settings = ((_M_MMAP_THRESHOLD, limit), (_M_TRIM_THRESHOLD, limit), (_M_ARENA_MAX, 1))
    return all(mallopt(option, value) == 1 for option, value in settings)


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
        pixels = image  # what is decoded: the image, or a shortened copy of a progressive JPEG
        if owned and max_side is not None and max(image.size) > max_side:
            # JPEG can decode at 1/2, 1/4 or 1/8 scale: a 36 MP photo loads in a fraction of the time.
            # Pillow picks the smallest scale that still gives at least the requested size.
            side = max_side if min_side is None else max(1, min(min_side, max_side))
            scale = side / max(image.size)
            request = (math.ceil(image.width * scale), math.ceil(image.height * scale))
            image.draft(None, request)
            pixels = _decode_dc_only(image, request) or image
        pixels.load()  # raises for truncated files
        upright = pixels
        try:
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
            if orientation != 1:
                upright = ImageOps.exif_transpose(pixels)  # the copy keeps the file's EXIF block
                if orientation in (5, 6, 7, 8):  # turned a quarter: width and height swap
                    original = original[::-1]
        except Exception:  # a corrupt EXIF block should not make the pixels unreadable
            pass
        return _shrink(_to_rgb(upright), max_side, original)
    except Exception as err:
        raise ImageReadError(f"Cannot read image {name}: {err}") from err


# A JPEG marker in entropy-coded data: 0xFF followed by neither 0x00 (a stuffed byte), RST0-7 nor 0xFF (fill).
_JPEG_MARKER = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # 0xC2: progressive, Huffman-coded


def _decode_dc_only(image: Image.Image, request: tuple[int, int]) -> Image.Image | None:
    """A progressive JPEG drafted to 1/8 scale, decoded from its DC scans alone; None where that does not apply.

    At 1/8 scale libjpeg makes each output pixel of a full-resolution component (luma; every component
    of a gray or 4:4:4 photo) from its 8x8 block's DC coefficient alone. A baseline JPEG interleaves
    all coefficients, but a progressive one stores the DC coefficients in scans of their own, so the
    AC scans of those components (most of the file) can be left out: the pixels come out the same
    (the chroma AC scans, which subsampled chroma does use at this scale, are kept). A 7,360x4,912
    progressive photo then decodes in ~120 ms instead of ~250 ms. The AC scans left out are replaced
    by scans that set those coefficients to zero, so that libjpeg knows them and does not spend time
    estimating them ("block smoothing"). Anything unexpected (another coding process, restart
    markers, no end marker, a parse error) returns None and the caller decodes the file itself.
    """
    if image.format != "JPEG" or not image.info.get("progressive") or image.fp is None:
        return None
    if tuple(getattr(image, "decoderconfig", ()))[:1] != (8,):
        return None
    try:
        image.fp.seek(0)  # Image.open reads a file object from its start (or a copy of it)
        shortened = _progressive_jpeg_dc_only(image.fp.read())
        if shortened is None:
            return None
        copy = Image.open(io.BytesIO(shortened))
        copy.draft(None, request)
        if copy.size != image.size or copy.mode != image.mode:
            return None
        copy.load()
        return copy
    except Exception:  # the caller's own decode reports what is wrong with the file
        return None


def _progressive_jpeg_dc_only(data: bytes) -> bytes | None:
    """`data` less the AC scans of its full-resolution components, with all-zero AC scans for them instead.

    None unless `data` is a whole progressive Huffman-coded JPEG (SOF2) without restart intervals.
    """
    if data[:2] != b"\xff\xd8":
        return None
    parts, pos, components, size = [data[:2]], 2, None, None
    dc_only: set[int] = set()
    while True:
        if pos + 2 > len(data) or data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # end of image
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            parts.append(data[pos : pos + 2])
            pos += 2
            continue
        if pos + 4 > len(data):
            return None
        end = pos + 2 + struct.unpack_from(">H", data, pos + 2)[0]
        if marker in _SOF_MARKERS:
            if marker != 0xC2 or components is not None:
                return None
            height, width, count = struct.unpack_from(">HHB", data, pos + 5)
            components = [(data[at], data[at + 1] >> 4, data[at + 1] & 15) for at in range(pos + 10, pos + 10 + 3 * count, 3)]
            if not height or not width or not components or any(not h or not v for _, h, v in components):
                return None
            size = (width, height)
            h_max, v_max = max(c[1] for c in components), max(c[2] for c in components)
            # libjpeg's rule for a component's IDCT size at 1/8 scale (jdmaster.c): 1x1 unless subsampled.
            dc_only = {cid for cid, h, v in components if h_max % (2 * h) or v_max % (2 * v)}
        elif marker == 0xDD and struct.unpack_from(">H", data, pos + 4)[0]:  # restart interval
            return None
        elif marker == 0xDA:  # start of scan: header, then entropy-coded data up to the next marker
            if components is None:
                return None
            found = _JPEG_MARKER.search(data, end)
            if found is None:  # cut short: let the normal decoder report it
                return None
            spectral_start, scan_component = data[pos + 5 + 2 * data[pos + 4]], data[pos + 5]
            if spectral_start == 0 or scan_component not in dc_only:  # AC scans hold one component
                parts.append(data[pos : found.start()])
            pos = found.start()
            continue
        parts.append(data[pos:end])
        pos = end
    if components is None or size is None:
        return None
    h_max, v_max = max(c[1] for c in components), max(c[2] for c in components)
    parts.append(_zero_ac_scans([(cid, h, v) for cid, h, v in components if cid in dc_only], size, h_max, v_max))
    parts.append(b"\xff\xd9")
    return b"".join(parts)


def _zero_ac_scans(components: list[tuple[int, int, int]], size: tuple[int, int], h_max: int, v_max: int) -> bytes:
    """A Huffman table and one AC scan per component setting coefficients 1..63 of every block to zero.

    Each scan is a few end-of-band runs (EOBRUN, up to 32,767 blocks each); the table codes the 15
    run symbols 0x00, 0x10, ..., 0xE0 with four bits each, symbol r0 as the number r.
    """
    table = bytes([0x10]) + bytes([0, 0, 0, 15] + [0] * 12) + bytes(r << 4 for r in range(15))  # AC table 0
    out = [b"\xff\xc4" + struct.pack(">H", 2 + len(table)) + table]
    width, height = size
    for cid, h, v in components:
        blocks = -(-width * h // (h_max * 8)) * -(-height * v // (v_max * 8))
        bits, count = 0, 0
        while blocks:
            run = min(blocks, 32767)
            r = run.bit_length() - 1
            bits, count = (bits << (4 + r)) | (r << r) | (run - (1 << r)), count + 4 + r
            blocks -= run
        pad = -count % 8
        bits, count = (bits << pad) | ((1 << pad) - 1), count + pad  # pad with one bits
        coded = bits.to_bytes(count // 8, "big").replace(b"\xff", b"\xff\x00")
        out.append(b"\xff\xda" + struct.pack(">HB", 8, 1) + bytes([cid, 0x00, 1, 63, 0]) + coded)
    return b"".join(out)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to RGB: alpha over white, wide modes scaled to 8 bits, the rest by Pillow."""
    if image.mode in _WIDE_MODES:
        # Pillow's convert() clips 16-bit and float pixels instead of scaling them.
        gray = _to_uint8(np.asarray(image), wide_mode=image.mode)
        return Image.fromarray(gray).convert("RGB")
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    # convert() copies even when the mode is already RGB, so the caller always owns the result.
    return image.convert("RGB")


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


def _array_to_image(array: np.ndarray, name: str) -> Image.Image:
    """HxW, HxWxC or CxHxW (C in 1, 3, 4) arrays of bool/int/float to an L, RGB or RGBA image."""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels-first, as torch tensors come
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)) or 0 in array.shape:
        raise ImageReadError(f"Cannot read image {name}: expected HxW, HxWx1, HxWx3 or HxWx4.")
    if not (array.dtype == bool or np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ImageReadError(f"Cannot read image {name}: unsupported dtype.")
    pixels = np.ascontiguousarray(_to_uint8(array))
    return Image.fromarray(pixels)  # uint8 HxW -> L, HxWx3 -> RGB, HxWx4 -> RGBA


def _to_uint8(array: np.ndarray, wide_mode: str | None = None) -> np.ndarray:
    """Scales pixels to uint8 with the conventions of fer_hf.image_processing_fer.

    bool -> 0/255; uint16 (and PIL's I;16) -> /257; other integers clipped to 0..255 unless they
    exceed 255, then taken as 16-bit; floats as 0..1 when they fit, else clipped to 0..255.
    """
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        values = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0
        return np.clip(values * scale, 0, 255).round().astype(np.uint8)
    sixteen_bit = array.dtype == np.uint16 or (wide_mode or "").startswith("I;16") or array.max(initial=0) > 255
    if sixteen_bit:
        return np.clip(array.astype(np.float64) / 257.0, 0, 255).round().astype(np.uint8)
    return np.clip(array, 0, 255).astype(np.uint8)


__all__ = ["MAX_IMAGE_PIXELS", "ImageReadError", "ImageSource", "load_image", "reuse_freed_memory"]
