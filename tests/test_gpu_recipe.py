"""The long GPU recipe (recipes/gpu_long.py) in its CPU smoke mode, the device augmentation it trains with
(fer_hf.device_augment) and the ten-crop views it is scored with (fer_hf.evaluation.ten_crops)."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import FER_FIXTURE_DIR, ROOT, run_preloaded

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _fixture_split(name: str):
    from datasets import load_dataset

    return load_dataset("parquet", data_files=str(FER_FIXTURE_DIR / f"{name}.parquet"), split="train")


def _parameters(batch: int = 1, **values) -> dict[str, torch.Tensor]:
    """Augmentation parameters that leave a face as it is, but for `values`."""
    parameters = {"scale": 1.0, "shift_x": 0.0, "shift_y": 0.0, "flip": False, "angle": 0.0, "brightness": 1.0,
                  "contrast": 1.0}
    parameters.update(values)
    return {name: torch.full((batch,), value) for name, value in parameters.items()}


def _constructed_face() -> np.ndarray:
    """A 48x48 gray image with no symmetry: a bright box top right, a mid-gray bar bottom left, a ramp."""
    image = np.tile(np.linspace(0, 60, 48, dtype=np.float32), (48, 1))
    image[5:20, 30:44] = 255
    image[30:40, 8:14] = 128
    return image.round().astype(np.uint8)


# --- the recipe, end to end -----------------------------------------------------------------------

# Runs `python recipes/gpu_long.py ARGS`, its `python train.py ...` run included, with each interpreter's start-up
# done once: this driver runs in a run_preloaded process (tests.conftest among its imports), and the recipe's
# subprocess.run of `sys.executable SCRIPT ARGS` forks it and runs SCRIPT there as `python SCRIPT ARGS` would (a new
# process, its exit status as the interpreter's: multiprocessing's, which prints an uncaught exception's traceback).
RECIPE = """
import multiprocessing, os, subprocess, sys
from tests.conftest import run_as_main

def run(command, cwd=None, check=False):
    assert command[0] == sys.executable, command
    child = multiprocessing.get_context("fork").Process(
        target=run_as_main, args=([str(a) for a in command[1:]], str(cwd or os.getcwd())))
    child.start()
    child.join()
    if check and child.exitcode:
        raise subprocess.CalledProcessError(child.exitcode, command)
    return subprocess.CompletedProcess(command, child.exitcode)

subprocess.run = run
run_as_main(sys.argv[1:], os.getcwd())
"""


def test_the_recipe_trains_reports_ten_crop_figures_and_resumes(tmp_path):
    from transformers import AutoModelForImageClassification

    out = tmp_path / "smoke"
    driver = tmp_path / "run_recipe.py"
    driver.write_text(RECIPE)
    command = [driver, ROOT / "recipes" / "gpu_long.py", out, "--smoke"]
    run_preloaded(command)

    # A saved model that loads as any transformers classifier does (with the code files saved beside it).
    model = AutoModelForImageClassification.from_pretrained(out, trust_remote_code=True)
    assert type(model).__name__ == "FerCNNForImageClassification" and model.config.num_labels == 7
    info = json.loads((out / "run_info.json").read_text())
    assert info["steps"] == 4 and info["device_augment"] == {"random_erasing": 0.25}
    assert info["batch_mixing"] == {"mixup_alpha": 0.2, "cutmix_alpha": 0.0}
    assert "--device_augment true" in info["command"] and "--tta_reports mirror ten_crop" in info["command"]

    # The report: single view, mirror- and ten-crop-averaged figures, each with every class's recall, for the
    # trained model and for the bundled default scored on the same 56 PublicTest faces.
    report = json.loads((out / "recipe_report.json").read_text())
    assert report["labels"] == info["labels"] and set(report["views"]) == {"single", "mirror", "ten_crop"}
    for view, figures in report["views"].items():
        for model_name in ("trained", "baseline"):
            assert figures[model_name]["samples"] == 56, (view, model_name)
            assert set(figures[model_name]["recall"]) == set(info["labels"])
    ten_crop = json.loads((out / "validation_ten_crop_report.json").read_text())
    assert report["views"]["ten_crop"]["trained"]["accuracy"] == ten_crop["metrics"]["accuracy"]
    assert info["tta_metrics"]["ten_crop"]["validation"] == ten_crop["metrics"]
    assert report["views"]["ten_crop"]["trained"]["recall"]["happy"] == ten_crop["per_class"]["happy"]["recall"]
    # The bundled model's figures are those `python -m fer_hf evaluate` gives on the same rows.
    from fer_hf.evaluation import evaluate_on_dataset
    from fer_hf.hub import load_classifier

    bundled = evaluate_on_dataset(*load_classifier(ROOT / "models" / "fer2013-cnn"), _fixture_split("publictest"),
                                  flip_tta=True)
    assert report["views"]["mirror"]["baseline"]["accuracy"] == bundled["accuracy"]
    markdown = (out / "recipe_report.md").read_text()
    assert "ten-crop averaged" in markdown and "| disgust |" in markdown

    # A crash after the step-2 checkpoint: the same command resumes from it and ends with the same weights.
    finished = (out / "model.safetensors").read_bytes()
    shutil.rmtree(out / "checkpoint-4")
    (out / "model.safetensors").unlink()
    result = run_preloaded(command)
    assert "Resuming from checkpoint-2" in result.stdout
    assert json.loads((out / "recipe_report.json").read_text())["resumed_from"] == "checkpoint-2"
    assert (out / "model.safetensors").read_bytes() == finished


def test_the_recipe_trains_a_wider_model_within_5m_parameters_on_the_gpu_settings():
    import argparse
    import importlib.util

    from fer_hf import FerCNNForImageClassification, FerConfig

    spec = importlib.util.spec_from_file_location("gpu_long", ROOT / "recipes" / "gpu_long.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    args = argparse.Namespace(dataset_name="data", output_dir="out", variant="large", epochs=300, learning_rate=4e-3,
                              batch_size=256, seed=42, smoke=False, train_flags=["--class_weighting", "inverse_sqrt"])
    flags = recipe.train_arguments(args, "bf16")
    joined = " ".join(flags)
    for expected in ("--model_variant large", "--num_train_epochs 300", "--device_augment true", "--mixup_alpha 0.2",
                     "--bf16 true", "--tta_reports mirror ten_crop", "--per_device_train_batch_size 256"):
        assert expected in joined, expected
    assert flags[-2:] == ["--class_weighting", "inverse_sqrt"], "flags after `--` come last, so they win"
    parameters = sum(p.numel() for p in FerCNNForImageClassification(FerConfig.from_variant("large")).parameters())
    assert 4e6 < parameters < 5e6


# --- the device augmentation ----------------------------------------------------------------------


def test_faces_held_on_the_device_are_the_processors_pixels_when_not_augmented():
    from fer_hf import FerImageProcessor
    from fer_hf.device_augment import DeviceFaces, FaceAugmentation

    rows = _fixture_split("publictest")
    processor = FerImageProcessor()
    faces = DeviceFaces(processor, "cpu", FaceAugmentation())
    held = faces.hold(rows, rows["label"])
    assert faces.pixels.dtype == torch.uint8 and faces.pixels.shape == (56, 1, 48, 48)
    assert len(held) == 56 and held[3] == {"row": 3, "labels": torch.tensor(rows[3]["label"])}
    expected = processor(list(rows["image"]), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(faces.batch(torch.arange(56), augment=False), expected, rtol=0, atol=1e-6)
    # A second split goes after the first; its rows point past the first split's.
    second = faces.hold(rows.select(range(4)), [0, 1, 2, 3])
    assert second[0]["row"] == 56 and len(faces.pixels) == 60


@pytest.mark.parametrize("device", DEVICES)
def test_augmented_batches_are_float_on_the_faces_device_and_seeded(device):
    from fer_hf import FerImageProcessor
    from fer_hf.device_augment import DeviceFaces, FaceAugmentation

    rows = _fixture_split("train").select(range(32))
    faces = DeviceFaces(FerImageProcessor(), device, FaceAugmentation(erasing=0.5))
    faces.hold(rows, rows["label"])
    batch_rows = torch.tensor([5, 0, 31, 7, 7])

    def batch(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        return faces.batch(batch_rows, augment=True)

    first = batch(0)
    assert first.dtype == torch.float32 and first.shape == (5, 1, 48, 48) and first.device.type == device
    assert torch.equal(first, batch(0)), "the same seed must give the same batch"
    assert not torch.equal(first, batch(1))
    assert not torch.equal(first[3], first[4]), "each face draws its own augmentation, a repeated row too"
    plain = faces.batch(batch_rows, augment=False)
    assert not torch.equal(first, plain) and torch.equal(plain[3], plain[4])


def test_flips_crops_and_rotations_do_what_pil_does():
    from fer_hf.device_augment import augment_faces

    image = _constructed_face()
    face = torch.from_numpy(image).float()[None, None] / 255

    def augmented(**values) -> np.ndarray:
        return augment_faces(face, _parameters(**values))[0, 0].numpy() * 255

    np.testing.assert_allclose(augmented(), image, atol=1e-3)
    np.testing.assert_allclose(augmented(flip=True), image[:, ::-1], atol=1e-3)
    # The top-left quarter (scale 0.5, its centre half a face up and left of the face's), resized to the full face
    # (within one gray level: PIL computes in fixed point and rounds).
    quarter = Image.fromarray(image).resize((48, 48), Image.BILINEAR, box=(0, 0, 24, 24))
    np.testing.assert_allclose(augmented(scale=0.5, shift_x=-0.5, shift_y=-0.5), np.asarray(quarter), atol=1.0)
    box = Image.fromarray(image).resize((48, 48), Image.BILINEAR, box=(6, 12, 42, 48))  # scale 0.75, bottom middle
    np.testing.assert_allclose(augmented(scale=0.75, shift_x=0.0, shift_y=0.25), np.asarray(box), atol=1.0)
    for angle in (10.0, -7.0):  # counter-clockwise, black corners, as PIL rotates
        rotated = np.asarray(Image.fromarray(image).rotate(angle, resample=Image.BILINEAR)).astype(np.float32)
        difference = np.abs(augmented(angle=angle) - rotated)
        assert difference.max() <= 1.0 + 1e-3, angle  # within one gray level everywhere, the corners too
    # Brightness scales; contrast scales the distance from the face's mean gray.
    np.testing.assert_allclose(augmented(brightness=0.8), image * 0.8, atol=1e-3)
    contrasted = augmented(contrast=1.2)
    np.testing.assert_allclose(contrasted, np.clip(image.mean() + 1.2 * (image - image.mean()), 0, 255), atol=1e-3)


def test_random_erasing_sets_one_box_of_the_chosen_faces_to_the_mean():
    from fer_hf.device_augment import FaceAugmentation, draw_parameters, erase_boxes

    torch.manual_seed(0)
    parameters = draw_parameters(64, FaceAugmentation(erasing=0.5), "cpu")
    pixel_values = torch.randn(64, 1, 48, 48) + 10  # nothing is 0 before erasing
    erased = erase_boxes(pixel_values, parameters) == 0
    chosen = parameters["erase"]
    assert 0 < chosen.sum() < 64 and not erased[~chosen].any()
    for face in erased[chosen][:, 0]:
        rows, cols = face.any(1).nonzero().flatten(), face.any(0).nonzero().flatten()
        assert face[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all(), "one box"
        assert 0.015 < face.float().mean() < 0.25  # 2% to 20% of the face, give or take the rounding of its sides


def test_the_trainer_gathers_device_rows_and_scores_them_as_the_processor_would(tmp_path):
    from transformers import TrainingArguments

    from fer_hf import FerCNNForImageClassification, FerConfig, FerImageProcessor
    from fer_hf.device_augment import DeviceFaces, FaceAugmentation
    from fer_hf.training import FerTrainer, collate, soft_target_cross_entropy

    rows = _fixture_split("publictest").select(range(8))
    faces = DeviceFaces(FerImageProcessor(), "cpu", FaceAugmentation())
    held = faces.hold(rows, rows["label"])
    batch = collate([held[i] for i in range(8)])
    assert batch["rows"].tolist() == list(range(8)) and batch["labels"].tolist() == rows["label"]
    torch.manual_seed(0)
    model = FerCNNForImageClassification(FerConfig.from_variant("tiny")).eval()
    trainer = FerTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True),
                         compute_loss_func=soft_target_cross_entropy, device_faces=faces)
    pixel_values = FerImageProcessor()(list(rows["image"]), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = soft_target_cross_entropy(model(pixel_values=pixel_values), batch["labels"])
        torch.testing.assert_close(trainer.compute_loss(model, dict(batch)), expected)
        model.train()  # training batches are augmented
        assert not torch.isclose(trainer.compute_loss(model, dict(batch)), expected)


# --- ten-crop views -------------------------------------------------------------------------------


def test_ten_crops_are_corners_and_centre_of_an_enlarged_face_and_their_mirrors():
    from fer_hf.evaluation import ten_crops

    face = torch.from_numpy(_constructed_face()).float()[None, None]
    views = ten_crops(face)
    assert len(views) == 10 and all(view.shape == face.shape for view in views)
    enlarged = torch.nn.functional.interpolate(face, size=(53, 53), mode="bilinear", align_corners=False)
    assert torch.equal(views[0], enlarged[..., :48, :48]) and torch.equal(views[3], enlarged[..., 5:, 5:])
    assert torch.equal(views[4], enlarged[..., 2:50, 2:50])
    for view, mirror in zip(views[:5], views[5:]):
        assert torch.equal(mirror, view.flip(-1))


def test_ten_crop_prediction_averages_the_views_probabilities():
    from fer_hf.evaluation import pixel_batches, predict_logits, ten_crops
    from fer_hf.hub import load_classifier

    model, processor = load_classifier(ROOT / "models" / "fer2013-cnn")
    rows = _fixture_split("publictest").select(range(6))
    logits = predict_logits(model, processor, rows, ten_crop=True)
    probabilities = np.exp(logits)
    np.testing.assert_allclose(probabilities.sum(1), 1, atol=1e-5)
    pixel_values = next(pixel_batches(model, processor, rows))
    with torch.no_grad():
        by_hand = torch.stack([model(pixel_values=view).logits.softmax(-1) for view in ten_crops(pixel_values)]).mean(0)
    np.testing.assert_allclose(probabilities, by_hand.numpy(), atol=1e-5)
