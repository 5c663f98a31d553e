"""The Video tab: every frame of an uploaded video labelled, each face followed as a track; an annotated video,
a chart of expressions over time, a per-track summary and a CSV."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from ..predict import predict_video, write_results
from ..video import Timeline, VideoReadError, probe
from .common import MAX_FILE_MB, TabHandlers

# A video is labelled at about 60 frames/s on 2 cores (benchmarks/results/video.md): 5 minutes of 30 frames/s
# take about 2.5 minutes, one video at a time (VIDEO_CONCURRENCY), so that the webcam streams keep a core.
MAX_VIDEO_SECONDS = 300
VIDEO_CONCURRENCY = 1


class VideoTab(TabHandlers):
    """Video file -> annotated video, chart, per-track summary, CSV and a status line."""

    def label_video(self, video: str | None, progress: gr.Progress = gr.Progress()) -> tuple:
        """Video file -> (annotated mp4, emotion-over-time chart PNG, per-track summary, CSV file, status).

        The outputs are written to a new folder with an unguessable name in `cache_dir` (None: the
        system's temporary folder). A file that is not a readable video, or is too long or too big,
        gets a message naming it.
        """
        if video is None:
            return None, None, None, None, f"Upload a video ({self.video_limits()})."
        path = Path(video)
        name = path.name  # Gradio keeps an upload's own name, in a folder of its own

        def message(text: str) -> tuple:
            return None, None, None, None, f"**Could not use {name}.** {text.replace(str(path), name)}"

        if path.stat().st_size > MAX_FILE_MB * 1024 * 1024:
            return message(f"It is {path.stat().st_size / 2**20:.0f} MB; the limit is {MAX_FILE_MB} MB.")
        try:
            info = probe(path)
        except VideoReadError as error:
            return message(str(error))
        total = info.frames or (round(info.duration * info.fps) if info.duration else None)
        if info.duration and info.duration > MAX_VIDEO_SECONDS:
            return message(f"It lasts {info.duration:.0f} s; the limit is {MAX_VIDEO_SECONDS} s.")
        folder = Path(tempfile.mkdtemp(prefix="video-", dir=self.cache_dir))
        annotated, chart, table = folder / f"{path.stem}_labelled.mp4", folder / f"{path.stem}_chart.png", folder / f"{path.stem}.csv"
        timeline = Timeline(self.recognizer.labels)
        start = time.perf_counter()
        progress((0, total), desc="Labelling frames", unit="frames")
        rows = list(predict_video(self.recognizer, path, annotate=annotated, timeline=timeline,
                                  progress=lambda done: progress((done, total), desc="Labelling frames", unit="frames")))
        took = time.perf_counter() - start
        error = next((row["error"].replace(str(path), name) for row in rows if row["status"] == "error"), None)
        frames = len({row["frame"] for row in rows if row.get("frame") is not None})
        if not frames:
            return message(error or "No frame could be read.")
        write_results(rows, table, self.recognizer.labels)
        timeline.plot(chart, title=f"{name}: expression over time")
        tracks = timeline.summary()
        status = (f"Labelled **{frames} frames** of {name} ({info.width}x{info.height}, {frames / took:.0f} frames/s): "
                  + (f"{len(tracks)} face track{'s' * (len(tracks) > 1)}." if tracks else "no face found."))
        if error:
            status = f"**Stopped early.** {error}\n\n{status}"
        return str(annotated) if annotated.exists() else None, str(chart), self.track_summary(tracks), str(table), status

    def track_summary(self, tracks: list[dict[str, Any]]) -> pd.DataFrame:
        """Timeline.summary() as a table: track, seconds in view, dominant expression, % of time in each class."""
        labels = self.recognizer.labels
        rows = [[track["track"], round(track["first"], 1), round(track["last"], 1), track["dominant"],
                 *(round(100 * track["share"][label], 1) for label in labels)] for track in tracks]
        return pd.DataFrame(rows, columns=["track", "from (s)", "to (s)", "dominant", *(f"{label} %" for label in labels)])

    @staticmethod
    def video_limits() -> str:
        return f"at most {MAX_FILE_MB} MB and {MAX_VIDEO_SECONDS // 60} minutes"
