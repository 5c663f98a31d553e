"""Video files: fer_hf.video (reading, tracks, the annotated video, the chart) and `python -m fer_hf predict VIDEO`.

Every video is encoded here with PyAV from the real fixture photos (tests/videotools.py); the model is a
random tiny FER CNN, so the tests check faces, boxes, tracks, times and files, not which expression wins.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from fer_hf import FER2013_LABELS
from fer_hf.__main__ import main as cli
from fer_hf.faces import Box
from fer_hf.predict import VIDEO_FIELDS
from fer_hf.video import Timeline, VideoReadError, analyze_video, probe
from tests.apptools import PHOTOS
from tests.conftest import SHARED_DATA, requires_full_data
from tests.videotools import read_video, still_frames, write_video

GROUP = PHOTOS / "happy_three_women.jpg"  # three faces
ONE = PHOTOS / "happy_man.jpg"  # one face
WOMAN = SHARED_DATA / "videos" / "woman2.mp4"


def iou(a, b) -> float:
    return Box(*a, 0).iou(Box(*b, 0))


def matches(boxes, expected, min_iou=0.7) -> bool:
    """Whether each expected box has a box overlapping it at least min_iou."""
    return len(boxes) == len(expected) and all(max(iou(e, b) for b in boxes) >= min_iou for e in expected)


def test_faces_keep_their_track_and_the_annotated_video_keeps_frames_and_audio(tiny_recognizer, tmp_path):
    frames = list(still_frames(GROUP, 12))
    video = write_video(tmp_path / "group.mp4", frames, fps=10, audio_seconds=1.2)
    out = tmp_path / "labelled" / "group.mp4"
    results = list(analyze_video(tiny_recognizer, video, annotate=out))

    assert [r.index for r in results] == list(range(12))
    assert [r.time for r in results] == pytest.approx([i / 10 for i in range(12)])
    photo_boxes = [face["box"] for face in tiny_recognizer(frames[0])]
    first = {face["track"]: face["box"] for face in results[0].faces}
    assert sorted(first) == [1, 2, 3] and matches(list(first.values()), photo_boxes)
    for result in results:  # every frame: the same three faces, each under its own id
        assert {face["track"] for face in result.faces} == {1, 2, 3}
        for face in result.faces:
            assert iou(face["box"], first[face["track"]]) > 0.7
            assert face["score"] == face["scores"][face["label"]] and set(face["scores"]) == set(FER2013_LABELS)
            assert sum(face["scores"].values()) == pytest.approx(1.0, abs=1e-4)

    source, written = read_video(video), read_video(out)
    assert written["frames"] == 12 and written["times"] == pytest.approx(source["times"])
    assert written["size"] == source["size"] and written["fps"] == pytest.approx(10)
    assert written["audio"] == "aac" and written["audio_seconds"] == pytest.approx(source["audio_seconds"], abs=0.05)
    # The boxes are drawn: the annotated frames differ from the source around the faces.
    assert _mean_difference(video, out) > 2 * _mean_difference(video, video)

    timeline = Timeline(tiny_recognizer.labels)
    for result in results:
        timeline.add(result)
    summary = timeline.summary()
    assert [row["track"] for row in summary] == [1, 2, 3] and all(row["frames"] == 12 for row in summary)
    for row in summary:
        assert sum(row["share"].values()) == pytest.approx(1.0) and row["dominant"] == max(row["share"], key=row["share"].get)
    timeline.plot(tmp_path / "chart.png")
    assert Image.open(tmp_path / "chart.png").size[0] > 500


def _mean_difference(a, b) -> float:
    """Mean absolute pixel difference between the first frames of two videos."""
    import av

    def first(path):
        with av.open(str(path)) as container:
            return next(container.decode(video=0)).to_ndarray(format="rgb24").astype(np.int16)

    return float(np.abs(first(a) - first(b)).mean()) + 1e-3


def test_every_nth_frame_is_analysed_and_every_frame_is_written(tiny_recognizer, tmp_path):
    video = write_video(tmp_path / "one.mp4", still_frames(ONE, 10), fps=25)
    out = tmp_path / "out.mp4"
    results = list(analyze_video(tiny_recognizer, video, every=4, annotate=out))
    assert [r.index for r in results] == [0, 4, 8]
    assert [r.time for r in results] == pytest.approx([0, 0.16, 0.32])
    assert all(len(r.faces) == 1 and r.faces[0]["track"] == 1 for r in results)
    assert read_video(out)["frames"] == 10


def test_faces_followed_between_searches_keep_their_landmarks(tiny_recognizer):
    """Between whole-frame searches a face is found near its last box: its landmarks come along, in the frame's pixels."""
    from fer_hf.video import _FaceFollower

    if tiny_recognizer.detector.backend != "libfacedetection":
        pytest.skip("the Haar fallback gives no landmarks")
    frame = Image.open(GROUP).convert("RGB")
    follower = _FaceFollower(tiny_recognizer.detector, redetect=10)
    searched = follower(frame, 0.0)
    followed = follower(frame, 0.1)  # within `redetect`: found near the boxes of the search
    assert len(followed) == len(searched) == 3
    for box in followed:
        (twin,) = [other for other in searched if other.iou(box) > 0.5]
        assert np.abs(np.array(box.landmarks) - np.array(twin.landmarks)).max() < 0.15 * twin.width


def test_an_aligning_recognizer_aligns_the_faces_of_videos(tiny_recognizer, tmp_path):
    """Its `align` reaches the video's crops: a tilted face's crops differ from the plain ones."""
    import copy

    video = write_video(tmp_path / "child.mp4", still_frames(PHOTOS / "sad_child.jpg", 3), fps=10)
    crops = {}
    for align in (False, True):
        seen = crops[align] = []
        aligning = copy.copy(tiny_recognizer)
        aligning.align = align
        aligning.classify = lambda faces, seen=seen, run=aligning.classify: seen.extend(faces) or run(faces)
        assert [len(r.faces) for r in analyze_video(aligning, video)] == [1, 1, 1]
    for plain, aligned in zip(crops[False], crops[True]):
        assert plain.size == aligned.size and _centre_difference(plain, aligned) > 2  # same frame and box: the turn


def _centre_difference(a: Image.Image, b: Image.Image) -> float:
    middle = (slice(a.height // 4, 3 * a.height // 4), slice(a.width // 4, 3 * a.width // 4))
    return float(np.abs(np.asarray(a, float)[middle] - np.asarray(b, float)[middle]).mean())


def test_variable_frame_rate_times_come_from_each_frame(tiny_recognizer, tmp_path):
    times = [0, 0.04, 0.08, 0.5, 0.54, 1.3, 1.32, 2.0]
    video = write_video(tmp_path / "vfr.mp4", still_frames(ONE, len(times)), times=times)
    out = tmp_path / "out.mp4"
    results = list(analyze_video(tiny_recognizer, video, annotate=out))
    assert [r.time for r in results] == pytest.approx(times, abs=1e-3)
    assert read_video(out)["times"] == pytest.approx(times, abs=1e-3)


def test_a_phone_video_with_rotation_metadata_is_read_upright(tiny_recognizer, tmp_path):
    upright = list(still_frames(ONE, 4))
    # A phone stores the frames sideways and says how to turn them: 90 degrees clockwise here.
    video = write_video(tmp_path / "phone.mp4", [np.rot90(frame, 1) for frame in upright], rotation=-90)
    height, width = upright[0].shape[:2]
    info = probe(video)
    assert (info.width, info.height, info.rotation) == (width, height, -90)
    out = tmp_path / "out.mp4"
    results = list(analyze_video(tiny_recognizer, video, annotate=out))
    expected = [face["box"] for face in tiny_recognizer(upright[0])]
    assert expected and all(matches([f["box"] for f in r.faces], expected) for r in results)
    assert read_video(out)["size"] == (width, height)


def test_4k_frames_are_analysed_on_a_reduced_copy_and_drawn_full_size(tiny_recognizer, tmp_path):
    frames = list(still_frames(GROUP, 2, size=(3840, 2160), noise=1))
    video = write_video(tmp_path / "4k.mp4", frames)
    out = tmp_path / "out.mp4"
    results = list(analyze_video(tiny_recognizer, video, annotate=out))
    small = np.asarray(Image.fromarray(frames[0]).resize((640, 360), Image.Resampling.BILINEAR))
    expected = [tuple(6 * v for v in face["box"]) for face in tiny_recognizer(small)]
    assert len(expected) == 3 and all(matches([f["box"] for f in r.faces], expected) for r in results)
    assert max(f["box"][2] for f in results[0].faces) > 1280  # boxes in the 4K frame's pixels
    assert read_video(out)["size"] == (3840, 2160)


def test_unreadable_videos_raise_naming_the_file(tiny_recognizer, tmp_path):
    (tmp_path / "notes.mp4").write_text("not a video")
    for path, message in [(tmp_path / "notes.mp4", "not a video file"), (tmp_path / "missing.mp4", "no such file"),
                          (write_video(tmp_path / "empty.mp4", []), "no video stream")]:
        with pytest.raises(VideoReadError, match=message) as error:
            list(analyze_video(tiny_recognizer, path, annotate=tmp_path / "out.mp4"))
        assert str(path) in str(error.value)
        assert not (tmp_path / "out.mp4").exists()


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory):
    """videos/: a group clip with sound, a clip without a face, a photo, and four files that are not good videos."""
    root = tmp_path_factory.mktemp("videos")
    write_video(root / "group.mp4", still_frames(GROUP, 8), fps=10, audio_seconds=0.8)
    sky = np.zeros((120, 160, 3), np.uint8) + np.array([30, 120, 200], np.uint8)
    write_video(root / "sky.mkv", [sky] * 6, fps=10)
    (root / ONE.name).write_bytes(ONE.read_bytes())
    (root / "notes.mp4").write_text("not a video")
    whole = write_video(root / "whole.mp4", still_frames(ONE, 6, noise=20), fps=10).read_bytes()
    (root / "cut.mp4").write_bytes(whole[: len(whole) // 2])  # the index (moov) is at the end: nothing readable
    (root / "whole.mp4").unlink()
    streamed = write_video(root / "streamed.mp4", still_frames(ONE, 20, noise=20), fps=10, faststart=True).read_bytes()
    (root / "cut_streamed.mp4").write_bytes(streamed[: len(streamed) * 9 // 10])  # the first frames are whole
    (root / "streamed.mp4").unlink()
    write_video(root / "empty.mp4", [])
    return root


def test_cli_labels_videos_beside_photos_and_goes_on_past_bad_ones(tiny_model_folder, video_folder, tmp_path):
    output = tmp_path / "results.csv"
    assert cli(["predict", str(video_folder), "--model", str(tiny_model_folder), "--output", str(output), "--every", "2",
                "--annotate", str(tmp_path / "labelled.mp4"), "--plot", str(tmp_path / "chart.png")]) == 1
    with open(output, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == VIDEO_FIELDS + [f"p_{label}" for label in FER2013_LABELS]
    by_file = {}
    for row in rows:
        by_file.setdefault(row["file"].rsplit("/", 1)[-1], []).append(row)

    (photo,) = by_file[ONE.name]
    assert photo["status"] == "face" and photo["frame"] == "" and photo["track"] == ""
    group = by_file["group.mp4"]
    assert [(row["frame"], row["time"]) for row in group[::3]] == [("0", "0.000000"), ("2", "0.200000"),
                                                                     ("4", "0.400000"), ("6", "0.600000")]
    assert all(row["status"] == "face" for row in group) and len(group) == 12
    assert {row["track"] for row in group} == {"1", "2", "3"}
    for row in group:
        assert float(row["score"]) == pytest.approx(float(row[f"p_{row['label']}"]), abs=1e-6)
    assert [(row["frame"], row["status"]) for row in by_file["sky.mkv"]] == [(str(i), "no face") for i in (0, 2, 4)]

    errors = {name: rows[-1]["error"] for name, rows in by_file.items() if rows[-1]["status"] == "error"}
    assert set(errors) == {"notes.mp4", "cut.mp4", "cut_streamed.mp4", "empty.mp4"}
    assert all(name in message for name, message in errors.items())
    assert "not a video file, or a damaged or truncated one" in errors["cut.mp4"]
    assert "no video stream" in errors["empty.mp4"]
    streamed = by_file["cut_streamed.mp4"]  # the frames before the cut are labelled
    assert "truncated" in errors["cut_streamed.mp4"] and len(streamed) > 1
    assert all(row["status"] == "face" for row in streamed[:-1])

    group_out, sky_out = read_video(tmp_path / "labelled_group.mp4"), read_video(tmp_path / "labelled_sky.mp4")
    assert (group_out["frames"], group_out["audio"], sky_out["frames"]) == (8, "aac", 6)
    assert not (tmp_path / "labelled_notes.mp4").exists() and not (tmp_path / "labelled_empty.mp4").exists()
    assert Image.open(tmp_path / "chart_group.png").format == "PNG"


def test_cli_writes_video_rows_as_json(tiny_model_folder, video_folder, tmp_path):
    output = tmp_path / "results.json"
    assert cli(["predict", str(video_folder / "group.mp4"), "--model", str(tiny_model_folder), "--output", str(output),
                "--smoothing", "0"]) == 0
    report = json.loads(output.read_text())
    assert report["summary"]["videos"] == 1 and report["summary"]["frames"] == 8 and report["summary"]["faces"] == 24
    row = report["rows"][0]
    assert (row["frame"], row["time"], row["track"], row["status"]) == (0, 0.0, 1, "face")
    assert row["label"] == max(row["scores"], key=row["scores"].get)  # smoothing off: the frame's own argmax


@requires_full_data("a real video clip (woman2.mp4, 464 frames) rather than still photos")
def test_every_frame_of_a_real_clip(tiny_recognizer, tmp_path):
    out = tmp_path / "woman2.mp4"
    results = list(analyze_video(tiny_recognizer, WOMAN, annotate=out))
    assert len(results) == 464 and all(len(r.faces) == 1 for r in results)
    tracks = [r.faces[0]["track"] for r in results]
    assert max(set(tracks), key=tracks.count) == 1 and tracks.count(1) >= 0.95 * len(tracks)
    source, written = read_video(WOMAN), read_video(out)
    assert written["frames"] == 464 and written["times"] == pytest.approx(source["times"], abs=1e-3)
