"""The bundled models on the full data: all 3,589 faces of FER-2013's PublicTest split and the 46 held-out photos
of the happy/sad set.

Each model's fp32 pass over PublicTest is made once, by `python -m fer_hf evaluate` (`evaluations`): every check
here reads its printed figures or the logits it writes (`validation_logits.npz`), so the model's cards, its
calibration, the happy/sad view and the agreement of the int8 and ONNX runtimes are all judged against the same
pass. In one file, so that one test worker makes that pass and a clone without ../shared skips it all here.
"""

import functools
import json

import numpy as np
import pytest
import torch
from datasets import DatasetDict
from huggingface_hub import ModelCard

from fer_hf import inference
from fer_hf.calibration import ViewLogits
from fer_hf.data import load_fer_dataset, select_labels
from fer_hf.evaluation import evaluate_on_dataset
from fer_hf.hub import load_classifier
from fer_hf.inference import InferenceRunner, default_mode

from tests.conftest import FER_DIR, HAPPY_SAD_DIR, ROOT, requires_full_data, run_preloaded

pytestmark = requires_full_data("scores the bundled models on all of PublicTest (3,589 faces) and the 46 held-out "
                                "photos: the fixture's 56 faces cannot show their figures")

MODELS = sorted(p for p in (ROOT / "models").glob("*") if (p / "config.json").exists())
DEFAULT = ROOT / "models" / "fer2013-cnn"
# Each fast runtime's probabilities are checked on the first 2,000 faces, where its docstring's figures were measured.
AGREEMENT_FACES = 2000


@pytest.fixture(scope="module")
def evaluations(tmp_path_factory) -> dict[str, tuple[dict, ViewLogits]]:
    """For each bundled model, what `python -m fer_hf evaluate MODEL --dataset_name FER_DIR --json --output_dir DIR`
    prints and the logits it writes to DIR: its one pass over PublicTest (each face and its mirror image)."""
    evaluated = {}
    for folder in MODELS:
        out = tmp_path_factory.mktemp(folder.name)
        args = ["-m", "fer_hf", "evaluate", folder, "--dataset_name", FER_DIR, "--json", "--output_dir", out]
        printed = json.loads(run_preloaded(args).stdout.strip().splitlines()[-1])
        evaluated[folder.name] = printed, ViewLogits.load(out / "validation_logits.npz")
    return evaluated


@pytest.fixture(scope="module")
def publictest():
    return load_fer_dataset(FER_DIR)["validation"]


def test_card_metrics_are_reproduced_by_the_evaluate_command(evaluations):
    for folder in MODELS:
        card = ModelCard.load(folder / "README.md")
        written = json.loads((folder / "run_info.json").read_text())["metrics"]["validation"]
        accuracy = next(r.metric_value for r in card.data.eval_results if r.metric_type == "accuracy")
        assert accuracy == written["accuracy"], folder.name
        printed, _ = evaluations[folder.name]
        assert printed["samples"] == written["samples"], folder.name
        assert printed["accuracy"] == pytest.approx(accuracy, abs=1e-9), folder.name
        assert printed["macro_f1"] == pytest.approx(written["macro_f1"], abs=1e-9), folder.name


def test_bundled_calibration_holds_on_publictest(evaluations):
    # calibration.json holds what `python -m fer_hf calibrate` measured; evaluate, scoring the same split with the
    # temperatures in config.json, must find the same ECE, lower than before calibration, and the faces above the
    # unsure threshold at least 85% right.
    for folder in MODELS:
        report = json.loads((folder / "calibration.json").read_text())
        printed, _ = evaluations[folder.name]
        for mode, figures in report["modes"].items():
            after = printed["calibration"][mode]["calibrated"]
            assert after["ece"] == pytest.approx(figures["after"]["ece"], abs=1e-6), (folder.name, mode)
            assert after["ece"] < figures["before"]["ece"], (folder.name, mode)
        assert printed["unsure"]["threshold"] == json.loads((folder / "config.json").read_text())["unsure_threshold"]
        assert printed["unsure"]["sure_accuracy"] >= 0.85, folder.name


def test_the_happy_sad_view_figures_are_reproduced(evaluations, publictest):
    # README quotes these from benchmarks/results/happy_sad_decision.md. On the photos, `evaluate --labels happy sad
    # --flip_tta` runs as written there; on PublicTest's happy and sad faces, the default's pass above gives the
    # logits, which go through the same steps as that command's (its rows, then evaluate_on_dataset).
    results = (ROOT / "benchmarks" / "results" / "happy_sad_decision.md").read_text()
    model, processor = load_classifier(DEFAULT)
    _, views = evaluations[DEFAULT.name]
    rows = select_labels(DatasetDict({"validation": publictest}), ["happy", "sad"])["validation"]
    kept = np.isin(views.labels, [model.config.label2id["happy"], model.config.label2id["sad"]])
    mirrored = (views.own + views.mirror)[kept] / 2
    printed = {"PublicTest happy/sad faces": evaluate_on_dataset(model, processor, rows, flip_tta=True, logits=mirrored)}
    args = ["-m", "fer_hf", "evaluate", DEFAULT, "--dataset_name", HAPPY_SAD_DIR, "--split", "test", "--crop_faces",
            "--labels", "happy", "sad", "--flip_tta", "--json"]
    printed["happy_sad test photos"] = json.loads(run_preloaded(args).stdout.strip().splitlines()[-1])
    for name, figures in printed.items():
        right = round(figures["accuracy"] * figures["samples"])
        row = (f"| `models/fer2013-cnn` | {name} | mirror-averaged | {figures['accuracy']:.2%} "
               f"({right:,} of {figures['samples']:,}) |")
        assert row in results, (row, results)


@pytest.fixture(scope="module")
def runtime_probabilities(publictest):
    """`runtime_probabilities(folder, mode, count)`: a bundled model's probabilities in a fast runtime's mode on
    PublicTest's first `count` faces (batches of 256, as the demo's), each computed once for the checks below."""
    faces = list(publictest["image"])

    @functools.cache
    def computed(folder, mode: str, count: int) -> np.ndarray:
        runner = InferenceRunner(*load_classifier(folder), mode)
        return np.concatenate([runner(faces[i : min(i + 256, count)]) for i in range(0, count, 256)])

    return computed


def _fp32_probabilities(folder, views: ViewLogits) -> np.ndarray:
    """The model's fp32 probabilities from evaluate's pass: its logits are the uncalibrated ones over its temperature."""
    temperature = json.loads((folder / "config.json").read_text()).get("temperature", 1.0)
    return torch.from_numpy(views.own / temperature).softmax(-1).numpy()


def test_the_fast_runtimes_agree_with_fp32_on_publictest(evaluations, runtime_probabilities):
    """The auto mode, int8 and ONNX int8 against the fp32 model (evaluate's pass) on the first 2,000 PublicTest
    faces (auto is int8 here).

    What int8 (K = 6) gives on these faces with VNNI (fer2013-cnn): probabilities differ by at most 0.049
    for any class and by 0.0018 on average; the top class changes for 12 faces (99.4% agree), each a
    near-tie in fp32: its top two classes within 0.040. Tolerances: a difference of at most 0.07 and 0.004
    on average, 98% agreement, every change of top class a near-tie (top two within 0.1 in fp32), and
    accuracy moved by at most half a point.

    Without VNNI the weights are quantized in 7 bits (`inference._quantize_per_channel`: AVX2's int16
    sums would overflow with 8), which loses a little more: there the first two tolerances are 0.1 and
    0.006 (on an AVX2-only CPU, 8-bit weights put probabilities off by up to 0.69). On an AMD EPYC without
    VNNI (fer2013-cnn / fer2013-cnn-fast): at most 0.053 / 0.063, 0.0025 / 0.0025 on average, the top class
    changed for 14 / 19 faces, each with its top two within 0.035 in fp32.

    ONNX Runtime's int8 file (fer_hf.export: the same activation ranges; the input quantized with a
    half-step offset, and rounding of its own) differs by up to 0.060 / 0.088 there: for it the first
    two tolerances are 0.1 and 0.006 too.
    """
    for folder in MODELS:
        model, _ = load_classifier(folder)
        _, views = evaluations[folder.name]
        expected, labels = _fp32_probabilities(folder, views)[:AGREEMENT_FACES], views.labels[:AGREEMENT_FACES]
        # "auto" runs the mode default_mode picks here (int8 wherever PyTorch has an int8 engine): each mode once.
        for mode in dict.fromkeys([default_mode(model), "int8", "onnx-int8"]):
            count = len(views.labels) if mode == "onnx-int8" else AGREEMENT_FACES  # the next test's, reused
            probabilities = runtime_probabilities(folder, mode, count)[:AGREEMENT_FACES]
            _check_agreement(folder.name, mode, probabilities, expected, labels)


def test_the_onnx_int8_file_keeps_fp32s_top_class_on_all_of_publictest(evaluations, runtime_probabilities):
    """The int8 file that the browser and non-Python users run, on all 3,589 faces. Measured with its 7-bit
    weights on an AVX2-only AMD EPYC: 98.69% / 98.94% of the faces keep fp32's top class, accuracy 69.60 -> 69.30%
    and 66.59 -> 66.51% (fer2013-cnn / fer2013-cnn-fast)."""
    for folder in MODELS:
        _, views = evaluations[folder.name]
        expected = _fp32_probabilities(folder, views).argmax(1)
        int8 = runtime_probabilities(folder, "onnx-int8", len(views.labels)).argmax(1)
        assert (int8 == expected).mean() >= 0.985, folder.name
        assert abs((int8 == views.labels).mean() - (expected == views.labels).mean()) <= 0.005, folder.name


def _check_agreement(name: str, mode: str, probabilities: np.ndarray, expected: np.ndarray,
                     labels: np.ndarray) -> None:
    """A mode's probabilities against fp32's (both faces x the model's classes), labels in the model's order."""
    difference = np.abs(probabilities - expected)
    largest, mean = (0.07, 0.004) if inference._has_vnni() and mode != "onnx-int8" else (0.1, 0.006)
    assert difference.max() <= largest and difference.mean() <= mean, (name, mode, difference.max(), difference.mean())
    changed = probabilities.argmax(1) != expected.argmax(1)
    assert changed.mean() <= 0.02, (name, mode)
    top_two = np.sort(expected[changed], axis=1)[:, -2:]
    assert np.all(top_two[:, 1] - top_two[:, 0] < 0.1), f"{name}, {mode}: int8 changed the top class of a face fp32 was sure of"
    accuracy, expected_accuracy = ((p.argmax(1) == labels).mean() for p in (probabilities, expected))
    assert abs(accuracy - expected_accuracy) <= 0.005, (name, mode)
