"""Sharing models and datasets on the Hugging Face Hub, and loading them back.

- `write_model_card`: the model card (README.md) of a training run's folder: `model_card.md` filled with
  the run's own `run_info.json` and reports, with `model-index` metadata the Hub reads.
- `push_folder`: uploads such a folder (safetensors weights, image processor, code files, card, reports)
  to a model repo, as one commit.
- `push_dataset`: any source `load_fer_dataset` reads, as parquet files in a dataset repo.
- `load_classifier`: the one loader of the demo and of users: a local folder, or a Hub repo id at a
  revision resolved once to a commit.

No function here takes the token from the command line or from a file in the project: `huggingface_hub`
reads it from `HF_TOKEN` or from `hf auth login` (`token=` exists for library callers).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import (
    CommitInfo,
    EvalResult,
    HfApi,
    ModelCard,
    ModelCardData,
    constants,
    get_token,
    resolve_revision,
)
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalTokenNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import filter_repo_objects
from transformers import AutoImageProcessor, AutoModelForImageClassification

from .model.configuration_fer import FER2013_LABELS
from .model import copy_model_code

logger = logging.getLogger(__name__)

# The repo's top-level model_card.md, through a link that pip install copies into the package.
TEMPLATE_PATH = Path(__file__).parent / "model_card.md"
WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json")
# Where app.py and the CLI look first for a model when none is given: the 7-class default (its happy-vs-sad
# view is `--labels happy sad`).
BUNDLED_MODELS = ("models/fer2013-cnn",)

# Never uploaded. Checkpoints are resumable training state (optimizer, scheduler, RNG) that only this
# run needs; runs/ holds TensorBoard logs. Pickles (training_args.bin, *.pt, ...) run arbitrary code when
# loaded, and training_args.bin holds a `--hub_token` in clear: the Hub gets safetensors weights only.
PUSH_IGNORE_PATTERNS = [
    "checkpoint-*", "runs/*", "_*", ".*", "*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt", "*.lock",
    "teacher_distributions.npz",  # train.py's cache of its teachers' predictions, like a checkpoint
]


# --- model card ---------------------------------------------------------------------------------


def build_model_card(
    output_dir: str | Path,
    repo_id: str | None = None,
    revision: str | None = None,
    *,
    template_path: str | Path = TEMPLATE_PATH,
) -> ModelCard:
    """Renders the model card of a training run's folder, without writing it.

    Every figure comes from the folder itself: `run_info.json` (written by train.py) and the
    `{split}_report.json` files.

    No `license` is set: FER-2013 was published without one, so we cannot state a license for weights
    trained on it (`license: other` would claim a custom license that does not exist); the card's
    limitations section says so.

    Args:
        output_dir: A folder written by train.py.
        repo_id: The Hub repo the card will live in, used in its code snippets. None: the folder path.
        revision: The branch the snippets load (None: "main" for a repo, nothing for a folder).
        template_path: The Jinja2 template.
    """
    folder = Path(output_dir)
    info = json.loads((folder / "run_info.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    metrics: dict[str, dict] = info["metrics"]
    hub_dataset = info.get("hub_dataset")
    data = describe_dataset(info)
    model_name = (repo_id or folder.resolve().name).split("/")[-1]

    eval_results = []
    for split, split_metrics in metrics.items():
        common = {"task_type": "image-classification", "task_name": "Facial expression recognition",
                  "dataset_type": data["type"], "dataset_name": data["name"], "dataset_split": data["splits"][split]}
        eval_results += [
            EvalResult(**common, metric_type="accuracy", metric_name="Accuracy", metric_value=split_metrics["accuracy"]),
            EvalResult(**common, metric_type="f1", metric_name="Macro F1", metric_args={"average": "macro"},
                       metric_value=split_metrics["macro_f1"]),
        ]
    card_data = ModelCardData(
        model_name=model_name,
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=["image-classification", "facial-expression-recognition", "fer-hf", config.get("model_type", "model")],
        datasets=[hub_dataset] if hub_dataset else None,
        base_model=info.get("hub_base_model"),
        metrics=["accuracy", "f1"],
        eval_results=eval_results or None,
    )
    # The confusion matrix and class balance of the held-out split that matters most.
    shown_split = next((s for s in ("test", "validation") if s in metrics), next(iter(metrics), None))
    image = f"{shown_split}_confusion_matrix.png"
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path),
        model_name=model_name,
        labels=info["labels"],
        architecture=(config.get("architectures") or [config.get("model_type", "model")])[0],
        parameters=f"{info['parameters']:,}",
        dataset=data,
        metrics=metrics,
        confusion_matrix=image if shown_split and (folder / image).is_file() else None,
        confusion_split=shown_split,
        splits=info["splits"],
        command=info["command"],
        hardware=info["hardware"],
        precision=info["precision"],
        batch_norm=info.get("batch_norm"),  # absent from runs before it existed
        head_from_parent=info.get("head_from_parent"),
        train_time=_run_time(info),
        steps=info["steps"],
        started_from=info["model"],
        epochs=info["epochs"],
        versions=info["versions"],
        repo_id=repo_id or str(output_dir),
        revision=(revision or "main") if repo_id else None,
        balance=_class_balance(folder, shown_split, info["labels"]),
        weaknesses=_class_weaknesses(folder, shown_split, info["labels"]),
        example=_example_output(folder),
        onnx=(folder / "onnx" / "model.onnx").is_file(),
        calibration=_calibration(folder),
        # How a model was made when its one command does not tell it (e.g. several training runs).
        notes=(folder / "TRAINING_NOTES.md").read_text().strip() if (folder / "TRAINING_NOTES.md").is_file() else None,
    )


def _calibration(folder: Path) -> dict | None:
    """The calibration report `python -m fer_hf calibrate` wrote (calibration.json), as the card shows it; None
    for a model that was never calibrated."""
    from .calibration import MODES

    path = folder / "calibration.json"
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    for mode, figures in report["modes"].items():
        figures["name"] = MODES[mode][1]
        halves = figures["split_half"]
        figures["held_out_before_ece"] = sum(h["before"]["ece"] for h in halves) / len(halves)
        figures["held_out_ece"] = sum(h["after"]["ece"] for h in halves) / len(halves)
    diagram = f"{report['split']}_reliability.png"
    report["diagram"] = diagram if (folder / diagram).is_file() else None
    return report


def _class_weaknesses(folder: Path, split: str | None, labels: list[str]) -> list[dict]:
    """The classes recalled worst on `split` (below the mean recall, at most three), each with the class
    it is most often mistaken for when the report holds the confusion matrix."""
    path = folder / f"{split}_report.json"
    if split is None or len(labels) < 3 or not path.is_file():
        return []
    report = json.loads(path.read_text())
    recall = {name: report["per_class"][name]["recall"] for name in labels if name in report["per_class"]}
    mean = sum(recall.values()) / max(len(recall), 1)
    matrix = report.get("confusion_matrix")
    weak = []
    for name in sorted((n for n in recall if recall[n] < mean), key=recall.get)[:3]:
        row = matrix[labels.index(name)] if matrix else None
        mistaken = None
        if row:
            wrong = [(count, other) for other, count in zip(labels, row) if other != name]
            count, other = max(wrong)
            mistaken = {"label": other, "share": count / max(sum(row), 1)} if count else None
        weak.append({"label": name, "recall": recall[name], "mistaken_for": mistaken})
    return weak


# A photo from the project's test fixtures: present in a clone, absent from an installed package.
EXAMPLE_PHOTO = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "photos" / "happy_man.jpg"


def _example_output(folder: Path) -> str | None:
    """The face pipeline's real output on `EXAMPLE_PHOTO` with this model, as the card shows it; None
    without the photo or the pipeline (a folder saved before pipelines travelled with models)."""
    config = json.loads((folder / "config.json").read_text())
    if not EXAMPLE_PHOTO.is_file() or "facial-expression-recognition" not in config.get("custom_pipelines", {}):
        return None
    from transformers import pipeline

    from .model.pipeline_fer import TASK, FacialExpressionRecognitionPipeline

    fer = pipeline(TASK, model=str(folder), pipeline_class=FacialExpressionRecognitionPipeline, trust_remote_code=False)
    faces = fer(str(EXAMPLE_PHOTO))
    shown = [{"box": face["box"], "label": face["label"], "score": round(face["score"], 3),
              "scores": {name: round(p, 3) for name, p in face["scores"].items()}, "unsure": face["unsure"]}
             for face in faces]
    return "[\n" + ",\n".join(f"  {json.dumps(face)}" for face in shown) + "\n]"


# FER-2013's official splits, faces per class (the `Usage` column of fer2013.csv): how a run's data is
# recognised as FER-2013 when its path does not say so, and how many faces its PublicTest has.
FER2013_SPLIT_FACES = {
    "Training": dict(zip(FER2013_LABELS, (3995, 436, 4097, 7215, 4830, 3171, 4965))),
    "PublicTest": dict(zip(FER2013_LABELS, (467, 56, 496, 895, 653, 415, 607))),
}


def describe_dataset(info: dict) -> dict:
    """How the card names a run's data and splits, from its `run_info.json`.

    FER-2013 (a `fer2013` folder or file, the original CSV, the Kaggle image folders, or any source with
    FER-2013's split sizes) is named "FER-2013", and its splits by their official names: fer_hf's
    `validation` is PublicTest, `test` PrivateTest. Other sources keep their names (a Hub id, a folder's
    name); the test split of a photo folder is its held-out test photos.

    Returns:
        `name` and `type` (the model-index dataset), `splits` (our split name -> the card's), `about`
        (one sentence on the scored split, or None) and `added` (sources of `--add_train_dataset`).
    """
    labels, splits = info["labels"], info["splits"]
    hub_dataset = info.get("hub_dataset")
    path = Path(info["dataset"])
    added = _added_train_sources(info.get("command", ""))
    if hub_dataset or not _is_fer2013(path, labels, splits):
        photos = not hub_dataset and not path.suffix and set(splits) == {"train", "validation", "test"}
        names = {split: split for split in splits}
        if photos:
            names["test"] = "held-out test photos"
        about = f"The {names['test']} were never trained on nor used to pick the model." if photos else None
        return {"name": hub_dataset or path.name, "type": hub_dataset or path.stem, "splits": names,
                "about": about, "added": added}
    names = {split: split for split in splits}
    if "validation" in splits:
        names["validation"] = "PublicTest"
    if "test" in splits:
        # Without a PublicTest split, the test split is the Kaggle test folder: PublicTest and PrivateTest.
        names["test"] = "PrivateTest" if "validation" in splits else "test (PublicTest and PrivateTest)"
    about = None
    if "validation" in splits and set(labels) <= set(FER2013_LABELS):
        public = FER2013_SPLIT_FACES["PublicTest"]
        faces = sum(public[label] for label in labels)
        subset = len(labels) < len(FER2013_LABELS)
        scored = f"its {faces:,} {_joined(labels)} faces" if subset else f"its {faces:,} faces"
        about = f"PublicTest is FER-2013's public test split ({sum(public.values()):,} faces), never trained on"
        if subset:
            about += f"; this model is scored on {scored}"
        samples = info.get("metrics", {}).get("validation", {}).get("samples")
        if samples is not None and samples != faces:  # a run with --max_eval_samples
            about += f"; the figures below are on {samples:,} of {scored}"
        about += "."
    return {"name": "FER-2013", "type": "fer2013", "splits": names, "about": about, "added": added}


def _is_fer2013(path: Path, labels: list[str], splits: dict[str, int]) -> bool:
    if path.suffix.lower() == ".csv":  # load_fer_dataset reads FER-2013's CSV layout only
        return True
    if "".join(c for c in path.stem.lower() if c.isalnum()) == "fer2013":
        return True
    if not set(labels) <= set(FER2013_LABELS):
        return False
    faces = {name: sum(counts[label] for label in labels) for name, counts in FER2013_SPLIT_FACES.items()}
    if splits.get("train") == faces["Training"] or splits.get("validation") == faces["PublicTest"]:
        return True
    # The Kaggle image folders: train/<class>/ with FER-2013's class names.
    train = path / "train"
    classes = {p.name.lower() for p in train.iterdir() if p.is_dir()} if train.is_dir() else set()
    return bool(classes) and classes <= set(FER2013_LABELS)


def _added_train_sources(command: str) -> list[str]:
    """The names of the `--add_train_dataset` sources in a train.py command."""
    try:
        words = shlex.split(command)
    except ValueError:
        return []
    if "--add_train_dataset" not in words:
        return []
    sources = []
    for word in words[words.index("--add_train_dataset") + 1:]:
        if word.startswith("--"):
            break
        # A Hub id (`user/name`) as load_fer_dataset tells it apart from a path; a path by its last part.
        hub_id = word.count("/") == 1 and not word.startswith((".", "/", "~"))
        sources.append(word if hub_id else Path(word).name)
    return sources


def _joined(words: list[str]) -> str:
    return ", ".join(words[:-1]) + f" and {words[-1]}" if len(words) > 1 else "".join(words)


def write_model_card(output_dir: str | Path, repo_id: str | None = None, revision: str | None = None) -> ModelCard:
    """Renders the model card (see `build_model_card`) into `output_dir/README.md` and returns it."""
    card = build_model_card(output_dir, repo_id, revision)
    card.save(Path(output_dir) / "README.md")
    return card


def _run_time(info: dict) -> str:
    parts = []
    if info.get("train_runtime_s") is not None:
        parts.append(f"{_duration(info['train_runtime_s'])} of training")
    if info.get("wall_time_s") is not None:
        # A resumed run's earlier parts count in the training time, not in this command's wall time.
        last = f"the last part (resumed from {info['resumed_from']})" if info.get("resumed_from") else "the whole run"
        parts.append(f"{_duration(info['wall_time_s'])} for {last}")
    return ", ".join(parts) or "not recorded"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"


def _class_balance(folder: Path, split: str | None, labels: list[str]) -> dict | None:
    """Rarest and commonest class of `split`, counted in its report (None without a report)."""
    report = folder / f"{split}_report.json"
    if split is None or not report.is_file():
        return None
    per_class = json.loads(report.read_text())["per_class"]
    counts = {label: int(per_class[label]["support"]) for label in labels if label in per_class}
    rarest, commonest = min(counts, key=counts.get), max(counts, key=counts.get)
    return {"split": split, "rarest": rarest, "rarest_count": counts[rarest],
            "commonest": commonest, "commonest_count": counts[commonest]}


# --- pushing ------------------------------------------------------------------------------------


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str = "Upload model with fer-hf",
    include_onnx: bool = True,
) -> CommitInfo:
    """Pushes a model folder (as train.py leaves it) to a Hub model repo, in one commit.

    Creates the repo if needed (an existing repo keeps its visibility) and the branch `revision` if
    given. Uploads everything but `PUSH_IGNORE_PATTERNS`: weights (safetensors only), config, image
    processor, code files, reports, plots and a model card rendered for `repo_id` from `run_info.json`.

    The local folder is only read: the card is staged elsewhere and written to `folder/README.md` once
    the commit has succeeded, so a failed push leaves the folder exactly as it was.

    Args:
        folder: The model folder.
        repo_id: `namespace/name` on the Hub.
        private: Create the repo private.
        revision: Branch to commit to (created from main if missing); None: main.
        token: Hub token; None: `HF_TOKEN` or the `hf auth login` token.
        commit_message: The commit's summary.
        include_onnx: Also upload the folder's `onnx/` files (`python -m fer_hf export`), if it has any.

    Returns:
        The commit (`.oid` is the revision that loads exactly this upload).

    Raises:
        FileNotFoundError: `folder` holds no `model.safetensors`.
        huggingface_hub errors and connection errors: see `explain_hub_error`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder.")
    if not any((folder / name).is_file() for name in WEIGHTS_FILES):
        raise FileNotFoundError(f"{folder}: no model.safetensors here; push a folder written by train.py "
                                "or save_pretrained (safetensors weights only).")
    card = build_model_card(folder, repo_id, revision) if (folder / "run_info.json").is_file() else None
    api = HfApi(token=token, library_name="fer-hf")
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
    if revision not in (None, constants.DEFAULT_REVISION):
        api.create_branch(repo_url.repo_id, branch=revision, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fer-hf-push-") as staging:
        ignore_patterns = PUSH_IGNORE_PATTERNS + ([] if include_onnx else ["onnx/*"])
        _stage(folder, Path(staging), card, ignore_patterns)
        commit = api.upload_folder(repo_id=repo_url.repo_id, folder_path=staging, revision=revision,
                                   commit_message=commit_message, ignore_patterns=ignore_patterns)
    if card is not None:
        card.save(folder / "README.md")  # the local card now matches the pushed one
    logger.info("Pushed %s to %s: commit %s", folder, repo_url.repo_id, commit.oid)
    return commit


def _stage(folder: Path, staging: Path, card: ModelCard | None, ignore_patterns: list[str]) -> None:
    """Mirrors the files to upload into `staging` as symlinks (no copies), with the new card as a real file
    and the face-aware pipeline attached (written anew in staging: a folder saved without it gets it too)."""
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    for name in filter_repo_objects(files, ignore_patterns=ignore_patterns):
        if card is not None and name == "README.md":
            continue  # replaced below; a symlink would let card.save write through into the folder
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.symlink((folder / name).resolve(), staging / name)
        except OSError:  # no symlinks (e.g. Windows without developer mode): copy instead
            shutil.copyfile(folder / name, staging / name)
    if card is not None:
        card.save(staging / "README.md")
    copy_model_code(staging)


def push_dataset(
    source: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    **load_kwargs,
) -> CommitInfo:
    """Loads any `load_fer_dataset` source and pushes it as parquet files (images embedded) to a dataset repo.

    `--dataset_name REPO_ID` then works for anyone, e.g. FER-2013 turned from its CSV into parquet.

    Args:
        source: A FER-2013 CSV, parquet, Kaggle or photo folder (see `load_fer_dataset`).
        repo_id: `namespace/name` of the dataset repo.
        private: Create the repo private.
        revision: Branch to commit to (created if missing).
        token: Hub token; None: `HF_TOKEN` or the `hf auth login` token.
        commit_message: The commit's summary.
        **load_kwargs: Passed to `load_fer_dataset` (e.g. `seed` of a photo folder's split).
    """
    from .data import load_fer_dataset  # here: `datasets` is slow to import, and loading models needs none of it

    dataset = load_fer_dataset(source, **load_kwargs)
    message = commit_message or f"Upload {Path(source).name} with fer-hf"
    return dataset.push_to_hub(repo_id, private=private, revision=revision, token=token, commit_message=message)


def explain_hub_error(error: BaseException) -> str:
    """One clear sentence for the usual ways a Hub call fails: token, permission, repo, revision, connection."""
    status = getattr(getattr(error, "response", None), "status_code", None)
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    detail = getattr(error, "server_message", None) or first_line  # the Hub's own words, when it sent some
    no_token = "no Hugging Face token found: set HF_TOKEN or run `hf auth login` (with a token that may write)."
    if isinstance(error, LocalTokenNotFoundError):
        return no_token
    if isinstance(error, OfflineModeIsEnabled):
        return "HF_HUB_OFFLINE=1 is set and this needs the Hub (it is not in the cache)."
    if isinstance(error, RepositoryNotFoundError):
        return "no such repository on the Hub (or it is private and this token may not see it)."
    if isinstance(error, RevisionNotFoundError):
        return "no such revision (branch, tag or commit) in the repository."
    if status == 401 and not _sent_token(error):
        return no_token  # the request went out anonymously, and the Hub wants to know who writes
    if status == 401:
        return "the Hub rejected the token (401 Unauthorized): check HF_TOKEN or run `hf auth login` again."
    if status == 403:
        return f"this token may not write there (403 Forbidden: {detail.strip().rstrip('.')})."
    if isinstance(error, HfHubHTTPError):
        return f"the Hub answered {status}: {detail}"
    # Connection failures come from huggingface_hub's HTTP client (httpx2), not as its own errors.
    if isinstance(error, (ConnectionError, TimeoutError)) or type(error).__module__.startswith("httpx"):
        return f"the connection to the Hub ({constants.ENDPOINT}) broke off ({type(error).__name__}: {first_line})"
    return f"{type(error).__name__}: {first_line}"


def _sent_token(error: BaseException) -> bool:
    """Whether the failed request carried a token (its Authorization header), else whether one is configured."""
    try:
        return "authorization" in {key.lower() for key in error.response.request.headers}
    except (AttributeError, RuntimeError):  # no response, or a response without its request
        return get_token() is not None


# --- loading ------------------------------------------------------------------------------------


def load_classifier(
    name_or_path: str | Path,
    *,
    revision: str | None = None,
    trust_remote_code: bool | None = None,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    allow_pickle: bool = False,
):
    """Loads an image classifier and its image processor from a folder or a Hub repo id.

    The one loader of the demo and of users. For a repo id, `revision` (branch, tag or commit; None:
    main) is resolved to a commit once, so the model and its processor come from the same commit even
    while someone pushes. With `HF_HUB_OFFLINE=1` (or `local_files_only=True`) everything comes from the
    cache and no request is sent. Weights load from safetensors only: a repo with just a pickle
    (`pytorch_model.bin`) is refused, since unpickling runs code.

    Args:
        name_or_path: A model folder or a Hub repo id (`namespace/name`).
        revision: Hub revision; a commit hash pins the exact upload.
        trust_remote_code: Run the code files stored with the model. Not needed for the FER CNN (importing
            fer_hf registers it) nor for models transformers knows; None means False, never a prompt.
        token: Hub token for private repos; None: `HF_TOKEN` or the `hf auth login` token.
        cache_dir: Hub cache folder; None: the default (`HF_HOME`).
        local_files_only: Use the cache only.
        allow_pickle: Also accept pickle weights (`pytorch_model.bin`) when there are no safetensors.
            Only for sources you trust: unpickling can run any code.

    Returns:
        `(model, image_processor)`, the model in eval mode.

    Raises:
        OSError: the model offers only pickle weights and `allow_pickle` is False (the message says so).
    """
    name = str(name_or_path)
    if Path(name).expanduser().is_dir():
        if revision is not None:
            raise ValueError(f"{name} is a local folder; revision={revision!r} only applies to Hub repo ids.")
    elif name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise FileNotFoundError(f"{name}: no such model folder (and not a Hub repo id, `namespace/name`).")
    else:
        offline = local_files_only or constants.HF_HUB_OFFLINE
        # Raises a clear RepositoryNotFoundError / RevisionNotFoundError for a wrong id or revision.
        revision = resolve_revision(name, revision=revision, token=token, cache_dir=cache_dir, local_files_only=offline)
    common = {"revision": revision, "trust_remote_code": bool(trust_remote_code), "token": token,
              "cache_dir": cache_dir, "local_files_only": local_files_only}
    try:
        model = AutoModelForImageClassification.from_pretrained(
            name, use_safetensors=None if allow_pickle else True, **common
        )
    except OSError as error:
        if allow_pickle or "safetensors" not in str(error):
            raise
        raise OSError(
            f"{name} has no safetensors weights (model.safetensors). fer-hf does not load pickle weights "
            "(pytorch_model.bin, *.pt) by default, because unpickling a file can run any code. Convert them "
            "to safetensors, or pass allow_pickle=True if you trust where the model comes from."
        ) from error
    image_processor = AutoImageProcessor.from_pretrained(name, **common)
    return model.eval(), image_processor


__all__ = [
    "PUSH_IGNORE_PATTERNS",
    "build_model_card",
    "explain_hub_error",
    "load_classifier",
    "push_dataset",
    "push_folder",
    "write_model_card",
]


def find_model(requested: str | None = None, root: str | os.PathLike | None = None) -> str:
    """The model to use: `requested`, else $FER_HF_MODEL, else a model folder under `root`/models.

    Prefers the bundled default (BUNDLED_MODELS), then any other `models/*` folder with a config.json,
    in name order. Raises FileNotFoundError, naming where it looked, when there is none.
    """
    requested = requested or os.environ.get("FER_HF_MODEL")
    if requested:
        return requested
    root = Path(root if root is not None else Path.cwd())
    bundled = [root / name for name in BUNDLED_MODELS]
    others = sorted(path.parent for path in (root / "models").glob("*/config.json"))
    for folder in bundled + others:
        if (folder / "config.json").is_file():
            return str(folder)
    raise FileNotFoundError(
        f"No model given and none found in {root / 'models'} (looked for {', '.join(BUNDLED_MODELS)}); "
        "pass --model FOLDER_OR_HUB_ID or set FER_HF_MODEL."
    )
