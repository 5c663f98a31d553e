"""Cameras and streams: fer_hf.stream and `python -m fer_hf predict URL`, on a live stream served on loopback.

Each test serves its own stream (tests/streamtools.py): real fixture photos encoded as H.264 in MPEG-TS
and sent over HTTP at 30 frames a second, as a camera or an encoder box serves one. The model is a
random tiny FER CNN, so the tests check frames, times, tracks, drops and files, not which expression
wins. The assertions are on counts and order, with generous bounds taken from the source, and on lower
bounds of time that the pacing itself guarantees; none is on how fast anything runs.
"""

from __future__ import annotations

import csv
import itertools
import logging
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fer_hf.__main__ import main as cli
from fer_hf.faces import Box, FaceExpressionRecognizer
from fer_hf.hub import load_classifier
from fer_hf.predict import VIDEO_FIELDS, predict_stream
from fer_hf.stream import StreamError, analyze_stream, describe, is_stream
from tests import freshpython
from tests.apptools import PHOTOS
from tests.conftest import ROOT
from tests.streamtools import LiveStream
from tests.videotools import still_frames, write_video

GROUP = PHOTOS / "happy_three_women.jpg"  # three faces
FPS = 30


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return list(still_frames(GROUP, 6))


class SlowRecognizer(FaceExpressionRecognizer):
    """A recognizer that really takes at least `delay` seconds to classify a frame's faces (it sleeps):
    a machine several times slower than the source's frame rate, on any machine the tests run on."""

    delay = 0.25

    def classify(self, crops):
        time.sleep(self.delay)
        return super().classify(crops)


def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_sources_that_are_cameras_or_streams(tmp_path, monkeypatch):
    for source in [0, "0", "/dev/video2", "rtsp://cam.local/live", "http://host/live.ts", "udp://@:1234", "srt://h:9"]:
        assert is_stream(source), source
    for source in ["clip.mp4", "photos/", "C:/videos/clip.mp4", str(tmp_path)]:
        assert not is_stream(source), source
    monkeypatch.chdir(tmp_path)
    (tmp_path / "7").write_bytes(b"")  # a file named like a camera stays a file
    assert not is_stream("7")
    if sys.platform.startswith("linux"):
        assert describe(3) == "camera 3 (/dev/video3)"


def test_a_stream_gives_the_rows_of_a_video(tiny_recognizer, frames):
    with LiveStream(frames, fps=FPS, seconds=2) as live:
        # Tracks kept however long a loaded machine takes between two labelled frames (max_age 1 s by default).
        results = list(tiny_recognizer.stream(live.url, max_age=60))
    sent = len(live.sent_at)
    assert sent == 2 * FPS and live.finished.is_set()

    indices = [result.index for result in results]
    assert indices == sorted(set(indices)) and indices[-1] == sent - 1  # in order, up to the last frame sent
    assert len(results) + results[-1].dropped == sent  # every frame received was labelled or dropped
    # Times come from the stream's timestamps: frame i at i / 30 s.
    assert [result.time for result in results] == pytest.approx([index / FPS for index in indices], abs=1e-3)
    photo_boxes = [Box(*face["box"], 0) for face in tiny_recognizer(frames[0])]
    first = {face["track"]: face["box"] for face in results[0].faces}
    assert sorted(first) == [1, 2, 3]
    for result in results:  # the same three faces on every labelled frame, each under its own track
        assert {face["track"] for face in result.faces} == {1, 2, 3}
        for face in result.faces:
            assert Box(*face["box"], 0).iou(Box(*first[face["track"]], 0)) > 0.7
            assert max(box.iou(Box(*face["box"], 0)) for box in photo_boxes) > 0.7
            assert face["score"] == face["scores"][face["label"]]


def test_a_video_file_is_played_at_its_own_pace(tiny_recognizer, frames, tmp_path):
    video = write_video(tmp_path / "clip.mp4", frames * 5, fps=FPS)  # 1 s
    started = time.monotonic()
    results = list(analyze_stream(tiny_recognizer, video))
    indices = [result.index for result in results]
    assert indices == sorted(set(indices)) and indices[-1] == len(frames) * 5 - 1
    assert [result.time for result in results] == pytest.approx([index / FPS for index in indices], abs=1e-3)
    # No frame is released before its time, so reading the file took at least as long as it plays (a load only adds).
    assert results[-1].received - started >= results[-1].time


def test_frames_are_dropped_not_queued_when_labelling_is_slower(tiny_model_folder, frames):
    slow = SlowRecognizer(*load_classifier(tiny_model_folder))
    with LiveStream(frames, fps=FPS, seconds=4) as live:
        results = list(slow.stream(live.url))
    sent = len(live.sent_at)
    indices = [result.index for result in results]
    assert sent == 4 * FPS and indices == sorted(set(indices))
    # A queue would label all 120 frames and end 30 s late; each labelled frame takes at least 0.25 s, in which
    # 7 or more frames arrive, so at most about one frame in seven is labelled (half is the generous bound).
    assert len(results) <= sent // 2
    assert max(b - a for a, b in itertools.pairwise(indices)) >= 2
    # The newest frame is labelled: when the source ends, its last frame is, not one of those queued before it.
    assert indices[-1] == sent - 1 and len(results) + results[-1].dropped == sent
    assert all(len(result.faces) == 3 for result in results)


def test_cli_stops_after_duration(tiny_model_folder, frames, tmp_path):
    output = tmp_path / "live.csv"
    with LiveStream(frames, fps=FPS, seconds=60) as live:
        assert cli(["predict", live.url, "--model", str(tiny_model_folder), "--output", str(output),
                    "--duration", "1.5", "--plot", str(tmp_path / "chart.png")]) == 0
        assert live.disconnected.wait(30)  # the stream is left once 1.5 s of it are labelled
        assert len(live.sent_at) < 60 * FPS
    with open(output, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[: len(VIDEO_FIELDS)] == VIDEO_FIELDS
    assert rows and all(row["file"] == live.url and row["status"] == "face" for row in rows)
    times = [float(row["time"]) for row in rows]
    assert times == sorted(times) and times[-1] < 1.5
    assert {"1", "2", "3"} <= {row["track"] for row in rows} and len(rows) % 3 == 0  # three faces a frame
    assert all(float(row["time"]) == pytest.approx(int(row["frame"]) / FPS, abs=1e-3) for row in rows)
    assert (tmp_path / "chart.png").read_bytes()[:4] == b"\x89PNG"


def test_ctrl_c_stops_the_command_with_the_rows_written(tiny_model_folder, frames, tmp_path):
    output = tmp_path / "live.csv"
    with LiveStream(frames, fps=FPS, seconds=300) as live:
        process = freshpython.start(["-m", "fer_hf", "predict", live.url, "--model", tiny_model_folder, "--output",
                                     output], cwd=ROOT, env=dict(os.environ), stdout=os.devnull,
                                    stderr=tmp_path / "log.txt")
        try:
            # Wait for rows: the command flushes each labelled frame's rows (the deadline only guards a hang).
            deadline = time.monotonic() + 240
            while _data_rows(output) < 10:
                assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "log.txt").read_text()
                time.sleep(0.2)
            process.send_signal(signal.SIGINT)
            process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
    log = (tmp_path / "log.txt").read_text()
    assert process.returncode == 0, log
    assert "Stopped (Ctrl-C)" in log and f"{live.url}:" in log
    with open(output, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) >= 10 and all(row["status"] == "face" and row["p_happy"] for row in rows)  # no row cut short
    frames_seen = [int(row["frame"]) for row in rows]
    assert frames_seen == sorted(frames_seen)


def _data_rows(path) -> int:
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def test_sources_that_cannot_be_opened_are_named(tiny_recognizer, tiny_model_folder, frames, tmp_path):
    refused = f"http://127.0.0.1:{free_port()}/live.ts"
    with LiveStream(frames, fps=FPS, seconds=1) as live:
        missing = live.url.replace("live.ts", "nothing.ts")
        for source, reason in [(refused, "Connection refused"), (missing, "404"),
                               (tmp_path / "gone.mp4", "no such file")]:
            with pytest.raises(StreamError) as error:
                next(analyze_stream(tiny_recognizer, source))
            assert str(source) in str(error.value) and reason in str(error.value)
    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/live.ts"
        with pytest.raises(StreamError, match=f"Cannot open {re.escape(url)}: no answer within 1 s"):
            next(analyze_stream(tiny_recognizer, url, timeout=1))
    if sys.platform.startswith("linux") and not Path("/dev/video0").exists():
        with pytest.raises(StreamError, match=r"camera 0 \(/dev/video0\)"):
            next(analyze_stream(tiny_recognizer, 0))

    output = tmp_path / "refused.csv"
    assert cli(["predict", refused, "--model", str(tiny_model_folder), "--output", str(output)]) == 1
    with open(output, newline="") as handle:
        (row,) = csv.DictReader(handle)
    assert row["status"] == "error" and refused in row["error"]


def test_a_stream_that_ends_keeps_its_rows_and_says_so(tiny_recognizer, frames, caplog):
    with LiveStream(frames, fps=FPS, seconds=1) as live, caplog.at_level(logging.WARNING, logger="fer_hf.stream"):
        rows = list(predict_stream(tiny_recognizer, live.url))
    assert rows and all(row["status"] == "face" for row in rows)
    assert f"{live.url} ended after {FPS} frame(s)" in caplog.text


def test_a_stream_that_stalls_keeps_its_rows_and_ends_with_an_error_naming_it(tiny_recognizer, frames):
    with LiveStream(frames, fps=FPS, seconds=10, stall_after=15) as live:
        rows = list(predict_stream(tiny_recognizer, live.url, timeout=3))
    *labelled, last = rows
    assert labelled and all(row["status"] == "face" for row in labelled)
    assert last["status"] == "error"
    stopped = re.fullmatch(rf"{re.escape(live.url)} stopped after frame (\d+): no data for 3 s", last["error"])
    # The demuxer and decoder hold back the last frame or two of the 15 sent, which the stall never completes.
    assert stopped and max(row["frame"] for row in labelled) < int(stopped[1]) <= 15
