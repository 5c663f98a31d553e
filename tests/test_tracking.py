"""fer_hf.tracking: track ids that stay with a face, and scores smoothed by time, not by frame count.

The faces are FaceExpressionRecognizer-shaped dicts with chosen scores, so each test sets exactly the
scores whose smoothing it checks; tests/test_video.py runs the tracker on real video frames.
"""

import numpy as np
import pytest

from fer_hf.tracking import DEFAULT_TIME_CONSTANT, FaceTracker

LABELS = ["happy", "sad", "neutral"]


def face(box, happy=0.8, sad=0.1):
    scores = {"happy": happy, "sad": sad, "neutral": 1 - happy - sad}
    best = max(scores, key=scores.get)
    return {"box": box, "label": best, "score": scores[best], "scores": scores, "detection_score": 0.9}


LEFT, RIGHT = (10, 10, 60, 70), (200, 20, 250, 80)


def test_ids_follow_the_faces_not_their_order():
    tracker = FaceTracker(LABELS)
    first = tracker.update([face(LEFT), face(RIGHT)], 0.0)
    left, right = first[0]["track"], first[1]["track"]
    assert left != right
    for step in range(1, 6):  # the faces drift and come in either order
        moved = [face((RIGHT[0] + step, *RIGHT[1:])), face((LEFT[0] + 2 * step, *LEFT[1:]))]
        if step % 2:
            moved.reverse()
        result = tracker.update(moved, step / 10)
        ids = {r["box"][0] < 150: r["track"] for r in result}
        assert ids == {True: left, False: right}


def test_a_face_gone_longer_than_max_age_comes_back_with_a_new_id():
    tracker = FaceTracker(LABELS, max_age=1.0)
    first = tracker.update([face(LEFT)], 0.0)[0]["track"]
    assert tracker.update([], 0.5) == []
    assert tracker.update([face(LEFT)], 0.9)[0]["track"] == first  # away 0.9 s: the same face
    assert tracker.update([face(LEFT)], 2.5)[0]["track"] != first  # away 1.6 s: a new track
    assert tracker.update([face(RIGHT)], 2.6)[0]["track"] not in (first, first + 1)  # no overlap: new


def label_changes(tracker, scores_by_frame, fps):
    """The times at which the tracked face's label changes."""
    labels = [tracker.update([face(LEFT, *scores)], i / fps)[0]["label"] for i, scores in enumerate(scores_by_frame)]
    return [i / fps for i in range(1, len(labels)) if labels[i] != labels[i - 1]]


@pytest.mark.parametrize("fps", [10, 30])
def test_a_change_of_expression_shows_within_half_a_second_at_any_frame_rate(fps):
    # 2 s happy, then 2 s sad.
    frames = [(0.8, 0.1)] * (2 * fps) + [(0.1, 0.8)] * (2 * fps)
    changes = label_changes(FaceTracker(LABELS), frames, fps)
    assert len(changes) == 1 and 2.0 <= changes[0] <= 2.5
    # Smoothing off: the change shows at once.
    assert label_changes(FaceTracker(LABELS, time_constant=0, hysteresis=0), frames, fps) == [2.0]


def test_smoothing_depends_on_time_not_on_frame_count():
    smoothed = {}
    for fps in (10, 30):
        tracker = FaceTracker(LABELS, hysteresis=0)
        tracker.update([face(LEFT, 0.8, 0.1)], 0.0)
        for i in range(1, fps // 2 + 1):  # half a second of "sad"
            result = tracker.update([face(LEFT, 0.1, 0.8)], i / fps)[0]
        smoothed[fps] = result["scores"]["sad"]
    # exp(-0.5 s / tau) of the old scores is left, whatever the frame rate.
    expected = 0.8 - (0.8 - 0.1) * np.exp(-0.5 / DEFAULT_TIME_CONSTANT)
    assert smoothed[10] == pytest.approx(expected) and smoothed[30] == pytest.approx(expected)


def test_a_still_face_with_close_scores_does_not_flicker():
    # Sensor noise flips which of two close classes leads, frame after frame.
    rng = np.random.default_rng(0)
    frames = [(0.45 + d, 0.45 - d) for d in rng.normal(0, 0.04, 90)]
    raw = label_changes(FaceTracker(LABELS, time_constant=0, hysteresis=0), frames, 30)
    assert len(raw) > 20
    assert label_changes(FaceTracker(LABELS), frames, 30) == []


def test_results_keep_the_frame_and_add_the_track():
    tracker = FaceTracker(LABELS)
    tracker.update([face(LEFT, 0.8, 0.1)], 0.0)
    (result,) = tracker.update([face(LEFT, 0.3, 0.6)], 0.1)
    assert result["raw_label"] == "sad" and result["raw_scores"]["sad"] == 0.6  # the frame's own
    assert result["label"] == "happy" and result["score"] == result["scores"]["happy"]  # smoothed
    assert sum(result["scores"].values()) == pytest.approx(1.0)
    assert result["box"] == LEFT and result["detection_score"] == 0.9
    with pytest.raises(ValueError):
        FaceTracker(LABELS, time_constant=-1)
