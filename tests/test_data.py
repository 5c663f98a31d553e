"""The data loaders: every source gives the same rows, and bad input is refused with its place named."""

import logging
import random
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image as ImageFeature
from PIL import Image

from fer_hf import FER2013_LABELS
from fer_hf.data import DataError, augment, crop_faces, load_fer_dataset, select_labels
from fer_hf.faces import FaceExpressionRecognizer

from tests.conftest import (FER_DIR, FER_FIXTURE_DIR, HAPPY_SAD_DIR, requires_full_data, write_fer_csv,
                            write_kaggle_folders)


def _pixels_and_labels(split):
    return [np.asarray(image.convert("L")) for image in split["image"]], list(split["label"])


def test_csv_kaggle_and_parquet_give_the_same_pixels_and_labels(tmp_path, fer_rows, fer_csv, fer_kaggle_folders):
    from_csv = load_fer_dataset(fer_csv)
    from_kaggle = load_fer_dataset(fer_kaggle_folders)
    parquet_dir = tmp_path / "parquet"
    parquet_dir.mkdir()
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=FER2013_LABELS)})
    for split, file in (("train", "train.parquet"), ("validation", "publictest.parquet")):
        rows = [r for r in fer_rows if r[2] == split]
        Dataset.from_dict(
            {"image": [Image.fromarray(p) for p, _, _ in rows], "label": [l for _, l, _ in rows]}, features=features
        ).to_parquet(str(parquet_dir / file))
    from_parquet = load_fer_dataset(parquet_dir)

    for dataset in (from_csv, from_kaggle, from_parquet):
        assert sorted(dataset) == ["train", "validation"]
        assert dataset["train"].features["label"].names == FER2013_LABELS
    for split in ("train", "validation"):
        expected = [(p, l) for p, l, s in fer_rows if s == split]
        # Kaggle folders list files by class; compare as sets of (pixels, label).
        for dataset in (from_csv, from_kaggle, from_parquet):
            pixels, labels = _pixels_and_labels(dataset[split])
            assert sorted((p.tobytes(), l) for p, l in zip(pixels, labels)) == sorted((p.tobytes(), l) for p, l in expected)
        # CSV and parquet keep the original row order.
        for dataset in (from_csv, from_parquet):
            pixels, labels = _pixels_and_labels(dataset[split])
            assert labels == [l for _, l in expected]
            assert all(np.array_equal(a, b) for a, b in zip(pixels, (p for p, _ in expected)))


def test_kaggle_jpeg_folders_are_close_to_the_csv_pixels(tmp_path, fer_rows):
    # The real Kaggle version is JPEG, which is lossy: the same faces within a few grey levels.
    dataset = load_fer_dataset(write_kaggle_folders(tmp_path / "kaggle", fer_rows, extension=".jpg"))
    originals = {(l, s): [] for _, l, s in fer_rows}
    for pixels, label, split in fer_rows:
        originals[(label, split)].append(pixels.astype(int))
    for split in ("train", "validation"):
        for pixels, label in zip(*_pixels_and_labels(dataset[split])):
            best = min(np.abs(pixels.astype(int) - o).mean() for o in originals[(label, split)])
            assert best < 3


def test_kaggle_file_prefixes_keep_the_official_splits(tmp_path, fer_rows):
    rows = [(p, l, "test" if i % 2 else "validation") for i, (p, l, _) in enumerate(fer_rows[:10])]
    rows += [(p, l, "train") for p, l, _ in fer_rows[10:20]]
    dataset = load_fer_dataset(write_kaggle_folders(tmp_path / "kaggle", rows))
    assert {k: len(v) for k, v in dataset.items()} == {"train": 10, "validation": 5, "test": 5}


def test_parquet_folder_gives_both_splits_and_leaves_the_meta_files_out():
    # The layout of ../shared/data/fer2013 (train, publictest and their *_meta.parquet), in small.
    dataset = load_fer_dataset(FER_FIXTURE_DIR)
    assert {k: len(v) for k, v in dataset.items()} == {"train": 112, "validation": 56}
    assert dataset["validation"].features["label"].names == FER2013_LABELS
    assert dataset["validation"][0]["image"].size == (48, 48)
    for split, file in (("train", "train.parquet"), ("validation", "publictest.parquet")):
        rows = Dataset.from_parquet(str(FER_FIXTURE_DIR / file))
        assert dataset[split]["label"] == rows["label"]  # in the file's row order
        assert np.array_equal(np.asarray(dataset[split][-1]["image"]), np.asarray(rows[-1]["image"]))


@requires_full_data("counts the rows of the full FER-2013 splits and of the 301-photo happy/sad set")
def test_the_full_data_sets_load_whole():
    fer = load_fer_dataset(FER_DIR)
    assert {k: len(v) for k, v in fer.items()} == {"train": 28709, "validation": 3589}
    assert fer["validation"].features["label"].names == FER2013_LABELS
    photos = load_fer_dataset(HAPPY_SAD_DIR)
    assert {k: len(v) for k, v in photos.items()} == {"train": 209, "validation": 46, "test": 46}  # nothing dropped


def _file_names(dataset: DatasetDict) -> dict[str, list[str]]:
    """Each split's image file names, in row order."""
    return {split: [Path(image["path"]).name for image in part.cast_column("image", ImageFeature(decode=False))["image"]]
            for split, part in dataset.items()}


def test_photo_folder_split_is_stratified_seeded_and_complete(photo_folder):
    first = load_fer_dataset(photo_folder, seed=1)
    again = load_fer_dataset(photo_folder, seed=1)
    other = load_fer_dataset(photo_folder, seed=2)
    assert first["train"].features["label"].names == ["happy", "sad"]  # sorted folder names
    names = _file_names(first)
    assert sorted(sum(names.values(), [])) == sorted(p.name for p in photo_folder.glob("*/*"))  # nothing dropped
    assert names == _file_names(again) and names != _file_names(other)
    for split in ("validation", "test"):  # 15% of each class's 12 photos, rounded up
        assert np.bincount(first[split]["label"], minlength=2).tolist() == [2, 2]


def test_crop_faces_turns_photos_into_face_crops_and_keeps_fer_faces(photo_folder):
    photos = load_fer_dataset(photo_folder)["train"]
    fer = load_fer_dataset(FER_FIXTURE_DIR)["validation"].select(range(5))
    cropped = crop_faces(DatasetDict({"photos": photos, "fer": fer}))
    assert cropped["photos"]["label"] == photos["label"]  # one row per photo, in order
    sizes = [image.size for image in cropped["photos"]["image"]]
    # Faces become 96x96 gray squares; a photo without a face stays whole (and gray).
    originals = [image.size for image in photos["image"]]
    # (a whole photo comes back as the recognizer reads it: at most 1,280 px, its aspect ratio kept)
    assert all(size == (96, 96) or abs(size[0] / size[1] - w / h) < 0.01 for size, (w, h) in zip(sizes, originals))
    assert sum(size == (96, 96) for size in sizes) > len(sizes) / 2, sizes
    assert all(image.mode == "L" for image in cropped["photos"]["image"] if image.size == (96, 96))
    fer_pixels = [np.asarray(image) for image in fer["image"]]
    assert all(np.array_equal(np.asarray(a), b) for a, b in zip(cropped["fer"]["image"], fer_pixels))


@pytest.mark.parametrize("name, margin, align", [("baseline.jpg", None, False), ("progressive.jpg", None, False),
                                                 ("baseline.jpg", 0.0, False), ("progressive.jpg", None, True)])
def test_crop_faces_crops_a_photo_as_the_recognizer_does(large_photos, name, margin, align):
    """A 3,831 px and a 7,360 px progressive JPEG, both read at reduced scale: the recognizer's crop, resized
    (at the default margin, and at a model's own; plain and aligned)."""
    from fer_hf import FerCNNForImageClassification, FerConfig, FerImageProcessor

    path = large_photos[name]
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["happy", "sad"])})
    photos = Dataset.from_dict({"image": [str(path)], "label": [0]}, features=features)  # as load_photo_folder gives it
    (cropped,) = crop_faces(DatasetDict({"test": photos}), margin=margin, align=align)["test"]["image"]
    # Any classifier will do: the crops are taken before it runs.
    model = FerCNNForImageClassification(FerConfig(hidden_sizes=[4, 8], depths=[1, 1], id2label={0: "happy", 1: "sad"}))
    recognizer = FaceExpressionRecognizer(model, FerImageProcessor(), margin=margin, align=align, runtime="eager")
    classified = []
    recognizer.classify = lambda crops: classified.extend(crops) or np.full((len(crops), 2), 0.5)
    recognizer(path)  # faces largest first
    expected = classified[0].resize((96, 96), Image.Resampling.BILINEAR, reducing_gap=2.0)  # as crop_face(size=96)
    assert cropped.size == (96, 96) and cropped.mode == "L"
    assert np.array_equal(np.asarray(cropped), np.asarray(expected))


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, expected",
    [
        ("3,{pixels} 7,Training", "line 3: pixels has 2305 values"),
        ("9,{pixels},Training", "line 3: emotion '9' is not a label"),
        ("3,{pixels},Validation", "line 3: Usage 'Validation'"),
        ("3,{bad},Training", "line 3: pixel value 'x' is not an integer"),
        ("3,{big},Training", "line 3: pixel values must be 0..255"),
        ("3,{pixels}", "line 3: expected 3 fields"),
    ],
)
def test_malformed_csv_rows_are_refused_with_their_line(tmp_path, line, expected):
    pixels = " ".join(["0"] * 2304)
    path = tmp_path / "fer2013.csv"
    path.write_text(
        "emotion,pixels,Usage\n"
        f"0,{pixels},Training\n"
        + line.format(pixels=pixels, bad=" ".join(["x"] + ["0"] * 2303), big=" ".join(["300"] + ["0"] * 2303))
        + "\n"
    )
    with pytest.raises(DataError, match=expected) as error:
        load_fer_dataset(path)
    assert str(path) in str(error.value)


def test_csv_with_a_missing_column_or_no_rows_is_refused(tmp_path):
    missing = tmp_path / "missing.csv"
    missing.write_text("emotion,Usage\n0,Training\n")
    with pytest.raises(DataError, match=r"line 1: missing column\(s\) \['pixels'\]"):
        load_fer_dataset(missing)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="the file is empty"):
        load_fer_dataset(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("emotion,pixels,Usage\n")
    with pytest.raises(DataError, match="no data rows"):
        load_fer_dataset(header_only)


def _photo_folder(root, classes=("happy", "sad"), per_class=4):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(root / name / f"{i}.jpg")
    return root


def test_unreadable_image_is_named_or_skipped_and_counted(tmp_path, caplog):
    root = _photo_folder(tmp_path / "photos")
    good = (root / "happy" / "0.jpg").read_bytes()
    (root / "happy" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "sad" / "empty.png").write_bytes(b"")
    (root / "sad" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"truncated\.jpg|empty\.png"):
        load_fer_dataset(root)
    with caplog.at_level(logging.WARNING, logger="fer_hf.data"):
        dataset = load_fer_dataset(root, skip_bad_images=True)
    assert sum(len(v) for v in dataset.values()) == 8
    log = caplog.text
    assert "truncated.jpg" in log and "empty.png" in log and "Skipped 2 unreadable image file(s)" in log
    assert "notes.txt" in log and "Skipped 1 non-image file(s)" in log


def test_empty_class_folder_and_single_class_are_refused(tmp_path):
    root = _photo_folder(tmp_path / "photos")
    (root / "surprise").mkdir()
    with pytest.raises(DataError, match=r"surprise: class folder has no images"):
        load_fer_dataset(root)
    single = _photo_folder(tmp_path / "single", classes=("happy",))
    with pytest.raises(DataError, match="only one class folder"):
        load_fer_dataset(single)
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_fer_dataset(tmp_path / "nowhere")


def test_augment_keeps_size_and_mode_and_varies():
    image = Image.fromarray(np.arange(48 * 48, dtype=np.uint8).reshape(48, 48))
    rng = random.Random(0)
    outputs = [augment(image, rng) for _ in range(5)]
    assert all(o.size == (48, 48) and o.mode == "L" for o in outputs)
    assert len({o.tobytes() for o in outputs}) == 5


def test_select_labels_keeps_and_renumbers_the_named_classes(tmp_path, fer_rows):
    dataset = load_fer_dataset(write_fer_csv(tmp_path / "fer2013.csv", fer_rows))
    happy_sad = select_labels(dataset, ["happy", "sad"])
    assert happy_sad["train"].features["label"].names == ["happy", "sad"]
    for split in ("train", "validation"):
        expected = [{3: 0, 4: 1}[l] for _, l, s in fer_rows if s == split and l in (3, 4)]
        assert happy_sad[split]["label"] == expected and expected
    with pytest.raises(DataError, match="unknown: \\['joy'\\]"):
        select_labels(dataset, ["happy", "joy"])


def test_decompression_bomb_is_refused_by_name_or_skipped_and_counted(tmp_path, caplog):
    from tests.apptools import png_header_only

    root = _photo_folder(tmp_path / "photos")
    # 20,000 x 10,000 = 200 megapixels, above twice Pillow's MAX_IMAGE_PIXELS: Pillow refuses it on open.
    png_header_only(root / "sad" / "bomb.png", 20_000, 10_000)
    with pytest.raises(DataError, match=r"bomb\.png: refused as a decompression bomb"):
        load_fer_dataset(root)
    with caplog.at_level(logging.WARNING, logger="fer_hf.data"):
        dataset = load_fer_dataset(root, skip_bad_images=True)
    assert sum(len(v) for v in dataset.values()) == 8
    assert "bomb.png" in caplog.text and "Skipped 1 unreadable image file(s)" in caplog.text


def test_kaggle_folders_report_each_skipped_file_once(tmp_path, fer_rows, caplog):
    root = write_kaggle_folders(tmp_path / "kaggle", fer_rows[:4])
    notes = next((root / "train").iterdir()) / "notes.txt"
    notes.write_text("not an image")
    with caplog.at_level(logging.WARNING, logger="fer_hf.data"):
        load_fer_dataset(root)
    assert caplog.text.count("notes.txt") == 1
