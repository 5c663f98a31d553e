"""Label the faces in images, videos, folders, cameras and streams: `python -m fer_hf predict PATH... --output F.csv`.

    from fer_hf.predict import collect_images, predict_files, predict_video, write_results

    files, ignored = collect_images(["photos/", "extra.jpg"])   # folders recursively, by extension
    rows, summary = predict_files(recognizer, files, batch_size=16)
    write_results(rows, "results.csv", labels=recognizer.labels)
    video_rows = list(predict_video(recognizer, "clip.mp4", every=1, annotate="clip_labelled.mp4"))
    live_rows = predict_stream(recognizer, "rtsp://camera.local/live", duration=60)  # or a camera: 0, /dev/video0
    rows, summary = predict_files(recognizer, files, explain="heatmaps/")  # and one heat-map PNG per face

One row per face (largest first), one "no face" row for a photo without one, and one "error" row
naming each file that could not be read: no file is dropped without a trace. A video gives the
same rows for each analysed frame, with its `frame`, `time` (seconds) and `track` (fer_hf.video); so
do a camera and a stream, labelled in real time (fer_hf.stream).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from PIL import Image

from .data import IMAGE_EXTENSIONS
from .faces import FaceExpressionRecognizer
from .hub import find_model
from .model.images import load_image
from .stream import analyze_stream, describe, is_stream
from .tracking import DEFAULT_TIME_CONSTANT
from .video import VIDEO_EXTENSIONS, FrameResult, Timeline, VideoReadError, analyze_video, is_video, probe

logger = logging.getLogger(__name__)

# Heat-map PNGs (predict --explain) are enlarged to at least this many pixels a side.
HEATMAP_PNG_SIDE = 192
# unsure: "true" where the face's calibrated top score is below the model's unsure_threshold (fer_hf.calibration).
FIELDS = ["file", "face", "status", "x0", "y0", "x1", "y1", "label", "score", "unsure", "detection_score", "error"]
# The columns when there are videos: a video's rows also say which frame, when, and which track.
VIDEO_FIELDS = ["file", "frame", "time", "track", *FIELDS[1:]]


def collect_images(
    paths: Iterable[str | os.PathLike], extensions: Iterable[str] = IMAGE_EXTENSIONS
) -> tuple[list[Path], int]:
    """Files to label: each file given as is, each folder's files with one of `extensions` recursively, sorted.

    A path that does not exist is kept, so that it is reported as unreadable rather than skipped.
    Inside folders, hidden files and folders (".git", macOS "._x.jpg") are left out.

    Returns:
        The files, and how many files in the folders were ignored for their extension.
    """
    extensions = set(extensions)
    files: list[Path] = []
    ignored = 0
    for path in map(Path, paths):
        if not path.is_dir():
            files.append(path)
            continue
        for found in sorted(path.rglob("*")):
            if not found.is_file() or any(part.startswith(".") for part in found.relative_to(path).parts):
                continue
            if found.suffix.lower() in extensions:
                files.append(found)
            else:
                ignored += 1
    return files, ignored


def predict_files(
    recognizer: FaceExpressionRecognizer,
    files: Sequence[str | os.PathLike],
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
    explain: str | os.PathLike | None = None,
    explain_method: str = "occlusion",
    target: str | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Labels the faces of every file with `recognizer.predict_batch`, `batch_size` photos at a time.

    With `explain` (a folder), each face's heat map (`explain_method`, for `target` or its own label) is
    drawn over it and written there as one PNG per face (write_heatmaps); its path is the row's `heatmap`.

    Returns:
        (rows, summary). Rows follow the order of `files`; each has the FIELDS keys and `scores`
        ({label: probability}, empty for rows without a face); `status` is "face", "no face" or
        "error". The summary counts files, faces, files without a face and unreadable files, and
        lists the unreadable ones with the reason.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    rows: list[dict[str, Any]] = []
    written: set[Path] = set()  # heat-map files of this run, so that two photos named alike do not share one
    for start in range(0, len(files), batch_size):
        names = [str(path) for path in files[start : start + batch_size]]
        results: dict[str, list[dict] | str] = {}
        images = {}
        for name in names:
            try:  # read as the recognizer reads a file (as the demo reads an upload): the same crops
                images[name] = load_image(name, max_side=recognizer.max_side, min_side=recognizer.min_side)
            except ValueError as error:  # load_image's message names the file and the reason
                results[name] = str(error)
        options = {"explain": explain_method, "target": target} if explain is not None else {}
        results.update(_predict(recognizer, images, **options))
        for name in names:
            file_rows = _rows(name, results[name])
            if explain is not None and not isinstance(results[name], str) and results[name]:
                for row, path in zip(file_rows, write_heatmaps(name, results[name], explain, written)):
                    row["heatmap"] = str(path)
            rows += file_rows
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


def _predict(recognizer: FaceExpressionRecognizer, images: dict[str, Any], **options) -> dict[str, list[dict] | str]:
    """predict_batch on the batch; if that fails, photo by photo, so one bad photo costs only its own row."""
    try:
        return dict(zip(images, recognizer.predict_batch(list(images.values()), **options)))
    except Exception as error:  # e.g. an image processor that rejects a photo
        if len(images) > 1:
            return {name: _predict(recognizer, {name: image}, **options)[name] for name, image in images.items()}
        return {name: f"Cannot label {name}: {type(error).__name__}: {error}" for name in images}


def write_heatmaps(name: str, faces: list[dict[str, Any]], folder: str | os.PathLike,
                   written: set[Path] | None = None) -> list[Path]:
    """Writes each face's heat map over the face as `<photo>_face<N>_<label>.png` in `folder`; returns the paths.

    The PNG is the face box from the photo at full size, its heat map blended over it (warm: where the label
    came from), enlarged to at least HEATMAP_PNG_SIDE pixels a side so that it can be looked at. A name in
    `written` (the files of this run so far) gets a number, so two photos named alike keep both.
    """
    from .drawing import overlay_heatmap

    folder, written = Path(folder), written if written is not None else set()
    folder.mkdir(parents=True, exist_ok=True)
    photo = load_image(name)
    paths = []
    for index, face in enumerate(faces):
        face_pixels = photo.crop(face["box"])
        image = overlay_heatmap(face_pixels, (0, 0, *face_pixels.size), face["heatmap"])
        scale = max(1.0, HEATMAP_PNG_SIDE / min(image.size))
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
        stem, number = f"{Path(name).stem}_face{index}_{face['label']}", 1
        path = folder / f"{stem}.png"
        while path in written:
            number += 1
            path = folder / f"{stem}-{number}.png"
        image.save(path)
        written.add(path)
        paths.append(path)
    return paths


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
         "unsure": face["unsure"], "detection_score": face["detection_score"], "scores": face["scores"]}
        for index, face in enumerate(faces)
    ]


def predict_video(
    recognizer: FaceExpressionRecognizer,
    path: str | os.PathLike,
    *,
    every: int = 1,
    annotate: str | os.PathLike | None = None,
    timeline: Timeline | None = None,
    progress: Callable[[int], None] | None = None,
    **options: Any,
) -> Iterator[dict[str, Any]]:
    """A video's rows as its frames are analysed (fer_hf.video.analyze_video; `options` go to it).

    Each analysed frame gives one row per face (with its `track` and smoothed scores) or one "no face"
    row. A video that cannot be read gives one "error" row naming it; one that stops being readable
    keeps the rows of the frames before and ends with that error row. `timeline` gathers the faces
    for the chart and the per-track summary.
    """
    results = analyze_video(recognizer, path, every=every, annotate=annotate, progress=progress, **options)
    return _frame_rows(str(path), results, timeline)


def predict_stream(
    recognizer: FaceExpressionRecognizer,
    source: str | int | os.PathLike,
    *,
    duration: float | None = None,
    timeline: Timeline | None = None,
    progress: Callable[[int], None] | None = None,
    **options: Any,
) -> Iterator[dict[str, Any]]:
    """A camera's or stream's rows as its frames are labelled in real time (fer_hf.stream.analyze_stream).

    The rows are a video's (predict_video); `frame` counts every frame the source delivered, so the
    frames dropped while a slower machine labelled the one before are the gaps between them.
    """
    results = analyze_stream(recognizer, source, duration=duration, progress=progress, **options)
    return _frame_rows(str(source), results, timeline)


def _frame_rows(name: str, results: Iterator[FrameResult], timeline: Timeline | None) -> Iterator[dict[str, Any]]:
    """Rows of analysed frames: one per face or one "no face"; an "error" row naming the source if reading fails."""
    try:
        for result in results:
            if timeline is not None:
                timeline.add(result)
            where = {"frame": result.index, "time": round(result.time, 6)}
            if not result.faces:
                yield {**_empty_row(name), **where, "status": "no face"}
            for row, face in zip(_rows(name, result.faces), result.faces):
                yield {**row, **where, "track": face["track"]}
    except VideoReadError as error:  # names the file or stream, and the reason
        logger.warning("%s", error)
        yield {**_empty_row(name), "status": "error", "error": str(error)}
    except Exception as error:  # e.g. a full disk for the annotated video: the other files go on
        message = f"Cannot label {name}: {type(error).__name__}: {error}"
        logger.warning("%s", message)
        yield {**_empty_row(name), "status": "error", "error": message}
    finally:
        results.close()  # a stream's reader thread stops even when the rows are not read to the end


def _empty_row(name: str) -> dict[str, Any]:
    return {**dict.fromkeys(FIELDS, None), "file": name, "scores": {}}


def write_results(rows: Sequence[dict[str, Any]], output: str | os.PathLike | TextIO, labels: Sequence[str],
                  summary: dict[str, Any] | None = None, model: str | None = None) -> None:
    """Writes rows as CSV (one column per class, `p_<label>`) or, for a `.json` path, as JSON.

    The JSON file is `{"model", "labels", "summary", "rows"}` with each row's `scores` as an object.
    The columns are VIDEO_FIELDS when a row is a video frame's, else FIELDS.
    """
    fields = VIDEO_FIELDS if any("frame" in row for row in rows) else FIELDS
    if not isinstance(output, (str, os.PathLike)):
        _write_csv(rows, output, labels, fields)
        return
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        if path.suffix.lower() == ".json":
            json.dump({"model": model, "labels": list(labels), "summary": summary, "rows": list(rows)}, handle, indent=2)
        else:
            _write_csv(rows, handle, labels, fields)


def _write_csv(rows: Iterable[dict[str, Any]], handle: TextIO, labels: Sequence[str], fields: Sequence[str] = FIELDS,
               header: bool = True) -> None:
    writer = csv.writer(handle, lineterminator="\n")
    if header:
        writer.writerow(list(fields) + [f"p_{label}" for label in labels])
    for row in rows:
        cells = [_cell(row.get(field)) for field in fields]
        writer.writerow(cells + [_cell(row["scores"].get(label)) for label in labels])


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:.6f}" if isinstance(value, float) else value


def predict_command(args) -> int:
    """`python -m fer_hf predict` (arguments in fer_hf/__main__.py); 0 if every file was read, else 1 (2: no files).

    CSV rows are written as they come, so a long video's rows are not all held; a JSON file is written at the end.
    Cameras and streams come last, each until it ends, --duration or Ctrl-C (which stops with the rows written).
    """
    from .hub import explain_hub_error, load_classifier

    for name in (__name__, "fer_hf.stream"):  # progress, the summary, a stream's end on stderr; other logging untouched
        if not logging.getLogger(name).handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            logging.getLogger(name).addHandler(handler)
            logging.getLogger(name).setLevel(logging.INFO)
    every = getattr(args, "every", 1)
    if args.batch_size < 1 or every < 1:
        print(f"error: --batch_size and --every must be at least 1, got {args.batch_size} and {every}", file=sys.stderr)
        return 2
    streams = [source for source in args.paths if is_stream(source)]
    duration = getattr(args, "duration", None)
    if streams and (every != 1 or getattr(args, "annotate", None)):
        print("error: --every and --annotate are for video files: a camera or stream is labelled as fast as this "
              f"machine keeps up ({', '.join(streams)})", file=sys.stderr)
        return 2
    if duration is not None and duration <= 0:
        print(f"error: --duration must be above 0 seconds, got {duration}", file=sys.stderr)
        return 2
    files, ignored = collect_images([path for path in args.paths if path not in streams],
                                    IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)
    if ignored:
        logger.info("Ignored %d file(s) in the folders without an image or video extension (%s).", ignored,
                    ", ".join(sorted(IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)))
    if not files and not streams:
        print(f"error: no image files or videos in {', '.join(args.paths)}", file=sys.stderr)
        return 2
    try:
        model_name = find_model(args.model)
        model, processor = load_classifier(model_name, revision=args.revision)
    except Exception as error:  # no model, a wrong folder or repo id, no network and nothing cached
        message = explain_hub_error(error) if not isinstance(error, FileNotFoundError) else str(error)
        print(f"error: cannot load the model: {message}", file=sys.stderr)
        return 1
    explain = getattr(args, "explain", None)
    try:
        recognizer = FaceExpressionRecognizer(model, processor, classify_whole_image=args.whole_image,
                                              flip_tta=args.flip_tta, labels=getattr(args, "labels", None),
                                              align=getattr(args, "align_faces", None))
    except ValueError as error:  # --labels names a class the model does not have
        print(f"error: --labels: {error}", file=sys.stderr)
        return 2
    if explain is not None:
        from .model.heatmaps import explain_method, target_index

        try:  # before any work: captum missing, a target the model does not have
            explain_method(args.explain_method)
            target_index(recognizer.model_labels, args.target)
        except (ImportError, ValueError) as error:
            print(f"error: --explain: {error}", file=sys.stderr)
            return 2
    logger.info("Labelling %d file(s)%s with %s (labels: %s; runtime: %s; flip TTA: %s; aligned faces: %s)", len(files),
                f" and {len(streams)} camera(s) or stream(s)" if streams else "", model_name,
                ", ".join(recognizer.labels), recognizer.runtime.mode, "on" if recognizer.flip_tta else "off",
                "on" if recognizer.align else "off")
    videos = [path for path in files if is_video(path)]
    photos = [path for path in files if not is_video(path)]

    def progress(done: int, total: int) -> None:
        logger.info("  %d/%d files", done, total)

    explain_options = {"explain": explain, "explain_method": args.explain_method, "target": args.target} if explain else {}
    rows, summary = predict_files(recognizer, photos, batch_size=args.batch_size, progress=progress, **explain_options)
    if explain:
        logger.info("%d heat map(s) -> %s%s", sum("heatmap" in row for row in rows), explain,
                    " (videos and streams get none)" if videos or streams else "")
    if not videos and not streams:
        _write_all(args.output, rows, recognizer.labels, summary, model_name)
    else:
        summary = _predict_videos(recognizer, [*videos, *streams], rows, summary, args, model_name)
    summary["files"] = len(files) + len(streams)
    logger.info(
        "%d file(s): %d face(s) in %d file(s), %d file(s) without a face, %d unreadable%s",
        summary["files"], summary["faces"], summary["files_with_faces"], summary["files_without_face"],
        summary["unreadable"], f" -> {args.output}" if args.output else "",
    )
    for bad in summary["unreadable_files"]:
        logger.info("  unreadable: %s", bad["error"])
    return 1 if summary["unreadable"] else 0


def _write_all(output: str | None, rows, labels, summary, model_name) -> None:
    if output:
        write_results(rows, output, labels, summary, model_name)
    else:
        write_results(rows, sys.stdout, labels)


def _predict_videos(recognizer, videos: list[Path | str], rows: list[dict[str, Any]], summary: dict[str, Any], args,
                    model_name: str) -> dict[str, Any]:
    """Labels the videos, then the cameras and streams (str), after the photos' rows, writing CSV rows as they come.

    Ctrl-C stops the camera or stream being labelled (and the sources after it) with the rows so far written.
    Returns the summary with the videos' and streams'.
    """
    from tqdm.auto import tqdm

    as_json = bool(args.output) and Path(args.output).suffix.lower() == ".json"
    handle = sys.stdout
    if args.output and not as_json:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        handle = open(args.output, "w", newline="", encoding="utf-8")
    kept = list(rows) if as_json else []
    if not as_json:
        _write_csv(rows, handle, recognizer.labels, VIDEO_FIELDS)
    streams = sum(isinstance(path, str) for path in videos)
    summary = {**summary, "videos": len(videos) - streams, **({"streams": streams} if streams else {}), "frames": 0}
    smoothing = getattr(args, "smoothing", None)
    options = {"time_constant": DEFAULT_TIME_CONSTANT if smoothing is None else smoothing}
    if smoothing == 0:  # each frame's own scores and label
        options["hysteresis"] = 0.0
    many = len(videos) > 1
    try:
        for path in videos:
            live = isinstance(path, str)
            name = describe(path) if live else str(path)
            annotate = _output_for(args.annotate, Path(path), many) if getattr(args, "annotate", None) else None
            timeline = Timeline(recognizer.labels) if getattr(args, "plot", None) else None
            total = None
            if not live:
                try:
                    total = probe(path).frames or None
                except VideoReadError:
                    pass  # predict_video reports it
            faces = frames = 0
            error = None
            with tqdm(total=total, unit="frame", desc=name if live else path.name, leave=False, mininterval=0.5) as bar:
                progress = lambda done: bar.update(done - bar.n)  # frames decoded or received so far
                if live:
                    video_rows = predict_stream(recognizer, path, duration=getattr(args, "duration", None),
                                                timeline=timeline, progress=progress, **options)
                else:
                    video_rows = predict_video(recognizer, path, every=getattr(args, "every", 1), annotate=annotate,
                                               timeline=timeline, progress=progress, **options)
                try:
                    for row in video_rows:
                        faces += row["status"] == "face"
                        frames += row.get("frame") is not None and row["face"] in (None, 0)
                        error = row if row["status"] == "error" else error
                        if as_json:
                            kept.append(row)
                        else:
                            _write_csv([row], handle, recognizer.labels, VIDEO_FIELDS, header=False)
                            if live:
                                handle.flush()  # a live source's rows can be read as they come
                finally:  # Ctrl-C included: what came is counted and reported
                    received = bar.n
                    summary["faces"] += faces
                    summary["frames"] += frames
                    summary["files_with_faces"] += faces > 0
                    summary["files_without_face"] += faces == 0 and error is None
                    if error is not None:
                        summary["unreadable"] += 1
                        summary["unreadable_files"] = [*summary["unreadable_files"],
                                                       {"file": str(path), "error": error["error"]}]
                    if timeline is not None and frames:
                        chart = _output_for(args.plot, Path(path), many)
                        timeline.plot(chart, title=f"{name}: expression over time")
                        logger.info("  %s: chart -> %s", name, chart)
                    if annotate and error is None:
                        logger.info("  %s: annotated video -> %s", path, annotate)
                    if live:
                        dropped = f" ({received - frames} dropped: labelling was slower)" if received > frames else ""
                        logger.info("  %s: %d frame(s) labelled of %d received%s, %d face(s)", name, frames, received,
                                    dropped, faces)
                    else:
                        logger.info("  %s: %d frame(s) analysed, %d face(s)", name, frames, faces)
    except KeyboardInterrupt:
        logger.info("Stopped (Ctrl-C); the rows so far are kept.")
    finally:
        if handle is not sys.stdout:
            handle.close()
    if as_json:
        write_results(kept, args.output, recognizer.labels, summary, model_name)
    return summary


def _output_for(template: str, video: Path, many: bool) -> Path:
    """--annotate's or --plot's path for a video: the path itself for one video, NAME_<video name>.EXT for several."""
    path = Path(template)
    return path.with_name(f"{path.stem}_{video.stem}{path.suffix}") if many else path


__all__ = ["FIELDS", "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "VIDEO_FIELDS", "collect_images", "predict_files",
           "predict_stream", "predict_video", "write_results"]
