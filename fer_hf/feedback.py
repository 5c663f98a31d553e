"""Corrections from the demo, kept in a Hub dataset that `train.py --add_train_dataset` reads.

    scheduler = FeedbackScheduler("alice/fer-feedback", labels=model_labels)   # creates the repo, private
    row = feedback_row(face_48x48, "happy", predicted="sad", scores=[...], labels=model_labels, model="alice/fer")
    scheduler.submit(row)               # on disk at once; pushed within `every` minutes and at exit
    print(feedback_report(load_dataset("alice/fer-feedback", split="train")))

huggingface_hub's "scheduled uploads" pattern: a `CommitScheduler` subclass whose `push_to_hub` gathers the
rows written since the last push into one new `data/<uuid>.parquet` file. Every row is a file on disk before
`submit` returns, so a killed process loses nothing: the next start pushes what it finds. A batch file keeps
its name until it is on the Hub, so a push that fails is retried with the same file, and one that landed
but was not acknowledged is not pushed twice. Pushed files are never rewritten: each process, each push,
adds a file of its own.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, CommitScheduler, DatasetCard, DatasetCardData, HfApi, constants
from huggingface_hub.errors import HfHubHTTPError
from PIL import Image

try:  # POSIX: two processes sharing a folder push its files one at a time
    import fcntl
except ImportError:  # pragma: no cover - Windows: one process per folder
    fcntl = None

logger = logging.getLogger(__name__)

FACE_SIZE = (48, 48)  # what the FER CNN sees; a processor with another `size` gives its own
DEFAULT_EVERY = 5  # minutes between pushes
CARD_TEXT = """\
# Corrections of facial-expression predictions

Faces whose expression a person corrected in the fer-hf demo ("this face is not *sad*, it is *neutral*"),
sent by that person with the demo's feedback button. Each row holds only what the model saw and what the
person said:

| column | what it is |
|---|---|
| `image` | the face crop exactly as the model saw it: a {width}x{height} grey PNG |
| `label` | the expression the person chose (`ClassLabel`, the model's labels in its id order) |
| `predicted` | the expression the model gave it (same `ClassLabel`) |
| `scores` | the model's probability of each label, in the same order |
| `model`, `model_revision` | the model's Hub repo id (or folder name) and commit |
| `time` | when it was sent (UTC, ISO 8601) |
| `submission_id` | the id the person was shown, to have the row deleted |

Never kept: the photo, its metadata, webcam frames, anything sent without a click. The rows come in
`data/<uuid>.parquet` files, one per push, never rewritten. To train on them:
`python train.py --dataset_name ... --add_train_dataset {repo_id}`; to see what the model gets wrong:
`python -m fer_hf feedback-report {repo_id}`.
"""


class FeedbackError(ValueError):
    """A correction or a feedback repo that cannot be used; the message says which and why."""


def feedback_features(labels: Sequence[str]):
    """The dataset's columns: `label` and `predicted` are ClassLabels of the model's labels in id order."""
    from datasets import ClassLabel, Features, Image as ImageFeature, List, Value

    names = ClassLabel(names=list(labels))
    return Features({
        "image": ImageFeature(), "label": names, "predicted": names, "scores": List(Value("float32")),
        "model": Value("string"), "model_revision": Value("string"), "time": Value("string"),
        "submission_id": Value("string"),
    })


def model_input_size(image_processor: Any = None) -> tuple[int, int]:
    """(width, height) of the model's input: its processor's `size` (48x48 for the FER CNN)."""
    size = getattr(image_processor, "size", None) or {}
    return (size["width"], size["height"]) if "width" in size and "height" in size else FACE_SIZE


def model_input_face(crop: Image.Image, image_processor: Any = None) -> Image.Image:
    """A face crop as the model sees it: grey, resized as its processor resizes (48x48 for the FER CNN)."""
    from .model.image_processing_fer import to_grayscale_uint8

    target = model_input_size(image_processor)
    face = Image.fromarray(to_grayscale_uint8(crop))
    resample = getattr(image_processor, "resample", Image.Resampling.BILINEAR)
    return face if face.size == target else face.resize(target, resample=resample)


def feedback_row(face: Image.Image, label: str, *, predicted: str, scores: Sequence[float], labels: Sequence[str],
                 model: str, model_revision: str | None = None) -> dict[str, Any]:
    """One correction, with a new submission id and the time now.

    Raises:
        FeedbackError: `label` or `predicted` is not one of `labels` (the message lists them), or `scores`
            has another length.
    """
    labels = list(labels)
    for name, value in (("label", label), ("predicted", predicted)):
        if value not in labels:
            raise FeedbackError(f"{name} {value!r} is not one of the model's labels: {', '.join(labels)}.")
    if len(scores) != len(labels):
        raise FeedbackError(f"{len(scores)} scores for {len(labels)} labels.")
    with io.BytesIO() as buffer:
        face.save(buffer, "PNG")
        png = buffer.getvalue()
    return {"image": png, "label": label, "predicted": predicted, "scores": [float(s) for s in scores],
            "model": model, "model_revision": model_revision or "",
            "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "submission_id": uuid.uuid4().hex}


def build_dataset_card(repo_id: str, labels: Sequence[str], face_size: tuple[int, int] = FACE_SIZE) -> DatasetCard:
    """The README.md: `configs` (every data/*.parquet is the train split) and `dataset_info` (the features)."""
    data = DatasetCardData(
        pretty_name="Facial-expression corrections",
        task_categories=["image-classification"],
        tags=["facial-expression-recognition", "fer-hf", "human-feedback"],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "data/*.parquet"}]}],
        dataset_info={"features": feedback_features(labels)._to_yaml_list()},
    )
    text = CARD_TEXT.format(repo_id=repo_id, width=face_size[0], height=face_size[1])
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{text}")


def card_labels(card: DatasetCard) -> list[str] | None:
    """The `label` ClassLabel names a feedback dataset's card declares (None: it declares none)."""
    info = card.data.to_dict().get("dataset_info") or {}
    for feature in info.get("features", []) if isinstance(info, dict) else []:
        names = feature.get("dtype", {}).get("class_label", {}).get("names") if isinstance(feature.get("dtype"), dict) else None
        if feature.get("name") == "label" and names:
            return [names[key] for key in sorted(names, key=int)] if isinstance(names, dict) else list(names)
    return None


def default_folder(repo_id: str) -> Path:
    """Where rows wait for their push: $FER_HF_FEEDBACK_DIR/<repo>, else under HF_HOME."""
    root = os.environ.get("FER_HF_FEEDBACK_DIR") or Path(constants.HF_HOME) / "fer_hf_feedback"
    return Path(root) / repo_id.replace("/", "--")


class FeedbackScheduler(CommitScheduler):
    """Keeps corrections on disk and pushes them to a private Hub dataset as new parquet files.

    Args:
        repo_id: `namespace/name` of the dataset repo; created private, with its card, if missing.
        labels: The model's labels in id order; an existing repo's card must declare the same.
        folder: Where rows wait for their push (default_folder). Rows another run left there are
            pushed by this one.
        every: Minutes between pushes; there is one when it starts and one at interpreter exit too.
        token: Hub token with write access; None: `HF_TOKEN` or the `hf auth login` token.
        hf_api: The client to use (its token and endpoint).
        face_size: The size of the faces, for the card.

    Raises:
        FeedbackError: the repo's card declares other labels.
        huggingface_hub errors: the repo cannot be created or read (no write access, no connection).
    """

    def __init__(self, repo_id: str, labels: Sequence[str], *, folder: str | Path | None = None,
                 every: float = DEFAULT_EVERY, token: str | None = None, hf_api: HfApi | None = None,
                 face_size: tuple[int, int] = FACE_SIZE) -> None:
        self.labels = list(labels)
        self.features = feedback_features(self.labels)
        folder = Path(folder) if folder is not None else default_folder(repo_id)
        self.rows_dir, self.outbox_dir = folder / "rows", folder / "outbox"
        for path in (self.rows_dir, self.outbox_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.last_error: str | None = None  # why the last push failed; None after a push that worked
        api = hf_api or HfApi(token=token, library_name="fer-hf")
        # Before the scheduler starts (its first push runs at once): the repo exists with a card of these labels.
        repo_id = api.create_repo(repo_id, repo_type="dataset", private=True, exist_ok=True).repo_id
        self._check_card(api, repo_id, face_size)
        super().__init__(repo_id=repo_id, folder_path=folder, every=every, path_in_repo="data", repo_type="dataset",
                         private=True, hf_api=api)

    def _check_card(self, api: HfApi, repo_id: str, face_size: tuple[int, int]) -> None:
        """Adds the card to a repo that has none; refuses a repo whose card declares other labels."""
        info = api.dataset_info(repo_id)
        if "README.md" not in {sibling.rfilename for sibling in info.siblings or []}:
            card = build_dataset_card(repo_id, self.labels, face_size)
            try:  # on top of the commit seen: a second process adding its card at once gets 412 and reads that one
                api.create_commit(repo_id, [CommitOperationAdd("README.md", str(card).encode())], repo_type="dataset",
                                  parent_commit=info.sha, commit_message="Dataset card of the corrections")
                return
            except HfHubHTTPError as error:
                if error.response is None or error.response.status_code != 412:
                    raise
        card = DatasetCard(Path(api.hf_hub_download(repo_id, "README.md", repo_type="dataset")).read_text())
        declared = card_labels(card)
        if declared is not None and declared != self.labels:
            raise FeedbackError(f"The feedback dataset {repo_id} holds the labels {declared}; this model's are "
                                f"{self.labels}. Use another repo for this model.")

    @property
    def pending(self) -> int:
        """Rows on disk that are not on the Hub yet."""
        with self._folder_lock():  # not while a push moves them
            waiting = sum(_parquet_rows(path) for path in self.outbox_dir.glob("*.parquet"))
            return waiting + len(list(self.rows_dir.glob("*.json")))

    def submit(self, row: dict[str, Any]) -> str:
        """Writes a row (feedback_row) to disk for the next push; returns its submission id.

        Raises:
            FeedbackError: the row's labels are not this dataset's.
        """
        for name in ("label", "predicted"):
            if row[name] not in self.labels:
                raise FeedbackError(f"{name} {row[name]!r} is not one of the dataset's labels: {', '.join(self.labels)}.")
        record = {**row, "image": base64.b64encode(row["image"]).decode()}
        target = self.rows_dir / f"{row['submission_id']}.json"
        staging = target.with_suffix(".tmp")
        with self.lock:
            with open(staging, "w") as file:
                json.dump(record, file)
                file.flush()
                os.fsync(file.fileno())  # on disk before the person is told it is kept
            os.replace(staging, target)  # a complete row or none: another process may batch it
        return row["submission_id"]

    def push_to_hub(self):
        """Gathers the rows on disk into a new batch file, then pushes every batch file not on the Hub yet.

        Run by the scheduler's thread (every `every` minutes, and at exit); `trigger()` runs it now. A failure
        leaves the files where they are for the next push, and is kept in `last_error`.
        """
        try:
            with self._folder_lock():
                with self.lock:
                    self._batch_rows()
                commit = None
                for path in sorted(self.outbox_dir.glob("*.parquet"), key=lambda p: p.stat().st_mtime):
                    in_repo = f"{self.path_in_repo}/{path.name}"
                    # Already there: a push that landed but whose answer was lost. Never rewrite it.
                    if not self.api.file_exists(self.repo_id, in_repo, repo_type=self.repo_type, revision=self.revision):
                        rows = _parquet_rows(path)
                        commit = self.api.create_commit(
                            self.repo_id, [CommitOperationAdd(in_repo, str(path))], repo_type=self.repo_type,
                            revision=self.revision, commit_message=f"Add {rows} correction{'s' * (rows != 1)}")
                    path.unlink()
        except Exception as error:
            self.last_error = f"{type(error).__name__}: {error}"
            raise  # CommitScheduler logs it; the files wait for the next push
        self.last_error = None
        return commit

    def _batch_rows(self) -> None:
        """Moves the rows on disk into one new outbox/<uuid>.parquet (under self.lock)."""
        from datasets import Dataset

        paths = sorted(self.rows_dir.glob("*.json"))
        if not paths:
            return
        rows, read = [], []
        for path in paths:
            try:
                record = json.loads(path.read_text())
                rows.append({**record, "image": {"bytes": base64.b64decode(record["image"]), "path": None}})
                read.append(path)
            except (ValueError, KeyError, TypeError) as error:  # kept aside, so that one bad file stops no push
                logger.error("%s cannot be read (%s); it is left as %s.bad", path, error, path.name)
                path.rename(path.with_suffix(".bad"))
        if not rows:
            return
        rows.sort(key=lambda row: row["time"])  # in the order they were sent
        target = self.outbox_dir / f"{uuid.uuid4()}.parquet"
        staging = target.with_suffix(".tmp")
        Dataset.from_list(rows, features=self.features).to_parquet(str(staging))  # features in its metadata
        os.replace(staging, target)
        for path in read:
            path.unlink()

    @contextlib.contextmanager
    def _folder_lock(self) -> Iterator[None]:
        """Holds an exclusive lock on the folder, so that two processes sharing it never push one file twice."""
        if fcntl is None:
            yield
            return
        with open(self.folder_path / ".push.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _parquet_rows(path: Path) -> int:
    from pyarrow import parquet

    return parquet.read_metadata(path).num_rows


def feedback_report(dataset) -> str:
    """Counts per corrected label and the predicted -> corrected table of a feedback dataset split, as text."""
    import pandas as pd

    names = dataset.features["label"].names
    label = pd.Categorical([names[i] for i in dataset["label"]], categories=names)
    predicted = pd.Categorical([names[i] for i in dataset["predicted"]], categories=names)
    counts = pd.Series(label).value_counts(sort=False)
    table = pd.crosstab(pd.Series(predicted, name="predicted"), pd.Series(label, name="corrected"), dropna=False)
    models = sorted(set(dataset["model"]))
    agreed = sum(a == b for a, b in zip(dataset["label"], dataset["predicted"]))
    summary = (f"{len(dataset)} correction{'s' * (len(dataset) != 1)} of {', '.join(models) or 'no model'}; "
               f"{agreed} where the person kept the model's label")
    return "\n".join([
        summary,
        "",
        "Corrected label counts:",
        counts.rename("rows").to_frame().to_string(),
        "",
        "Predicted (rows) -> corrected (columns):",
        table.to_string(),
    ])


__all__ = ["FeedbackError", "FeedbackScheduler", "build_dataset_card", "card_labels", "default_folder",
           "feedback_features", "feedback_report", "feedback_row", "model_input_face", "model_input_size"]
