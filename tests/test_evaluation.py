"""Metrics, reports and `python -m fer_hf evaluate`."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from fer_hf import FerCNNForImageClassification, FerConfig, FerImageProcessor
from fer_hf.data import load_fer_dataset, select_labels
from fer_hf.evaluation import FerMetrics, evaluate_on_dataset, predict_logits, write_reports

from tests.conftest import run_python, write_fer_csv


def test_metric_matches_sklearn():
    rng = np.random.default_rng(0)
    predictions, references = rng.integers(0, 7, 200), rng.integers(0, 7, 200)
    result = FerMetrics().compute(predictions=predictions, references=references)
    assert result["accuracy"] == pytest.approx((predictions == references).mean())
    assert result["macro_f1"] == pytest.approx(f1_score(references, predictions, average="macro"))


def test_reports_are_written(tmp_path):
    logits = np.eye(3)[[0, 1, 2, 2]]
    metrics = write_reports(tmp_path, "validation", logits, [0, 1, 2, 1], ["a", "b", "c"])
    assert metrics == {"accuracy": 0.75, "macro_f1": pytest.approx(f1_score([0, 1, 2, 1], [0, 1, 2, 2], average="macro")), "samples": 4}
    report = json.loads((tmp_path / "validation_report.json").read_text())
    assert report["per_class"]["b"]["recall"] == 0.5
    assert (tmp_path / "validation_confusion_matrix.png").stat().st_size > 1000


@pytest.fixture
def small_model(tmp_path):
    torch.manual_seed(0)
    model = FerCNNForImageClassification(FerConfig(hidden_sizes=[4, 8, 8], depths=[1, 1, 1])).eval()
    model.save_pretrained(tmp_path / "model")
    FerImageProcessor().save_pretrained(tmp_path / "model")
    return model, tmp_path / "model"


def test_classes_are_matched_by_name(tmp_path, fer_rows, small_model):
    model, _ = small_model
    dataset = load_fer_dataset(write_fer_csv(tmp_path / "fer.csv", fer_rows))
    processor = FerImageProcessor()
    # A 7-class model on a happy/sad dataset is scored by its happy-vs-sad scores.
    happy_sad = select_labels(dataset, ["happy", "sad"])["train"]
    result = evaluate_on_dataset(model, processor, happy_sad)
    logits = predict_logits(model, processor, happy_sad)[:, [3, 4]]
    assert result["labels"] == ["happy", "sad"] and result["samples"] == len(happy_sad)
    assert result["accuracy"] == pytest.approx((logits.argmax(-1) == np.array(happy_sad["label"])).mean())
    # A 2-class model on the 7-class dataset is scored on the rows of its two classes only.
    two = FerCNNForImageClassification(FerConfig(hidden_sizes=[4, 8, 8], depths=[1, 1, 1],
                                                 id2label={0: "sad", 1: "happy"}, label2id={"sad": 0, "happy": 1}))
    result = evaluate_on_dataset(two.eval(), processor, dataset["train"])
    assert result["samples"] == sum(1 for _, l, s in fer_rows if s == "train" and l in (3, 4))
    assert result["labels"] == ["happy", "sad"]  # in the dataset's order


def test_evaluate_cli_reproduces_the_metrics(tmp_path, fer_rows, small_model):
    model, folder = small_model
    csv = write_fer_csv(tmp_path / "fer.csv", fer_rows)
    result = run_python(["-m", "fer_hf", "evaluate", folder, "--dataset_name", csv, "--output_dir", tmp_path / "eval", "--json"])
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    validation = load_fer_dataset(csv)["validation"]
    logits = predict_logits(model, FerImageProcessor(), validation)
    assert printed["accuracy"] == pytest.approx((logits.argmax(-1) == np.array(validation["label"])).mean())
    assert printed["samples"] == 20
    assert (tmp_path / "eval" / "validation_confusion_matrix.png").exists()
    assert "precision" in result.stdout and "macro-F1" in result.stdout
