"""Shared fixtures: tiny FER-2013 data in every format the loaders read, and paths to the full data.

`tests/fixtures/fer2013/` holds 168 real FER-2013 faces (16 training and 8 PublicTest rows per class, in
the layout of `../shared/data/fer2013`, FER+ votes included; `rows.json` names the source rows), and
`tests/fixtures/photos/` four real photos. The fixtures below build the original CSV, the Kaggle image
folders, a happy/sad photo folder and camera-sized photos from them, so a user's clone runs every test that
does not need the full data set. Tests that do need it (`requires_full_data(why)`) skip with their reason.
"""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# Nothing in the suite may reach the network; the Hub tests start their own loopback server.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
FER_DIR = SHARED_DATA / "fer2013"
HAPPY_SAD_DIR = SHARED_DATA / "happy_sad"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
FER_FIXTURE_DIR = FIXTURES / "fer2013"  # train.parquet, publictest.parquet and their *_meta.parquet
PHOTOS = sorted((FIXTURES / "photos").glob("*.jpg"))  # happy_man, happy_three_women, sad_child, sad_man

requires_shared = pytest.mark.skipif(
    not FER_DIR.is_dir() or not HAPPY_SAD_DIR.is_dir(),
    reason=f"needs the real data in {SHARED_DATA} (present in the project's CI, not in a user's clone)",
)


def requires_full_data(why: str) -> pytest.MarkDecorator:
    """Skips a test that checks the full data sets in ../shared/data, with `why` the fixtures cannot stand in."""
    return pytest.mark.skipif(not FER_DIR.is_dir() or not HAPPY_SAD_DIR.is_dir(), reason=f"needs {SHARED_DATA}: {why}")


FER_USAGE = {"train": "Training", "validation": "PublicTest", "test": "PrivateTest"}


@pytest.fixture(scope="session")
def fer_rows():
    """Real FER-2013 rows: 40 training and 20 PublicTest faces as (48x48 uint8 array, label, split)."""
    from datasets import load_dataset

    rows = []
    for split, file, count in (("train", "train.parquet", 40), ("validation", "publictest.parquet", 20)):
        part = load_dataset("parquet", data_files=str(FER_FIXTURE_DIR / file), split="train").select(range(count))
        rows += [(np.asarray(image.convert("L")), label, split) for image, label in zip(part["image"], part["label"])]
    return rows


@pytest.fixture(scope="session")
def fer_csv(tmp_path_factory, fer_rows) -> Path:
    """The fixture rows as the original `fer2013.csv`."""
    return write_fer_csv(tmp_path_factory.mktemp("fer_csv") / "fer2013.csv", fer_rows)


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory) -> Path:
    """A happy/sad photo folder of 12 photos per class, made from the four fixture photos.

    Each photo is saved as it is and as mirrored, cropped, rescaled and re-encoded (PNG, grayscale) copies,
    the variations a scraped photo set has; the faces stay real.
    """
    from PIL import Image, ImageOps

    root = tmp_path_factory.mktemp("happy_sad")
    for path in PHOTOS:
        label = path.stem.split("_")[0]
        folder = root / label
        folder.mkdir(exist_ok=True)
        image = Image.open(path).convert("RGB")
        width, height = image.size
        variants = {
            "orig.jpg": image,
            "mirror.jpg": ImageOps.mirror(image),
            "crop.png": image.crop((width // 20, height // 20, width - width // 20, height - height // 20)),
            "big.jpg": image.resize((width * 3 // 2, height * 3 // 2)),
            "small.png": image.resize((width * 3 // 4, height * 3 // 4)),
            "gray.png": image.convert("L"),
        }
        for suffix, variant in variants.items():
            variant.save(folder / f"{path.stem}_{suffix}")
    return root


@pytest.fixture(scope="session")
def fer_kaggle_folders(tmp_path_factory, fer_rows) -> Path:
    """The fixture rows in the Kaggle image layout (train/<class>/*.png, test/<class>/*.png)."""
    return write_kaggle_folders(tmp_path_factory.mktemp("fer_kaggle"), fer_rows)


@pytest.fixture(scope="session")
def large_photos(tmp_path_factory) -> dict[str, Path]:
    """Two fixture photos enlarged to camera size: a 3,831 px baseline JPEG and a 7,360 px progressive one.

    Big photos take the reduced-scale JPEG decoding paths of fer_hf.model.images.load_image (1/2-1/8 scale, and
    a progressive one from its DC scans alone), as a scraped photo set's camera originals do.
    """
    from PIL import Image

    folder = tmp_path_factory.mktemp("large_photos")
    photos = {"baseline.jpg": (PHOTOS[0], 3831, False), "progressive.jpg": (PHOTOS[1], 7360, True)}
    for name, (source, width, progressive) in photos.items():
        image = Image.open(source).convert("RGB")
        height = round(image.height * width / image.width)
        image.resize((width, height), Image.Resampling.BICUBIC).save(folder / name, quality=90, progressive=progressive)
    return {name: folder / name for name in photos}


def write_fer_csv(path: Path, rows) -> Path:
    """Writes rows in the original `fer2013.csv` format: `emotion,pixels,Usage`."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["emotion", "pixels", "Usage"])
        for pixels, label, split in rows:
            writer.writerow([label, " ".join(map(str, pixels.ravel())), FER_USAGE[split]])
    return path


def write_kaggle_folders(root: Path, rows, extension: str = ".png") -> Path:
    """Writes rows in the Kaggle layout: train/<class>/Training_N.ext, test/<class>/PublicTest_N.ext."""
    from PIL import Image

    from fer_hf import FER2013_LABELS

    for index, (pixels, label, split) in enumerate(rows):
        folder = root / ("train" if split == "train" else "test") / FER2013_LABELS[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, mode="L").save(folder / f"{FER_USAGE[split]}_{index}{extension}", quality=95)
    return root


def run_python(args, *, cwd=ROOT, env=None, timeout=600, check=True) -> subprocess.CompletedProcess:
    """Runs `python ARGS...` in a fresh process and returns it (stdout and stderr merged into stdout)."""
    full_env = {**os.environ, **(env or {})}
    result = subprocess.run(
        [sys.executable, *map(str, args)], cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"python {' '.join(map(str, args))} exited {result.returncode}:\n{result.stdout[-6000:]}")
    return result
