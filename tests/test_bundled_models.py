"""The models bundled in models/: they load without fer_hf, carry the package's model code, and fer2013-cnn's
outputs on the fixture faces and photos are pinned. Their cards' figures on the full data: tests/test_full_data.py."""

import json

import numpy as np
import pytest
import torch

from tests.conftest import FER_FIXTURE_DIR, PHOTOS, ROOT, run_python
from tests.test_modeling import REMOTE_CODE_SNIPPET

MODELS = sorted(p for p in (ROOT / "models").glob("*") if (p / "config.json").exists())
FIXTURE_PHOTO = ROOT / "tests" / "fixtures" / "photos" / "happy_man.jpg"


def test_the_default_models_are_bundled():
    # The 7-class default and its faster base-s2 sibling; the happy/sad view is the default's `--labels happy sad`
    # (benchmarks/results/happy_sad_decision.md: a happy/sad model did not beat it).
    assert [p.name for p in MODELS] == ["fer2013-cnn", "fer2013-cnn-fast"]


@pytest.mark.parametrize("folder", MODELS, ids=[p.name for p in MODELS])
def test_bundled_model_loads_without_fer_hf(folder, tmp_path):
    assert (folder / "model.safetensors").exists() and not list(folder.glob("*.bin"))
    script = tmp_path / "load.py"
    script.write_text(REMOTE_CODE_SNIPPET)
    result = run_python([script, folder, FIXTURE_PHOTO], cwd=tmp_path, env={"PYTHONPATH": ""})
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    labels = json.loads((folder / "config.json").read_text())["id2label"].values()
    assert remote["classes"] == ["FerCNNForImageClassification", "FerImageProcessor"]
    assert remote["pipeline"][0] in labels


@pytest.mark.parametrize("folder", MODELS, ids=[p.name for p in MODELS])
def test_bundled_code_is_the_package_code(folder):
    # Users without fer_hf run these copies, file for file fer_hf/model/: after a change there,
    # `fer_hf.model.copy_model_code(folder)` copies them again.
    from fer_hf.model import MODEL_CODE_DIR, model_code_files

    shipped = [path.name for path in model_code_files()]
    assert sorted(path.name for path in folder.glob("*.py")) == shipped  # no more, no fewer
    for name in shipped:
        assert (folder / name).read_text() == (MODEL_CODE_DIR / name).read_text(), f"{folder.name}/{name} is stale"


@pytest.mark.parametrize("folder", MODELS, ids=[p.name for p in MODELS])
def test_each_bundled_model_crops_photo_faces_with_its_own_margin(folder):
    # Each margin was chosen for its model on labelled photos; the demo must use it.
    from fer_hf.faces import FaceExpressionRecognizer
    from fer_hf.hub import load_classifier

    margin = json.loads((folder / "preprocessor_config.json").read_text())["face_crop_margin"]
    model, processor = load_classifier(folder)
    assert FaceExpressionRecognizer(model, processor).margin == margin


# --- pinned outputs -------------------------------------------------------------------------------
# The fp32 logits of models/fer2013-cnn, rounded to 4 decimals, as transformers' integration tests pin an
# expected slice: a change to the model code, the processor or the weights that moves them fails here.
# They are calibrated logits: the raw ones divided by the model's `temperature` (config.json, fitted on PublicTest
# by `python -m fer_hf calibrate`), so a new calibration moves them too; the labels do not move.
# Regenerate (after a deliberate change) with `python -m tests.test_bundled_models`, which prints them.
PINNED_MODEL = ROOT / "models" / "fer2013-cnn"

# On the first PublicTest face of each class in tests/fixtures/fer2013 (rows PINNED_ROWS, classes 0..6).
PINNED_ROWS = [0, 1, 6, 4, 2, 16, 3]
EXPECTED_ROW_LOGITS = [
    [-0.6235, -2.6953, -1.7047, -0.4335, -0.7701, -3.0680, 1.3896],
    [-2.3908, -0.4289, -0.8579, -0.9383, -1.4835, -2.0715, -0.1744],
    [-0.3780, -2.1604, 0.9090, -1.7383, -1.2092, -0.4675, -1.8335],
    [-2.4764, -1.6459, -1.3848, 2.8773, -1.4069, -0.9310, -1.5933],
    [2.2232, -3.1285, -0.9630, -2.1599, 0.0729, -2.3978, -1.3008],
    [-2.9654, -2.6200, 0.9324, -3.0471, -1.9676, 3.6151, -2.1595],
    [-1.4041, -3.1280, -0.1604, -1.2435, -0.4076, -2.7585, -0.3926],
]

# On the face crops of the fixture photos at these boxes (libfacedetection's, largest face first), and the
# labels FaceExpressionRecognizer gives the faces it finds there.
EXPECTED_BOXES = {
    "happy_man.jpg": [[82, 14, 159, 123]],
    "happy_three_women.jpg": [[45, 15, 86, 73], [136, 45, 177, 103], [226, 35, 269, 89]],
    "sad_child.jpg": [[18, 51, 221, 312]],
    "sad_man.jpg": [[26, 78, 174, 277]],
}
EXPECTED_CROP_LOGITS = [
    [-1.7563, -1.9659, -1.5797, 2.8806, -1.6813, -1.5992, -0.9701],
    [-1.6245, -1.7531, -1.4331, 2.8040, -1.3637, -1.3047, -1.4579],
    [-1.4421, -1.9449, -1.3312, 2.6412, -1.6673, -1.3717, -0.9500],
    [-0.7136, -2.0501, -1.1791, 2.5872, -1.9959, -1.6544, -1.3065],
    [1.2490, -2.4075, -1.9490, -2.3942, 0.8502, -2.9110, -0.5894],
    [-0.1725, -2.5596, -0.1497, -2.2783, 0.6906, -1.9993, 0.4312],
]
EXPECTED_LABELS = {
    "happy_man.jpg": ["happy"],
    "happy_three_women.jpg": ["happy", "happy", "happy"],
    "sad_child.jpg": ["angry"],  # the model's mistake, pinned as it is
    "sad_man.jpg": ["sad"],
}


def _pinned_model():
    from fer_hf.hub import load_classifier

    model, processor = load_classifier(PINNED_MODEL)
    return model.eval().float(), processor


def _logits(model, processor, images) -> np.ndarray:
    with torch.no_grad():
        return model(**processor(images, return_tensors="pt")).logits.numpy()


def _fixture_rows():
    from datasets import Dataset

    return Dataset.from_parquet(str(FER_FIXTURE_DIR / "publictest.parquet")).select(PINNED_ROWS)


def _photo_crops(processor, boxes: dict[str, list[list[int]]]):
    from fer_hf.faces import crop_face

    margin = processor.face_crop_margin  # the model's own, as the demo crops for it
    return [crop_face(path, box, margin) for path in PHOTOS for box in boxes[path.name]]


def test_pinned_logits_on_fixture_faces():
    model, processor = _pinned_model()
    rows = _fixture_rows()
    assert list(rows["label"]) == list(range(7))
    logits = _logits(model, processor, list(rows["image"]))
    np.testing.assert_allclose(logits, np.array(EXPECTED_ROW_LOGITS), atol=1e-3, rtol=0)


def test_pinned_logits_on_fixture_photo_crops():
    model, processor = _pinned_model()
    logits = _logits(model, processor, _photo_crops(processor, EXPECTED_BOXES))
    np.testing.assert_allclose(logits, np.array(EXPECTED_CROP_LOGITS), atol=1e-3, rtol=0)


def test_pinned_labels_of_the_faces_found_in_fixture_photos():
    from fer_hf.faces import FaceDetector, FaceExpressionRecognizer

    detector = FaceDetector()
    if detector.backend != "libfacedetection":
        pytest.skip("the pinned boxes are libfacedetection's; the Haar fallback finds other boxes")
    model, processor = _pinned_model()
    recognizer = FaceExpressionRecognizer(model, processor, detector, runtime="fp32")
    for path in PHOTOS:
        faces = recognizer(path)
        expected = EXPECTED_BOXES[path.name]
        assert len(faces) == len(expected), path.name
        # A detector build for another CPU may round a box edge differently: a few pixels, not another face.
        np.testing.assert_allclose([face["box"] for face in faces], expected, atol=3, err_msg=path.name)
        assert [face["label"] for face in faces] == EXPECTED_LABELS[path.name], path.name


def _print_pinned_values() -> None:
    """Prints the pinned values as Python, from a real run of the model and of the detector."""
    from datasets import Dataset

    from fer_hf.faces import FaceDetector, FaceExpressionRecognizer

    model, processor = _pinned_model()
    publictest = Dataset.from_parquet(str(FER_FIXTURE_DIR / "publictest.parquet"))
    rows = [list(publictest["label"]).index(label) for label in range(7)]
    print(f"PINNED_ROWS = {rows}")
    logits = _logits(model, processor, list(publictest.select(rows)["image"]))
    print("EXPECTED_ROW_LOGITS = " + _format(logits))
    recognizer = FaceExpressionRecognizer(model, processor, FaceDetector("libfacedetection"), runtime="fp32")
    found = {path.name: recognizer(path) for path in PHOTOS}
    boxes = {name: [list(face["box"]) for face in faces] for name, faces in found.items()}
    print(f"EXPECTED_BOXES = {boxes}")
    print("EXPECTED_CROP_LOGITS = " + _format(_logits(model, processor, _photo_crops(processor, boxes))))
    print(f"EXPECTED_LABELS = {({name: [face['label'] for face in faces] for name, faces in found.items()})}")


def _format(logits: np.ndarray) -> str:
    lines = ",\n".join("    [" + ", ".join(f"{value:.4f}" for value in row) + "]" for row in logits)
    return "[\n" + lines + ",\n]"


if __name__ == "__main__":
    _print_pinned_values()


@pytest.mark.parametrize("folder", MODELS, ids=[p.name for p in MODELS])
def test_the_cards_onnx_runtime_snippet_gives_the_models_label(folder, tmp_path):
    """The card's ONNX Runtime snippet, run as printed (no torch, no fer_hf imported), on real face crops."""
    pytest.importorskip("onnxruntime")
    import re

    from datasets import load_dataset

    from fer_hf.hub import load_classifier

    card = (folder / "README.md").read_text()
    snippet = re.search(r"### ONNX Runtime.*?```python\n(.*?)```", card, re.S).group(1)
    model, processor = load_classifier(folder)
    faces = load_dataset("parquet", data_files=str(FER_FIXTURE_DIR / "publictest.parquet"), split="train")["image"][:8]
    scripts = []
    for index, face in enumerate(faces):
        face.save(tmp_path / f"face{index}.png")
        scripts.append(tmp_path / f"snippet{index}.py")
        scripts[-1].write_text(snippet.replace('"face.jpg"', repr(str(tmp_path / f"face{index}.png"))))
    # Every face's snippet as printed, each run as a script of its own, in one process without PyTorch or fer_hf.
    runner = tmp_path / "run_snippets.py"
    runner.write_text(SNIPPETS_WITHOUT_TORCH)
    printed = json.loads(run_python([runner, *scripts], cwd=ROOT, env={"PYTHONPATH": ""}).stdout.strip().splitlines()[-1])
    assert len(printed) == len(faces)
    for index, face in enumerate(faces):
        with torch.no_grad():
            logits = model(**processor(face, return_tensors="pt")).logits
        assert printed[index] == model.config.id2label[int(logits.argmax())], f"{folder.name}, face {index}"


# Runs each script given (run_path, as `python SCRIPT` would) and prints the last line each printed, as JSON.
SNIPPETS_WITHOUT_TORCH = """
import contextlib, io, json, runpy, sys
sys.modules["torch"] = None  # the snippet must not need PyTorch
printed = []
for script in sys.argv[1:]:
    with contextlib.redirect_stdout(io.StringIO()) as output:
        runpy.run_path(script, run_name="__main__")
    printed.append(output.getvalue().strip().splitlines()[-1])
print(json.dumps(printed))
"""
