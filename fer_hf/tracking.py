"""Faces followed across video frames: a stable id per face, and its scores smoothed over time.

    from fer_hf.tracking import FaceTracker

    tracker = FaceTracker(recognizer.labels)
    for time, faces in frames:                   # faces: FaceExpressionRecognizer results of one frame
        faces = tracker.update(faces, time)      # + "track", and smoothed "scores", "label", "score"

Each frame's faces are matched to the tracks of earlier frames greedily by box overlap (IoU, best
pair first); a face that matches none starts a new track, and a track unseen for `max_age` seconds
ends. A track's scores are an exponential moving average whose weights decay with time, not with the
number of frames: the same video at 10 or 30 frames/s is smoothed alike. The label then changes only
when another class leads the smoothed scores by `hysteresis`, so that a still face whose two top
classes are close does not flicker between them (figures: benchmarks/results/smoothing.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .model.face_detection import Box

# Chosen on benchmarks/results/smoothing.md: a still face's label holds, a new expression shows in
# well under half a second.
DEFAULT_TIME_CONSTANT = 0.2
DEFAULT_HYSTERESIS = 0.1
DEFAULT_MAX_AGE = 1.0
DEFAULT_MIN_IOU = 0.2


@dataclass
class Track:
    """A face followed across frames; `scores` are its smoothed class probabilities."""

    id: int
    box: tuple[int, int, int, int]
    scores: np.ndarray
    label: int
    first_seen: float
    last_seen: float
    frames: int = 1


class FaceTracker:
    """Gives each face of a video a track id and smooths its scores over time.

    Args:
        labels: The classes, in the order of the recognizer's (`recognizer.labels`).
        time_constant: Seconds over which old scores fade to 1/e of their weight; 0 turns smoothing
            off (each frame's own scores and label).
        hysteresis: The label changes only when another class's smoothed score exceeds the current
            label's by this much; 0 for the plain argmax.
        max_age: A track not matched for this many seconds ends; a face seen later gets a new id.
        min_iou: A face continues a track only if their boxes overlap at least this much.
    """

    def __init__(
        self,
        labels: Sequence[str],
        *,
        time_constant: float = DEFAULT_TIME_CONSTANT,
        hysteresis: float = DEFAULT_HYSTERESIS,
        max_age: float = DEFAULT_MAX_AGE,
        min_iou: float = DEFAULT_MIN_IOU,
    ) -> None:
        if time_constant < 0 or hysteresis < 0 or max_age < 0:
            raise ValueError("time_constant, hysteresis and max_age must be at least 0.")
        self.labels = list(labels)
        self.time_constant = time_constant
        self.hysteresis = hysteresis
        self.max_age = max_age
        self.min_iou = min_iou
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(self, faces: Sequence[dict[str, Any]], time: float) -> list[dict[str, Any]]:
        """Matches one frame's faces to the tracks and smooths their scores.

        Args:
            faces: Results of FaceExpressionRecognizer (dicts with "box" and "scores").
            time: The frame's time in seconds; it must not go back.

        Returns:
            The faces in the same order, each a copy with "track" (its id), smoothed "scores",
            "label" and "score", and the frame's own "raw_label" and "raw_scores".
        """
        self.tracks = [track for track in self.tracks if time - track.last_seen <= self.max_age]
        boxes = [Box(*face["box"], 0.0) for face in faces]
        pairs = sorted(
            ((Box(*track.box, 0.0).iou(box), t, f) for t, track in enumerate(self.tracks) for f, box in enumerate(boxes)),
            reverse=True,
        )
        matched: dict[int, Track] = {}
        used: set[int] = set()
        for iou, t, f in pairs:
            if iou < self.min_iou:
                break
            if t not in used and f not in matched:
                matched[f] = self.tracks[t]
                used.add(t)
        results = []
        for f, face in enumerate(faces):
            raw = np.array([face["scores"][label] for label in self.labels], dtype=np.float64)
            track = matched.get(f)
            if track is None:
                track = Track(self._next_id, tuple(face["box"]), raw, int(np.argmax(raw)), time, time, 0)
                self._next_id += 1
                self.tracks.append(track)
            else:
                self._smooth(track, raw, time)
            track.box, track.last_seen, track.frames = tuple(face["box"]), time, track.frames + 1
            results.append({
                **face,
                "track": track.id,
                "label": self.labels[track.label],
                "score": float(track.scores[track.label]),
                "scores": {label: float(p) for label, p in zip(self.labels, track.scores)},
                "raw_label": face["label"],
                "raw_scores": face["scores"],
            })
        return results

    def _smooth(self, track: Track, raw: np.ndarray, time: float) -> None:
        # Weight of the new frame after dt seconds: 1 - exp(-dt / tau), whatever the frame rate.
        step = max(0.0, time - track.last_seen)
        weight = 1.0 if self.time_constant == 0 else 1.0 - math.exp(-step / self.time_constant)
        track.scores = track.scores + weight * (raw - track.scores)
        best = int(np.argmax(track.scores))
        if track.scores[best] - track.scores[track.label] > self.hysteresis:
            track.label = best


__all__ = ["DEFAULT_HYSTERESIS", "DEFAULT_MAX_AGE", "DEFAULT_MIN_IOU", "DEFAULT_TIME_CONSTANT", "FaceTracker", "Track"]
