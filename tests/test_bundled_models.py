"""The models bundled in models/: they load without fer_hf, and their cards' figures are reproduced."""

import json

import pytest
from huggingface_hub import ModelCard

from tests.conftest import FER_DIR, HAPPY_SAD_DIR, ROOT, requires_shared, run_python
from tests.test_modeling import REMOTE_CODE_SNIPPET

MODELS = sorted(p for p in (ROOT / "models").glob("*") if (p / "config.json").exists())
FIXTURE_PHOTO = ROOT / "tests" / "fixtures" / "photos" / "happy_man.jpg"


def test_the_default_models_are_bundled():
    # The 7-class default, its faster base-s2 sibling, and the happy/sad model.
    assert [p.name for p in MODELS] == ["fer2013-cnn", "fer2013-cnn-fast", "happy-sad-cnn"]


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


@requires_shared
@pytest.mark.parametrize("folder", MODELS, ids=[p.name for p in MODELS])
def test_card_metrics_are_reproduced_by_the_evaluate_command(folder):
    card = ModelCard.load(folder / "README.md")
    info = json.loads((folder / "run_info.json").read_text())
    accuracy = next(r.metric_value for r in card.data.eval_results if r.metric_type == "accuracy")
    assert accuracy == info["metrics"]["validation"]["accuracy"]
    labels = info["labels"]
    args = ["-m", "fer_hf", "evaluate", folder, "--dataset_name", FER_DIR, "--json"]
    if len(labels) < 7:
        args += ["--labels", *labels]  # a happy/sad model is scored on PublicTest's happy and sad rows
    printed = json.loads(run_python(args).stdout.strip().splitlines()[-1])
    assert printed["samples"] == info["metrics"]["validation"]["samples"]
    assert printed["accuracy"] == pytest.approx(accuracy, abs=1e-9)
    assert printed["macro_f1"] == pytest.approx(info["metrics"]["validation"]["macro_f1"], abs=1e-9)


@pytest.mark.parametrize("folder", MODELS, ids=[p.name for p in MODELS])
def test_bundled_code_is_the_package_code(folder):
    # Users without fer_hf run these copies: a change to fer_hf's model code must be re-saved here
    # (`model.save_pretrained(folder)` with fer_hf imported copies the files again).
    for name in ("configuration_fer.py", "modeling_fer.py", "image_processing_fer.py"):
        assert (folder / name).read_text() == (ROOT / "fer_hf" / name).read_text(), f"{folder.name}/{name} is stale"


@requires_shared
def test_happy_sad_photo_test_figure_is_reproduced():
    # TRAINING_NOTES.md quotes the held-out photos' accuracy, through face detection and cropping.
    folder = ROOT / "models" / "happy-sad-cnn"
    written = json.loads((folder / "test_report.json").read_text())["metrics"]
    args = ["-m", "fer_hf", "evaluate", folder, "--dataset_name", HAPPY_SAD_DIR, "--split", "test", "--crop_faces", "--json"]
    printed = json.loads(run_python(args).stdout.strip().splitlines()[-1])
    assert printed["samples"] == written["samples"] == 46
    assert printed["accuracy"] == pytest.approx(written["accuracy"], abs=1e-9)
    assert f"{100 * written['accuracy']:.2f}%" in (folder / "TRAINING_NOTES.md").read_text()


@pytest.mark.parametrize("folder", MODELS, ids=[p.name for p in MODELS])
def test_each_bundled_model_crops_photo_faces_with_its_own_margin(folder):
    # models/README.md (session 7) says how each margin was chosen; the demo must use it.
    from fer_hf.faces import FaceExpressionRecognizer
    from fer_hf.hub import load_classifier

    margin = json.loads((folder / "preprocessor_config.json").read_text())["face_crop_margin"]
    model, processor = load_classifier(folder)
    assert FaceExpressionRecognizer(model, processor).margin == margin
