"""Shared fixtures: tiny FER-2013 data in every format the loaders read, and paths to the full data.

`tests/fixtures/fer2013/` holds 168 real FER-2013 faces (16 training and 8 PublicTest rows per class, in
the layout of `../shared/data/fer2013`, FER+ votes included; `rows.json` names the source rows), and
`tests/fixtures/photos/` four real photos. The fixtures below build the original CSV, the Kaggle image
folders, a happy/sad photo folder and camera-sized photos from them, so a user's clone runs every test that
does not need the full data set. Tests that do need it (`requires_full_data(why)`) skip with their reason.
"""

import csv
import multiprocessing
import os
import runpy
import subprocess
import sys
import tempfile
from pathlib import Path

# Two test workers (pyproject's `-n 2`) share the machine's cores: with one thread each, and in the processes
# they start, two compute-bound runs at once went about 1.9x faster than with two threads each fighting for the
# same cores (benchmarks/results/worker_threads.md). Set before numpy and torch are imported, which read it once.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"

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

# The test files that take longest, longest first (a CI run's `--durations=0`, summed per file). pytest-xdist
# (pyproject: `--dist loadfile --no-loadscope-reorder`) hands files to the workers in collection order, so these
# go first and the run does not end with one worker on a long file while the other has nothing left; the rest
# follow in their own order. A file missing here only runs later.
LONGEST_FIRST = ["test_train.py", "test_full_data.py", "test_hub.py", "test_browser_live.py", "test_feedback.py",
                 "test_heatmaps.py", "test_space.py", "test_app_browser.py", "test_app_load.py", "test_export.py",
                 "test_pipeline.py", "test_gpu_recipe.py", "test_inference.py", "test_feedback_app.py", "test_app.py",
                 "test_stream.py", "test_hub_server.py", "test_faces.py", "test_video.py", "test_app_unsure.py"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests keep their order


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


@pytest.fixture(scope="module")
def tiny_model_folder(tmp_path_factory) -> Path:
    """A saved random tiny FER CNN (tests/apptools.save_tiny_model): for checks of frames, boxes, tracks and files,
    not of which expression wins."""
    from tests.apptools import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("fer-tiny"))


@pytest.fixture(scope="module")
def tiny_recognizer(tiny_model_folder):
    """A FaceExpressionRecognizer of `tiny_model_folder`."""
    from fer_hf.faces import FaceExpressionRecognizer
    from fer_hf.hub import load_classifier

    return FaceExpressionRecognizer(*load_classifier(tiny_model_folder))


@pytest.fixture(scope="session")
def tiny_trained_model(tmp_path_factory) -> Path:
    """`train.py` run once a session: a tiny FER CNN, 6 steps on 96 fixture faces, scored on 48 PublicTest faces.

    For the tests that only read a trained model's folder (what it holds, how it loads); a test that changes a
    folder or needs other flags trains its own.
    """
    out = tmp_path_factory.mktemp("tiny_trained") / "fer"
    run_preloaded([ROOT / "train.py", "--model_variant", "tiny", "--per_device_train_batch_size", "32",
                   "--disable_tqdm", "true", "--seed", "0", "--dataset_name", FER_FIXTURE_DIR, "--output_dir", out,
                   "--max_steps", "6", "--max_train_samples", "96", "--max_eval_samples", "48", "--logging_steps", "1"])
    return out


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
    """Runs `python ARGS...` in a fresh process (tests/freshpython.py: its environment, PYTHONPATH included, set
    before transformers or fer_hf is imported) and returns it (stdout and stderr merged into stdout)."""
    from tests import freshpython

    full_env = {**os.environ, **(env or {})}
    result = freshpython.run(args, cwd=cwd, env=full_env, timeout=timeout, merge=True)
    if check and result.returncode != 0:
        raise AssertionError(f"python {' '.join(map(str, args))} exited {result.returncode}:\n{result.stdout[-6000:]}")
    return result


# What `python train.py` and `python -m fer_hf` import before they do anything: several seconds of CPU a process.
# Not fer_hf.__main__ itself: `-m fer_hf` runs it.
PRELOADED = ["torch", "transformers", "datasets", "accelerate", "matplotlib.pyplot", "fer_hf", "fer_hf.data",
             "fer_hf.evaluation", "fer_hf.hub", "fer_hf.training", "tests.conftest"]
_PRELOADED_PYTHON = multiprocessing.get_context("forkserver")
_PRELOADED_PYTHON.set_forkserver_preload(PRELOADED)


def run_preloaded(args, *, cwd=ROOT, env=None, timeout=600, check=True) -> subprocess.CompletedProcess:
    """`run_python` for `SCRIPT.py ARGS...` or `-m MODULE ARGS...`, in a process forked from one that imported
    PRELOADED.

    Each run is a new process, as with `python SCRIPT`: multiprocessing's fork server imports the libraries
    once, and every run forks a fresh copy of it. The run sees this process's environment and `env`, set before
    the script runs, which is after those imports: a variable that a library reads when imported
    (HF_ENDPOINT, HF_HOME, PYTHONPATH) needs `run_python`, which imports transformers and fer_hf after setting
    them.
    """
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "output.txt"
        output.touch()  # empty, if the child fails before the script starts
        full_env = {**os.environ, **(env or {})}  # this process's, as a subprocess would get it
        child = _PRELOADED_PYTHON.Process(target=_run_in_child,
                                          args=(list(map(str, args)), str(cwd), full_env, str(output)))
        child.start()
        child.join(timeout)
        if child.exitcode is None:
            child.kill()
            child.join()
            raise subprocess.TimeoutExpired(["python", *map(str, args)], timeout)
        result = subprocess.CompletedProcess(["python", *map(str, args)], child.exitcode, output.read_text())
    if check and result.returncode != 0:
        raise AssertionError(f"python {' '.join(map(str, args))} exited {result.returncode}:\n{result.stdout[-6000:]}")
    return result


def _run_in_child(args: list[str], cwd: str, env: dict[str, str], output: str) -> None:
    """Runs `python ARGS` in this forked process: its output to the file `output`, its exit as the process's."""
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)  # stdout and stderr merged, as run_python does
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    os.environ.clear()
    os.environ.update(env)
    try:
        run_as_main(args, cwd)
    finally:
        sys.__stdout__.flush()  # what a library wrote through the streams it kept from before the fork
        sys.__stderr__.flush()


def run_as_main(args: list[str], cwd: str) -> None:
    """Runs `python ARGS` (`-m MODULE ...` or `SCRIPT ...`) in this process, as the interpreter would run it in
    `cwd`: working directory, sys.argv and the first sys.path entry set, the code run as `__main__`."""
    os.chdir(cwd)
    if args[0] == "-m":
        sys.argv = [args[1], *args[2:]]
        sys.path.insert(0, cwd)  # as `python -m` does
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = args
        sys.path.insert(0, str(Path(args[0]).resolve().parent))  # as `python SCRIPT` does
        runpy.run_path(args[0], run_name="__main__")
