"""Helpers of the demo and predict-CLI tests: tiny model folders, `python app.py` on a free port, a fake-webcam
clip, odd image files."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from fer_hf import FerCNNForImageClassification, FerConfig, FerImageProcessor
from tests import freshpython

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = Path(__file__).resolve().parent / "fixtures" / "photos"
# Page script: counts the labelled frames the live tab draws (each a new <img> src in #overlay) in window.framesSeen.
COUNT_FRAMES = """() => {
  window.framesSeen = 0;
  new MutationObserver(records => {
    for (const r of records) {
      if (r.type === 'attributes' && r.target.tagName === 'IMG') window.framesSeen++;
      for (const node of r.addedNodes || []) if (node.tagName === 'IMG') window.framesSeen++;
    }
  }).observe(document.querySelector('#overlay'), {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
}"""


def save_tiny_model(folder: Path, labels: list[str] | None = None) -> Path:
    """Saves a random "tiny" FER CNN (FER-2013 labels unless `labels` is given) with its processor."""
    extra = {} if labels is None else {"id2label": dict(enumerate(labels)), "label2id": {n: i for i, n in enumerate(labels)}}
    FerCNNForImageClassification(FerConfig.from_variant("tiny", **extra)).save_pretrained(folder)
    FerImageProcessor().save_pretrained(folder)
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    """Waits until the server `process` answers at `url`.

    Raises:
        RuntimeError: if the process exits first or does not answer within `timeout` seconds.
    """
    deadline = time.monotonic() + timeout  # imports take a while on a busy machine
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).close()
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if process.poll() is not None:
                raise RuntimeError(f"app.py exited with {process.returncode} before answering") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"app.py did not answer {url} within {timeout} s") from None
            time.sleep(0.5)


def stop(process: subprocess.Popen, timeout: float = 10) -> None:
    """Terminates a server process, and kills it if it has not exited after `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def running_app(tmp: Path, model: Path, start_timeout: float = 120, *, args: list[str] = (),
                env: dict[str, str] | None = None, stop_timeout: float = 10) -> Iterator[str]:
    """Runs `python app.py --model MODEL [ARGS]` on 127.0.0.1 and a free port; yields its URL.

    Gradio's upload and example caches go to `tmp`, and the server's output to tmp/app.log; on exit
    the server is stopped (SIGTERM, then SIGKILL after `stop_timeout` seconds), and a traceback in its
    log fails the test. `env` replaces the environment (default: this one, offline).
    """
    import pytest

    port = free_port()
    env = {**(os.environ if env is None else env), "OMP_NUM_THREADS": "1", "GRADIO_TEMP_DIR": str(tmp / "gradio"),
           "GRADIO_EXAMPLES_CACHE": str(tmp / "examples"), **({"HF_HUB_OFFLINE": "1"} if env is None else {})}
    log_path = tmp / "app.log"
    # Forked from tests/freshpython.py's server, which has imported torch and the other libraries that read no
    # Hugging Face or Gradio setting: a fresh interpreter in all else.
    process = freshpython.start(["app.py", "--model", model, "--port", port, *args], cwd=ROOT, env=env,
                                stdout=log_path)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_up(url, process, start_timeout)
    except RuntimeError as error:
        stop(process)
        pytest.fail(f"{error}:\n{log_path.read_text()[-4000:]}")
    try:
        yield url
    finally:
        stop(process, stop_timeout)
    assert "Traceback" not in log_path.read_text(), log_path.read_text()[-4000:]


def write_y4m(path: Path, photos: list[Path], size: tuple[int, int] = (320, 240), fps: int = 10,
              seconds_each: float = 1.0, noise: int = 0, seed: int = 0) -> Path:
    """A YUV4MPEG2 clip showing each photo for `seconds_each`, for Chromium's fake capture device.

    Each frame is the Y plane, then the Cb and Cr planes at half width and height (4:2:0). With
    `noise`, every frame's Y plane gets its own uniform noise of +-noise grey levels, as a real sensor's
    frames differ: Gradio names an output by its content, so identical frames would not be redrawn.
    """
    rng = np.random.default_rng(seed)
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
            chroma = cb.resize(half).tobytes() + cr.resize(half).tobytes()
            luma = np.asarray(y, dtype=np.int16)
            for _ in range(round(fps * seconds_each)):
                noisy = np.clip(luma + rng.integers(-noise, noise + 1, luma.shape), 0, 255) if noise else luma
                clip.write(b"FRAME\n" + noisy.astype(np.uint8).tobytes() + chroma)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height pixels but which holds no pixel data (a 'pixel bomb' stand-in)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path
