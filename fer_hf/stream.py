"""Cameras and live streams: every face labelled in real time, never falling behind the source.

    from fer_hf.stream import analyze_stream, is_stream

    is_stream("rtsp://camera.local/live")        # True; also 0, "/dev/video0", http(s)://, udp://, rtmp://, srt://
    for frame in analyze_stream(recognizer, "rtsp://camera.local/live", duration=60):
        frame.index, frame.time, frame.faces     # as analyze_video's; the indices skip the frames dropped
        frame.dropped                            # frames dropped so far, because labelling was slower

A reader thread decodes the source (PyAV: whatever FFmpeg opens) as fast as it delivers and holds
only the newest frame; the faces of that frame are found, classified and tracked (fer_hf.video's
FrameLabeller) while the next ones arrive. When labelling is slower than the source, the frames that
arrived meanwhile are dropped rather than queued, so each result is of a frame just received. A video
file given here is played at its own pace, as if it came from a camera.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time as clock
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import av

from .tracking import DEFAULT_HYSTERESIS, DEFAULT_MAX_AGE, DEFAULT_TIME_CONSTANT
from .video import DEFAULT_REDETECT, FrameLabeller, FrameResult, VideoReadError, _reason

logger = logging.getLogger(__name__)

# What FFmpeg's network protocols are called: a SOURCE with one of these schemes is a stream.
STREAM_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "rtp", "srt"})
# Seconds to wait for a source to open, and then for each frame, before it counts as stopped.
DEFAULT_TIMEOUT = 10.0


class StreamError(VideoReadError):
    """A camera or stream that cannot be opened, or stops being readable; the message names it."""


@dataclass
class StreamFrame(FrameResult):
    """One labelled frame of a live source: `received` is when it was decoded (time.monotonic())."""

    received: float = 0.0
    dropped: int = 0  # frames of the source dropped so far, unlabelled


def is_stream(source: str | int | os.PathLike) -> bool:
    """Whether a source is a camera (an index such as 0, or a /dev/video device) or a stream URL, not a file."""
    if isinstance(source, int):
        return True
    text = str(source)
    if text.isdigit():
        return not Path(text).exists()  # a file named "0" stays a file
    return text.startswith("/dev/video") or urlsplit(text).scheme.lower() in STREAM_SCHEMES


def describe(source: str | int | os.PathLike) -> str:
    """How messages name a source: "camera 0 (/dev/video0)", or the URL or path as given."""
    name, format = _device(source)
    return f"camera {source} ({name})" if format and str(source) != name else str(source)


def analyze_stream(
    recognizer: Any,
    source: str | int | os.PathLike,
    *,
    duration: float | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    redetect: float = DEFAULT_REDETECT,
    time_constant: float = DEFAULT_TIME_CONSTANT,
    hysteresis: float = DEFAULT_HYSTERESIS,
    max_age: float = DEFAULT_MAX_AGE,
    progress: Callable[[int], None] | None = None,
) -> Iterator[StreamFrame]:
    """Labels the faces of a camera's or stream's frames as they come, one StreamFrame per labelled frame.

    Faces are found, followed and tracked as in fer_hf.video.analyze_video, one frame at a time: the
    newest frame received when the previous one is done. A frame's `index` counts every frame the
    source delivered (the dropped ones too) and its `time` is seconds from the first frame, by the
    frames' timestamps (by the clock when a source has none, or its timestamps jump back).

    Args:
        recognizer: A FaceExpressionRecognizer.
        source: A camera (an index, or a device path such as /dev/video0), a stream URL (rtsp, http,
            udp, rtmp, srt...) or a video file (played at its own pace).
        duration: Stop at the first frame this many seconds after the first; None: until the source ends.
        timeout: Seconds to wait for the source to open, and then for each frame.
        redetect, time_constant, hysteresis, max_age: analyze_video's.
        progress: Called with the number of frames received so far, after each labelled frame.

    Raises:
        StreamError: if the source cannot be opened (before any result), or stops being readable
            (after the results of the frames before). A source that ends (a file, a server that closes
            the stream) just ends the results, with a warning naming it.
    """
    if duration is not None and duration <= 0:
        raise ValueError(f"duration must be above 0 seconds, got {duration}.")
    labeller = FrameLabeller(recognizer, redetect=redetect, time_constant=time_constant, hysteresis=hysteresis,
                             max_age=max_age)
    reader = NewestFrame(source, timeout=timeout)
    try:
        while (taken := reader.take()) is not None:
            index, time, frame, received = taken
            if duration is not None and time >= duration:
                return
            faces = labeller.label([labeller.find(frame, time)])[0]
            yield StreamFrame(index, time, faces, received=received, dropped=reader.dropped)
            if progress is not None:
                progress(reader.received)
        if reader.error is not None:
            raise reader.error
        logger.warning("%s ended after %d frame(s) (%.1f s).", reader.name, reader.received, reader.last_time)
    finally:
        reader.close()


class NewestFrame:
    """Reads a source in a thread and holds only its newest frame: a frame not taken before the next is dropped.

        reader = NewestFrame("rtsp://camera.local/live")
        while (taken := reader.take()) is not None:   # waits for a frame newer than the last one taken
            index, time, frame, received = taken        # frame: an av.VideoFrame
        reader.error                                    # a StreamError if the source stopped being readable
        reader.close()

    Raises:
        StreamError: if the source cannot be opened or has no video.
    """

    def __init__(self, source: str | int | os.PathLike, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.name = describe(source)
        self.timeout = timeout
        self.container = _open(source, self.name, timeout)
        self.paced = not is_stream(source)  # a file, played as a camera would deliver it
        self.received = 0
        self.dropped = 0
        self.last_time = 0.0
        self.error: StreamError | None = None
        self._newest: tuple[int, float, av.VideoFrame, float] | None = None
        self._ended = False
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name=f"reader of {self.name}", daemon=True)
        self._thread.start()

    def take(self) -> tuple[int, float, av.VideoFrame, float] | None:
        """The newest frame not taken yet (index, time, frame, when received), waiting for one; None at the end."""
        with self._changed:
            self._changed.wait_for(lambda: self._newest is not None or self._ended)
            taken, self._newest = self._newest, None
            return taken

    def close(self) -> None:
        """Stops reading; the thread closes the source at its next frame (or when a read times out)."""
        self._stop.set()
        self._thread.join(timeout=1.0)

    def _read(self) -> None:
        stream = self.container.streams.video[0]
        first_timestamp: float | None = None
        started = None
        try:
            for packet in self.container.demux(stream):
                for frame in packet.decode():
                    now = clock.monotonic()
                    started = now if started is None else started
                    if first_timestamp is None and frame.time is not None:
                        first_timestamp = frame.time
                    # The frame's own timestamp where it has one; the clock where not, or where it jumps back.
                    time = None if frame.time is None or first_timestamp is None else frame.time - first_timestamp
                    if time is None or time < self.last_time:
                        time = max(self.last_time, now - started)
                    if self.paced and self._stop.wait(max(0.0, started + time - now)):
                        return
                    if self._stop.is_set():
                        return
                    with self._changed:
                        self.dropped += self._newest is not None
                        self._newest = (self.received, time, frame, clock.monotonic())
                        self.received += 1
                        self.last_time = time
                        self._changed.notify()
        except av.FFmpegError as error:
            reason = f"no data for {self.timeout:g} s" if isinstance(error, av.ExitError) else _reason(error)
            self.error = StreamError(f"{self.name} stopped after frame {self.received}: {reason}")
        finally:
            self.container.close()
            with self._changed:
                self._ended = True
                self._changed.notify()


def _device(source: str | int | os.PathLike) -> tuple[str, str | None]:
    """What PyAV opens for a source, and the input format: a camera's device, or the source itself."""
    text = str(source)
    if text.isdigit() and is_stream(source):
        if sys.platform == "darwin":
            return text, "avfoundation"
        if sys.platform.startswith("linux"):
            return f"/dev/video{text}", "v4l2"
        return text, None  # _open says why not
    if text.startswith("/dev/video"):
        return text, "v4l2"
    return text, None


def _open(source: str | int | os.PathLike, name: str, timeout: float) -> av.container.InputContainer:
    """The source opened with PyAV, checked to hold a video stream."""
    path, format = _device(source)
    if path.isdigit() and format is None and is_stream(source):
        raise StreamError(f"Cannot open {name}: cameras are opened by index on Linux and macOS; elsewhere give a URL.")
    if not is_stream(source) and not Path(path).is_file():
        raise StreamError(f"Cannot read video {name}: no such file.")
    try:
        container = av.open(path, format=format, timeout=timeout)
    except av.ExitError:  # PyAV's timeout
        raise StreamError(f"Cannot open {name}: no answer within {timeout:g} s") from None
    except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise StreamError(f"Cannot open {name}: {_reason(error)}") from None
    if not container.streams.video:
        container.close()
        raise StreamError(f"{name} has no video stream: nothing to label.")
    return container


__all__ = ["DEFAULT_TIMEOUT", "STREAM_SCHEMES", "NewestFrame", "StreamError", "StreamFrame", "analyze_stream",
           "describe", "is_stream"]
