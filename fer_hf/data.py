"""Every supported data source as a `datasets.DatasetDict` with `image` and `label` columns.

Sources (`load_fer_dataset` tells them apart):
- the original FER-2013 CSV (`emotion,pixels,Usage`);
- the Kaggle image version: folders `train/<class>/`, `test/<class>/` (file names starting with
  `PublicTest_`/`PrivateTest_` keep their official split);
- parquet files, or a folder of them (split taken from the file name), and any Hub dataset id;
- a folder of class subfolders of photos: a seeded, stratified train/validation/test split.

FER sources keep the FER-2013 label order; photo folders use their sorted folder names. Bad input
raises `DataError` naming the file or the 1-based line; nothing is skipped without being named.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image as ImageFeature, load_dataset
from PIL import Image, ImageEnhance

from .model.configuration_fer import FER2013_LABELS

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}
FER_PIXELS = 48 * 48
# FER-2013's `Usage` column and the Kaggle file-name prefixes, mapped to our split names.
FER_USAGE_TO_SPLIT = {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}
# Split names found in parquet file names and Hub datasets, mapped to ours.
SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "validation": "validation", "valid": "validation", "val": "validation", "publictest": "validation",
    "test": "test", "privatetest": "test",
}


class DataError(ValueError):
    """A data source that cannot be read; the message names the file, line or field."""


def load_fer_dataset(
    source: str | Path, *, seed: int = 42, skip_bad_images: bool = False, revision: str | None = None
) -> DatasetDict:
    """Loads any supported source as a `DatasetDict` of `image` (Image) and `label` (ClassLabel).

    Args:
        source: a FER-2013 CSV, a parquet file, a folder (Kaggle layout, parquet files or class
            subfolders of photos), or a Hub dataset id.
        seed: seed of the stratified split of photo folders (load_photo_folder, which also takes
            other split fractions than its default 70/15/15).
        skip_bad_images: skip unreadable image files (each one logged by name, and counted)
            instead of raising.
        revision: Hub dataset revision (branch, tag or commit) for a Hub id.

    Raises:
        DataError: the source is malformed; the message names the file, line or field.
        FileNotFoundError: the path does not exist and is not a Hub dataset id.
    """
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return load_fer2013_csv(path)
        if path.suffix.lower() == ".parquet":
            return _load_parquet([path])
        raise DataError(f"{path}: unsupported file type; expected a FER-2013 .csv or a .parquet file.")
    if path.is_dir():
        parquet_files = sorted(p for p in path.rglob("*.parquet") if not p.stem.endswith("_meta"))
        if parquet_files:
            return _load_parquet(parquet_files)
        # Only the layout is checked here; load_kaggle_folders scans (and reports) each folder once.
        if (path / "train").is_dir() and any(p.is_dir() for p in (path / "train").iterdir()):
            return load_kaggle_folders(path, skip_bad_images=skip_bad_images)
        return load_photo_folder(path, seed=seed, skip_bad_images=skip_bad_images)
    if str(source).count("/") == 1 and not str(source).startswith((".", "/", "~")):
        return _standardize(load_dataset(str(source), revision=revision), source=str(source))
    raise FileNotFoundError(f"{source}: no such file or folder, and not a Hub dataset id (`namespace/name`).")


# --- FER-2013 CSV -------------------------------------------------------------------------------


def load_fer2013_csv(path: str | Path) -> DatasetDict:
    """Reads the original `fer2013.csv` (`emotion,pixels[,Usage]`); rows without `Usage` go to `train`."""
    path = Path(path)
    rows: dict[str, dict[str, list]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in reader.fieldnames or []]
        if not header:
            raise DataError(f"{path}: the file is empty; expected a header `emotion,pixels,Usage`.")
        reader.fieldnames = header
        missing = [column for column in ("emotion", "pixels") if column not in header]
        if missing:
            raise DataError(f"{path}, line 1: missing column(s) {missing}; the header is {header}.")
        for record in reader:
            line = reader.line_num  # 1-based, as an editor shows it; the header is line 1
            where = f"{path}, line {line}"
            if None in record or any(record[c] is None for c in header):
                raise DataError(f"{where}: expected {len(header)} fields ({', '.join(header)}).")
            emotion = record["emotion"].strip()
            if not emotion.isdigit() or int(emotion) >= len(FER2013_LABELS):
                raise DataError(f"{where}: emotion {emotion!r} is not a label 0..{len(FER2013_LABELS) - 1}.")
            usage = record.get("Usage", "Training").strip()
            if usage not in FER_USAGE_TO_SPLIT:
                raise DataError(f"{where}: Usage {usage!r} is not one of {sorted(FER_USAGE_TO_SPLIT)}.")
            values = record["pixels"].split()
            if len(values) != FER_PIXELS:
                raise DataError(f"{where}: pixels has {len(values)} values, expected {FER_PIXELS} (48x48).")
            try:
                pixels = np.array(values, dtype=np.int64)
            except ValueError:
                bad = next(v for v in values if not v.lstrip("-").isdigit())
                raise DataError(f"{where}: pixel value {bad!r} is not an integer.") from None
            if pixels.min() < 0 or pixels.max() > 255:
                raise DataError(f"{where}: pixel values must be 0..255, found {pixels.min()}..{pixels.max()}.")
            split = rows.setdefault(FER_USAGE_TO_SPLIT[usage], {"image": [], "label": []})
            split["image"].append(_png_bytes(pixels.astype(np.uint8).reshape(48, 48)))
            split["label"].append(int(emotion))
    if not rows:
        raise DataError(f"{path}: the header is there but no data rows follow.")
    features = _features(FER2013_LABELS)
    return DatasetDict({name: Dataset.from_dict(rows[name], features=features) for name in _ordered(rows)})


def _png_bytes(array: np.ndarray) -> dict:
    buffer = io.BytesIO()
    Image.fromarray(array, mode="L").save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


# --- image folders ------------------------------------------------------------------------------


def load_kaggle_folders(root: str | Path, *, skip_bad_images: bool = False) -> DatasetDict:
    """Reads the Kaggle FER-2013 layout: `train/<class>/*`, `test/<class>/*` (and optional `validation/`)."""
    root = Path(root)
    files: dict[str, list[tuple[Path, str]]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        default_split = SPLIT_ALIASES.get(folder.name.lower())
        if default_split is None:
            logger.warning("%s: not a split folder (train/validation/test); ignored.", folder)
            continue
        for class_name, class_files in _class_folders(folder).items():
            for file in class_files:
                # Kaggle file names keep the official split: PublicTest_123.jpg, PrivateTest_456.jpg.
                prefix = file.name.split("_", 1)[0]
                split = FER_USAGE_TO_SPLIT.get(prefix, default_split)
                files.setdefault(split, []).append((file, class_name))
    class_names = sorted({name for split in files.values() for _, name in split})
    # FER-2013 ids whatever subset of classes is present, so label 3 is "happy" as in the CSV.
    names = FER2013_LABELS if {n.lower() for n in class_names} <= set(FER2013_LABELS) else class_names
    return _datasets_from_files(files, names, skip_bad_images=skip_bad_images)


def load_photo_folder(
    root: str | Path,
    *,
    seed: int = 42,
    validation_fraction: float = 0.15,
    test_fraction: float = 0.15,
    skip_bad_images: bool = False,
) -> DatasetDict:
    """Reads `root/<class>/*` photos and splits each class, seeded, into train/validation/test.

    Args:
        root: The folder of class subfolders.
        seed: Seed of the split.
        validation_fraction: Share of each class that goes to `validation` (rounded up).
        test_fraction: Share of each class that goes to `test` (rounded up).
        skip_bad_images: Skip unreadable image files (each logged by name) instead of raising.
    """
    root = Path(root)
    classes = _class_folders(root)
    if not classes:
        raise DataError(f"{root}: no class subfolders with images found (expected {root}/<class>/<image>).")
    names = sorted(classes)
    rng = random.Random(seed)
    files: dict[str, list[tuple[Path, str]]] = {"train": [], "validation": [], "test": []}
    for class_name in names:
        class_files = list(classes[class_name])
        rng.shuffle(class_files)
        n_test = math.ceil(len(class_files) * test_fraction) if test_fraction else 0
        n_val = math.ceil(len(class_files) * validation_fraction) if validation_fraction else 0
        if len(class_files) - n_test - n_val < 1:
            raise DataError(f"{root / class_name}: {len(class_files)} image(s) are too few to split.")
        files["test"] += [(f, class_name) for f in class_files[:n_test]]
        files["validation"] += [(f, class_name) for f in class_files[n_test : n_test + n_val]]
        files["train"] += [(f, class_name) for f in class_files[n_test + n_val :]]
    return _datasets_from_files({k: v for k, v in files.items() if v}, names, skip_bad_images=skip_bad_images)


def _class_folders(root: Path) -> dict[str, list[Path]]:
    """Maps each subfolder of `root` to its image files; non-image files are logged, empty classes refused."""
    classes: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        entries = sorted(p for p in folder.iterdir() if p.is_file())
        images = [p for p in entries if p.suffix.lower() in IMAGE_EXTENSIONS]
        others = [p for p in entries if p.suffix.lower() not in IMAGE_EXTENSIONS]
        for other in others:
            logger.warning("Skipped %s: not an image file extension (%s).", other, ", ".join(sorted(IMAGE_EXTENSIONS)))
        if others:
            logger.warning("Skipped %d non-image file(s) in %s.", len(others), folder)
        if not images and not any(p.is_dir() for p in folder.iterdir()):
            raise DataError(f"{folder}: class folder has no images.")
        if images:
            classes[folder.name] = images
    if len(classes) == 1:
        raise DataError(f"{root}: only one class folder ({next(iter(classes))}); a classifier needs at least two.")
    return classes


def _datasets_from_files(
    files: dict[str, list[tuple[Path, str]]], names: list[str], *, skip_bad_images: bool
) -> DatasetDict:
    label_of = {name.lower(): i for i, name in enumerate(names)}
    bad: list[str] = []
    splits = {}
    for split in _ordered(files):
        kept = []
        for file, class_name in files[split]:
            problem = check_image_file(file)
            if problem is None:
                kept.append((file, class_name))
            elif skip_bad_images:
                logger.warning("Skipped %s: %s", file, problem)
                bad.append(str(file))
            else:
                raise DataError(f"{file}: {problem} (pass skip_bad_images=True / --skip_bad_images to skip such files).")
        splits[split] = Dataset.from_dict(
            {"image": [str(f) for f, _ in kept], "label": [label_of[c.lower()] for _, c in kept]}, features=_features(names)
        )
    if bad:
        logger.warning("Skipped %d unreadable image file(s) in all.", len(bad))
    return DatasetDict(splits)


def check_image_file(path: Path) -> str | None:
    """Returns why `path` is not a readable image, or None if it decodes completely."""
    try:
        with Image.open(path) as image:
            # JPEG draft mode decodes at 1/8 scale: every byte is still read, at a fraction of the cost.
            image.draft("L", (64, 64))
            image.load()
    except Image.DecompressionBombError as error:
        return f"refused as a decompression bomb ({error})"
    except Exception as error:  # Pillow raises many types for broken files; all mean "unreadable"
        return f"unreadable image ({type(error).__name__}: {error})"
    return None


# --- parquet and Hub datasets -------------------------------------------------------------------


def _load_parquet(files: list[Path]) -> DatasetDict:
    by_split: dict[str, list[str]] = {}
    for file in files:
        stem = file.stem.lower().split("-")[0]  # Hub layout: data/train-00000-of-00001.parquet
        split = SPLIT_ALIASES.get(stem)
        if split is None:
            raise DataError(f"{file}: cannot tell the split from the file name (expected one of {sorted(SPLIT_ALIASES)}).")
        by_split.setdefault(split, []).append(str(file))
    return _standardize(load_dataset("parquet", data_files=by_split), source=str(files[0].parent))


def _standardize(dataset: DatasetDict, *, source: str) -> DatasetDict:
    """Renames splits and columns to ours and makes `label` a ClassLabel."""
    renamed = {}
    for split, part in dataset.items():
        name = SPLIT_ALIASES.get(split.lower(), split)
        image_column = next((c for c in ("image", "img") if c in part.column_names), None)
        label_column = next((c for c in ("label", "labels", "emotion") if c in part.column_names), None)
        if image_column is None or label_column is None:
            raise DataError(f"{source} [{split}]: needs an image column and a label column, has {part.column_names}.")
        part = part.select_columns([image_column, label_column]).rename_columns(
            {image_column: "image", label_column: "label"}
        )
        if not isinstance(part.features["image"], ImageFeature):
            part = part.cast_column("image", ImageFeature())
        if not isinstance(part.features["label"], ClassLabel):
            values = sorted(set(part["label"]))
            if all(isinstance(v, int) and 0 <= v < len(FER2013_LABELS) for v in values):
                part = part.cast_column("label", ClassLabel(names=FER2013_LABELS))
            else:
                part = part.cast_column("label", ClassLabel(names=[str(v) for v in values]))
        renamed[name] = part
    return DatasetDict({name: renamed[name] for name in _ordered(renamed)})


def _features(names: list[str]) -> Features:
    return Features({"image": ImageFeature(), "label": ClassLabel(names=names)})


def _ordered(splits) -> list[str]:
    order = ["train", "validation", "test"]
    return sorted(splits, key=lambda s: (order.index(s) if s in order else len(order), s))


def select_labels(dataset: DatasetDict, names: list[str]) -> DatasetDict:
    """Keeps only the rows of the named classes, renumbered in the order given (e.g. happy=0, sad=1)."""
    known = next(iter(dataset.values())).features["label"].names
    unknown = [name for name in names if name not in known]
    if unknown or len(names) < 2:
        raise DataError(f"--labels {names}: need at least two of the dataset's classes {known}; unknown: {unknown}.")
    new_id = {known.index(name): i for i, name in enumerate(names)}

    def renumbered(part: Dataset) -> Dataset:
        features = part.features.copy()  # other columns (e.g. FER+ votes) are kept as they are
        features["label"] = ClassLabel(names=names)
        return part.filter(lambda label: label in new_id, input_columns="label").map(
            lambda label: {"label": new_id[label]}, input_columns="label", features=features
        )

    return DatasetDict({split: renumbered(part) for split, part in dataset.items()})


# --- FER+ label distributions ------------------------------------------------------------------

# FER+ (Barsoum et al. 2016) had ten annotators vote on each FER-2013 face; the vote columns of
# `train_meta.parquet` for each FER-2013 class. contempt, unknown and NF (not a face) have no class here.
FERPLUS_VOTE_COLUMNS = {
    "angry": "ferplus_anger", "disgust": "ferplus_disgust", "fear": "ferplus_fear", "happy": "ferplus_happiness",
    "sad": "ferplus_sadness", "surprise": "ferplus_surprise", "neutral": "ferplus_neutral",
}


def ferplus_distributions(source: str | Path, names: list[str]) -> np.ndarray:
    """The FER+ vote distribution of each training row of `source`, over the classes `names` (rows x names).

    Read from the `train_meta.parquet` beside the source's train parquet (same row order). Votes for
    classes not in `names` are dropped and each row renormalised; a row with no vote on any of them is
    all zeros (`soft_targets` then keeps its one-hot label).

    Raises:
        DataError: no `train_meta.parquet` beside the source, a vote column missing, or a class FER+ has no votes for.
    """
    import pyarrow.parquet as pq

    path = Path(source).expanduser()
    meta = path.with_name(f"{path.stem}_meta.parquet") if path.is_file() else path / "train_meta.parquet"
    if not meta.is_file():
        raise DataError(f"{meta}: not found; FER+ label distributions need the train split's meta file (with the "
                        f"ferplus_* vote columns, same row order) beside the train parquet of {source}.")
    unknown = [name for name in names if name not in FERPLUS_VOTE_COLUMNS]
    if unknown:
        raise DataError(f"FER+ has no votes for the class(es) {unknown}; it covers {list(FERPLUS_VOTE_COLUMNS)}.")
    columns = [FERPLUS_VOTE_COLUMNS[name] for name in names]
    available = pq.read_schema(meta).names
    missing = [column for column in columns if column not in available]
    if missing:
        raise DataError(f"{meta}: missing vote column(s) {missing}; it has {available}.")
    table = pq.read_table(meta, columns=columns)
    votes = np.stack([table[column].to_numpy(zero_copy_only=False) for column in columns], axis=1).astype(np.float32)
    totals = votes.sum(axis=1, keepdims=True)
    return np.divide(votes, totals, out=np.zeros_like(votes), where=totals > 0)


def soft_targets(labels: np.ndarray, distributions: np.ndarray, weight: float) -> np.ndarray:
    """`(1 - weight) * one-hot(label) + weight * distribution` per row; rows without a distribution stay one-hot."""
    one_hot = np.eye(distributions.shape[1], dtype=np.float32)[np.asarray(labels)]
    has_votes = distributions.sum(axis=1, keepdims=True) > 0
    return np.where(has_votes, (1 - weight) * one_hot + weight * distributions, one_hot).astype(np.float32)


def class_counts(dataset: Dataset) -> dict[str, int]:
    """Per-class row counts, in label order."""
    names = dataset.features["label"].names
    counts = Counter(dataset["label"])
    return {name: counts.get(i, 0) for i, name in enumerate(names)}


def crop_faces(
    dataset: DatasetDict, *, face_side: int = 96, margin: float | None = None, align: bool = False
) -> DatasetDict:
    """Replaces each photo by its largest face, cropped as the demo and the predict CLI crop, resized to face_side.

    A model trained on FER-2013's tight 48x48 faces and then shown whole photos learns little from
    them; cropped, the photos look like what the model will see at inference. Each photo's file is
    read, searched and cropped by fer_hf.faces.find_faces with FaceExpressionRecognizer's defaults
    (read sides, detector, margin), so a crop is the recognizer's crop of that file, resized. Images
    no larger than `face_side` are taken to be faces already (FER-2013's) and kept; a photo with no
    face found is kept whole (as read), in gray, as the demo's whole-image fallback classifies it.
    `margin` and `align` are crop_face's (margin None: fer_hf.faces.DEFAULT_MARGIN); pass the model's
    `face_crop_margin(processor)` and `face_align(processor)` to crop as the recognizer crops for that model.
    """
    from .faces import DEFAULT_MARGIN, FaceDetector, find_faces  # the detector is only needed here

    detector = FaceDetector()
    margin = DEFAULT_MARGIN if margin is None else margin
    counts = Counter()

    def largest_face(image: dict) -> dict:
        # The undecoded file ({"bytes", "path"}): a big JPEG is then read at reduced scale, as the recognizer reads it.
        source = image["bytes"] or image["path"]
        with Image.open(io.BytesIO(source) if image["bytes"] else source) as opened:  # reads the header only
            if max(opened.size) <= face_side:
                counts["already a face"] += 1
                return {"image": image}
        photo, _, faces = find_faces(source, detector, margin=margin, size=face_side, top_faces=1, align=align)
        counts["face cropped" if faces else "no face found, kept whole"] += 1
        return {"image": faces[0] if faces else photo.convert("L")}

    cropped = DatasetDict()
    for split, part in dataset.items():
        files = part.cast_column("image", ImageFeature(decode=False))
        files = files.map(largest_face, input_columns="image", features=files.features, load_from_cache_file=False)
        cropped[split] = files.cast_column("image", part.features["image"])
    logger.info("Face crops: %s", dict(counts))
    return cropped


# --- transforms ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaceAugmentation:
    """The ranges the training augmentation draws from: `augment` here (PIL, the default path) and
    `fer_hf.device_augment.augment_faces` (`--device_augment`) both read them. Random erasing is the device path's only.

    Args:
        crop_scale: Side of the random crop as a share of the face's (then resized back to full size).
        flip: Probability of a horizontal flip.
        rotation: Largest rotation, in degrees, either way (corners filled with black, as PIL fills them).
        brightness: Pixels scaled by a factor in 1 +/- brightness.
        contrast: Pixels moved from their image's mean by a factor in 1 +/- contrast.
        erasing: Probability of random erasing: a box of `erasing_area` of the face set to the dataset
            mean (0 after normalisation).
        erasing_area: Share of the face a box covers (its aspect ratio drawn from 1/3 to 3).
    """

    crop_scale: tuple[float, float] = (0.8, 1.0)
    flip: float = 0.5
    rotation: float = 10.0
    brightness: float = 0.2
    contrast: float = 0.2
    erasing: float = 0.0
    erasing_area: tuple[float, float] = (0.02, 0.2)

    def __post_init__(self):
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale {self.crop_scale}: need 0 < low <= high <= 1.")
        for name in ("flip", "erasing"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} {getattr(self, name)}: a probability must be in [0, 1].")
        if not 0 <= self.brightness < 1 or not 0 <= self.contrast < 1:
            raise ValueError(f"brightness {self.brightness}, contrast {self.contrast}: each must be in [0, 1).")
        if not 0 < self.erasing_area[0] <= self.erasing_area[1] < 1:
            raise ValueError(f"erasing_area {self.erasing_area}: need 0 < low <= high < 1.")


TRAINING_AUGMENTATION = FaceAugmentation()


def augment(image: Image.Image, rng: random.Random,
            augmentation: FaceAugmentation = TRAINING_AUGMENTATION) -> Image.Image:
    """The training augmentation: random crop/shift, horizontal flip, small rotation, brightness/contrast.

    Mild on purpose: FER-2013 faces are already aligned crops, and strong distortions change
    expressions (a squeezed mouth reads as a different emotion).
    """
    width, height = image.size
    scale = rng.uniform(*augmentation.crop_scale)
    crop_w, crop_h = max(1, round(width * scale)), max(1, round(height * scale))
    left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
    image = image.resize((width, height), Image.BILINEAR, box=(left, top, left + crop_w, top + crop_h))
    if rng.random() < augmentation.flip:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    image = image.rotate(rng.uniform(-augmentation.rotation, augmentation.rotation), resample=Image.BILINEAR)
    brightness, contrast = augmentation.brightness, augmentation.contrast
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(1 - brightness, 1 + brightness))
    return ImageEnhance.Contrast(image).enhance(rng.uniform(1 - contrast, 1 + contrast))


def make_transform(
    image_processor, *, train: bool, grayscale: bool, soft_labels: bool = False
) -> Callable[[dict], dict]:
    """Builds the batched `with_transform` function: images -> `pixel_values`, `label` -> `labels`.

    Args:
        image_processor: the model's image processor (ours or any Hub model's).
        train: apply `augment` (training only; evaluation sees the images as they are).
        grayscale: work in "L" (our CNN) rather than "RGB" (Hub models such as ViT).
        soft_labels: `labels` are the rows' `target` column (float class distributions, see
            `soft_targets`) rather than their integer `label`.
    """
    mode = "L" if grayscale else "RGB"

    def transform(batch: dict) -> dict:
        images = [image.convert(mode) for image in batch["image"]]
        if train:
            # Drawn from Python's global generator, which `set_seed` seeds and Trainer checkpoints:
            # the same --seed augments alike, and a resumed run goes on as the uninterrupted one would.
            rng = random.Random(random.getrandbits(64))
            images = [augment(image, rng) for image in images]
        pixel_values = image_processor(images, return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixel_values, "labels": batch["target"] if soft_labels else batch["label"]}

    return transform


__all__ = [
    "DataError",
    "FaceAugmentation",
    "TRAINING_AUGMENTATION",
    "augment",
    "check_image_file",
    "class_counts",
    "crop_faces",
    "ferplus_distributions",
    "load_fer2013_csv",
    "load_fer_dataset",
    "load_kaggle_folders",
    "load_photo_folder",
    "make_transform",
    "select_labels",
    "soft_targets",
]
