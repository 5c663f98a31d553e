"""Helpers of the demo and predict-CLI tests: tiny model folders, a fake-webcam clip, odd image files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from PIL import Image

from fer_hf import FerCNNForImageClassification, FerConfig, FerImageProcessor

PHOTOS = Path(__file__).resolve().parent / "fixtures" / "photos"


def save_tiny_model(folder: Path, labels: list[str] | None = None) -> Path:
    """Saves a random "tiny" FER CNN (FER-2013 labels unless `labels` is given) with its processor."""
    extra = {} if labels is None else {"id2label": dict(enumerate(labels)), "label2id": {n: i for i, n in enumerate(labels)}}
    FerCNNForImageClassification(FerConfig.from_variant("tiny", **extra)).save_pretrained(folder)
    FerImageProcessor().save_pretrained(folder)
    return folder


def write_y4m(path: Path, photos: list[Path], size: tuple[int, int] = (320, 240), fps: int = 10,
              seconds_each: float = 1.0) -> Path:
    """A YUV4MPEG2 clip showing each photo for `seconds_each`, for Chromium's fake capture device.

    Each frame is the Y plane, then the Cb and Cr planes at half width and height (4:2:0).
    """
    width, height = size
    with open(path, "wb") as clip:
        clip.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for photo in photos:
            canvas = Image.new("RGB", size)
            with Image.open(photo) as image:
                image = image.convert("RGB")
                image.thumbnail(size)
                canvas.paste(image, ((width - image.width) // 2, (height - image.height) // 2))
            y, cb, cr = canvas.convert("YCbCr").split()
            half = (width // 2, height // 2)
            frame = b"FRAME\n" + y.tobytes() + cb.resize(half).tobytes() + cr.resize(half).tobytes()
            clip.write(frame * round(fps * seconds_each))
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height pixels but which holds no pixel data (a 'pixel bomb' stand-in)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path
