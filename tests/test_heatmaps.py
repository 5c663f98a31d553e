"""Heat maps per face (fer_hf.model.heatmaps): shapes and ranges, targets, no hooks left on a shared model, the
face pipeline's and the recognizer's `explain`, `predict --explain`, and the deletion check on the fixture faces."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from transformers import pipeline

from fer_hf.faces import FaceDetector, FaceExpressionRecognizer, crop_face, face_crop_margin, find_faces
from fer_hf.faithfulness import deletion_test, randomised_copy, rank_correlations
from fer_hf.hub import load_classifier
from fer_hf.model import heatmaps
from fer_hf.model.face_detection import Box, crop_square
from fer_hf.model.heatmaps import DEFAULT_METHOD, box_heatmap, face_heatmaps, gradcam_layer, model_shell
from fer_hf.model.pipeline_fer import TASK, FacialExpressionRecognitionPipeline

from tests.conftest import PHOTOS, ROOT, run_python

MODEL = ROOT / "models" / "fer2013-cnn"
GROUP = next(photo for photo in PHOTOS if photo.stem == "happy_three_women")


@pytest.fixture(scope="module")
def classifier():
    return load_classifier(MODEL)


@pytest.fixture(scope="module")
def fixture_faces(classifier):
    """Every face of the four fixture photos as the model takes it, and the class the model predicts for it."""
    model, processor = classifier
    crops = [crop for photo in PHOTOS for crop in find_faces(photo, FaceDetector(), margin=face_crop_margin(processor))[2]]
    pixel_values = processor(images=crops, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        targets = model(pixel_values=pixel_values).logits.argmax(-1).tolist()
    return pixel_values, targets


@pytest.fixture(scope="module")
def fer():
    """The package's own face pipeline on the bundled model."""
    return pipeline(TASK, model=str(MODEL), pipeline_class=FacialExpressionRecognitionPipeline, trust_remote_code=False)


def hook_count(model: torch.nn.Module) -> int:
    """Hooks of every kind registered on the model's modules."""
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks", "_state_dict_hooks")
    return sum(len(getattr(module, kind, {})) for module in model.modules() for kind in kinds)


# --- the maps themselves ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["grad-cam", "occlusion"])
def test_maps_are_one_per_face_at_the_crop_size_in_zero_to_one(classifier, fixture_faces, method):
    model, _ = classifier
    pixel_values, targets = fixture_faces
    maps = face_heatmaps(model, pixel_values, targets, method)
    assert maps.shape == (len(pixel_values), 48, 48) and maps.dtype == np.float32
    assert maps.min() >= 0 and np.allclose(maps.max(axis=(1, 2)), 1)  # each map scaled to its own peak
    assert face_heatmaps(model, pixel_values[:0], [], method).shape == (0, 48, 48)


def test_grad_cam_looks_at_the_last_twelve_by_twelve_map(classifier, fixture_faces):
    model, _ = classifier
    shell = model_shell(model)
    assert gradcam_layer(shell, fixture_faces[0][:1]) is shell.fer_cnn.stages[2].layers  # 12x12; the last is 6x6
    fast, _ = load_classifier(ROOT / "models" / "fer2013-cnn-fast")  # its first stage halves the face: 12x12 sooner
    fast_shell = model_shell(fast)
    assert gradcam_layer(fast_shell, fixture_faces[0][:1]) is fast_shell.fer_cnn.stages[1].layers


def test_a_target_gives_that_class_s_map(classifier, fixture_faces):
    model, _ = classifier
    pixel_values, targets = fixture_faces
    other = [(target + 1) % 7 for target in targets]
    own, theirs = face_heatmaps(model, pixel_values, targets), face_heatmaps(model, pixel_values, other)
    assert not np.allclose(own, theirs)
    assert np.allclose(face_heatmaps(model, pixel_values[:1], other[:1]), theirs[:1], atol=1e-5)  # batch-independent


def test_unknown_targets_and_methods_are_named(fer, classifier):
    labels = "['angry', 'disgust', 'fear', 'happy', 'sad', 'surprise', 'neutral']"
    with pytest.raises(ValueError, match=f"target 'smug' is not one of the model's labels {labels}".replace("[", r"\[")):
        fer(str(GROUP), explain=True, target="smug")
    with pytest.raises(ValueError, match="smug"):
        FaceExpressionRecognizer(*classifier)(str(GROUP), explain=True, target="smug")
    with pytest.raises(ValueError, match=r"one of \['occlusion', 'grad-cam'\], got 'lime'"):
        fer(str(GROUP), explain="lime")


def test_without_captum_explain_says_how_to_install_it(monkeypatch, fer):
    # captum cannot be uninstalled for one test: the module's finding that it is missing is what a user without it gets.
    monkeypatch.setattr(heatmaps, "HAS_CAPTUM", False)
    with pytest.raises(ImportError, match="pip install captum"):
        fer(str(GROUP), explain=True)
    assert len(fer(str(GROUP))) == 3  # labels need no captum


# --- a shared model ---------------------------------------------------------------------------------------------


def test_no_hooks_are_left_on_the_shared_model(classifier, fer):
    model, processor = classifier
    recognizer = FaceExpressionRecognizer(model, processor, runtime="eager")
    before = hook_count(model), hook_count(fer.model)
    for method in ("grad-cam", "occlusion"):
        recognizer(str(GROUP), explain=method)
        fer(str(GROUP), explain=method)
    assert (hook_count(model), hook_count(fer.model)) == before == (0, 0)
    shell = model_shell(model)  # what captum hooks instead: other modules, the same weights
    assert shell is not model and all(a is b for a, b in zip(shell.buffers(), model.buffers()))
    for own, models in zip(shell.parameters(), model.parameters()):  # shared, but for channels_last conv weights
        assert own is models or (models.dim() == 4 and torch.equal(own, models)
                                 and own.is_contiguous(memory_format=torch.channels_last)
                                 and models.is_contiguous())  # the model's own layout untouched
    assert model.training is False


def test_people_explaining_at_once_on_one_model_get_their_own_maps(classifier, fixture_faces):
    # The demo serves several people from one model: concurrent calls must not mix each other's hooks (Grad-CAM's,
    # on each call's own model shell: five of those a person) nor maps (one of the default method, occlusion).
    model, _ = classifier
    pixel_values, targets = fixture_faces
    methods = ["grad-cam"] * 5 + [DEFAULT_METHOD]
    expected = {method: [face_heatmaps(model, pixel_values[i : i + 1], targets[i : i + 1], method)
                         for i in range(len(targets))] for method in set(methods)}
    results: dict[int, list[tuple[str, np.ndarray]]] = {}
    start = threading.Barrier(len(targets))

    def explain(i: int) -> None:
        start.wait()
        results[i] = [(method, face_heatmaps(model, pixel_values[i : i + 1], targets[i : i + 1], method))
                      for method in methods]

    threads = [threading.Thread(target=explain, args=(i,)) for i in range(len(targets))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, maps in results.items():
        for method, found in maps:
            np.testing.assert_allclose(found, expected[method][i], atol=1e-5, err_msg=method)
    assert len(results) == len(targets) and hook_count(model) == 0


# --- on the face box --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("align", [False, True])
def test_a_map_lands_on_the_photo_where_its_crop_pixels_came_from(align):
    # A bright dot in a photo, cut out by crop_face (turned for align) and its crop used as the "map":
    # the box map's peak must be the dot.
    photo = Image.new("L", (400, 300), 0)
    dot = (212, 148)
    ImageDraw.Draw(photo).ellipse((dot[0] - 3, dot[1] - 3, dot[0] + 3, dot[1] + 3), fill=255)
    box = Box(150, 90, 260, 230, 0.9, landmarks=((180.0, 140.0), (230.0, 152.0), (205, 175), (185, 200), (225, 205)))
    margin = 0.2
    crop = crop_face(photo, box, margin=margin, size=48, align=align)
    box_map = box_heatmap(np.asarray(crop, dtype=np.float32) / 255, box.as_tuple(), crop_square(box, margin, align))
    assert box_map.shape == (box.height, box.width) and box_map.dtype == np.float32
    y, x = np.unravel_index(box_map.argmax(), box_map.shape)
    assert abs(box.x0 + x - dot[0]) <= 3 and abs(box.y0 + y - dot[1]) <= 3


def test_a_whole_photo_map_is_stretched_over_the_photo():
    crop_map = np.zeros((48, 48), np.float32)
    crop_map[:, 24:] = 1  # the right half
    box_map = box_heatmap(crop_map, (0, 0, 100, 40), None)
    assert box_map.shape == (40, 100) and box_map[:, :45].max() == 0 and box_map[:, 55:].min() == pytest.approx(1)


# --- the face pipeline, the recognizer, the CLI ---------------------------------------------------------------


def test_the_pipeline_adds_a_heatmap_of_each_face_box(fer, classifier):
    plain, explained = fer(str(GROUP)), fer(str(GROUP), explain=True)
    assert len(explained) == 3
    for face, with_map in zip(plain, explained):
        box = with_map["box"]
        assert with_map["heatmap"].shape == (box["ymax"] - box["ymin"], box["xmax"] - box["xmin"])
        assert with_map["heatmap"].dtype == np.float32 and 0 <= with_map["heatmap"].min() <= with_map["heatmap"].max() <= 1
        assert {key: value for key, value in with_map.items() if key != "heatmap"} == face  # labels unchanged
    # The recognizer (the demo's and CLI's path) gives the same maps.
    recognized = FaceExpressionRecognizer(*classifier, detector=fer.detector)(str(GROUP), explain=True)
    for face, with_map in zip(recognized, explained):
        np.testing.assert_allclose(face["heatmap"], with_map["heatmap"], atol=1e-5)
    targeted = fer(str(GROUP), explain=True, target="sad")
    assert all(not np.allclose(a["heatmap"], b["heatmap"]) for a, b in zip(targeted, explained))



def test_a_photo_classified_whole_gets_a_map_of_the_whole_photo(fer, tmp_path):
    no_face = tmp_path / "no_face.jpg"  # the right part of happy_man.jpg: a wall and a shoulder
    Image.open(PHOTOS[0]).crop((165, 0, 320, 201)).save(no_face, quality=95)
    (whole,) = fer(str(no_face), explain=True, whole_image=True)
    assert whole["detection_score"] is None and whole["heatmap"].shape == (201, 155)


def test_the_pipeline_of_a_model_folder_explains_without_fer_hf(tmp_path):
    script = tmp_path / "explain.py"
    script.write_text(
        "import importlib.util, json, sys\n"
        "assert importlib.util.find_spec('fer_hf') is None\n"
        "from transformers import pipeline\n"
        "fer = pipeline('facial-expression-recognition', model=sys.argv[1], trust_remote_code=True)\n"
        "print(json.dumps([list(face['heatmap'].shape) for face in fer(sys.argv[2], explain=True)]))\n"
    )
    run = run_python([script, MODEL, GROUP], cwd=tmp_path,
                     env={"PYTHONPATH": "", "HF_MODULES_CACHE": str(tmp_path / "modules"), "OMP_NUM_THREADS": "1"})
    shapes = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(shapes) == 3 and all(height > 0 and width > 0 for height, width in shapes)


def test_predict_explain_writes_one_overlay_png_per_face(tmp_path):
    from fer_hf.__main__ import main

    out, results = tmp_path / "maps", tmp_path / "results.json"
    assert main(["predict", *map(str, PHOTOS), "--model", str(MODEL), "--explain", str(out), "--output", str(results)]) == 0
    rows = json.loads(results.read_text())["rows"]
    faces = [row for row in rows if row["status"] == "face"]
    written = sorted(out.glob("*.png"))
    assert len(written) == len(faces) == 6
    assert {f"{Path(row['file']).stem}_face{row['face']}_{row['label']}.png" for row in faces} == {p.name for p in written}
    for path in written:
        with Image.open(path) as image:
            assert image.mode == "RGB" and min(image.size) >= 192


def test_predict_explain_with_an_unknown_target_stops_before_any_work(tmp_path, capsys):
    from fer_hf.__main__ import main

    out = tmp_path / "maps"
    assert main(["predict", str(GROUP), "--model", str(MODEL), "--explain", str(out), "--target", "smug"]) == 2
    assert "smug" in capsys.readouterr().err and not out.exists()


# --- faithfulness (benchmarks/bench_explain.py measures it on PublicTest) ---------------------------------------


def test_deletion_on_the_fixture_faces(classifier, fixture_faces):
    model, _ = classifier
    pixel_values, targets = fixture_faces
    occlusion = deletion_test(model, pixel_values, face_heatmaps(model, pixel_values, targets, "occlusion"), targets)
    # Occlusion's top 10% costs the predicted class more than a random 10% on at least 75% of the faces ...
    assert occlusion.beats_random.mean() >= 0.75
    # ... and Grad-CAM's top 10% more than its own bottom 10% (against random pixels it fails on PublicTest:
    # benchmarks/results/explain.md).
    grad_cam = deletion_test(model, pixel_values, face_heatmaps(model, pixel_values, targets, "grad-cam"), targets)
    assert grad_cam.top.mean() > grad_cam.bottom.mean()


def test_a_re_initialised_model_gives_unrelated_maps(classifier, fixture_faces):
    model, _ = classifier
    pixel_values, targets = fixture_faces
    for method in ("grad-cam", "occlusion"):
        trained = face_heatmaps(model, pixel_values, targets, method)
        correlations = rank_correlations(trained, face_heatmaps(randomised_copy(model), pixel_values, targets, method))
        assert np.nanmean(correlations) < 0.3, method
        assert rank_correlations(trained, trained + 0.5 * trained ** 2)[0] == pytest.approx(1)  # monotone: same ranks


# --- the demo's "Why?" switch (tests/test_app_browser.py shows it in a browser) ---------------------------------


def test_the_why_switch_draws_each_face_s_map_and_a_legend(classifier):
    from fer_hf.demo import FaceDemo

    demo = FaceDemo(FaceExpressionRecognizer(*classifier))
    plain, result, _, status = demo.analyze(str(GROUP))
    why, why_result, _, why_status = demo.analyze(str(GROUP), True)
    assert why_result == result and json.dumps(why_result)  # the JSON has no arrays: the maps are only drawn
    assert "Heat maps" in why_status and "Heat maps" not in status
    assert why.width == plain.width and why.height > plain.height  # the legend below the photo
    changed = np.abs(np.asarray(why, np.int16)[: plain.height] - np.asarray(plain, np.int16)).max(-1) > 0
    scale = plain.width / result["width"]
    inside = np.zeros_like(changed)
    for face in result["faces"]:
        x0, y0, x1, y1 = (round(v * scale) for v in face["box"])
        inside[max(0, y0 - 30) : y1 + 4, max(0, x0 - 4) : x1 + 4] = True  # the box, its caption above it
        assert changed[y0 + 4 : y1 - 4, x0 + 4 : x1 - 4].mean() > 0.9  # the map covers the face
    assert not changed[~inside].any()  # and nothing else
    # Picking a face keeps the maps; without the switch they are gone.
    picked, scores = demo.show_face(str(GROUP), why_result, 2, True)
    assert picked.size == why.size and scores == result["faces"][2]["scores"]
    assert demo.show_face(str(GROUP), why_result, 2)[0].size == plain.size
