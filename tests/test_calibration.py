"""Calibrated scores and "unsure": the temperature fit, the config fields, the calibrate and evaluate commands, and
the same calibrated figures from every way in (AutoModel, the face pipeline, the recognizer's runtimes, ONNX)."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import FER_FIXTURE_DIR, PHOTOS, ROOT

BUNDLED = ROOT / "models" / "fer2013-cnn"


@pytest.fixture()
def model_folder(tmp_path):
    """A copy of the bundled default model's folder (weights, code, processor), without its ONNX files."""
    folder = tmp_path / "model"
    shutil.copytree(BUNDLED, folder, ignore=shutil.ignore_patterns("onnx", "*.png", "README.md"))
    return folder


def test_fit_temperature_recovers_the_temperature_labels_were_drawn_with():
    from fer_hf.calibration import calibration_metrics, fit_temperature
    from fer_hf.model.pipeline_fer import temper

    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(20_000, 7))
    true_temperature = 2.0  # the labels follow softmax(logits / 2): softmax(logits) is over-confident
    shown = torch.softmax(torch.as_tensor(logits), -1).numpy()
    drawn = torch.softmax(torch.as_tensor(logits / true_temperature), -1).numpy()
    labels = np.array([rng.choice(7, p=p / p.sum()) for p in drawn])
    fitted = fit_temperature(shown, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.05)
    before, after = calibration_metrics(shown, labels), calibration_metrics(temper(shown, fitted).astype(np.float64), labels)
    assert after["accuracy"] == before["accuracy"]  # a temperature never changes a label
    assert after["ece"] < before["ece"] / 3 and after["nll"] < before["nll"] and after["brier"] < before["brier"]


def test_expected_calibration_error_of_known_bins():
    from fer_hf.calibration import expected_calibration_error

    # Two faces at 0.9 (one right: gap 0.4) and two at 0.5 (both right: gap 0.5): ECE = (2 * 0.4 + 2 * 0.5) / 4.
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.5, 0.5], [0.5, 0.5]])
    assert expected_calibration_error(probabilities, np.array([0, 1, 0, 0])) == pytest.approx(0.45)


def test_unsure_threshold_is_the_lowest_at_which_the_faces_above_are_right_often_enough():
    from fer_hf.calibration import coverage_at, unsure_threshold

    top = np.array([0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9])
    probabilities = np.stack([top, (1 - top) / 2, (1 - top) / 2], axis=1)  # every face's label: class 0
    labels = np.array([1, 1, 0, 1, 0, 0, 0])  # right: the faces at 0.5, 0.7, 0.8, 0.9
    threshold = unsure_threshold(probabilities, labels, accuracy=0.85)
    assert threshold == 0.61  # above 0.6: 0.7, 0.8, 0.9, all right; at 0.6 one of four is wrong (75%)
    assert coverage_at(probabilities, labels, threshold) == {"coverage": pytest.approx(3 / 7), "accuracy": 1.0}


def test_older_configs_load_uncalibrated_and_bad_values_are_named(tmp_path):
    from fer_hf import FerConfig

    saved = json.loads((BUNDLED / "config.json").read_text())
    for field in ("temperature", "flip_temperature", "flip_all_temperature", "unsure_threshold"):
        saved.pop(field, None)
    (tmp_path / "config.json").write_text(json.dumps(saved))
    old = FerConfig.from_pretrained(tmp_path)
    assert (old.temperature, old.flip_temperature, old.flip_all_temperature, old.unsure_threshold) == (1.0, 1.0, 1.0, 0.0)
    for field, value in (("temperature", 0.0), ("flip_temperature", -1.0), ("flip_all_temperature", float("inf")),
                         ("unsure_threshold", 1.0)):
        with pytest.raises(Exception, match=field):
            FerConfig(**{field: value})


def test_the_temperature_divides_the_logits_inside_forward(fer_rows):
    from fer_hf.hub import load_classifier

    model, processor = load_classifier(BUNDLED)
    faces = processor([Image.fromarray(face) for face, _, _ in fer_rows[:8]], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        model.config.temperature = 1.0
        raw = model(pixel_values=faces).logits
        model.config.temperature = 0.8
        scaled = model(pixel_values=faces).logits
    torch.testing.assert_close(scaled, raw / 0.8)
    assert torch.equal(scaled.argmax(-1), raw.argmax(-1))


def test_calibrate_command_stores_temperatures_and_keeps_labels(model_folder, capsys):
    from fer_hf.__main__ import main
    from fer_hf.hub import load_classifier

    before = json.loads((model_folder / "config.json").read_text())
    assert main(["calibrate", str(model_folder), "--dataset_name", str(FER_FIXTURE_DIR)]) == 0
    printed = capsys.readouterr().out
    assert "single view" in printed and "every face mirrored" in printed and "unsure below" in printed
    config = json.loads((model_folder / "config.json").read_text())
    report = json.loads((model_folder / "calibration.json").read_text())
    assert report["faces"] == 56 and report["split"] == "validation" and report["command"].startswith("python -m fer_hf calibrate")
    for mode, field in (("single", "temperature"), ("flip", "flip_temperature"), ("flip_all", "flip_all_temperature")):
        assert config[field] == report["modes"][mode]["temperature"] > 0
        assert report["modes"][mode]["after"]["accuracy"] == report["modes"][mode]["before"]["accuracy"]
        # In-sample, the fit cannot be worse than temperature 1 on the likelihood it minimises.
        assert report["modes"][mode]["after"]["nll"] <= report["modes"][mode]["before"]["nll"] + 1e-9
        assert len(report["modes"][mode]["split_half"]) == 2
    assert config["unsure_threshold"] == report["unsure"]["threshold"]
    assert (model_folder / "validation_reliability.png").stat().st_size > 10_000
    # Everything else in config.json is as it was: the model still loads with its code and pipeline.
    fitted = {"temperature", "flip_temperature", "flip_all_temperature", "unsure_threshold", "transformers_version"}
    assert {k: v for k, v in config.items() if k not in fitted} == {k: v for k, v in before.items() if k not in fitted}
    model, _ = load_classifier(model_folder)
    assert model.config.temperature == config["temperature"]


def test_evaluate_prints_calibration_figures_and_draws_the_diagram(tmp_path, capsys):
    from fer_hf.__main__ import main

    diagram = tmp_path / "reliability.png"
    assert main(["evaluate", str(BUNDLED), "--dataset_name", str(FER_FIXTURE_DIR), "--reliability", str(diagram),
                 "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    figures = json.loads(lines[-1])["calibration"]
    assert set(figures) == {"single", "flip", "flip_all"}
    for mode in figures.values():
        for key in ("ece", "nll", "brier"):
            assert mode["calibrated"][key] > 0 and mode["uncalibrated"][key] > 0
    assert any(line.startswith("single view") for line in lines)
    assert diagram.stat().st_size > 10_000


def test_calibrate_on_a_split_without_a_class_names_it(model_folder, tmp_path, capsys):
    from datasets import load_dataset

    from fer_hf.__main__ import main

    data = tmp_path / "data"
    data.mkdir()
    for name in ("train", "publictest"):
        rows = load_dataset("parquet", data_files=str(FER_FIXTURE_DIR / f"{name}.parquet"), split="train")
        if name == "publictest":
            rows = rows.filter(lambda label: label != 1, input_columns="label")  # no disgust
        rows.to_parquet(data / f"{name}.parquet")
    before = (model_folder / "config.json").read_text()
    assert main(["calibrate", str(model_folder), "--dataset_name", str(data)]) == 2
    error = capsys.readouterr().err
    assert "no face of the class(es) ['disgust']" in error
    assert (model_folder / "config.json").read_text() == before  # nothing written


def test_calibrate_on_other_labels_names_the_missing_ones(model_folder, photo_folder, capsys):
    from fer_hf.__main__ import main

    assert main(["calibrate", str(model_folder), "--dataset_name", str(photo_folder)]) == 2
    error = capsys.readouterr().err
    assert "missing ['angry', 'disgust', 'fear', 'surprise', 'neutral']" in error


def test_every_way_in_gives_the_same_calibrated_scores_and_unsure(model_folder):
    """AutoModel, the face pipeline, pipeline("image-classification"), the recognizer in eager, int8 and ONNX, on
    the fixture photos' faces: one calibrated set of scores, and unsure where it is below the threshold."""
    from transformers import AutoModelForImageClassification, pipeline

    from fer_hf.export import export_model
    from fer_hf.faces import FaceDetector, FaceExpressionRecognizer, face_crop_margin, find_faces
    from fer_hf.hub import load_classifier
    from fer_hf.model.pipeline_fer import TASK, FacialExpressionRecognitionPipeline

    config = json.loads((model_folder / "config.json").read_text())
    # A temperature far from 1 and a threshold that marks some of these faces unsure, so that any way in that
    # missed either would show.
    config.update(temperature=0.5, flip_temperature=0.6, flip_all_temperature=0.7, unsure_threshold=0.97)
    (model_folder / "config.json").write_text(json.dumps(config))
    model, processor = load_classifier(model_folder)
    export_model(model, processor, model_folder, int8=False)

    detector = FaceDetector()
    crops = [crop for photo in PHOTOS for crop in find_faces(photo, detector, margin=face_crop_margin(processor))[2]]
    pixel_values = processor([c.convert("L") for c in crops], return_tensors="pt")["pixel_values"]
    auto = AutoModelForImageClassification.from_pretrained(model_folder, trust_remote_code=True).eval()
    with torch.no_grad():
        expected = auto(pixel_values=pixel_values).logits.softmax(-1).numpy()
    model.config.temperature = 1.0
    with torch.no_grad():
        raw = model(pixel_values=pixel_values).logits.softmax(-1).numpy()
    assert not np.allclose(expected, raw, atol=1e-2)  # the temperature is applied
    np.testing.assert_array_equal(expected.argmax(-1), raw.argmax(-1))

    model, processor = load_classifier(model_folder)
    single = {mode: FaceExpressionRecognizer(model, processor, runtime=mode, flip_tta=False).classify(crops)
              for mode in ("eager", "fp32", "int8", "onnx-fp32")}
    np.testing.assert_allclose(single["eager"], expected, atol=1e-5)
    np.testing.assert_allclose(single["fp32"], expected, atol=1e-5)
    np.testing.assert_allclose(single["onnx-fp32"], expected, atol=1e-5)
    np.testing.assert_allclose(single["int8"], expected, atol=0.03)  # int8 weights and activations

    classifier = pipeline("image-classification", model=str(model_folder), trust_remote_code=True, top_k=7)
    for crop, row in zip(crops[:2], expected):
        scores = {item["label"]: item["score"] for item in classifier(crop.convert("L"))}
        np.testing.assert_allclose([scores[model.config.id2label[i]] for i in range(len(row))], row, atol=1e-5)

    # The default (mirrored where unsure) scores: the face pipeline and the recognizer agree, labels as uncalibrated.
    fer = pipeline(TASK, model=str(model_folder), pipeline_class=FacialExpressionRecognitionPipeline,
                   trust_remote_code=False)
    recognizer = FaceExpressionRecognizer(model, processor, runtime="eager")
    piped = [face for photo in PHOTOS for face in fer(str(photo))]
    recognized = [face for photo in PHOTOS for face in recognizer(photo)]
    assert [f["label"] for f in piped] == [f["label"] for f in recognized]
    np.testing.assert_allclose([list(f["scores"].values()) for f in piped],
                               [list(f["scores"].values()) for f in recognized], atol=1e-5)
    assert [f["unsure"] for f in piped] == [f["unsure"] for f in recognized] == [f["score"] < 0.97 for f in piped]
    assert any(f["unsure"] for f in piped) and not all(f["unsure"] for f in piped)


def test_predict_csv_has_an_unsure_column(model_folder, tmp_path):
    import csv

    from fer_hf.__main__ import main

    config = json.loads((model_folder / "config.json").read_text())
    config["unsure_threshold"] = 0.9
    (model_folder / "config.json").write_text(json.dumps(config))
    output = tmp_path / "faces.csv"
    assert main(["predict", *map(str, PHOTOS), "--model", str(model_folder), "--output", str(output)]) == 0
    rows = list(csv.DictReader(output.open()))
    assert rows and all(row["unsure"] == ("true" if float(row["score"]) < 0.9 else "false") for row in rows)
    assert {row["unsure"] for row in rows} == {"true", "false"}
