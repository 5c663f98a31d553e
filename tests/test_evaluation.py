"""Metrics, reports and `python -m fer_hf evaluate`."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from fer_hf import FerCNNForImageClassification, FerConfig, FerImageProcessor
from fer_hf.calibration import ViewLogits
from fer_hf.data import load_fer_dataset, select_labels
from fer_hf.evaluation import FerMetrics, evaluate_on_dataset, predict_logits, recompute_batch_norm_statistics, write_reports

from tests.conftest import run_preloaded, write_fer_csv


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
    # Logits computed beforehand (evaluate's one pass) score the same rows the same way, filtered alike; the
    # model is not run again (its forward would raise).
    given = predict_logits(two, processor, dataset["train"])
    two.forward = None
    assert evaluate_on_dataset(two, processor, dataset["train"], logits=given) == result


def test_evaluate_cli_reproduces_the_metrics(tmp_path, fer_rows, small_model):
    model, folder = small_model
    csv = write_fer_csv(tmp_path / "fer.csv", fer_rows)
    result = run_preloaded(["-m", "fer_hf", "evaluate", folder, "--dataset_name", csv, "--output_dir", tmp_path / "eval", "--json"])
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    validation = load_fer_dataset(csv)["validation"]
    logits = predict_logits(model, FerImageProcessor(), validation)
    assert printed["accuracy"] == pytest.approx((logits.argmax(-1) == np.array(validation["label"])).mean())
    assert printed["samples"] == 20
    assert (tmp_path / "eval" / "validation_confusion_matrix.png").exists()
    assert "precision" in result.stdout and "macro-F1" in result.stdout
    # The pass's logits, kept beside the reports: the model's own (its temperature taken off) and its mirror's.
    saved = ViewLogits.load(tmp_path / "eval" / "validation_logits.npz")
    temperature = model.config.temperature
    np.testing.assert_allclose(saved.own / temperature, logits, rtol=1e-5, atol=1e-5)
    mirrored = predict_logits(model, FerImageProcessor(), validation, flip_tta=True) * 2 - logits
    np.testing.assert_allclose(saved.mirror / temperature, mirrored, rtol=1e-4, atol=1e-4)
    assert saved.labels.tolist() == validation["label"]


def test_batch_norm_statistics_are_recomputed_on_the_rows_as_evaluation_sees_them(tmp_path, fer_rows):
    torch.manual_seed(0)
    model = FerCNNForImageClassification(FerConfig(hidden_sizes=[4, 8, 8], depths=[1, 1, 1], hidden_dropout_prob=0.5))
    processor = FerImageProcessor()
    rows = load_fer_dataset(write_fer_csv(tmp_path / "fer.csv", fer_rows))["train"]  # 40 real faces
    first = model.fer_cnn.stages[0].layers[0]
    first.normalization.running_mean.fill_(5.0)  # stale statistics, as training leaves them
    model.train()

    assert recompute_batch_norm_statistics(model, processor, rows, batch_size=8) == 3
    # The first batch norm sees the first convolution's output: its mean over all 40 faces (5 equal batches).
    with torch.no_grad():
        pixels = processor([image.convert("L") for image in rows["image"]], return_tensors="pt")["pixel_values"]
        expected = first.convolution(pixels).mean(dim=(0, 2, 3))
    torch.testing.assert_close(first.normalization.running_mean, expected, rtol=1e-4, atol=1e-5)
    # Dropout (p=0.5 between stages) was off: a second pass gives the same statistics of every layer.
    before = {name: buffer.clone() for name, buffer in model.named_buffers()}
    recompute_batch_norm_statistics(model, processor, rows, batch_size=8)
    for name, buffer in model.named_buffers():
        torch.testing.assert_close(buffer, before[name], msg=name)
    # Left ready to score, with the layers' usual exponential averaging for any later training.
    assert not model.training and first.normalization.momentum == 0.1

    # A model without batch norm is left as it was.
    linear = torch.nn.Linear(2, 2)
    assert recompute_batch_norm_statistics(linear, processor, rows) == 0
