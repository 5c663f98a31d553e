"""Video files: every face labelled frame by frame, followed by track, and the annotated video.

    from fer_hf.video import analyze_video, probe

    info = probe("clip.mp4")                     # size (upright), fps, frame count, duration, audio
    for frame in analyze_video(recognizer, "clip.mp4", every=1, annotate="clip_labelled.mp4"):
        frame.index, frame.time, frame.faces     # faces: + "track", smoothed "scores", "label", "score"

Decoding and encoding use PyAV (FFmpeg in its wheel), so whatever it reads works: mp4, mov, webm,
mkv, avi. Frames are decoded one at a time and only a batch of them is held. Each frame is turned
upright by its rotation (phone videos), timed by its own timestamp (variable frame rates), and a
frame larger than the recognizer reads photos (4K) is analysed on a reduced copy and drawn at full
size. The annotated video keeps every frame's timestamp (so its frame rate and frame count) and
the audio. Every failure is a VideoReadError (a ValueError) that names the file.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .drawing import draw_captioned_box
from .model.face_detection import Box, FaceDetector, crop_face
from .tracking import DEFAULT_HYSTERESIS, DEFAULT_MAX_AGE, DEFAULT_TIME_CONSTANT, FaceTracker

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts", ".mts"}
)
# Frames decoded before their faces are labelled together: the crops of a batch share forward passes.
DEFAULT_BATCH_SIZE = 8
# Seconds between searches of the whole frame; between them each face is followed in a small region.
DEFAULT_REDETECT = 0.5
_NEAR_SIDE = 128
# Frames an mp4 index may list that its decoder drops (an edit list trimming the start) before a short video counts as cut.
_FRAMES_SPARED = 2
# Box colours by track id (tab10), so that a face keeps its colour through the video.
_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


class VideoReadError(ValueError):
    """A video that cannot be read, or cannot be read to its end; the message names the file."""


@dataclass(frozen=True)
class VideoInfo:
    """What a video file says of itself; width and height are those of the upright frames."""

    path: str
    width: int
    height: int
    fps: float
    frames: int  # as the file states it; 0 when it does not
    duration: float | None
    rotation: int  # degrees counterclockwise that turn a stored frame upright
    has_audio: bool


@dataclass
class FrameResult:
    """The faces of one analysed frame: index from 0, time in seconds from the first frame."""

    index: int
    time: float
    faces: list[dict[str, Any]] = field(default_factory=list)


def is_video(path: str | os.PathLike) -> bool:
    """Whether the file's extension is a video container's."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def probe(path: str | os.PathLike) -> VideoInfo:
    """Reads a video's header and its first frame.

    Raises:
        VideoReadError: if it is not a video PyAV can read, has no video stream or no frame.
    """
    with _open(path) as container:
        stream = container.streams.video[0]
        first = next(_decode(container, stream, path), None)
        if first is None:
            raise VideoReadError(f"{path} has no video frames.")
        width, height = first.width, first.height
        if first.rotation % 180:
            width, height = height, width
        duration = float(stream.duration * stream.time_base) if stream.duration else None
        if duration is None and container.duration:
            duration = container.duration / av.time_base
        return VideoInfo(str(path), width, height, _frame_rate(stream), stream.frames, duration,
                         first.rotation, bool(container.streams.audio))


def analyze_video(
    recognizer: Any,
    path: str | os.PathLike,
    *,
    every: int = 1,
    annotate: str | os.PathLike | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    redetect: float = DEFAULT_REDETECT,
    time_constant: float = DEFAULT_TIME_CONSTANT,
    hysteresis: float = DEFAULT_HYSTERESIS,
    max_age: float = DEFAULT_MAX_AGE,
    progress: Callable[[int], None] | None = None,
) -> Iterator[FrameResult]:
    """Labels the faces of a video's frames, one FrameResult per analysed frame, as they are decoded.

    The whole frame is searched for faces (by the recognizer's detector) at the first analysed
    frame, every `redetect` seconds and whenever a face is lost; on the frames between, each face
    is looked for only in a small region around where it was (a few times faster), so its box
    follows it on every frame (with its landmarks, so that a followed face is aligned as a found one
    when the recognizer aligns faces). The crops of a batch of frames share the classifier's forward passes.

    Args:
        recognizer: A FaceExpressionRecognizer.
        path: The video file.
        every: Analyse every `every`-th frame (0, every, 2 * every, ...).
        annotate: Also write the video with each face boxed and captioned "track label score" to this
            path (mp4; every frame, the last analysed frame's faces drawn on the frames between).
        batch_size: Frames decoded before their faces are classified together.
        redetect: Seconds between searches of the whole frame (new faces show up within this); 0: every frame.
        time_constant, hysteresis, max_age: fer_hf.tracking.FaceTracker's (0, 0: each frame's own scores).
        progress: Called with the number of frames decoded so far, after each batch.

    Raises:
        VideoReadError: if the file cannot be read (before any result), or stops being readable
            (after the results of the frames before).
    """
    if every < 1 or batch_size < 1:
        raise ValueError(f"every and batch_size must be at least 1, got {every} and {batch_size}.")
    labeller = FrameLabeller(recognizer, redetect=redetect, time_constant=time_constant, hysteresis=hysteresis,
                             max_age=max_age)
    with _open(path) as container:
        stream = container.streams.video[0]
        writer = _AnnotatedWriter(annotate, container, stream) if annotate else None
        pending: list[list] = []  # [index, time, frame to draw or None, Found or None]
        shown: list[dict[str, Any]] = []  # the faces drawn on frames that are not analysed
        start = None
        decoded = 0
        try:
            for decoded, frame in enumerate(_decode(container, stream, path, writer), 1):
                index = decoded - 1
                start = frame.time if start is None and frame.time is not None else start
                time = (frame.time - start) if frame.time is not None else index / _frame_rate(stream)
                analysed = index % every == 0
                if not analysed and writer is None:
                    continue
                found = labeller.find(frame, time) if analysed else None
                pending.append([index, time, frame if writer is not None else None, found])
                if len(pending) >= batch_size:
                    yield from _flush(labeller, pending, writer, shown)
                    if progress is not None:
                        progress(decoded)
            yield from _flush(labeller, pending, writer, shown)
            if progress is not None:
                progress(decoded)
        finally:
            if writer is not None:
                writer.close()
        if decoded == 0:
            raise VideoReadError(f"{path} has no video frames.")
        if decoded + _FRAMES_SPARED < stream.frames:  # mp4's index counts its frames; a cut file ends early
            raise VideoReadError(
                f"Cannot read video {path} to its end: it stops after frame {decoded} of the {stream.frames} its "
                "index lists (a truncated or damaged file)."
            )


class _FaceFollower:
    """Finds the faces of consecutive frames: the whole frame now and then, else around the last boxes."""

    def __init__(self, detector: FaceDetector, redetect: float) -> None:
        self.detector = detector
        # The region around a face is 2x its box, at most this many pixels: libfacedetection then takes ~3 ms.
        self.near = FaceDetector(detector.backend, score_threshold=detector.score_threshold, max_side=_NEAR_SIDE)
        self.redetect = redetect
        self.boxes: list[Box] = []
        self.next_search: float | None = None

    def __call__(self, image: Image.Image, time: float) -> list[Box]:
        if self.boxes and self.next_search is not None and time < self.next_search:
            followed = [self._near(image, box) for box in self.boxes]
            if all(followed):
                self.boxes = _distinct([box for box in followed if box is not None])
                return self.boxes
        self.boxes = self.detector(image)
        self.next_search = time + self.redetect
        return self.boxes

    def _near(self, image: Image.Image, box: Box) -> Box | None:
        """The face in a square twice the box's side around it that overlaps the box most; None if none does."""
        side = 2 * max(box.width, box.height)
        x0, y0 = max(0, (box.x0 + box.x1 - side) // 2), max(0, (box.y0 + box.y1 - side) // 2)
        x1, y1 = min(image.width, x0 + side), min(image.height, y0 + side)
        region = image.crop((x0, y0, x1, y1))
        found = [Box(b.x0 + x0, b.y0 + y0, b.x1 + x0, b.y1 + y0, b.score,
                     None if b.landmarks is None else tuple((x + x0, y + y0) for x, y in b.landmarks))
                 for b in self.near(region)]
        best = max(found, key=box.iou, default=None)
        return best if best is not None and box.iou(best) > 0 else None


def _distinct(boxes: list[Box]) -> list[Box]:
    """The boxes without those that mostly cover a larger one (two faces followed onto one), largest first."""
    kept: list[Box] = []
    for box in sorted(boxes, key=lambda b: b.area, reverse=True):
        if all(box.iou(other) < 0.5 for other in kept):
            kept.append(box)
    return kept


class Found(NamedTuple):
    """The faces found in one frame, before they are classified: boxes and crops on the analysed copy."""

    time: float
    boxes: list[Box]
    crops: list[Image.Image]
    scale: float  # of the analysed copy: boxes * scale are in the frame's own pixels
    size: tuple[int, int]  # the upright frame's


class FrameLabeller:
    """Finds, follows, classifies and tracks the faces of consecutive frames: what videos and streams share.

        labeller = FrameLabeller(recognizer)
        found = labeller.find(frame, time)       # an av.VideoFrame: its faces found (or followed) and cropped
        faces = labeller.label([found])[0]       # the crops of all given frames classified together, then tracked

    Frames must come in order of time; `redetect` is _FaceFollower's, the rest FaceTracker's.
    """

    def __init__(self, recognizer: Any, *, redetect: float = DEFAULT_REDETECT,
                 time_constant: float = DEFAULT_TIME_CONSTANT, hysteresis: float = DEFAULT_HYSTERESIS,
                 max_age: float = DEFAULT_MAX_AGE) -> None:
        self.recognizer = recognizer
        self.tracker = FaceTracker(recognizer.labels, time_constant=time_constant, hysteresis=hysteresis,
                                   max_age=max_age)
        self.finder = _FaceFollower(recognizer.detector, redetect)
        self.max_side = getattr(recognizer, "max_side", None)

    def find(self, frame: av.VideoFrame, time: float) -> Found:
        image, scale, size = _analysis_copy(frame, self.max_side)
        boxes = self.finder(image, time)
        crops = [crop_face(image, box, self.recognizer.margin, align=self.recognizer.align) for box in boxes]
        return Found(time, boxes, crops, scale, size)

    def label(self, found: list[Found]) -> list[list[dict[str, Any]]]:
        """Each frame's faces (recognizer.face_result's, in the frame's pixels) with their track and smoothed scores."""
        probabilities = iter(self.recognizer.classify([crop for frame in found for crop in frame.crops]))
        labelled = []
        for frame in found:
            faces = [self.recognizer.face_result(*_full_size(box, frame.scale, frame.size), next(probabilities))
                     for box in frame.boxes]
            labelled.append(self.tracker.update(faces, frame.time))
        return labelled


def _flush(labeller: FrameLabeller, pending, writer, shown) -> Iterator[FrameResult]:
    """Classifies the batch's crops together, tracks each analysed frame's faces, draws and encodes every frame."""
    labelled = iter(labeller.label([found for *_, found in pending if found is not None]))
    for index, time, frame, found in pending:
        if found is not None:
            faces = next(labelled)
            shown[:] = faces
            yield FrameResult(index, time, faces)
        if writer is not None:
            writer.write(frame, shown)
    pending.clear()


def _analysis_copy(frame: av.VideoFrame, max_side: int | None) -> tuple[Image.Image, float, tuple[int, int]]:
    """The upright frame as RGB, reduced by FFmpeg's scaler when larger than max_side; the reduction; the upright size."""
    width, height, rotation = frame.width, frame.height, frame.rotation
    scale = max(1.0, max(width, height) / max_side) if max_side else 1.0
    if scale > 1:
        frame = frame.reformat(width=max(1, round(width / scale)), height=max(1, round(height / scale)))
    size = (height, width) if rotation % 180 else (width, height)
    return _upright(frame.to_ndarray(format="rgb24"), rotation), scale, size


def _upright(pixels: np.ndarray, rotation: int) -> Image.Image:
    # The display matrix turns the stored frame `rotation` degrees counterclockwise, as np.rot90 does.
    turns = round(rotation / 90) % 4
    return Image.fromarray(np.ascontiguousarray(np.rot90(pixels, turns)) if turns else pixels)


def _full_size(box: Box, scale: float, size: tuple[int, int]) -> tuple[tuple[int, int, int, int], float]:
    """A box found on the reduced copy, in the upright frame's own pixels (clipped to it), and its score."""
    x0, y0, x1, y1 = (round(v * scale) for v in box.as_tuple())
    return (max(0, x0), max(0, y0), min(size[0], x1), min(size[1], y1)), box.score


class _AnnotatedWriter:
    """Encodes the upright frames with faces drawn, at the input's timestamps, and copies the audio."""

    def __init__(self, path: str | os.PathLike, source: av.container.InputContainer, stream: av.video.VideoStream) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.output = av.open(str(self.path), "w")
        self.rate = Fraction(_frame_rate(stream)).limit_denominator(1001 * 1000)
        self.time_base = stream.time_base or Fraction(1, 90000)
        self.video = None  # opened at the first frame, whose upright size it takes
        self.last_pts: int | None = None
        self.audio_in = source.streams.audio[0] if source.streams.audio else None
        self.audio_out, self.transcode = None, False
        self.early_audio: list[av.Packet] = []
        if self.audio_in is not None:
            if self.audio_in.codec_context.name in self.output.supported_codecs:
                self.audio_out = self.output.add_stream_from_template(self.audio_in)
            else:  # e.g. Vorbis from a webm into mp4: re-encoded as AAC
                self.audio_out = self.output.add_stream("aac", rate=self.audio_in.rate, layout=self.audio_in.layout)
                self.transcode = True
        self.font = None

    def write(self, frame: av.VideoFrame, faces: list[dict[str, Any]]) -> None:
        image = _upright(frame.to_ndarray(format="rgb24"), frame.rotation)
        if self.video is None:
            self._open_video(*image.size)
            for packet in self.early_audio:
                self.write_audio(packet)
            self.early_audio.clear()
        if image.size != (self.video.width, self.video.height):  # H.264 in 4:2:0 wants even sides
            image = image.crop((0, 0, self.video.width, self.video.height))
        self._draw(image, faces)
        out = av.VideoFrame.from_image(image)
        pts = frame.pts if frame.pts is not None else (self.last_pts + 1 if self.last_pts is not None else 0)
        if self.last_pts is not None and pts <= self.last_pts:  # a repeated timestamp: the muxer refuses it
            pts = self.last_pts + 1
        out.pts, out.time_base, self.last_pts = pts, self.time_base, pts
        for packet in self.video.encode(out):
            self.output.mux(packet)

    def write_audio(self, packet: av.Packet) -> None:
        if self.audio_out is None or packet.dts is None:
            return
        if self.video is None:  # the file's header, written at the first packet, needs the video stream
            self.early_audio.append(packet)
            return
        if not self.transcode:
            packet.stream = self.audio_out
            self.output.mux(packet)
            return
        for frame in packet.decode():
            frame.pts = None
            for out in self.audio_out.encode(frame):
                self.output.mux(out)

    def close(self) -> None:
        """Flushes the encoders and closes the file; removes it when no frame was written."""
        if self.video is None:
            self.output.close()
            self.path.unlink(missing_ok=True)
            return
        for packet in self.video.encode():
            self.output.mux(packet)
        if self.transcode:
            for packet in self.audio_out.encode():
                self.output.mux(packet)
        self.output.close()

    def _open_video(self, width: int, height: int) -> None:
        self.video = self.output.add_stream("libx264", rate=self.rate, options={"preset": "veryfast", "crf": "20"})
        self.video.width, self.video.height = width - width % 2, height - height % 2
        self.video.pix_fmt = "yuv420p"
        self.video.codec_context.time_base = self.time_base
        side = max(width, height)
        self.font = ImageFont.load_default(size=max(12, side // 45))
        self.line = max(2, side // 300)

    def _draw(self, image: Image.Image, faces: list[dict[str, Any]]) -> None:
        draw = ImageDraw.Draw(image)
        for face in faces:
            caption = f"{face.get('track', '')} {face['label']} {face['score']:.0%}".strip()
            draw_captioned_box(draw, face["box"], caption, _COLOURS[(face.get("track", 1) - 1) % len(_COLOURS)],
                               font=self.font, line=self.line, text_colour="white")


class Timeline:
    """Each track's smoothed scores over time, gathered from analyze_video's results: the chart and the summary.

        timeline = Timeline(recognizer.labels)
        for frame in analyze_video(recognizer, "clip.mp4"):
            timeline.add(frame)
        timeline.summary()          # per track: first and last time, frames, dominant label, share of each
        timeline.plot("chart.png")  # emotion over time, one panel per track

    Holds a few numbers per face and frame (0.6 MB for ten minutes of one face at 30 frames/s).
    """

    def __init__(self, labels: list[str]) -> None:
        self.labels = list(labels)
        # Flat arrays of floats rather than lists of Python floats: 8 times smaller.
        self.times: dict[int, array] = {}
        self.scores: dict[int, array] = {}  # per track: frames x labels, row after row
        self.label_counts: dict[int, dict[str, int]] = {}

    def add(self, result: FrameResult) -> None:
        for face in result.faces:
            track = face["track"]
            self.times.setdefault(track, array("d")).append(result.time)
            self.scores.setdefault(track, array("f")).extend(face["scores"][label] for label in self.labels)
            counts = self.label_counts.setdefault(track, dict.fromkeys(self.labels, 0))
            counts[face["label"]] += 1

    def summary(self) -> list[dict[str, Any]]:
        """Per track, in order of appearance: track, first and last time, frames, dominant label, share of each label."""
        rows = []
        for track, times in self.times.items():
            counts = self.label_counts[track]
            rows.append({"track": track, "first": times[0], "last": times[-1], "frames": len(times),
                         "dominant": max(counts, key=counts.get),
                         "share": {label: count / len(times) for label, count in counts.items()}})
        return rows

    def plot(self, path: str | os.PathLike, title: str | None = None, max_tracks: int = 6) -> None:
        """Writes the chart (PNG): per track, each class's smoothed score over time; the tracks seen longest."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        tracks = sorted(self.times, key=lambda t: len(self.times[t]), reverse=True)[:max_tracks]
        tracks.sort()
        rows = max(1, len(tracks))
        figure, axes = plt.subplots(rows, 1, figsize=(9, 2.2 * rows + 0.8), sharex=True, squeeze=False)
        for axis, track in zip(axes[:, 0], tracks):
            scores = np.frombuffer(self.scores[track], dtype=np.float32).reshape(-1, len(self.labels))
            for column, label in enumerate(self.labels):
                axis.plot(self.times[track], scores[:, column], label=label, linewidth=1.2)
            axis.set_ylim(0, 1)
            axis.set_ylabel(f"track {track}")
        if not tracks:
            axes[0, 0].text(0.5, 0.5, "no face found", ha="center", va="center", transform=axes[0, 0].transAxes)
        axes[-1, 0].set_xlabel("time (s)")
        if tracks:
            axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
        shown = f" ({len(tracks)} of {len(self.times)} tracks, the longest)" if len(self.times) > len(tracks) else ""
        figure.suptitle((title or "Expression over time") + shown)
        figure.tight_layout()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100)
        plt.close(figure)


def _open(path: str | os.PathLike) -> av.container.InputContainer:
    """The file opened with PyAV, checked to hold a video stream."""
    if not Path(path).is_file():
        raise VideoReadError(f"Cannot read video {path}: no such file.")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError) as error:
        raise VideoReadError(
            f"Cannot read video {path}: {_reason(error)} (not a video file, or a damaged or truncated one)"
        ) from None
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"{path} has no video stream: nothing to label.")
    return container


def _decode(container, stream, path, writer: _AnnotatedWriter | None = None) -> Iterator[av.VideoFrame]:
    """The video stream's frames in presentation order; audio packets go to the writer as they come."""
    stream.thread_type = "AUTO"  # FFmpeg's own decoding threads
    streams = [stream] + ([writer.audio_in] if writer is not None and writer.audio_in is not None else [])
    frames = 0
    try:
        for packet in container.demux(*streams):
            if packet.stream.type == "audio":
                writer.write_audio(packet)
                continue
            for frame in packet.decode():
                frames += 1
                yield frame
    except av.FFmpegError as error:
        raise VideoReadError(f"Cannot read video {path} after frame {frames}: {_reason(error)}") from None


def _reason(error: Exception) -> str:
    """FFmpeg's message without the file name it repeats."""
    return getattr(error, "strerror", None) or str(error)


def _frame_rate(stream: av.video.VideoStream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 25.0


__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_REDETECT", "VIDEO_EXTENSIONS", "Found", "FrameLabeller", "FrameResult", "Timeline", "VideoInfo",
           "VideoReadError", "analyze_video", "is_video", "probe"]
