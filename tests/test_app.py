"""The demo's handlers (app.py) called directly, on photos, webcam frames and video files, and `python -m fer_hf predict`.

The models are mostly random "tiny" FER CNNs: their labels are arbitrary, so the tests check the shape of
the answers (every face, the model's own label set, messages), not which expression wins. The happy/sad
view (`--labels happy sad`) is checked on the bundled 7-class model, whose scores mean something.
"""

from __future__ import annotations

import csv
import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

import app
from fer_hf.demo import FaceDemo, common, live
from fer_hf.demo import video as video_tab
from fer_hf import FER2013_LABELS
from fer_hf.__main__ import main as cli
from fer_hf.faces import Box, FaceExpressionRecognizer
from fer_hf.hub import find_model, load_classifier
from fer_hf.predict import collect_images
from tests.apptools import PHOTOS, png_header_only, save_tiny_model
from tests.conftest import FER_FIXTURE_DIR, run_preloaded
from tests.videotools import read_video, still_frames, write_video

GROUP = PHOTOS / "happy_three_women.jpg"  # three faces
ONE = PHOTOS / "happy_man.jpg"  # one face, box about (80, 14, 160, 122) in 320x201
# One face the bundled models are unsure of (top two classes within FLIP_MARGIN), so it is mirror-averaged.
UNSURE = PHOTOS / "sad_man.jpg"
DEFAULT_MODEL = app.ROOT / "models" / "fer2013-cnn"
HAPPY_SAD = ["happy", "sad"]


def make_demo(folder, labels=None) -> FaceDemo:
    model, processor = load_classifier(folder)
    return FaceDemo(FaceExpressionRecognizer(model, processor, labels=labels))


@pytest.fixture(scope="module")
def fer_model(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("fer-tiny"))


@pytest.fixture(scope="module")
def demo(fer_model) -> FaceDemo:
    return make_demo(fer_model)


def upload(path, name=None) -> dict:
    """What the photo component hands a handler with preprocess=False: Gradio's file dict."""
    return {"path": str(path), "url": f"/gradio_api/file={path}", "orig_name": name or path.name, "size": None,
            "mime_type": None, "is_stream": False, "meta": {"_type": "gradio.FileData"}}


def check_scores(scores: dict, labels) -> None:
    assert set(scores) == set(labels)
    assert sum(scores.values()) == pytest.approx(1.0, abs=1e-4)


# --- photos -------------------------------------------------------------------------------------


def test_several_faces_are_all_labelled_and_selectable(demo):
    annotated, result, scores, status = demo.analyze(upload(GROUP))
    faces = result["faces"]
    assert len(faces) == 3 and "3 faces" in status
    areas = [(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]) for f in faces]
    assert areas == sorted(areas, reverse=True)  # largest first
    assert isinstance(annotated, Image.Image) and annotated.width >= common.SHOWN_SIDE[0]
    assert scores == faces[0]["scores"]
    for face in faces:
        assert face["label"] in FER2013_LABELS and 0 < face["score"] <= 1
        check_scores(face["scores"], FER2013_LABELS)

    picker, whole = demo.face_picker(result)
    assert picker["visible"] and picker["value"] == 0 and [v for _, v in picker["choices"]] == [0, 1, 2]
    assert picker["choices"][2][0].startswith(f"3: {faces[2]['label']}")
    assert not whole["visible"]

    image, third = demo.show_face(upload(GROUP), result, 2)
    assert third == faces[2]["scores"] and image.size == annotated.size
    assert not np.array_equal(np.asarray(image), np.asarray(annotated))  # another face highlighted

    # A click in the middle of face 3 (in the shown image's pixels) selects it.
    scale = annotated.width / result["width"]
    x0, y0, x1, y1 = faces[2]["box"]
    click = app.gr.SelectData(None, {"index": [(x0 + x1) / 2 * scale, (y0 + y1) / 2 * scale], "value": None})
    index, _, clicked = demo.pick_face(upload(GROUP), result, click)
    assert index == 2 and clicked == faces[2]["scores"]


def test_a_plain_path_and_one_face(demo):
    annotated, result, scores, status = demo.analyze(str(ONE))
    assert len(result["faces"]) == 1 and status.startswith("Found **1 face**")
    assert (result["width"], result["height"]) == (320, 201)
    picker, whole = demo.face_picker(result)
    assert not picker["visible"] and not whole["visible"]


def test_clearing_the_photo_resets_the_outputs(demo):
    annotated, result, scores, status = demo.analyze(None)
    assert (annotated, result, scores) == (None, None, None) and "Upload a photo" in status
    picker, whole = demo.face_picker(result)
    assert not picker["visible"] and picker["choices"] == [] and not whole["visible"]


def test_no_face_says_so_and_offers_the_whole_image(demo, tmp_path):
    sky = tmp_path / "sky.png"
    gradient = np.linspace(40, 220, 300, dtype=np.uint8)
    Image.fromarray(np.stack([np.tile(gradient, (200, 1))] * 3, axis=-1)).save(sky)
    annotated, result, scores, status = demo.analyze(upload(sky))
    assert result["faces"] == [] and scores is None and "No face found" in status
    assert isinstance(annotated, Image.Image)
    picker, whole = demo.face_picker(result)
    assert whole["visible"] and not picker["visible"]

    annotated, result, scores, status = demo.analyze_whole_image(upload(sky))
    (face,) = result["faces"]
    assert face["box"] == (0, 0, 300, 200) and face["detection_score"] is None
    assert "whole image" in status
    check_scores(scores, FER2013_LABELS)
    assert not demo.face_picker(result)[1]["visible"]
    # The fallback shares the recognizer's model and runtime, and leaves the face-only path as it was.
    assert demo.whole_image.runtime is demo.recognizer.runtime and demo.whole_image.model is demo.recognizer.model
    assert demo.analyze(upload(sky))[1]["faces"] == []


# --- bad uploads: a message in the page, never an exception -------------------------------------


def _not_an_image(folder):
    path = folder / "notes.jpg"
    path.write_text("these are my notes, not a photo\n")
    return path


def _empty(folder):
    path = folder / "empty.png"
    path.write_bytes(b"")
    return path


def _truncated(folder):
    path = folder / "cut.jpg"
    data = ONE.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _enormous(folder):
    return png_header_only(folder / "huge.png", 9_000, 8_000)  # 72 MP: above load_image's 64 MP limit


@pytest.mark.parametrize(
    "make, reason",
    [(_not_an_image, "cannot identify"), (_empty, "Cannot read image"), (_truncated, "truncated"),
     (_enormous, "72,000,000 pixels")],
    ids=["not-an-image", "empty", "truncated", "enormous"],
)
def test_bad_uploads_give_a_message(demo, tmp_path, make, reason):
    path = make(tmp_path)
    annotated, result, scores, status = demo.analyze(upload(path, name=f"my {path.name}"))
    assert (annotated, result, scores) == (None, None, None)
    assert status.startswith("**Could not use this file.**") and reason in status
    assert f"my {path.name}" in status and str(tmp_path) not in status  # the user's name, not the temp path
    assert "max_pixels" not in status  # a hint for programmers, not for the page


def test_a_failing_model_gives_a_message_too(demo, monkeypatch):
    def broken(crops):
        raise RuntimeError("weights on fire")

    monkeypatch.setattr(demo.recognizer, "classify", broken)
    annotated, result, scores, status = demo.analyze(upload(ONE))
    assert (annotated, result, scores) == (None, None, None)
    assert status == "**Could not label this photo.** RuntimeError: weights on fire"


def _animated(folder):
    path = folder / "animated.gif"
    first = Image.open(ONE).convert("RGB")
    second = Image.open(PHOTOS / "sad_man.jpg").convert("RGB").resize(first.size)
    first.save(path, save_all=True, append_images=[second], duration=200, loop=0)
    return path


def _sixteen_bit(folder):
    path = folder / "gray16.png"
    gray = np.asarray(Image.open(ONE).convert("L")).astype(np.uint16) * 257
    Image.fromarray(gray).save(path)
    assert Image.open(path).mode.startswith("I")
    return path


def _cmyk(folder):
    path = folder / "cmyk.jpg"
    Image.open(ONE).convert("CMYK").save(path, quality=95)
    return path


def _exif_rotated(folder):
    path = folder / "rotated.jpg"
    stored = Image.open(ONE).convert("RGB").transpose(Image.Transpose.ROTATE_90)  # as a phone stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to show it upright
    stored.save(path, exif=exif, quality=95)
    assert ImageOps.exif_transpose(Image.open(path)).size == (320, 201)
    return path


@pytest.mark.parametrize("make", [_animated, _sixteen_bit, _cmyk, _exif_rotated],
                         ids=["animated", "16-bit", "cmyk", "exif-rotated"])
def test_odd_photos_are_read_upright(demo, tmp_path, make):
    annotated, result, scores, status = demo.analyze(upload(make(tmp_path)))
    assert (result["width"], result["height"]) == (320, 201)  # upright, first frame
    (face,) = result["faces"]
    assert face["box"] == pytest.approx((80, 14, 160, 122), abs=8)
    assert annotated.mode == "RGB" and status.startswith("Found **1 face**")
    assert ("animated" in status) == (make is _animated)


def test_a_big_photo_is_read_reduced_with_boxes_on_its_faces(demo, tmp_path):
    """A 3,600 px JPEG is read as the recognizer reads it (1/4 scale here); sizes and boxes stay the photo's own."""
    path = tmp_path / "big.jpg"
    small = Image.open(GROUP).convert("RGB")
    big = small.resize((3600, round(3600 * small.height / small.width)), Image.Resampling.BICUBIC)
    big.save(path, quality=90, progressive=True)
    sides = (demo.recognizer.max_side, demo.recognizer.min_side)  # what analyze reads uploads with
    image, _ = common.read_upload(str(path), *sides)
    assert sides == (1280, 640) and max(image.size) < 1280 and image.info["original_size"] == big.size

    annotated, result, scores, status = demo.analyze(upload(path))
    assert (result["width"], result["height"]) == big.size and status.startswith("Found **3 faces**")
    assert [face["box"] for face in result["faces"]] == [face["box"] for face in demo.recognizer(path)]
    factor = big.width / small.width  # the same faces as in the small photo, in the big one's pixels
    expected = sorted(tuple(v * factor for v in face["box"]) for face in demo.analyze(upload(GROUP))[1]["faces"])
    found = sorted(face["box"] for face in result["faces"])
    assert all(a == pytest.approx(b, abs=0.02 * big.width) for a, b in zip(found, expected))
    # In the annotated photo each box is drawn around its face: its left edge in the box colours.
    scale = annotated.width / result["width"]
    assert annotated.size == (round(big.width * scale), round(big.height * scale))
    colours = {tuple(int(common.SELECTED[i:i + 2], 16) for i in (1, 3, 5)), tuple(int(common.OTHER[i:i + 2], 16) for i in (1, 3, 5))}
    for x0, y0, x1, y1 in found:
        assert annotated.getpixel((round(x0 * scale) + 1, round((y0 + y1) / 2 * scale))) in colours


# --- any model's labels, and the live stream ------------------------------------------------------


def test_a_two_label_model_works_unchanged(tmp_path):
    two = make_demo(save_tiny_model(tmp_path / "happy-sad", ["happy", "sad"]))
    annotated, result, scores, status = two.analyze(upload(GROUP))
    assert len(result["faces"]) == 3
    check_scores(scores, ["happy", "sad"])
    assert {face["label"] for face in result["faces"]} <= {"happy", "sad"}
    assert two.face_picker(result)[0]["choices"][0][0].split()[1] in ("happy", "sad")
    frame = np.asarray(Image.open(ONE).convert("RGB"))
    image, live_scores, live_status, _ = two.live(frame)
    check_scores(live_scores, ["happy", "sad"])


def test_a_vit_saved_to_a_folder_works_unchanged(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    labels = ["neutral", "smiling", "frowning"]
    config = ViTConfig(image_size=32, patch_size=16, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=64, id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    ViTForImageClassification(config).save_pretrained(tmp_path / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "vit")
    vit = make_demo(tmp_path / "vit")
    annotated, result, scores, status = vit.analyze(upload(GROUP))
    assert len(result["faces"]) == 3 and status.startswith("Found **3 faces**")
    check_scores(scores, labels)


def test_live_frames(demo):
    frame = np.asarray(Image.open(GROUP).convert("RGB").resize((320, 240)))
    image, scores, status, tracker = demo.live(frame)
    assert isinstance(image, Image.Image) and image.size == (640, 480)
    check_scores(scores, FER2013_LABELS)
    assert status.startswith("3 faces (") and status.endswith(" ms)")
    assert sorted(track.id for track in tracker.tracks) == [1, 2, 3]
    # The same viewer's next frame: the same faces keep their tracks.
    _, _, _, again = demo.live(frame, tracker)
    assert again is tracker and sorted(track.id for track in tracker.tracks) == [1, 2, 3]
    assert all(track.frames == 2 for track in tracker.tracks)
    image, scores, status, _ = demo.live(np.zeros((240, 320, 3), np.uint8))
    assert scores is None and status.startswith("No face in view")
    assert demo.live(None)[:3] == (None, None, "")


def test_live_frames_say_which_faces_the_model_is_unsure_of():
    # The bundled model's threshold (its config's unsure_threshold), on the smoothed scores the caption shows:
    # the sad child's face is unsure (angry about 50%, sad about 30%), the happy man's is not.
    demo = make_demo(DEFAULT_MODEL)
    for photo, expected in (("sad_child.jpg", "1 unsure"), ("happy_man.jpg", None)):
        frame = np.asarray(Image.open(PHOTOS / photo).convert("RGB"))
        *_, status, tracker = demo.live(frame)
        assert status.startswith("1 face (") and (expected in status if expected else "unsure" not in status), status


def test_live_frames_are_searched_at_the_stream_side(demo):
    """The stream's detector works on a smaller copy than the photos' (live.STREAM_DETECT_SIDE), and a
    face in a webcam-sized frame of a real photo is still found where the photos' detector finds it, and labelled."""
    photo_detector = demo.recognizer.detector
    assert demo.whole_image.detector is photo_detector  # photos keep the default detector
    if photo_detector.backend == "libfacedetection":  # the side was measured for it; Haar keeps its own
        assert demo.stream.detector.max_side == live.STREAM_DETECT_SIDE < photo_detector.max_side
        assert demo.stream.detector.score_threshold == photo_detector.score_threshold
    happy_sad = make_demo(DEFAULT_MODEL, HAPPY_SAD)  # a real model, for real labels
    for path, label in ((ONE, "happy"), (PHOTOS / "sad_man.jpg", "sad")):
        frame = np.asarray(ImageOps.fit(Image.open(path).convert("RGB"), (640, 480)))  # as a webcam frames a face
        image, scores, status, _ = happy_sad.live(frame)
        assert image.size == (640, 480) and status.startswith("1 face (")
        assert max(scores, key=scores.get) == label
        (stream_face,), (photo_face,) = happy_sad.stream(frame), happy_sad.recognizer(frame)
        assert stream_face["scores"] == scores
        assert Box(*stream_face["box"], 0).iou(Box(*photo_face["box"], 0)) >= 0.8, (stream_face["box"], photo_face["box"])


# --- the happy/sad view: the 7-class model's two scores, renormalised -------------------------------


def test_the_happy_sad_view_is_the_7_class_models_two_probabilities_renormalised():
    from datasets import load_dataset

    from fer_hf.evaluation import class_probabilities

    model, processor = load_classifier(DEFAULT_MODEL)
    faces = load_dataset("parquet", data_files=str(FER_FIXTURE_DIR / "publictest.parquet"), split="train")
    crops = list(faces["image"])  # 56 real faces of every class
    happy, sad = FER2013_LABELS.index("happy"), FER2013_LABELS.index("sad")
    for flip_tta in (True, False):
        seven = FaceExpressionRecognizer(model, processor, flip_tta=flip_tta).classify(crops)
        two = FaceExpressionRecognizer(model, processor, flip_tta=flip_tta, labels=HAPPY_SAD)
        assert two.labels == HAPPY_SAD and two.model_labels == list(FER2013_LABELS)
        scores = two.classify(crops)
        expected = seven[:, [happy, sad]] / seven[:, [happy, sad]].sum(1, keepdims=True)
        np.testing.assert_allclose(scores, expected, atol=1e-6)
        np.testing.assert_allclose(scores.sum(1), 1, atol=1e-6)
        # In the order asked for.
        swapped = FaceExpressionRecognizer(model, processor, flip_tta=flip_tta, labels=["sad", "happy"]).classify(crops)
        np.testing.assert_allclose(swapped, scores[:, ::-1], atol=1e-6)
    # Computed as `evaluate --labels happy sad` computes it (fp32, one view): the same scores.
    eager = FaceExpressionRecognizer(model, processor, runtime="eager", flip_tta=False, labels=HAPPY_SAD)
    np.testing.assert_allclose(eager.classify(crops), class_probabilities(model, processor, faces, HAPPY_SAD), atol=1e-5)
    # A photo's faces: two scores each, the label their argmax.
    for face in FaceExpressionRecognizer(model, processor, labels=HAPPY_SAD)(GROUP):
        assert set(face["scores"]) == set(HAPPY_SAD) and sum(face["scores"].values()) == pytest.approx(1, abs=1e-5)
        assert face["label"] == max(face["scores"], key=face["scores"].get) == "happy"
        assert face["score"] == face["scores"]["happy"]


def test_an_unknown_label_is_refused_by_name():
    model, processor = load_classifier(DEFAULT_MODEL)
    with pytest.raises(ValueError, match=r"no class \['sadd'\] among its labels \['angry', 'disgust', 'fear', 'happy'"):
        FaceExpressionRecognizer(model, processor, labels=["happy", "sadd"])
    with pytest.raises(ValueError, match="two or more different classes"):
        FaceExpressionRecognizer(model, processor, labels=["happy", "happy"])


def test_the_demo_shows_the_happy_sad_view_in_every_tab(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path))
    demo = app.build_demo(str(DEFAULT_MODEL), labels=HAPPY_SAD)
    header = next(block.value for block in demo.blocks.values()
                  if type(block).__name__ == "Markdown" and "Facial expressions" in str(block.value))
    assert "labels: happy, sad (of its 7 classes, scores renormalised)" in header
    handlers = next(fn for fn in demo.fns.values() if fn.name == "analyze").fn.__self__
    # Photo: every face and the shown scores; the face picker's captions.
    _, result, scores, _ = handlers.analyze(upload(PHOTOS / "sad_man.jpg"))
    check_scores(scores, HAPPY_SAD)
    assert result["faces"][0]["label"] == "sad"
    _, result, scores, _ = handlers.analyze(upload(GROUP))
    assert {face["label"] for face in result["faces"]} == {"happy"} and len(result["faces"]) == 3
    assert [choice[0].split()[1] for choice in handlers.face_picker(result)[0]["choices"]] == ["happy"] * 3
    # Live webcam.
    _, live_scores, _, tracker = handlers.live(np.asarray(ImageOps.fit(Image.open(ONE).convert("RGB"), (640, 480))))
    check_scores(live_scores, HAPPY_SAD)
    assert tracker.labels == HAPPY_SAD
    # Video: the summary's columns and the CSV's.
    clip = write_video(tmp_path / "smile.mp4", still_frames(ONE, 6), fps=10)
    _, _, summary, table, _ = handlers.label_video(str(clip))
    assert list(summary.columns)[3:] == ["dominant", "happy %", "sad %"] and summary["dominant"].tolist() == ["happy"]
    with open(table, newline="") as handle:
        assert list(csv.DictReader(handle).fieldnames)[-2:] == ["p_happy", "p_sad"]


def test_app_py_takes_labels_and_names_an_unknown_one(monkeypatch):
    # `python app.py ...` as run_path runs it, in this process (its imports done): it stops before serving anything.
    monkeypatch.setattr(sys, "argv", ["app.py", "--model", str(DEFAULT_MODEL), "--labels", "happy", "sadd"])
    with pytest.raises(SystemExit) as stopped:
        runpy.run_path(str(app.ROOT / "app.py"), run_name="__main__")
    message = stopped.value.code
    assert isinstance(message, str) and "Cannot start the demo" in message, message  # printed; exit status 1
    assert "no class ['sadd'] among its labels ['angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral']" in message


def test_the_blocks_stream_and_examples_settings(fer_model, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path))  # not .gradio/ in the checkout
    demo = app.build_demo(str(fer_model))
    stream = next(fn for fn in demo.fns.values() if fn.name == "live")
    assert stream.connection == "stream"
    assert (stream.stream_every, stream.time_limit, stream.concurrency_limit) == (
        app.STREAM_EVERY, app.STREAM_TIME_LIMIT, app.STREAM_CONCURRENCY)
    assert 0 < app.STREAM_TIME_LIMIT <= 120 and app.STREAM_CONCURRENCY >= 1
    video = next(fn for fn in demo.fns.values() if fn.name == "label_video")
    assert video.concurrency_limit == app.VIDEO_CONCURRENCY == 1  # one video job cannot take every core
    photo = next(fn for fn in demo.fns.values() if fn.name == "analyze")
    assert photo.preprocess is False  # the handler reads uploads itself, with clear messages
    assert app.EXAMPLES and all(path.stat().st_size < 100_000 for path in app.EXAMPLES)
    # The header names the model as a reader knows it: the folder's name, not its absolute path.
    header = next(block.value for block in demo.blocks.values()
                  if type(block).__name__ == "Markdown" and "Facial expressions" in str(block.value))
    assert f"Model `{fer_model.name}`" in header and str(fer_model.parent) not in header


# --- video files --------------------------------------------------------------------------------


def test_a_video_gives_the_annotated_video_chart_summary_and_csv(demo, tmp_path):
    clip = write_video(tmp_path / "smile.mp4", still_frames(ONE, 12), fps=10)
    annotated, chart, summary, table, status = demo.label_video(str(clip))
    assert "12 frames" in status and "smile.mp4" in status and "1 face track" in status, status
    written = read_video(Path(annotated))
    assert written["frames"] == 12 and written["size"] == (320, 200)
    with Image.open(chart) as image:
        assert image.format == "PNG" and image.width > 300
    labels = list(demo.recognizer.labels)
    assert list(summary.columns) == ["track", "from (s)", "to (s)", "dominant", *(f"{label} %" for label in labels)]
    (track,) = summary.itertuples(index=False)
    assert track[0] == 1 and track[1] == 0 and track[2] == pytest.approx(1.1) and track[3] in labels
    assert sum(track[4:]) == pytest.approx(100, abs=0.5) and track[4 + labels.index(track[3])] == max(track[4:])
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["frame"]) for row in rows] == list(range(12)) and {row["track"] for row in rows} == {"1"}
    assert {f"p_{label}" for label in labels} <= set(rows[0]) and float(rows[-1]["time"]) == pytest.approx(1.1)
    assert Path(annotated).parent == Path(chart).parent == Path(table).parent  # one folder per video


def test_a_video_without_a_face_says_so(demo, tmp_path):
    clip = write_video(tmp_path / "wall.mp4", (np.full((120, 160, 3), 90, np.uint8) for _ in range(5)), fps=5)
    annotated, chart, summary, table, status = demo.label_video(str(clip))
    assert "5 frames" in status and "no face found" in status, status
    assert summary.empty and Path(annotated).is_file() and Path(chart).is_file() and Path(table).is_file()


def _text(folder):
    (folder / "notes.mp4").write_text("not a video at all")
    return folder / "notes.mp4"


def _cut(folder):
    whole = write_video(folder / "whole.mp4", still_frames(ONE, 20), fps=10)
    (folder / "cut.mp4").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return folder / "cut.mp4"


def _no_frames(folder):
    return write_video(folder / "empty.mp4", [], fps=10)


@pytest.mark.parametrize("make, reason", [(_text, "not a video"), (_cut, "truncated"), (_no_frames, "no video")])
def test_bad_videos_give_a_message_naming_the_file(demo, tmp_path, make, reason):
    bad = make(tmp_path)
    *outputs, status = demo.label_video(str(bad))
    assert outputs == [None] * 4
    assert f"Could not use {bad.name}" in status and reason in status and str(tmp_path) not in status, status


def test_the_video_limits_are_checked_before_any_work(demo, tmp_path, monkeypatch):
    clip = write_video(tmp_path / "long.mp4", still_frames(ONE, 20), fps=10)
    monkeypatch.setattr(video_tab, "MAX_VIDEO_SECONDS", 1)
    *outputs, status = demo.label_video(str(clip))
    assert outputs == [None] * 4 and "long.mp4" in status and "lasts 2 s; the limit is 1 s" in status, status
    monkeypatch.setattr(video_tab, "MAX_FILE_MB", 0)
    *outputs, status = demo.label_video(str(clip))
    assert outputs == [None] * 4 and "the limit is 0 MB" in status, status
    assert demo.label_video(None)[-1].startswith("Upload a video (at most")


def test_model_display_name(fer_model):
    assert app.model_display_name(str(fer_model)) == app.model_display_name(f"{fer_model}/") == fer_model.name
    assert app.model_display_name("someone/fer-model") == "someone/fer-model"  # a Hub repo id as it is


def test_the_demo_mirror_averages_unless_told_not_to(tmp_path, monkeypatch):
    # A trained model, as in the predict test below: a random tiny one scores a face and its mirror alike.
    monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path))
    fer_model = app.ROOT / "models" / "fer2013-cnn-fast"
    model, processor = load_classifier(fer_model)
    scores = {}
    for flip_tta in (True, False):
        demo = app.build_demo(str(fer_model), flip_tta=flip_tta)
        handlers = next(fn for fn in demo.fns.values() if fn.name == "analyze").fn.__self__
        assert handlers.recognizer.flip_tta is handlers.stream.flip_tta is flip_tta
        _, result, scores[flip_tta], _ = handlers.analyze(upload(UNSURE))
        expected = FaceExpressionRecognizer(model, processor, flip_tta=flip_tta)(UNSURE)[0]["scores"]
        assert scores[flip_tta] == pytest.approx(expected, abs=1e-6)
    assert scores[True] != pytest.approx(scores[False], abs=1e-4)


def test_find_model(tmp_path, monkeypatch):
    monkeypatch.delenv("FER_HF_MODEL", raising=False)
    with pytest.raises(FileNotFoundError, match="pass --model"):
        find_model(None, tmp_path)
    (tmp_path / "models" / "other").mkdir(parents=True)
    (tmp_path / "models" / "other" / "config.json").write_text("{}")
    assert find_model(None, tmp_path) == str(tmp_path / "models" / "other")
    (tmp_path / "models" / "fer2013-cnn-fast").mkdir()  # other folders: in name order
    (tmp_path / "models" / "fer2013-cnn-fast" / "config.json").write_text("{}")
    assert find_model(None, tmp_path) == str(tmp_path / "models" / "fer2013-cnn-fast")
    (tmp_path / "models" / "fer2013-cnn").mkdir()
    (tmp_path / "models" / "fer2013-cnn" / "config.json").write_text("{}")
    assert find_model(None, tmp_path) == str(tmp_path / "models" / "fer2013-cnn")
    monkeypatch.setenv("FER_HF_MODEL", "someone/model")
    assert find_model(None, tmp_path) == "someone/model"
    assert find_model("local/folder", tmp_path) == "local/folder"


# --- python -m fer_hf predict --------------------------------------------------------------------


@pytest.fixture
def photo_tree(tmp_path):
    """photos/: the fixture photos, a sub-folder with a photo without a face, a truncated JPEG, a note."""
    root = tmp_path / "photos"
    (root / "sub" / ".hidden").mkdir(parents=True)
    for photo in (GROUP, ONE):
        (root / photo.name).write_bytes(photo.read_bytes())
    Image.new("RGB", (200, 150), (30, 120, 200)).save(root / "sub" / "sky.png")
    _truncated(root / "sub")
    (root / "sub" / "notes.txt").write_text("not an image")
    (root / "sub" / ".hidden" / "x.jpg").write_text("ignored: hidden")
    return root


def test_collect_images(photo_tree):
    files, ignored = collect_images([photo_tree, photo_tree / "missing.jpg"])
    names = [path.relative_to(photo_tree).as_posix() for path in files]
    assert names == ["happy_man.jpg", "happy_three_women.jpg", "sub/cut.jpg", "sub/sky.png", "missing.jpg"]
    assert ignored == 1  # notes.txt; hidden folders are not searched


def test_predict_cli_writes_csv(fer_model, photo_tree, tmp_path):
    output = tmp_path / "out" / "results.csv"
    run = run_preloaded(["-m", "fer_hf", "predict", photo_tree, photo_tree / "missing.jpg", "--model", fer_model,
                         "--output", output, "--batch_size", "2"], env={"OMP_NUM_THREADS": "1"}, check=False)
    assert run.returncode == 1, run.stdout  # some files could not be read
    with open(output, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [*("file face status x0 y0 x1 y1 label score unsure detection_score error".split()),
                             *(f"p_{label}" for label in FER2013_LABELS)]
    by_status = {}
    for row in rows:
        by_status.setdefault(row["status"], []).append(row)
    assert len(by_status["face"]) == 4  # 3 + 1, one row per face
    group = [row for row in by_status["face"] if row["file"].endswith("happy_three_women.jpg")]
    assert [row["face"] for row in group] == ["0", "1", "2"]
    for row in by_status["face"]:
        assert row["label"] in FER2013_LABELS and float(row["score"]) == max(float(row[f"p_{n}"]) for n in FER2013_LABELS)
        assert int(row["x1"]) > int(row["x0"])
        assert row["unsure"] == "false"  # a random tiny model was never calibrated: its threshold is 0
    (no_face,) = by_status["no face"]
    assert no_face["file"].endswith("sky.png") and no_face["label"] == ""
    errors = {row["file"].split("/")[-1]: row["error"] for row in by_status["error"]}
    assert set(errors) == {"cut.jpg", "missing.jpg"} and "truncated" in errors["cut.jpg"]
    # Rows follow the files' order; the log names and counts the unreadable files.
    assert [(row["file"].split("/")[-1], row["status"]) for row in rows] == [
        ("happy_man.jpg", "face"), *[("happy_three_women.jpg", "face")] * 3, ("cut.jpg", "error"),
        ("sky.png", "no face"), ("missing.jpg", "error")]
    assert "2 unreadable" in run.stdout and "cut.jpg" in run.stdout and "missing.jpg" in run.stdout
    assert "Ignored 1 file" in run.stdout


def test_predict_cli_writes_json_and_stdout(tmp_path, photo_tree, capsys):
    model = save_tiny_model(tmp_path / "happy-sad", ["happy", "sad"])
    output = tmp_path / "results.json"
    assert cli(["predict", str(photo_tree / "happy_three_women.jpg"), str(photo_tree / "sub"), "--model", str(model),
                "--output", str(output), "--whole_image"]) == 1
    report = json.loads(output.read_text())
    assert report["labels"] == ["happy", "sad"] and report["model"] == str(model)
    summary = report["summary"]
    assert (summary["files"], summary["faces"], summary["unreadable"]) == (3, 4, 1)  # sky.png classified whole
    assert summary["unreadable_files"][0]["file"].endswith("cut.jpg")
    rows = report["rows"]
    assert [row["status"] for row in rows] == ["face", "face", "face", "error", "face"]
    sky = rows[-1]
    assert sky["file"].endswith("sky.png") and sky["detection_score"] is None and sky["x1"] == 200
    assert set(rows[0]["scores"]) == {"happy", "sad"}

    capsys.readouterr()
    assert cli(["predict", str(ONE), "--model", str(model)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("file,face,status") and lines[0].endswith("p_happy,p_sad") and len(lines) == 2


def test_predict_cli_flip_tta_is_on_unless_turned_off(tmp_path):
    # A trained model: a random tiny one scores a face and its mirror nearly alike (within 1e-4 at times).
    fer_model = app.ROOT / "models" / "fer2013-cnn-fast"
    scores = {}
    for flags in ([], ["--flip_tta"], ["--flip_tta", "true"], ["--flip_tta", "false"]):
        output = tmp_path / f"results{len(flags)}{flags[-1:]}.json"
        assert cli(["predict", str(UNSURE), "--model", str(fer_model), "--output", str(output), *flags]) == 0
        scores[" ".join(flags)] = json.loads(output.read_text())["rows"][0]["scores"]
    model, processor = load_classifier(fer_model)
    for flip_tta, flags in ((True, ["", "--flip_tta", "--flip_tta true"]), (False, ["--flip_tta false"])):
        expected = FaceExpressionRecognizer(model, processor, flip_tta=flip_tta)(UNSURE)[0]["scores"]
        assert all(scores[flag] == pytest.approx(expected, abs=1e-6) for flag in flags)
    assert scores[""] != pytest.approx(scores["--flip_tta false"], abs=1e-4)
    with pytest.raises(SystemExit):
        cli(["predict", str(ONE), "--flip_tta", "maybe"])


def test_predict_cli_without_images_or_model(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FER_HF_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    assert cli(["predict", str(tmp_path / "empty")]) == 2
    assert "no image files" in capsys.readouterr().err
    assert cli(["predict", str(ONE)]) == 1
    assert "pass --model" in capsys.readouterr().err


def test_predict_cli_labels_gives_the_happy_sad_view(tmp_path, capsys):
    output = tmp_path / "results.json"
    photos = [str(ONE), str(PHOTOS / "sad_man.jpg")]
    assert cli(["predict", *photos, "--model", str(DEFAULT_MODEL), "--labels", "happy", "sad", "--output", str(output)]) == 0
    report = json.loads(output.read_text())
    assert report["labels"] == HAPPY_SAD
    model, processor = load_classifier(DEFAULT_MODEL)
    expected = FaceExpressionRecognizer(model, processor, labels=HAPPY_SAD).predict_batch(photos)
    assert [row["label"] for row in report["rows"]] == ["happy", "sad"]
    for row, (face,) in zip(report["rows"], expected):
        assert row["scores"] == pytest.approx(face["scores"], abs=1e-6) and row["score"] == max(row["scores"].values())
    # CSV: one probability column per chosen class.
    assert cli(["predict", photos[0], "--model", str(DEFAULT_MODEL), "--labels", "sad", "happy"]) == 0
    header = capsys.readouterr().out.splitlines()[0].split(",")
    assert header[-2:] == ["p_sad", "p_happy"]
    # A class the model does not have: a clear error, nothing labelled.
    assert cli(["predict", photos[0], "--model", str(DEFAULT_MODEL), "--labels", "happy", "sadd"]) == 2
    error = capsys.readouterr().err
    assert "--labels" in error and "no class ['sadd'] among its labels ['angry', 'disgust'" in error, error
