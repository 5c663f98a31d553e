"""Shared fixtures: paths to the real data beside the project, and small FER-2013 fixtures built from it.

A user's clone has no ../shared: tests that need it skip and say so.
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

requires_shared = pytest.mark.skipif(
    not FER_DIR.is_dir() or not HAPPY_SAD_DIR.is_dir(),
    reason=f"needs the real data in {SHARED_DATA} (present in the project's CI, not in a user's clone)",
)

FER_USAGE = {"train": "Training", "validation": "PublicTest", "test": "PrivateTest"}


@pytest.fixture(scope="session")
def fer_rows():
    """Real FER-2013 rows: 40 training and 20 PublicTest faces as (48x48 uint8 array, label, split)."""
    if not FER_DIR.is_dir():
        pytest.skip(f"needs the real FER-2013 parquet files in {FER_DIR}")
    from datasets import load_dataset

    rows = []
    for split, file, count in (("train", "train.parquet", 40), ("validation", "publictest.parquet", 20)):
        part = load_dataset("parquet", data_files=str(FER_DIR / file), split="train").select(range(count))
        rows += [(np.asarray(image.convert("L")), label, split) for image, label in zip(part["image"], part["label"])]
    return rows


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
