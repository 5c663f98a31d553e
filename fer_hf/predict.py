"""Label the faces in image files and folders: `python -m fer_hf predict PATH... --output results.csv`.

    from fer_hf.predict import collect_images, predict_files, write_results

    files, ignored = collect_images(["photos/", "extra.jpg"])   # folders recursively, by extension
    rows, summary = predict_files(recognizer, files, batch_size=16)
    write_results(rows, "results.csv", labels=recognizer.labels)

One row per face (largest first), one "no face" row for a photo without one, and one "error" row
naming each file that could not be read: no file is dropped without a trace.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from .data import IMAGE_EXTENSIONS
from .faces import FaceExpressionRecognizer
from .hub import find_model
from .images import load_image

logger = logging.getLogger(__name__)

FIELDS = ["file", "face", "status", "x0", "y0", "x1", "y1", "label", "score", "detection_score", "error"]


def collect_images(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], int]:
    """Files to label: each file given as is, each folder's image files recursively, sorted.

    A path that does not exist is kept, so that it is reported as unreadable rather than skipped.
    Inside folders, hidden files and folders (".git", macOS "._x.jpg") are left out.

    Returns:
        The files, and how many files in the folders were ignored for their extension.
    """
    files: list[Path] = []
    ignored = 0
    for path in map(Path, paths):
        if not path.is_dir():
            files.append(path)
            continue
        for found in sorted(path.rglob("*")):
            if not found.is_file() or any(part.startswith(".") for part in found.relative_to(path).parts):
                continue
            if found.suffix.lower() in IMAGE_EXTENSIONS:
                files.append(found)
            else:
                ignored += 1
    return files, ignored


def predict_files(
    recognizer: FaceExpressionRecognizer,
    files: Sequence[str | os.PathLike],
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Labels the faces of every file with `recognizer.predict_batch`, `batch_size` photos at a time.

    Returns:
        (rows, summary). Rows follow the order of `files`; each has the FIELDS keys and `scores`
        ({label: probability}, empty for rows without a face); `status` is "face", "no face" or
        "error". The summary counts files, faces, files without a face and unreadable files, and
        lists the unreadable ones with the reason.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    rows: list[dict[str, Any]] = []
    for start in range(0, len(files), batch_size):
        names = [str(path) for path in files[start : start + batch_size]]
        results: dict[str, list[dict] | str] = {}
        images = {}
        for name in names:
            try:  # read as the recognizer reads a file (as the demo reads an upload): the same crops
                images[name] = load_image(name, max_side=recognizer.max_side, min_side=recognizer.min_side)
            except ValueError as error:  # load_image's message names the file and the reason
                results[name] = str(error)
        results.update(_predict(recognizer, images))
        for name in names:
            rows += _rows(name, results[name])
        if progress is not None:
            progress(start + len(names), len(files))
    unreadable = [{"file": row["file"], "error": row["error"]} for row in rows if row["status"] == "error"]
    summary = {
        "files": len(files),
        "faces": sum(row["status"] == "face" for row in rows),
        "files_with_faces": len({row["file"] for row in rows if row["status"] == "face"}),
        "files_without_face": sum(row["status"] == "no face" for row in rows),
        "unreadable": len(unreadable),
        "unreadable_files": unreadable,
    }
    return rows, summary


def _predict(recognizer: FaceExpressionRecognizer, images: dict[str, Any]) -> dict[str, list[dict] | str]:
    """predict_batch on the batch; if that fails, photo by photo, so one bad photo costs only its own row."""
    try:
        return dict(zip(images, recognizer.predict_batch(list(images.values()))))
    except Exception as error:  # e.g. an image processor that rejects a photo
        if len(images) > 1:
            return {name: _predict(recognizer, {name: image})[name] for name, image in images.items()}
        return {name: f"Cannot label {name}: {type(error).__name__}: {error}" for name in images}


def _rows(name: str, faces: list[dict] | str) -> list[dict[str, Any]]:
    """A file's rows: one per face, else one "no face" row, or one "error" row for a message."""
    if isinstance(faces, str):
        logger.warning("%s", faces)
        return [{**_empty_row(name), "status": "error", "error": faces}]
    if not faces:
        return [{**_empty_row(name), "status": "no face"}]
    return [
        {**_empty_row(name), "face": index, "status": "face", "x0": face["box"][0], "y0": face["box"][1],
         "x1": face["box"][2], "y1": face["box"][3], "label": face["label"], "score": face["score"],
         "detection_score": face["detection_score"], "scores": face["scores"]}
        for index, face in enumerate(faces)
    ]


def _empty_row(name: str) -> dict[str, Any]:
    return {**dict.fromkeys(FIELDS, None), "file": name, "scores": {}}


def write_results(rows: Sequence[dict[str, Any]], output: str | os.PathLike | TextIO, labels: Sequence[str],
                  summary: dict[str, Any] | None = None, model: str | None = None) -> None:
    """Writes rows as CSV (one column per class, `p_<label>`) or, for a `.json` path, as JSON.

    The JSON file is `{"model", "labels", "summary", "rows"}` with each row's `scores` as an object.
    """
    if not isinstance(output, (str, os.PathLike)):
        _write_csv(rows, output, labels)
        return
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        if path.suffix.lower() == ".json":
            json.dump({"model": model, "labels": list(labels), "summary": summary, "rows": list(rows)}, handle, indent=2)
        else:
            _write_csv(rows, handle, labels)


def _write_csv(rows: Sequence[dict[str, Any]], handle: TextIO, labels: Sequence[str]) -> None:
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(FIELDS + [f"p_{label}" for label in labels])
    for row in rows:
        cells = [_cell(row[field]) for field in FIELDS]
        writer.writerow(cells + [_cell(row["scores"].get(label)) for label in labels])


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    return f"{value:.6f}" if isinstance(value, float) else value


def predict_command(args) -> int:
    """`python -m fer_hf predict` (arguments in fer_hf/__main__.py); 0 if every file was read, else 1 (2: no files)."""
    from .hub import explain_hub_error, load_classifier

    if not logger.handlers:  # progress and the summary on stderr; other libraries' logging untouched
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    if args.batch_size < 1:
        print(f"error: --batch_size must be at least 1, got {args.batch_size}", file=sys.stderr)
        return 2
    files, ignored = collect_images(args.paths)
    if ignored:
        logger.info("Ignored %d file(s) in the folders without an image extension (%s).", ignored,
                    ", ".join(sorted(IMAGE_EXTENSIONS)))
    if not files:
        print(f"error: no image files in {', '.join(args.paths)}", file=sys.stderr)
        return 2
    try:
        model_name = find_model(args.model)
        model, processor = load_classifier(model_name, revision=args.revision)
    except Exception as error:  # no model, a wrong folder or repo id, no network and nothing cached
        message = explain_hub_error(error) if not isinstance(error, FileNotFoundError) else str(error)
        print(f"error: cannot load the model: {message}", file=sys.stderr)
        return 1
    recognizer = FaceExpressionRecognizer(model, processor, classify_whole_image=args.whole_image,
                                          flip_tta=args.flip_tta)
    logger.info("Labelling %d file(s) with %s (labels: %s; runtime: %s; flip TTA: %s)", len(files), model_name,
                ", ".join(recognizer.labels), recognizer.runtime.mode, "on" if recognizer.flip_tta else "off")

    def progress(done: int, total: int) -> None:
        logger.info("  %d/%d files", done, total)

    rows, summary = predict_files(recognizer, files, batch_size=args.batch_size, progress=progress)
    if args.output:
        write_results(rows, args.output, recognizer.labels, summary, model_name)
    else:
        write_results(rows, sys.stdout, recognizer.labels)
    logger.info(
        "%d file(s): %d face(s) in %d file(s), %d file(s) without a face, %d unreadable%s",
        summary["files"], summary["faces"], summary["files_with_faces"], summary["files_without_face"],
        summary["unreadable"], f" -> {args.output}" if args.output else "",
    )
    for bad in summary["unreadable_files"]:
        logger.info("  unreadable: %s", bad["error"])
    return 1 if summary["unreadable"] else 0


__all__ = ["IMAGE_EXTENSIONS", "collect_images", "predict_files", "write_results"]
