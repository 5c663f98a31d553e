"""Real video files for the tests and benchmarks, encoded with PyAV from real photos.

    write_video(path, [frame0, frame1, ...], fps=10)            # HxWx3 uint8 RGB frames, H.264 in mp4
    write_video(path, frames, times=[0, 0.1, 0.35], rotation=-90, audio_seconds=2)
    still_frames(photo, count=12, noise=3)                       # a photo held still, with sensor noise
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image


def write_video(
    path: Path,
    frames: Iterable[np.ndarray],
    *,
    fps: float = 10,
    times: Sequence[float] | None = None,
    rotation: int = 0,
    audio_seconds: float = 0,
    audio_codec: str = "aac",
    codec: str = "libx264",
    faststart: bool = False,
) -> Path:
    """Encodes RGB frames (all of one size, even sides) into a video file.

    Args:
        path: The file; its extension picks the container.
        frames: The frames, as stored (a phone stores them sideways and sets `rotation`).
        fps: Frame rate: frame i at i / fps unless `times` is given.
        times: Each frame's time in seconds (a variable frame rate).
        rotation: Display-matrix rotation, degrees counterclockwise (what PyAV's frame.rotation reads back).
        audio_seconds: Also write a 440 Hz tone this long (0: no audio stream).
        audio_codec: The tone's codec.
        codec: The video codec.
        faststart: Put the index (mp4's moov atom) before the frames, as streaming sites do.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    time_base = Fraction(1, 1000)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = None
        audio = container.add_stream(audio_codec, rate=16000, layout="mono") if audio_seconds else None
        for index, pixels in enumerate(frames):
            if stream is None:
                stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
                stream.height, stream.width = pixels.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.codec_context.time_base = time_base
                if rotation:
                    stream.set_display_rotation(rotation)
                if audio is not None:
                    _write_tone(container, audio, audio_seconds)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            frame.pts = round((times[index] if times is not None else index / fps) / time_base)
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        if stream is None:  # no frame: a video stream with nothing in it
            stream = container.add_stream(codec, rate=int(fps))
            stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
            container.start_encoding()
        for packet in stream.encode():
            container.mux(packet)
    return path


def _write_tone(container, stream, seconds: float) -> None:
    rate = stream.codec_context.sample_rate
    samples = (np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate) * 8000).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(samples[None, :], format="s16", layout="mono")
    frame.sample_rate = rate
    for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def still_frames(photo: Path | Image.Image, count: int, *, noise: float = 3.0, size: tuple[int, int] | None = None,
                 seed: int = 0) -> Iterable[np.ndarray]:
    """A photo held still for `count` frames, each with fresh Gaussian sensor noise (std `noise` grey levels).

    The size is made even (H.264's 4:2:0 needs it); `size` resizes first.
    """
    image = Image.open(photo).convert("RGB") if isinstance(photo, Path) else photo.convert("RGB")
    if size is not None:
        image = image.resize(size, Image.Resampling.BICUBIC)
    pixels = np.asarray(image, dtype=np.float32)
    pixels = pixels[: pixels.shape[0] // 2 * 2, : pixels.shape[1] // 2 * 2]
    generator = np.random.default_rng(seed)
    for _ in range(count):
        yield np.clip(pixels + generator.normal(0, noise, pixels.shape), 0, 255).astype(np.uint8)


def read_video(path: Path) -> dict:
    """What a test checks of a written video: frame count, frame times, size, fps, audio stream and its duration."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times = [float(frame.time) for frame in container.decode(stream)]
    with av.open(str(path)) as container:
        audio = container.streams.audio[0] if container.streams.audio else None
        audio_seconds = float(audio.duration * audio.time_base) if audio is not None and audio.duration else 0.0
        video = container.streams.video[0]
        return {"frames": len(times), "times": times, "size": (video.width, video.height),
                "fps": float(video.average_rate or 0), "audio": audio.codec_context.name if audio else None,
                "audio_seconds": audio_seconds}
