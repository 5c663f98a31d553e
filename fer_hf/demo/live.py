"""The Live webcam tab: the browser streams webcam frames to the server, which boxes and labels every face,
following each across frames."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ..faces import FaceDetector, FaceExpressionRecognizer
from ..model.pipeline_fer import is_unsure
from ..tracking import FaceTracker
from .common import TabHandlers, draw_faces, face_caption

# Seconds between the webcam frames the browser sends; it sends none while one is pending, so this caps
# the rate at 25 frames/s and the round trip does the rest (shorter overloads 2 cores: live.md).
STREAM_EVERY = 0.04
STREAM_TIME_LIMIT = 60  # seconds a webcam stream may run; then it stops and frees its slot
STREAM_CONCURRENCY = 2  # webcam streams served at once; more wait in the queue
# Webcam frames are searched for faces on a copy with this longer side, not the photos' 480 px: it
# detects in under half the time and still finds nearly all faces as large as a webcam's
# (benchmarks/results/demo.md, "Faces found on the 60 frames").
STREAM_DETECT_SIDE = 320


class LiveTab(TabHandlers):
    """One webcam frame -> the frame with the faces boxed, the largest face's scores and a status line."""

    def __init__(self, recognizer: FaceExpressionRecognizer, cache_dir: str | Path | None = None) -> None:
        super().__init__(recognizer, cache_dir)
        # The stream's recognizer: the same, with its own detector at STREAM_DETECT_SIDE (measured for
        # libfacedetection only; another backend keeps the photos' detector).
        self.stream = copy.copy(recognizer)
        detector = recognizer.detector
        if detector.backend == "libfacedetection" and detector.max_side > STREAM_DETECT_SIDE:
            self.stream.detector = FaceDetector(detector.backend, score_threshold=detector.score_threshold,
                                                max_side=STREAM_DETECT_SIDE, min_face_size=detector.min_face_size)

    def live(self, frame: np.ndarray | None, tracker: FaceTracker | None = None) -> tuple:
        """One webcam frame -> (frame with the faces boxed, scores of the largest face, status line, tracker).

        The tracker (one per viewer, in a gr.State) follows each face across frames and smooths its
        scores over time, so that a still face's label holds and a new expression shows within a
        fraction of a second (benchmarks/results/smoothing.md).
        """
        tracker = tracker or FaceTracker(self.recognizer.labels)
        if frame is None:
            return None, None, "", tracker
        start = time.perf_counter()
        faces = tracker.update(self.stream(frame), time.monotonic())
        for face in faces:  # on the smoothed scores the caption shows, not the frame's own
            face["unsure"] = is_unsure(face["score"], self.recognizer.model.config)
        image = self._shown(draw_faces(Image.fromarray(frame), faces, caption=face_caption))
        took = f"{(time.perf_counter() - start) * 1000:.0f} ms"
        if not faces:
            return image, None, f"No face in view ({took})", tracker
        unsure = sum(face["unsure"] for face in faces)
        note = f" · {unsure} unsure: top two shown" if unsure else ""
        return image, faces[0]["scores"], f"{len(faces)} face{'s' * (len(faces) > 1)} ({took}){note}", tracker
