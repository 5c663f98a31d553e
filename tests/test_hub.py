"""The Hub round trip: train -> push -> pull by repo id, against tests/hub_server.py's LoopbackHub.

Every push and pull runs in a fresh process with its own empty HF_HOME (tests/hubtools.py). Pulls that
must work without our package run with PYTHONPATH="" in a folder outside the repo, so the only FER code
they can use is the repo's own copy (trust_remote_code=True).

The hub asks for Git LFS from 1 KB on, as the real Hub does for weights; it cannot speak Xet, so the
clients run with HF_HUB_DISABLE_XET=1 (datasets' parquet shards need the LFS path anyway).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests import freshpython
from tests.conftest import FER_FIXTURE_DIR, ROOT, write_fer_csv
from tests.hub_server import LoopbackHub
from tests.hubtools import hub_env, run_hub_python

SECRET = "hf_aliceSecretToken0123456789"  # alice's token: must never show up in logs, cards or pushed files
REPO = "alice/fer-tiny"
# The tiny FER-2013 fixture (112 training, 56 PublicTest faces): a tiny model trains on it in seconds.
EVAL_SAMPLES = 48  # PublicTest rows the runs evaluate on; the faces below come after them
TRAIN = [ROOT / "train.py", "--dataset_name", FER_FIXTURE_DIR, "--model_variant", "tiny", "--max_steps", "3",
         "--max_train_samples", "96", "--max_eval_samples", str(EVAL_SAMPLES), "--per_device_train_batch_size", "32",
         "--disable_tqdm", "true"]
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")

# Predictions of every target ({"mode", "model", "revision"}) on ARGS["images"]: logits and pipeline scores.
# mode "remote": the repo's own code (trust_remote_code=True), run before anything imports fer_hf;
# "package": fer_hf imported, the Auto classes and pipeline; "load_classifier": what the demo uses.
PREDICT = """
import importlib.util
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

if ARGS["without_fer_hf"]:
    assert importlib.util.find_spec("fer_hf") is None, "fer_hf must not be importable here"
images = [Image.open(path) for path in ARGS["images"]]
for target in ARGS["targets"]:
    if target["mode"] == "load_classifier":
        from fer_hf.hub import load_classifier
        model, processor = load_classifier(target["model"], revision=target["revision"])
        classifier = pipeline("image-classification", model=model, image_processor=processor)
    else:
        if target["mode"] == "package":
            import fer_hf  # registers the FER CNN: from here on, our package's code
        kwargs = {"revision": target["revision"], "trust_remote_code": target["mode"] == "remote"}
        model = AutoModelForImageClassification.from_pretrained(target["model"], **kwargs).eval()
        processor = AutoImageProcessor.from_pretrained(target["model"], **kwargs)
        classifier = pipeline("image-classification", model=target["model"], **kwargs)
    with torch.no_grad():
        logits = model(**processor(images, return_tensors="pt")).logits
    emit({"classes": [type(model).__module__, type(model).__name__, type(processor).__name__],
          "logits": logits.tolist(),
          "pipeline": [classifier(image, top_k=model.config.num_labels) for image in images]})
"""


def _check_no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text, "the token leaked into a log"


def _check_hub_has_no_secret(hub) -> None:
    for blob in hub.blob_dir.iterdir():  # every file ever pushed, to any repo, at any revision
        assert SECRET.encode() not in blob.read_bytes(), f"the token was pushed in {blob}"
    assert SECRET not in repr(hub.requests)


def _python(hub, args, *, hf_home: Path, token: str | None = SECRET, check: bool = True) -> subprocess.CompletedProcess:
    """Runs `python ARGS` from the repo root against `hub`, in a fresh process with its own HF_HOME."""
    hf_home.mkdir(parents=True, exist_ok=True)
    result = freshpython.run(args, cwd=ROOT, timeout=600, env=hub_env(hub, hf_home, token=token, disable_xet=True))
    _check_no_secret(result.stdout, result.stderr)
    if check and result.returncode != 0:
        raise AssertionError(f"python {args} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def _snippet(hub, code: str, *, hf_home: Path, fer_hf: bool = True, token: str | None = None, **options):
    """`run_hub_python` in `hf_home` (outside the repo); without fer_hf, PYTHONPATH is emptied."""
    run = run_hub_python(hub, code, hf_home=hf_home, token=token, disable_xet=True,
                         extra=None if fer_hf else {"PYTHONPATH": ""}, **options)
    _check_no_secret(run.stdout, run.stderr)
    return run


def _predict(hub, targets: list[tuple[str, str, str | None]], images: list[str], hf_home: Path, **options) -> list[dict]:
    """Runs PREDICT on (mode, model, revision) targets in one fresh process; fer_hf is importable unless all are remote."""
    without = all(mode == "remote" for mode, _, _ in targets)
    args = {"without_fer_hf": without, "images": images,
            "targets": [{"mode": mode, "model": model, "revision": revision} for mode, model, revision in targets]}
    return _snippet(hub, PREDICT, hf_home=hf_home, fer_hf=not without, args=args, timeout=300, **options).results


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _hub_files(hub, repo_id: str, hf_home: Path, revision: str | None = None) -> list[str]:
    return _snippet(hub, """
        from huggingface_hub import HfApi
        emit(HfApi().list_repo_files(ARGS["repo"], revision=ARGS["revision"]))
    """, hf_home=hf_home, args={"repo": repo_id, "revision": revision}).result


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with LoopbackHub(tmp_path_factory.mktemp("hub"), tokens={SECRET: "alice"}, lfs_threshold=1024) as server:
        yield server


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> list[str]:
    """Four FER-2013 faces the tiny runs did not evaluate on, as PNG files."""
    from datasets import load_dataset

    folder = tmp_path_factory.mktemp("faces")
    rows = load_dataset("parquet", data_files=str(FER_FIXTURE_DIR / "publictest.parquet"), split="train")
    rows = rows.select(range(EVAL_SAMPLES, EVAL_SAMPLES + 4))
    for i, image in enumerate(rows["image"]):
        image.save(folder / f"face{i}.png")
    return [str(folder / f"face{i}.png") for i in range(4)]


@pytest.fixture(scope="module")
def trained(hub, tmp_path_factory, faces):
    """`train.py --push_to_hub`: first with a wrong token, then the same command with alice's token."""
    root = tmp_path_factory.mktemp("trained")
    out = root / "run1"
    command = [*TRAIN, "--seed", "0", "--output_dir", out, "--push_to_hub", "--hub_model_id", REPO]
    wrong_token = _python(hub, command, hf_home=root / "hf_wrong", token="hf_wrong_token", check=False)
    pushed = _python(hub, command, hf_home=root / "hf_up")
    # What the folder predicts with our package's code (the reference for every pull), and a first pull by
    # repo id with the demo's loader, in a fresh process with an empty cache.
    reference, pulled = _predict(hub, [("package", str(out), None), ("load_classifier", REPO, None)], faces,
                                 root / "hf_down")
    return SimpleNamespace(dir=out, info=json.loads((out / "run_info.json").read_text()), commit=hub.head(REPO),
                           wrong_token=wrong_token, log=pushed.stdout + pushed.stderr, reference=reference,
                           pulled_with_fer_hf=pulled)


def test_train_with_a_wrong_token_stops_before_training_then_the_same_command_pushes(hub, trained):
    failed = trained.wrong_token
    assert failed.returncode != 0
    assert "the Hub rejected the token (401 Unauthorized)" in failed.stderr and "Nothing was trained" in failed.stderr
    assert "Traceback" not in failed.stderr and "hf_wrong_token" not in failed.stdout + failed.stderr
    # The same command with the right token trained and pushed once: the repo's first commit, then ours.
    assert hub.history(REPO)[-2] == trained.commit
    assert f"Pushed to {REPO}: commit {trained.commit}" in trained.log


def test_pull_by_repo_id_gives_identical_outputs_without_fer_hf(hub, trained, faces, tmp_path):
    remote = _predict(hub, [("remote", REPO, None)], faces, tmp_path / "hf_remote")[0]
    assert remote["classes"][0].startswith("transformers_modules.")  # the repo's copy of our code ran
    assert remote["classes"][1:] == ["FerCNNForImageClassification", "FerImageProcessor"]
    assert remote["logits"] == trained.reference["logits"]
    assert remote["pipeline"] == trained.reference["pipeline"]
    # The demo's loader, in a process with fer_hf: our package's code, the same numbers.
    pulled = trained.pulled_with_fer_hf
    assert pulled["classes"] == ["fer_hf.model.modeling_fer", "FerCNNForImageClassification", "FerImageProcessor"]
    assert pulled["logits"] == trained.reference["logits"] and pulled["pipeline"] == trained.reference["pipeline"]


def test_the_repo_holds_the_model_code_card_and_reports_but_no_pickles(hub, trained, tmp_path):
    files = _hub_files(hub, REPO, tmp_path / "hf", revision=trained.commit)
    for name in ("README.md", "config.json", "model.safetensors", "preprocessor_config.json", "configuration_fer.py",
                 "modeling_fer.py", "image_processing_fer.py", "validation_confusion_matrix.png",
                 "validation_report.json", "run_info.json", "training_curves.png"):
        assert name in files, name
    assert not [f for f in files if f.endswith(PICKLE_SUFFIXES) or f.startswith(("checkpoint-", "runs/"))], files
    assert hub.file_bytes(REPO, "model.safetensors", trained.commit) == (trained.dir / "model.safetensors").read_bytes()
    assert "auto_map" in json.loads(hub.file_bytes(REPO, "config.json", trained.commit))
    card = hub.file_bytes(REPO, "README.md", trained.commit).decode()
    assert card == (trained.dir / "README.md").read_text()  # the local card is the pushed one
    assert "](validation_confusion_matrix.png)" in card
    assert trained.info["command"] in card and trained.info["hardware"] in card


def test_card_eval_results_hold_the_runs_real_metrics(hub, trained, tmp_path):
    card = _snippet(hub, """
        from huggingface_hub import ModelCard
        card = ModelCard.load(ARGS["repo"])
        emit({"data": card.data.to_dict(), "text": card.text,
              "results": [[r.dataset_split, r.metric_type, r.metric_value] for r in card.data.eval_results]})
    """, hf_home=tmp_path / "hf", args={"repo": REPO}).result
    validation = trained.info["metrics"]["validation"]
    # The fixture is FER-2013's layout: the card names fer_hf's validation split by its official name.
    assert card["results"] == [["PublicTest", "accuracy", validation["accuracy"]], ["PublicTest", "f1", validation["macro_f1"]]]
    report = json.loads((trained.dir / "validation_report.json").read_text())["metrics"]
    assert report["accuracy"] == validation["accuracy"]
    trainer_eval = json.loads((trained.dir / "eval_results.json").read_text())
    # Trainer's own evaluation runs under bf16 autocast, the card's figure in fp32 on the saved model: a
    # model trained a few steps has near-ties that bf16 can flip.
    assert abs(trainer_eval["eval_accuracy"] - validation["accuracy"]) <= 2 / validation["samples"]
    assert card["data"]["pipeline_tag"] == "image-classification" and card["data"]["library_name"] == "transformers"
    assert "license" not in card["data"]  # FER-2013 has no stated license: the card says so instead
    row = f"| PublicTest | {validation['samples']} | {100 * validation['accuracy']:.2f}% | {validation['macro_f1']:.3f} |"
    assert row in card["text"]
    assert ", ".join(trained.info["labels"]) in card["text"]


def test_the_cards_code_snippets_run_against_the_hub(hub, trained, tmp_path):
    # The face pipeline with transformers alone, then fer_hf's recognizer (no ONNX files in this repo: no
    # third snippet). Both read real photos with faces.
    blocks = re.findall(r"```python\n(.*?)```", hub.file_bytes(REPO, "README.md").decode(), flags=re.S)
    assert len(blocks) == 2 and "trust_remote_code=True" in blocks[0] and "fer_hf" in blocks[1]
    labels = trained.info["labels"]
    for name, code, with_fer_hf in (("remote", blocks[0], False), ("package", blocks[1], True)):
        home = tmp_path / name
        home.mkdir()
        for target in ("photo.jpg", "a.jpg", "b.jpg"):  # the files the snippets label
            shutil.copy(ROOT / "tests" / "fixtures" / "photos" / "happy_man.jpg", home / target)
        run = _snippet(hub, code, hf_home=home, fer_hf=with_fer_hf, timeout=300)
        printed = re.findall(r"'label': '(\w+)'", run.stdout) if not with_fer_hf else \
            [line.split()[-2] for line in run.stdout.strip().splitlines() if line.startswith("(")]
        assert printed and set(printed) <= set(labels), run.stdout
        if not with_fer_hf:
            assert "'box': {'xmin'" in run.stdout and run.stdout.count("'label'") >= 4, run.stdout


def test_a_second_push_is_a_new_revision_and_the_first_loads_by_its_commit(hub, trained, faces, tmp_path):
    out = tmp_path / "run2"
    # The riskiest way to pass the token: on the command line. It must still end up nowhere.
    run = _python(hub, [*TRAIN, "--seed", "1", "--output_dir", out, "--push_to_hub", "--hub_model_id", REPO,
                        "--hub_token", SECRET], hf_home=tmp_path / "hf_up", token=None)
    first, second = trained.commit, hub.head(REPO)
    assert hub.history(REPO)[:2] == [second, first]
    assert hub.file_bytes(REPO, "model.safetensors") == (out / "model.safetensors").read_bytes()
    assert hub.file_bytes(REPO, "model.safetensors", first) == (trained.dir / "model.safetensors").read_bytes()

    at_first, at_main = _predict(hub, [("remote", REPO, first), ("remote", REPO, "main")], faces, tmp_path / "hf_down")
    assert at_first["logits"] == trained.reference["logits"]
    assert at_main["logits"] != at_first["logits"]

    info = json.loads((out / "run_info.json").read_text())
    assert "--hub_token '<HUB_TOKEN>'" in info["command"] or "--hub_token <HUB_TOKEN>" in info["command"]
    _check_no_secret(run.stdout, run.stderr, (out / "README.md").read_text(), (out / "run_info.json").read_text())
    _check_hub_has_no_secret(hub)


def test_offline_reload_from_the_cache_sends_no_request(hub, trained, faces, tmp_path):
    # The repo's code (pipeline, Auto classes) and the demo's loader, at main and at a pinned commit.
    targets = [(mode, REPO, revision) for mode in ("remote", "load_classifier") for revision in (None, trained.commit)]
    online = _predict(hub, targets, faces, tmp_path / "hf")
    hub.clear_requests()
    offline = _predict(hub, targets, faces, tmp_path / "hf", offline=True)
    assert hub.requests == []
    assert offline == online


def test_push_faults_give_a_clear_error_keep_the_folder_and_the_same_command_then_works(hub, trained, fer_rows, tmp_path):
    folder = shutil.copytree(trained.dir, tmp_path / "model")
    repo = "alice/fer-cli"
    push = ["-m", "fer_hf", "push", folder, repo]
    evaluate = ["-m", "fer_hf", "evaluate", repo, "--dataset_name", write_fer_csv(tmp_path / "fer.csv", fer_rows)]
    before = _digest(folder)

    missing = _python(hub, evaluate, hf_home=tmp_path / "hf_eval1", check=False)
    assert missing.returncode == 1 and "no such repository on the Hub" in missing.stderr, missing.stderr

    faults = [
        ("no token", {"token": None}, "no Hugging Face token found: set HF_TOKEN or run `hf auth login`"),
        ("wrong token", {"token": "hf_wrong_token"}, "the Hub rejected the token (401 Unauthorized)"),
        ("dropped connection", {}, "the connection to the Hub"),
    ]
    for name, options, message in faults:
        if name == "dropped connection":
            hub.fail_next("drop", path_contains=f"/api/models/{repo}/commit/")
        result = _python(hub, push, hf_home=tmp_path / name.replace(" ", "_"), check=False, **options)
        assert result.returncode == 1, (name, result.stdout, result.stderr)
        assert message in result.stderr and "is unchanged; run the same command again" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert _digest(folder) == before, f"{name}: the local folder changed"
    assert ("POST", f"/api/models/{repo}/commit/main") in hub.requests  # the drop did hit the commit
    assert len(hub.history(repo)) == 1  # the repo exists (create_repo went through), with its initial commit only

    pushed = _python(hub, push, hf_home=tmp_path / "hf_ok")
    assert f"commit {hub.head(repo)}" in pushed.stdout
    after = _digest(folder)
    assert {k: v for k, v in after.items() if k != "README.md"} == {k: v for k, v in before.items() if k != "README.md"}
    assert f'model="{repo}"' in (folder / "README.md").read_text()  # the card now names the repo it is in
    assert hub.file_bytes(repo, "README.md") == (folder / "README.md").read_bytes()

    found = _python(hub, evaluate, hf_home=tmp_path / "hf_eval2")
    assert "accuracy" in found.stdout and "samples" in found.stdout
    _check_hub_has_no_secret(hub)


def test_push_dataset_then_load_it_by_hub_id(hub, fer_rows, tmp_path):
    csv = write_fer_csv(tmp_path / "fer2013.csv", fer_rows)
    pushed = _python(hub, ["-m", "fer_hf", "push-dataset", csv, "alice/fer2013"], hf_home=tmp_path / "hf_up")
    assert "--dataset_name alice/fer2013" in pushed.stdout
    loaded = _snippet(hub, """
        import hashlib
        import numpy as np
        from fer_hf.data import load_fer_dataset
        dataset = load_fer_dataset("alice/fer2013")
        emit({split: {"names": part.features["label"].names,
                      "rows": [[label, hashlib.sha256(np.asarray(image.convert("L")).tobytes()).hexdigest()]
                               for image, label in zip(part["image"], part["label"])]}
              for split, part in dataset.items()})
    """, hf_home=tmp_path / "hf_down", timeout=300).result
    from fer_hf import FER2013_LABELS

    expected = {}
    for pixels, label, split in fer_rows:
        expected.setdefault(split, []).append([label, hashlib.sha256(pixels.tobytes()).hexdigest()])
    assert {split: part["rows"] for split, part in loaded.items()} == expected
    assert all(part["names"] == FER2013_LABELS for part in loaded.values())
    _check_hub_has_no_secret(hub)


def test_pickle_only_weights_are_refused_unless_allowed(tmp_path):
    # No Hub needed: the same refusal applies to local folders and to downloaded repos.
    import torch

    from fer_hf import FerCNNForImageClassification, FerConfig, FerImageProcessor
    from fer_hf.hub import load_classifier

    model = FerCNNForImageClassification(FerConfig(hidden_sizes=[4, 8], depths=[1, 1])).eval()
    model.save_pretrained(tmp_path)
    FerImageProcessor().save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(OSError, match="no safetensors weights.*allow_pickle=True"):
        load_classifier(tmp_path)
    loaded, _ = load_classifier(tmp_path, allow_pickle=True)  # the explicit opt-in
    pixel_values = torch.zeros(1, 1, 48, 48)
    assert torch.equal(loaded(pixel_values).logits, model(pixel_values).logits)


def test_an_installed_fer_hf_carries_the_model_card_template(tmp_path, monkeypatch):
    # `pip install .` copies the package only; fer_hf/model_card.md (a link to the top-level template)
    # must come along, or `python -m fer_hf push` and train.py's card fail outside a clone.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, symlinks=True,
                    ignore=shutil.ignore_patterns(".git", "runs", "models", "tests", "benchmarks", "docs", "build",
                                                  "*.egg-info", "__pycache__"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", target, source], check=True, capture_output=True)
    assert (target / "fer_hf" / "model_card.md").is_file() and not (target / "fer_hf" / "model_card.md").is_symlink()
    folder = ROOT / "models" / "fer2013-cnn-fast"
    script = ("import sys, fer_hf; from fer_hf.hub import build_model_card; "
              f"assert fer_hf.__file__.startswith({str(target)!r}), fer_hf.__file__; "
              f"sys.stdout.write(str(build_model_card({str(folder)!r})))")
    run = freshpython.run(["-c", script], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(target)})
    assert run.returncode == 0, run.stderr[-4000:]
    installed = run.stdout
    import fer_hf.hub
    from fer_hf.hub import build_model_card

    # An installed package has no test fixtures, so its card shows no example output; otherwise the same.
    assert "Its output on a photo" not in installed
    monkeypatch.setattr(fer_hf.hub, "EXAMPLE_PHOTO", tmp_path / "absent.jpg")
    assert installed == str(build_model_card(folder))
