"""train.py and fer_hf.training: the pieces in-process, whole runs in fresh processes, on the committed
FER-2013 fixture (tests/fixtures/fer2013) and the conftest's photo folder."""

import json
import os
import signal
import sys
import time

import numpy as np
import pytest
import torch

from tests import freshpython
from tests.conftest import FER_FIXTURE_DIR, HAPPY_SAD_DIR, ROOT, requires_shared, run_preloaded, run_python
from tests.test_modeling import REMOTE_CODE_SNIPPET

# First, so that a test's own flags (given after) win.
FAST = ["--model_variant", "tiny", "--per_device_train_batch_size", "32", "--disable_tqdm", "true", "--seed", "0"]


def _train(*args, **kwargs):
    """`python train.py FAST ARGS` in a fresh process (forked with its libraries imported: see run_preloaded)."""
    return run_preloaded([ROOT / "train.py", *FAST, *args], **kwargs)


def _fixture_split(name: str):
    from datasets import load_dataset

    return load_dataset("parquet", data_files=str(FER_FIXTURE_DIR / f"{name}.parquet"), split="train")


# Runs train.py as a script once per argument list, in one fresh process (one start-up of torch and
# transformers for all), and prints how each run ended: the refusals below all come before any training.
REFUSALS = """
import json, pathlib, runpy, sys
script, cases = sys.argv[1], json.loads(sys.argv[2])
sys.path.insert(0, str(pathlib.Path(script).parent))  # as `python train.py` would
ends = []
for argv in cases:
    sys.argv = [script, *argv]
    try:
        runpy.run_path(script, run_name="__main__")
        ends.append("finished")
    except BaseException as error:
        ends.append(f"{type(error).__name__}: {error}")
print(json.dumps(ends))
"""


def _refusals(tmp_path, cases: list[list]) -> list[str]:
    """How train.py ends with each argument list (each given FAST and its own output_dir): `Type: message`."""
    script = tmp_path / "refusals.py"
    script.write_text(REFUSALS)
    argvs = [[*FAST, *map(str, case), "--output_dir", str(tmp_path / f"out{i}")] for i, case in enumerate(cases)]
    result = run_preloaded([script, ROOT / "train.py", json.dumps(argvs)])
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- whole runs -----------------------------------------------------------------------------------


def test_fer2013_slice_trains_and_leaves_a_complete_folder(tmp_path, tiny_trained_model):
    # conftest's run of train.py (FAST, then --dataset_name FIXTURE --max_steps 6 --max_train_samples 96
    # --max_eval_samples 48 --logging_steps 1), shared with the tests that only read a trained folder.
    out = tiny_trained_model
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "configuration_fer.py",
                 "modeling_fer.py", "image_processing_fer.py", "eval_results.json", "validation_report.json",
                 "validation_report.txt", "validation_confusion_matrix.png", "training_curves.png", "run_info.json",
                 "README.md"):
        assert (out / name).is_file(), name
    assert not list(out.glob("pytorch_model*.bin")) + list(out.glob("*.pt")), "weights must be safetensors only"
    info = json.loads((out / "run_info.json").read_text())
    assert info["steps"] == 6 and info["splits"] == {"train": 96, "validation": 48}
    assert info["command"].startswith("python train.py --model_variant tiny")
    assert info["model"] == "fer-cnn-tiny" and info["labels"][0] == "angry" and len(info["labels"]) == 7
    # Without --learning_rate the FER CNN trains from scratch at 2e-3 (cosine decay), not Trainer's 5e-5.
    assert 1e-3 < json.loads((out / "trainer_state.json").read_text())["log_history"][0]["learning_rate"] <= 2e-3
    # The precision is read back from Trainer's accelerator: the CPU fast path must really be on.
    from fer_hf.inference import bf16_supported

    assert info["precision"] == ("bf16 autocast + channels_last" if bf16_supported() else "fp32")
    assert info["batch_norm"] == "statistics recomputed on the 96 unaugmented training rows"
    report = json.loads((out / "validation_report.json").read_text())
    eval_results = json.loads((out / "eval_results.json").read_text())
    assert report["metrics"]["samples"] == 48
    # The reports score the saved model as `python -m fer_hf evaluate` loads it: exactly that figure.
    from fer_hf.evaluation import evaluate_on_dataset
    from fer_hf.hub import load_classifier

    rows = _fixture_split("publictest").select(range(48))
    assert evaluate_on_dataset(*load_classifier(out), rows)["accuracy"] == report["metrics"]["accuracy"]
    assert info["metrics"]["validation"] == report["metrics"]
    # Calibrated after the best model was saved and scored: temperatures and threshold in config.json, the report
    # beside it, and the labels (the reports above) are those of the uncalibrated model.
    calibration, config = json.loads((out / "calibration.json").read_text()), json.loads((out / "config.json").read_text())
    assert calibration["faces"] == 48 and config["temperature"] == calibration["modes"]["single"]["temperature"]
    assert calibration["modes"]["single"]["after"]["accuracy"] == report["metrics"]["accuracy"]
    assert config["unsure_threshold"] == calibration["unsure"]["threshold"]
    # Trainer's own evaluation ran under bf16 autocast; a 6-step model has near-ties that bf16 can flip.
    assert abs(report["metrics"]["accuracy"] - eval_results["eval_accuracy"]) <= 2 / 48

    # The folder loads in a process where fer_hf is not importable, and the pipeline predicts.
    images = [tmp_path / "face.png"]
    _fixture_split("publictest")[0]["image"].save(images[0])
    script = tmp_path / "load.py"
    script.write_text(REMOTE_CODE_SNIPPET)
    result = run_python([script, out, *images], cwd=tmp_path, env={"PYTHONPATH": ""})
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    assert remote["classes"] == ["FerCNNForImageClassification", "FerImageProcessor"]
    assert remote["pipeline"][0] in info["labels"]


def test_zero_epochs_recompute_only_the_batch_norm_statistics(tmp_path):
    from safetensors.torch import load_file

    out, bundled = tmp_path / "bn", ROOT / "models" / "fer2013-cnn-fast"
    _train("--dataset_name", FER_FIXTURE_DIR, "--output_dir", out, "--model_name_or_path", bundled,
           "--num_train_epochs", "0", "--max_train_samples", "64", "--max_eval_samples", "32")
    info = json.loads((out / "run_info.json").read_text())
    assert info["steps"] == 0 and info["batch_norm"] == "statistics recomputed on the 64 unaugmented training rows"
    before, after = load_file(bundled / "model.safetensors"), load_file(out / "model.safetensors")
    assert before.keys() == after.keys()
    statistics = [name for name in before if name.endswith(("running_mean", "running_var"))]
    assert len(statistics) == 2 * 8  # the 8 batch norms of base-s2
    for name in before:
        if name in statistics:
            assert not torch.equal(before[name], after[name]), name
        elif not name.endswith("num_batches_tracked"):
            assert torch.equal(before[name], after[name]), f"{name} changed: nothing but statistics may"


def test_a_two_label_head_starts_from_the_parents_rows_for_those_labels(tmp_path):
    from safetensors.torch import load_file

    out, parent = tmp_path / "hs", ROOT / "models" / "fer2013-cnn-fast"
    _train("--dataset_name", FER_FIXTURE_DIR, "--labels", "happy", "sad", "--output_dir", out, "--model_name_or_path",
           parent, "--num_train_epochs", "0", "--recompute_batch_norm", "false")
    info = json.loads((out / "run_info.json").read_text())
    assert info["head_from_parent"] == f"the head started from the rows of {parent} for happy, sad"
    before, after = load_file(parent / "model.safetensors"), load_file(out / "model.safetensors")
    happy, sad = 3, 4  # FER-2013's class ids
    assert torch.equal(after["classifier.weight"], before["classifier.weight"][[happy, sad]])
    assert torch.equal(after["classifier.bias"], before["classifier.bias"][[happy, sad]])
    # So the 2-label model scores exactly what the 7-class one does between happy and sad.
    from fer_hf.evaluation import predict_logits
    from fer_hf.hub import load_classifier

    rows = _fixture_split("publictest").filter(lambda label: label in (happy, sad), input_columns="label")
    seven = predict_logits(*load_classifier(parent), rows)[:, [happy, sad]].argmax(1)
    report = json.loads((out / "validation_report.json").read_text())
    assert report["metrics"]["samples"] == len(rows) == 16
    assert report["metrics"]["accuracy"] == (seven == (np.array(rows["label"]) == sad)).mean()


def test_happy_sad_photos_train_with_a_test_split(tmp_path, photo_folder):
    from fer_hf.data import load_fer_dataset

    out = tmp_path / "happy_sad"
    _train("--dataset_name", photo_folder, "--output_dir", out, "--max_steps", "3")
    info = json.loads((out / "run_info.json").read_text())
    splits = {name: len(part) for name, part in load_fer_dataset(photo_folder).items()}
    assert info["labels"] == ["happy", "sad"] and info["splits"] == splits == {"train": 16, "validation": 4, "test": 4}
    assert (out / "test_report.json").is_file() and (out / "test_confusion_matrix.png").is_file()
    assert json.loads((out / "test_report.json").read_text())["metrics"] == info["metrics"]["test"]
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "happy", "1": "sad"}


@requires_shared
def test_another_training_seed_holds_out_the_same_photos(tmp_path):
    # Needs the full photo folder: its 46 held-out photos tell one split from another, a fixture's 4 hardly.
    # FAST trains with --seed 0. The photo folder must still split with 42, as `evaluate` does: otherwise a
    # run with another seed would train on photos of the held-out test split. The bundled default, its head
    # cut to its happy and sad rows and left unchanged (no epochs, no recompute), must therefore score the
    # test split as `evaluate --labels happy sad` scores the 7-class model there, cropped with its margin.
    out, bundled = tmp_path / "scored", ROOT / "models" / "fer2013-cnn"
    margin = json.loads((bundled / "preprocessor_config.json").read_text())["face_crop_margin"]
    _train("--dataset_name", HAPPY_SAD_DIR, "--crop_faces", "true", "--face_crop_margin", str(margin), "--output_dir",
           out, "--model_name_or_path", bundled, "--num_train_epochs", "0", "--recompute_batch_norm", "false")
    scored = json.loads((out / "test_report.json").read_text())["metrics"]
    evaluated = run_preloaded(["-m", "fer_hf", "evaluate", bundled, "--dataset_name", HAPPY_SAD_DIR, "--split", "test",
                            "--crop_faces", "--labels", "happy", "sad", "--json"])
    printed = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert scored["samples"] == printed["samples"] == 46
    assert scored["accuracy"] == pytest.approx(printed["accuracy"], abs=1e-9)
    assert scored["macro_f1"] == pytest.approx(printed["macro_f1"], abs=1e-9)


def test_photos_are_added_to_fer_rows_as_face_crops(tmp_path, photo_folder):
    from fer_hf.data import class_counts, load_fer_dataset

    out = tmp_path / "mixed"
    _train("--dataset_name", FER_FIXTURE_DIR, "--labels", "happy", "sad", "--add_train_dataset", photo_folder,
           "--add_train_dataset_repeats", "3", "--crop_faces", "true", "--face_crop_margin", "0.2",
           "--output_dir", out, "--max_steps", "2", "--max_eval_samples", "12")
    info = json.loads((out / "run_info.json").read_text())
    # The fixture's happy and sad training faces, plus the photos of the folder's train split three times
    # over (--add_train_dataset_repeats 3).
    fer = class_counts(load_fer_dataset(FER_FIXTURE_DIR)["train"])
    photos = len(load_fer_dataset(photo_folder)["train"])
    assert fer["happy"] + fer["sad"] == 32 and photos == 16
    assert info["labels"] == ["happy", "sad"] and info["splits"] == {"train": 32 + 3 * 16, "validation": 12}
    # The margin the photos were cropped with is saved with the model, for the demo to crop alike.
    assert json.loads((out / "preprocessor_config.json").read_text())["face_crop_margin"] == 0.2


def test_a_source_with_other_classes_cannot_be_added(tmp_path, photo_folder):
    run = _train("--dataset_name", FER_FIXTURE_DIR, "--add_train_dataset", photo_folder, "--output_dir", tmp_path / "x",
                 "--max_steps", "1", check=False)
    assert run.returncode != 0 and "--add_train_dataset" in run.stdout and "'angry'" in run.stdout, run.stdout[-2000:]


def test_rerun_after_sigkill_resumes_from_the_last_checkpoint(tmp_path):
    out = tmp_path / "killed"
    args = [sys.executable, ROOT / "train.py", *FAST, "--dataset_name", FER_FIXTURE_DIR, "--output_dir", out,
            "--max_steps", "24", "--max_train_samples", "96", "--max_eval_samples", "32", "--eval_strategy", "steps",
            "--eval_steps", "3", "--save_strategy", "steps", "--save_steps", "3"]
    process = freshpython.start(args[1:], cwd=ROOT, env=dict(os.environ), stdout=os.devnull, stderr=os.devnull)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "checkpoint-3" / "trainer_state.json").exists():
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # no chance to clean up, as in a crash or an OOM kill
    process.wait()
    checkpoints = sorted(p.name for p in out.glob("checkpoint-*"))
    assert checkpoints and not (out / "run_info.json").exists(), "the run must have died mid-training"

    result = run_preloaded(args[1:], env={"PYTHONUNBUFFERED": "1"})
    resumed_from = int(result.stdout.split("Resuming from checkpoint-")[1].split()[0])
    assert resumed_from >= 3
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 24
    # The training time counts the killed part too, not only the resumed one that Trainer reports.
    resumed_part = json.loads((out / "train_results.json").read_text())["train_runtime"]
    info = json.loads((out / "run_info.json").read_text())
    assert info["train_runtime_s"] > resumed_part
    # The card says the wall time is the resumed part's only.
    assert info["resumed_from"] == f"checkpoint-{resumed_from}"
    assert f"for the last part (resumed from checkpoint-{resumed_from})" in (out / "README.md").read_text()


def _tiny_vit(folder, num_labels: int = 2):
    """A small ViT saved locally: it stands in for a Hub checkpoint (no downloads here)."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, num_labels=num_labels)
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_any_hub_image_classifier_fine_tunes_with_its_own_processor(tmp_path):
    vit = _tiny_vit(tmp_path / "tiny-vit", num_labels=5)
    out = tmp_path / "vit-fer"
    run_preloaded([ROOT / "train.py", "--dataset_name", FER_FIXTURE_DIR, "--output_dir", out, "--model_name_or_path", vit,
                "--max_steps", "3", "--max_train_samples", "96", "--max_eval_samples", "32",
                "--per_device_train_batch_size", "16", "--learning_rate", "1e-4", "--disable_tqdm", "true",
                "--logging_steps", "1"])
    saved = json.loads((out / "config.json").read_text())
    assert saved["model_type"] == "vit" and len(saved["id2label"]) == 7  # a new 7-label head
    assert json.loads((out / "preprocessor_config.json").read_text())["size"] == {"height": 32, "width": 32}
    info = json.loads((out / "run_info.json").read_text())
    assert info["steps"] == 3 and info["model"] == str(vit) and info["batch_norm"] is None  # a ViT has none
    # --learning_rate given: kept, not replaced by the FER CNN's default.
    assert "--learning_rate 1e-4" in info["command"]
    assert 5e-5 < json.loads((out / "trainer_state.json").read_text())["log_history"][0]["learning_rate"] <= 1e-4


def test_accelerate_launch_runs_two_cpu_processes(tmp_path):
    out = tmp_path / "ddp"
    run_python(
        # accelerate's torchrun launcher (--multi_gpu) with --use_cpu: gloo DDP over CPU processes.
        ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", ROOT / "train.py", *FAST, "--dataset_name",
         FER_FIXTURE_DIR, "--output_dir", out, "--max_steps", "4", "--max_train_samples", "96",
         "--per_device_train_batch_size", "12", "--max_eval_samples", "32", "--use_cpu", "true"],
        env={"OMP_NUM_THREADS": "1"},
    )
    info = json.loads((out / "run_info.json").read_text())
    assert info["steps"] == 4 and "2 process(es)" in info["hardware"]
    assert info["epochs"] == 1.0  # 2 processes x 12 rows x 4 steps = the 96 rows once: the data was sharded
    # The loss is a per-batch mean; Trainer must not scale it by the process count (7 classes: ln 7 = 1.95).
    train_loss = json.loads((out / "train_results.json").read_text())["train_loss"]
    assert train_loss < 2.5


def test_a_checkpoint_cut_short_by_a_crash_is_skipped(tmp_path):
    # The state a crash during a save leaves: the newest checkpoint folder without (or with a truncated)
    # trainer_state.json, which Trainer writes after the weights. Killing a process inside that
    # millisecond window cannot be timed reliably, so the test makes that state on disk.
    from fer_hf.training import last_complete_checkpoint

    out = tmp_path / "cut"
    args = [ROOT / "train.py", *FAST, "--dataset_name", FER_FIXTURE_DIR, "--output_dir", out, "--max_steps", "6",
            "--max_train_samples", "96", "--max_eval_samples", "32", "--eval_strategy", "steps", "--eval_steps", "3",
            "--save_strategy", "steps", "--save_steps", "3"]
    run_preloaded(args)
    assert last_complete_checkpoint(out) == str(out / "checkpoint-6")
    state = out / "checkpoint-6" / "trainer_state.json"
    state.write_text(state.read_text()[:40])  # cut short mid-write
    assert last_complete_checkpoint(out) == str(out / "checkpoint-3")
    result = run_preloaded(args, env={"PYTHONUNBUFFERED": "1"})
    assert "Skipping checkpoint-6: incomplete" in result.stdout
    assert "Resuming from checkpoint-3" in result.stdout
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 6


def test_a_second_run_into_a_busy_output_dir_is_refused(tmp_path):
    """While a run holds output_dir (here this process, holding its lock as a live train.py does), another is refused."""
    import fcntl

    out = tmp_path / "busy"
    out.mkdir()
    with open(out / ".train.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242")
        held.flush()
        run = _train("--dataset_name", FER_FIXTURE_DIR, "--output_dir", out, "--max_steps", "1", check=False)
    assert run.returncode != 0 and "another train.py (pid 4242) is training into this folder" in run.stdout
    assert sorted(p.name for p in out.iterdir()) == [".train.lock"], "the refused run must not write anything"


# --- the flags' checks ----------------------------------------------------------------------------


def test_bad_flags_are_refused_by_name_before_anything_is_loaded(tmp_path, photo_folder):
    teacher = str(ROOT / "models" / "fer2013-cnn-fast")
    data = ["--dataset_name", FER_FIXTURE_DIR]
    cases = {
        "--mixup_alpha -0.2: must be 0 (off) or positive": [*data, "--mixup_alpha", "-0.2"],
        "--cutmix_alpha -1.0: must be 0 (off) or positive": [*data, "--cutmix_alpha", "-1"],
        "--add_train_dataset_repeats 0: must be 1 or more": [*data, "--labels", "happy", "sad", "--add_train_dataset",
                                                             photo_folder, "--add_train_dataset_repeats", "0"],
        "--face_crop_margin -1.0: must be above -1": [*data, "--crop_faces", "true", "--face_crop_margin", "-1"],
        "--label_distribution_weight 1.5: must be in [0, 1]": [*data, "--label_distribution", "ferplus",
                                                               "--label_distribution_weight", "1.5"],
        "--label_distribution cannot be combined with --add_train_dataset": [
            *data, "--label_distribution", "ferplus", "--add_train_dataset", photo_folder],
        "already smooths the targets": [*data, "--label_distribution", "ferplus", "--label_smoothing_factor", "0.1"],
        "--teacher_models and --label_distribution teacher go together": [*data, "--teacher_models", teacher],
        "go together: give both or neither": [*data, "--label_distribution", "teacher"],
    }
    ends = _refusals(tmp_path, list(cases.values()))
    for (message, case), end in zip(cases.items(), ends):
        assert end.startswith("ValueError: ") and message in end, (case, end)
    # Refused while parsing: no output folder was made, no data read.
    assert not list(tmp_path.glob("out*"))


# --- the pieces, in-process -----------------------------------------------------------------------


def test_the_same_labels_in_another_order_keep_their_rows():
    from transformers import AutoModelForImageClassification

    from fer_hf import FER2013_LABELS
    from fer_hf.training import head_from_parent_labels

    parent = ROOT / "models" / "fer2013-cnn"  # the 7 FER-2013 classes
    labels = list(reversed(FER2013_LABELS))  # the same classes, last first
    as_saved = AutoModelForImageClassification.from_pretrained(parent).classifier
    model = AutoModelForImageClassification.from_pretrained(parent, id2label=dict(enumerate(labels)),
                                                            label2id={name: i for i, name in enumerate(labels)})
    assert torch.equal(model.classifier.weight, as_saved.weight)  # from_pretrained alone: angry's row called neutral
    assert head_from_parent_labels(str(parent), model, labels, {}) == labels
    assert torch.equal(model.classifier.weight, as_saved.weight.flip(0))
    assert torch.equal(model.classifier.bias, as_saved.bias.flip(0))
    assert head_from_parent_labels(str(parent), model, list(FER2013_LABELS), {}) == []  # as the parent: nothing to do


def test_redact_hides_the_token_and_hub_id_tells_repo_ids_from_folders(tmp_path):
    from fer_hf.training import hub_id, redact

    argv = ["--hub_token", "hf_secret", "--hub_token=hf_secret", "--output_dir", "runs/x"]
    assert redact(argv, "hf_secret") == ["--hub_token", "<HUB_TOKEN>", "--hub_token=<HUB_TOKEN>", "--output_dir",
                                         "runs/x"]
    assert redact(argv, None) == argv
    assert hub_id("user/fer2013") == "user/fer2013"
    assert hub_id(str(tmp_path)) is None and hub_id(None) is None


def test_soft_target_loss_takes_distributions_and_class_ids():
    import torch.nn.functional as F

    from fer_hf.training import soft_target_cross_entropy

    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 1.0]])
    ids = torch.tensor([0, 2])
    outputs = {"logits": logits}
    assert torch.isclose(soft_target_cross_entropy(outputs, ids), F.cross_entropy(logits, ids))
    # One-hot distributions give the class-id loss; Trainer's count for them is rows x classes.
    one_hot = F.one_hot(ids, 3).float()
    assert torch.isclose(soft_target_cross_entropy(outputs, one_hot, num_items_in_batch=torch.tensor(6)),
                         F.cross_entropy(logits, ids))
    soft = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.2, 0.8]])
    by_hand = -(soft * logits.log_softmax(-1)).sum(-1).mean()
    assert torch.isclose(soft_target_cross_entropy(outputs, soft), by_hand)


def test_mixup_and_cutmix_mix_pixels_and_targets_by_the_same_share():
    from fer_hf.training import mix_batch

    torch.manual_seed(0)
    pixels = torch.stack([torch.full((1, 12, 10), float(i)) for i in range(4)])  # image i is all i
    targets = torch.eye(4)  # image i is class i; the partner of image i is image 3 - i (the batch reversed)
    for _ in range(30):
        mixed, mixed_targets = mix_batch(pixels, targets, 0.4, 0.0)
        lam = mixed_targets[1, 1]
        assert torch.allclose(mixed[1], lam * 1 + (1 - lam) * 2) and torch.isclose(mixed_targets[1, 2], 1 - lam)
        assert torch.allclose(mixed_targets.sum(1), torch.ones(4))
    kinds = set()
    for _ in range(60):
        mixed, mixed_targets = mix_batch(pixels, targets, 0.4, 1.0)
        if set(mixed[1].unique().tolist()) <= {1.0, 2.0}:  # CutMix: image 1 with a box of image 2 pasted in
            pasted = mixed[1, 0] == 2
            rows, cols = pasted.any(1).nonzero().flatten(), pasted.any(0).nonzero().flatten()
            if len(rows):  # one box: every pixel between its first and last row and column is pasted
                assert pasted[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()
            assert torch.isclose(mixed_targets[1, 2], pasted.float().mean())
            assert torch.isclose(mixed_targets[1, 1], 1 - pasted.float().mean())
            kinds.add("cutmix")
        else:  # Mixup: a uniform blend
            assert torch.allclose(mixed[1], mixed_targets[1, 1] * 1 + mixed_targets[1, 2] * 2)
            kinds.add("mixup")
    assert kinds == {"cutmix", "mixup"}, "with both alphas set, each batch takes one of the two at random"


def test_only_training_batches_are_mixed(tmp_path):
    from transformers import TrainingArguments

    from fer_hf import FerCNNForImageClassification, FerConfig
    from fer_hf.training import FerTrainer, mix_batch, soft_target_cross_entropy

    torch.manual_seed(0)
    model = FerCNNForImageClassification(FerConfig.from_variant("tiny", hidden_dropout_prob=0.0, classifier_dropout_prob=0.0))
    trainer = FerTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True),
                         compute_loss_func=soft_target_cross_entropy, mixup_alpha=1.0)
    inputs = {"pixel_values": torch.randn(8, 1, 48, 48), "labels": torch.eye(7)[torch.arange(8) % 7]}
    model.eval()
    with torch.no_grad():
        unmixed = soft_target_cross_entropy(model(pixel_values=inputs["pixel_values"]), inputs["labels"])
        assert torch.equal(trainer.compute_loss(model, dict(inputs)), unmixed)
        model.train()
        torch.manual_seed(1)
        loss = trainer.compute_loss(model, dict(inputs))
        torch.manual_seed(1)
        pixel_values, labels = mix_batch(inputs["pixel_values"], inputs["labels"], 1.0, 0.0)
        assert torch.equal(loss, soft_target_cross_entropy(model(pixel_values=pixel_values), labels))
        assert not torch.isclose(loss, soft_target_cross_entropy(model(pixel_values=inputs["pixel_values"]),
                                                                 inputs["labels"]))


def test_the_same_seed_trains_the_same_weights_and_another_seed_does_not(tmp_path):
    # Initialisation, augmentation and Mixup all draw from generators that --seed seeds.
    weights = {}
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        _train("--dataset_name", FER_FIXTURE_DIR, "--output_dir", tmp_path / name, "--max_steps", "2",
               "--max_train_samples", "64", "--max_eval_samples", "16", "--mixup_alpha", "0.2", "--seed", seed)
        weights[name] = (tmp_path / name / "model.safetensors").read_bytes()
    assert weights["a"] == weights["b"]
    assert weights["a"] != weights["c"]


def test_mixed_batches_train(tmp_path):
    out = tmp_path / "mixed"
    _train("--dataset_name", FER_FIXTURE_DIR, "--output_dir", out, "--max_steps", "3", "--max_train_samples", "64",
           "--max_eval_samples", "32", "--mixup_alpha", "0.2", "--cutmix_alpha", "1.0", "--label_smoothing_factor", "0.1")
    info = json.loads((out / "run_info.json").read_text())
    assert info["steps"] == 3 and info["batch_mixing"] == {"mixup_alpha": 0.2, "cutmix_alpha": 1.0}
    assert info["label_distribution"] is None  # mixing trains on soft targets, but no label distribution
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert all(np.isfinite(entry["train_loss"]) for entry in history if "train_loss" in entry)


def test_soft_targets_fold_label_smoothing_into_the_mixing_targets():
    from datasets import ClassLabel, Dataset, Features

    from fer_hf.training import add_soft_targets

    rows = Dataset.from_dict({"label": [0, 2]}, features=Features({"label": ClassLabel(names=["a", "b", "c", "d"])}))
    targets = add_soft_targets(rows, label_distribution=None, weight=0.5, label_smoothing=0.2, teacher_models=None,
                               training_args=None)["target"]
    # (1 - 0.2) * one-hot + 0.2 * uniform over 4 classes; --label_distribution_weight plays no part here.
    np.testing.assert_allclose(targets, [[0.85, 0.05, 0.05, 0.05], [0.05, 0.05, 0.85, 0.05]], atol=1e-6)


# --- --label_distribution ferplus ---------------------------------------------------------------


def _ferplus_fixture(folder, *, meta=True, train_rows=64, eval_rows=32):
    """A FER-2013 parquet folder of the fixture's first rows, with their train_meta.parquet rows beside it."""
    import pyarrow.parquet as pq

    folder.mkdir()
    for name, rows in (("train", train_rows), ("publictest", eval_rows)):
        _fixture_split(name).select(range(rows)).to_parquet(folder / f"{name}.parquet")
    if meta:
        pq.write_table(pq.read_table(FER_FIXTURE_DIR / "train_meta.parquet").slice(0, train_rows),
                       folder / "train_meta.parquet")
    return folder


def test_ferplus_distributions_are_the_rows_votes():
    import pyarrow.parquet as pq

    from fer_hf import FER2013_LABELS
    from fer_hf.data import ferplus_distributions, soft_targets

    meta = pq.read_table(FER_FIXTURE_DIR / "train_meta.parquet").to_pandas()
    # The votes of two real rows (angry, disgust, fear, happy, sad, surprise, neutral order), as stored.
    votes = {0: [3, 2, 0, 0, 1, 0, 4], 4: [0, 0, 0, 0, 1, 0, 9]}
    columns = ["ferplus_anger", "ferplus_disgust", "ferplus_fear", "ferplus_happiness", "ferplus_sadness",
               "ferplus_surprise", "ferplus_neutral"]
    for row, expected in votes.items():
        assert meta.loc[row, columns].tolist() == expected
    assert meta.loc[4, "ferplus_NF"] == 0

    distributions = ferplus_distributions(FER_FIXTURE_DIR, list(FER2013_LABELS))
    assert distributions.shape == (len(meta), 7) == (112, 7)
    np.testing.assert_allclose(distributions[[0, 4]], [[0.3, 0.2, 0, 0, 0.1, 0, 0.4], [0, 0, 0, 0, 0.1, 0, 0.9]],
                               atol=1e-6)
    # Half one-hot (rows 0 and 4 are labelled angry and neutral), half votes.
    labels = meta.loc[[0, 4], "label"].to_numpy()
    assert labels.tolist() == [0, 6]
    np.testing.assert_allclose(soft_targets(labels, distributions[[0, 4]], 0.5),
                               [[0.65, 0.1, 0, 0, 0.05, 0, 0.2], [0, 0, 0, 0, 0.05, 0, 0.95]], atol=1e-6)
    # --labels sad neutral: the other classes' votes are dropped and the rest renormalised (row 3: 4 sad, 4 neutral).
    np.testing.assert_allclose(ferplus_distributions(FER_FIXTURE_DIR / "train.parquet", ["sad", "neutral"])[[0, 3]],
                               [[0.2, 0.8], [0.5, 0.5]], atol=1e-6)
    # A row with no vote on any kept class (row 0 has none for happy or surprise) stays one-hot.
    no_votes = ferplus_distributions(FER_FIXTURE_DIR, ["happy", "surprise"])[[0]]
    np.testing.assert_array_equal(no_votes, [[0, 0]])
    np.testing.assert_array_equal(soft_targets(np.array([1]), no_votes, 0.5), [[0, 1]])


def test_ferplus_label_distribution_trains(tmp_path):
    data = _ferplus_fixture(tmp_path / "fer")
    out = tmp_path / "ferplus"
    _train("--dataset_name", data, "--output_dir", out, "--max_steps", "3", "--label_distribution", "ferplus",
           "--label_distribution_weight", "0.6")
    info = json.loads((out / "run_info.json").read_text())
    assert info["steps"] == 3 and info["splits"] == {"train": 64, "validation": 32}
    assert info["label_distribution"] == "ferplus (weight 0.6)" and "--label_distribution ferplus" in info["command"]
    assert json.loads((out / "validation_report.json").read_text())["metrics"]["samples"] == 32
    assert (out / "README.md").is_file()

    # A Hub model's own loss takes class ids only; the soft-target loss replaces it.
    vit = _tiny_vit(tmp_path / "tiny-vit")
    run_preloaded([ROOT / "train.py", "--dataset_name", data, "--output_dir", tmp_path / "vit", "--model_name_or_path",
                vit, "--labels", "sad", "neutral", "--label_distribution", "ferplus", "--max_steps", "2",
                "--per_device_train_batch_size", "8", "--learning_rate", "1e-4", "--disable_tqdm", "true"])
    info = json.loads((tmp_path / "vit" / "run_info.json").read_text())
    assert info["steps"] == 2 and info["labels"] == ["sad", "neutral"]


def test_ferplus_label_distribution_refuses_what_it_cannot_honour(tmp_path):
    import pyarrow.parquet as pq

    from fer_hf.data import DataError, ferplus_distributions

    with pytest.raises(DataError, match="train_meta.parquet: not found"):
        ferplus_distributions(_ferplus_fixture(tmp_path / "no-meta", meta=False, train_rows=4, eval_rows=4), ["happy"])
    no_fear = _ferplus_fixture(tmp_path / "no-fear", train_rows=4, eval_rows=4) / "train_meta.parquet"
    pq.write_table(pq.read_table(no_fear).drop(["ferplus_fear"]), no_fear)
    with pytest.raises(DataError, match=r"missing vote column\(s\) \['ferplus_fear'\]"):
        ferplus_distributions(no_fear.parent, ["happy", "fear"])
    with pytest.raises(DataError, match="no votes for the class"):
        ferplus_distributions(FER_FIXTURE_DIR, ["happy", "contempt"])
    # Votes that are not the train rows' (here 4 meta rows for 8 train rows) are refused, naming the file.
    short = _ferplus_fixture(tmp_path / "short", train_rows=8, eval_rows=4)
    pq.write_table(pq.read_table(short / "train_meta.parquet").slice(0, 4), short / "train_meta.parquet")
    run = _train("--dataset_name", short, "--label_distribution", "ferplus", "--output_dir", tmp_path / "x",
                 "--max_steps", "1", check=False)
    assert run.returncode != 0 and "train_meta.parquet has 4 rows, the train split 8" in run.stdout, run.stdout[-2000:]


# --- --label_distribution teacher (knowledge distillation) ----------------------------------------


def test_teacher_label_distribution_trains_on_the_teachers_mean_probabilities(tmp_path):
    """Two bundled models teach a happy/sad student; their distributions are predicted once and read back on resume."""
    from datasets import load_dataset

    from fer_hf.evaluation import class_probabilities
    from fer_hf.hub import load_classifier

    data = _ferplus_fixture(tmp_path / "fer", meta=False, train_rows=96)
    out = tmp_path / "student"
    teachers = [str(ROOT / "models" / "fer2013-cnn-fast"), str(ROOT / "models" / "fer2013-cnn")]
    # fp32 (no bf16 fast path), so the teachers' probabilities can be recomputed here to float precision.
    command = ["--dataset_name", data, "--output_dir", out, "--labels", "happy", "sad", "--label_smoothing_factor",
               "0", "--label_distribution", "teacher", "--teacher_models", *teachers, "--cpu_fast_path", "false",
               "--log_level", "info"]
    _train(*command, "--max_steps", "2")
    info = json.loads((out / "run_info.json").read_text())
    assert info["label_distribution"] == "teacher (weight 0.5)" and info["teacher_models"] == teachers
    saved = np.load(out / "teacher_distributions.npz")
    assert saved["names"].tolist() == ["happy", "sad"] and saved["teachers"].tolist() == teachers

    # The saved distributions are the mean over teachers of each one's mirror-averaged happy-vs-sad softmax.
    rows = load_dataset("parquet", data_files=str(data / "train.parquet"), split="train")
    names = rows.features["label"].names
    rows = rows.filter(lambda label: names[label] in ("happy", "sad"), input_columns="label")
    assert saved["labels"].tolist() == [int(names[label] == "sad") for label in rows["label"]] and len(rows) > 10
    expected = np.mean([class_probabilities(*load_classifier(teacher), rows, ["happy", "sad"], flip_tta=True)
                        for teacher in teachers], axis=0)
    np.testing.assert_allclose(saved["distributions"], expected, atol=1e-5)
    # Not the labels: the teachers disagree with some of them and are never fully sure.
    assert 0 < saved["distributions"].max(axis=1).min() < 0.99

    # A resumed run reads the distributions back instead of predicting them again.
    written = (out / "teacher_distributions.npz").stat().st_mtime_ns
    rerun = _train(*command, "--max_steps", "3")
    assert "Teacher distributions read back" in rerun.stdout
    assert (out / "teacher_distributions.npz").stat().st_mtime_ns == written
    assert json.loads((out / "run_info.json").read_text())["steps"] == 3


def test_teacher_models_must_know_the_datasets_classes(tmp_path):
    # The pairing of --teacher_models with --label_distribution teacher is checked with the other flags above.
    from tests.apptools import save_tiny_model

    happy_sad = str(save_tiny_model(tmp_path / "happy-sad", ["happy", "sad"]))  # knows two of the seven classes
    [end] = _refusals(tmp_path, [["--dataset_name", FER_FIXTURE_DIR, "--label_distribution", "teacher",
                                  "--teacher_models", happy_sad, "--label_smoothing_factor", "0",
                                  "--max_train_samples", "32", "--max_steps", "1"]])
    assert end.startswith("ValueError: ") and "no class ['angry'" in end, end


# --- class-balanced loss, FER+ votes for chosen classes, device augmentation -----------------------


def test_class_weights_make_the_mean_training_row_weigh_one():
    from fer_hf.training import class_weights, soft_target_cross_entropy

    labels = np.array([0] * 8 + [1] * 2 + [2] * 6)  # class 3 has no rows
    assert class_weights(labels, 4, "none") is None
    for weighting, power in (("inverse", 1.0), ("inverse_sqrt", 0.5)):
        weights = class_weights(labels, 4, weighting)
        counts = np.array([8, 2, 6, 0])
        assert weights[3] == 0 and np.isclose((weights.numpy() * counts).sum() / counts.sum(), 1)
        # count ** -power, up to the common scale: the rare class weighs (8 / 2) ** power times the common one.
        assert np.isclose(weights[1] / weights[0], 4**power)
    # The loss weighs each class's term: a row of class c counts w_c times, for class ids and distributions alike.
    weights = class_weights(labels, 4, "inverse")
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5], [0.5, 0.5, 1.0, 0.0]])
    ids = torch.tensor([0, 1])
    plain = torch.nn.functional.cross_entropy(logits, ids, reduction="none")
    expected = (weights[ids] * plain).mean()
    outputs = {"logits": logits}
    assert torch.isclose(soft_target_cross_entropy(outputs, ids, class_weights=weights), expected)
    assert torch.isclose(soft_target_cross_entropy(outputs, torch.eye(4)[ids], class_weights=weights), expected)


def test_fer_plus_votes_can_be_given_to_chosen_classes_only():
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    from fer_hf.data import DataError
    from fer_hf.training import add_soft_targets

    features = Features({"label": ClassLabel(names=["a", "b", "c"]), "ferplus_votes": Sequence(Value("float32"))})
    rows = Dataset.from_dict({"label": [0, 1, 2], "ferplus_votes": [[0.5, 0.5, 0]] * 3}, features=features)
    common = {"label_distribution": "ferplus", "weight": 0.5, "label_smoothing": 0.0, "teacher_models": None,
              "training_args": None}
    targets = add_soft_targets(rows, distribution_classes=["b", "c"], **common)["target"]
    np.testing.assert_allclose(targets, [[1, 0, 0], [0.25, 0.75, 0], [0.25, 0.25, 0.5]], atol=1e-6)
    with pytest.raises(DataError, match=r"--label_distribution_classes \['x'\]"):
        add_soft_targets(rows, distribution_classes=["x"], **common)


def test_the_new_flags_are_refused_by_name_when_they_cannot_work(tmp_path):
    data = ["--dataset_name", FER_FIXTURE_DIR]
    cases = {
        "--random_erasing is part of the device augmentation": [*data, "--random_erasing", "0.25"],
        "--random_erasing 1.5: a probability must be in [0, 1]": [*data, "--device_augment", "true",
                                                                  "--random_erasing", "1.5"],
        "--label_distribution_classes needs --label_distribution": [*data, "--label_distribution_classes", "fear"],
    }
    ends = _refusals(tmp_path, list(cases.values()))
    for (message, case), end in zip(cases.items(), ends):
        assert end.startswith("ValueError: ") and message in end, (case, end)


def test_class_weighted_device_augmented_training_with_ferplus_votes_for_chosen_classes(tmp_path):
    data = _ferplus_fixture(tmp_path / "fer")
    out = tmp_path / "weighted"
    _train("--dataset_name", data, "--output_dir", out, "--max_steps", "2", "--class_weighting", "inverse_sqrt",
           "--label_distribution", "ferplus", "--label_distribution_classes", "disgust", "fear", "sad",
           "--device_augment", "true", "--random_erasing", "0.5", "--mixup_alpha", "0.2", "--log_level", "info",
           "--logging_steps", "1")
    info = json.loads((out / "run_info.json").read_text())
    assert info["steps"] == 2 and info["class_weighting"] == "inverse_sqrt"
    assert info["label_distribution_classes"] == ["disgust", "fear", "sad"]
    assert info["device_augment"] == {"random_erasing": 0.5} and info["tta_metrics"] is None
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert all(np.isfinite(entry["loss"]) for entry in history if "loss" in entry)
    # Trainer's own evaluation of the device-held validation faces is the reloaded model's report, as without it.
    report = json.loads((out / "validation_report.json").read_text())["metrics"]
    assert abs(json.loads((out / "eval_results.json").read_text())["eval_accuracy"] - report["accuracy"]) <= 2 / 32
