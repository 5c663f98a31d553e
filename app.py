"""fer-hf demo: the expression of every face in a photo, live from a webcam, or through a video file.

    python app.py [--model FOLDER_OR_HUB_ID] [--revision REV] [--flip_tta {true,false}] [--labels happy sad]
                  [--host 127.0.0.1] [--port 7860] [--share]

The model (also FER_HF_MODEL=...) defaults to the bundled models/fer2013-cnn, else another folder in
models/; a Hub model's revision may be pinned (also FER_HF_REVISION=...). `--labels happy sad` shows only
those classes, their scores renormalised: the 7-class model's happy-vs-sad view. It is loaded once; faces are
found with fer_hf.faces and each is boxed and captioned. As a Space (`python -m fer_hf push-space`), the
Space's variables FER_HF_MODEL and FER_HF_REVISION name the model, and Gradio's GRADIO_SERVER_NAME and
GRADIO_SERVER_PORT, which Spaces set, the address.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import copy
import hashlib
import io
import logging
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
from gradio.utils import get_upload_folder
from PIL import Image, ImageDraw, ImageFont
from transformers.hf_argparser import string_to_bool

from fer_hf.demo.browser_live import TAB_NAME as BROWSER_TAB, browser_live_tab
from fer_hf.drawing import draw_captioned_box
from fer_hf.faces import FaceDetector, FaceExpressionRecognizer
from fer_hf.hub import explain_hub_error, find_model, load_classifier
from fer_hf.model.images import load_image
from fer_hf.predict import predict_video, write_results
from fer_hf.tracking import FaceTracker
from fer_hf.video import VIDEO_EXTENSIONS, Timeline, VideoReadError, probe

logger = logging.getLogger("fer_hf.app")
ROOT = Path(__file__).resolve().parent
# Real photos, a few KB each, shared with the tests (Gradio copies them into its cache to serve them).
EXAMPLES = sorted((ROOT / "tests" / "fixtures" / "photos").glob("*.jpg"))

MAX_FILE_MB = 20
MAX_FILE_SIZE = f"{MAX_FILE_MB}mb"  # uploads above this are refused by Gradio before they reach a handler
# A video is labelled at about 60 frames/s on 2 cores (benchmarks/results/video.md): 5 minutes of 30 frames/s
# take about 2.5 minutes, one video at a time (VIDEO_CONCURRENCY), so that the webcam streams keep a core.
MAX_VIDEO_SECONDS = 300
VIDEO_CONCURRENCY = 1
SHOWN_SIDE = (640, 1024)  # the annotated photo's longer side: small photos are enlarged, big ones reduced
# Seconds between the webcam frames the browser sends; it sends none while one is pending, so this caps
# the rate at 25 frames/s and the round trip does the rest (shorter overloads 2 cores: live.md).
STREAM_EVERY = 0.04
STREAM_TIME_LIMIT = 60  # seconds a webcam stream may run; then it stops and frees its slot
STREAM_CONCURRENCY = 2  # webcam streams served at once; more wait in the queue
# Webcam frames are searched for faces on a copy with this longer side, not the photos' 480 px: it
# detects in under half the time and still finds nearly all faces as large as a webcam's
# (benchmarks/results/demo.md, "Faces found on the 60 frames").
STREAM_DETECT_SIDE = 320
SELECTED, OTHER = "#f97316", "#38bdf8"  # box colours: the face whose scores are shown, the others

Result = dict[str, Any]  # {"width", "height", "faces": [FaceExpressionRecognizer dicts]}
# Keys the names of the annotated photos in Gradio's cache, so that knowing a photo does not give
# its URL (Gradio seeds its own content hashes the same way).
_NAME_SEED = secrets.token_bytes(16)


def model_display_name(model_name: str) -> str:
    """What the demo calls a model: a local folder by its name, a Hub model by its repo id."""
    path = Path(model_name)
    return path.resolve().name if path.is_dir() else model_name


def read_upload(photo: str | dict, max_side: int | None = None, min_side: int | None = None) -> tuple[Image.Image, str]:
    """The image of an upload (a path, or Gradio's file dict when preprocess=False) and a note on it.

    max_side and min_side are load_image's: a reduced image keeps the photo's size in info["original_size"].

    Raises:
        ValueError: with load_image's reason, naming the file as the user called it, not its temp path.
    """
    if isinstance(photo, dict):
        path, name, url = photo.get("path"), photo.get("orig_name") or "the upload", photo.get("url") or ""
        source = path or (base64.b64decode(url.partition(",")[2]) if url.startswith("data:") else None)
    else:
        path = source = str(photo)
        name = Path(path).name
    if source is None:
        raise ValueError("The upload has no file.")
    try:
        image = load_image(source, max_side=max_side, min_side=min_side)
    except ValueError as error:
        message = str(error).split(" (pass max_pixels")[0]  # that hint is for programmers
        raise ValueError(message.replace(str(path), name) if path else message) from None
    note = ""
    if path:
        try:
            with Image.open(path) as opened:
                note = " (an animated image: its first frame)" if getattr(opened, "n_frames", 1) > 1 else ""
        except Exception:  # load_image read it; the note is only a courtesy
            pass
    return image, note


def shown_scale(width: int, height: int) -> float:
    """How much draw_faces scales a photo of this size: its longer side into SHOWN_SIDE."""
    longer = max(width, height)
    return min(max(longer, SHOWN_SIDE[0]), SHOWN_SIDE[1]) / longer


def draw_faces(image: Image.Image, faces: list[dict], selected: int = 0, size: tuple[int, int] | None = None) -> Image.Image:
    """A copy of the image for display, each face boxed and captioned "N label score%" ("#T ..." for track T).

    Args:
        image: The photo, possibly already reduced.
        faces: FaceExpressionRecognizer results; boxes in pixels of the original photo.
        selected: The face drawn thicker and in the highlight colour.
        size: The original photo's (width, height) if `image` was reduced; None: `image.size`.
    """
    width, height = size or image.size
    scale = shown_scale(width, height)
    side = round(max(width, height) * scale)
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    shown = image.convert("RGB").resize(target, reducing_gap=2.0 if target[0] < image.width else None)
    draw = ImageDraw.Draw(shown)
    font = ImageFont.load_default(size=max(12, side // 40))
    line = max(2, side // 250)
    # The selected face last, so that its caption is on top of any overlapping one.
    for index in sorted(range(len(faces)), key=lambda i: i == selected):
        face = faces[index]
        number = f"#{face['track']}" if "track" in face else str(index + 1)
        draw_captioned_box(draw, tuple(round(value * scale) for value in face["box"]),
                           f"{number} {face['label']} {face['score']:.0%}", SELECTED if index == selected else OTHER,
                           font=font, line=line, outline=line * (2 if index == selected else 1))
    return shown


def save_shown(image: Image.Image, folder: str | Path) -> str:
    """Saves an annotated photo as a JPEG file in `folder` (Gradio's cache) and returns its path.

    Gradio saves a PIL image that a handler returns itself (processing_utils.save_pil_to_cache), to
    a file named after a hash of its bytes that it rewrites in place, truncating it first, for every
    request that returns the same picture. Two users sending the same photo then collide: one
    is still downloading the file while the other request empties and rewrites it, and the
    download ends short ("peer closed connection without sending complete message body"). Here
    too the name is a (keyed) hash of the bytes, so the same picture is stored once, but the file
    is written under a temporary name and renamed into place, and never rewritten once there:
    a download always reads a complete file. Gradio serves a path in its cache as it is, adds it
    to the files `delete_cache` deletes, and deletes them all when the server stops.
    """
    with io.BytesIO() as buffer:
        image.convert("RGB").save(buffer, "JPEG")  # Pillow's default quality, 75, as Gradio's own save
        data = buffer.getvalue()
    target = Path(folder) / hashlib.sha256(_NAME_SEED + data).hexdigest() / "faces.jpeg"
    try:
        os.utime(target)  # already there: keep it; delete_cache ages files by their ctime, now again
        return str(target)
    except FileNotFoundError:
        pass
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(dir=target.parent, prefix=".faces-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(staging, target)  # atomic: a reader opens the old complete file or the new one
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return str(target)


class FaceDemo:
    """The demo's event handlers around one loaded model; the tests call them directly.

    Args:
        recognizer: The face finder and classifier.
        cache_dir: Where annotated photos are saved (save_shown), handed to Gradio as file paths;
            None (the tests): handlers return PIL images.
    """

    def __init__(self, recognizer: FaceExpressionRecognizer, cache_dir: str | Path | None = None) -> None:
        self.recognizer = recognizer
        self.cache_dir = cache_dir
        # The same recognizer (model, detector, runtime, settings), but a photo without a face is
        # classified as a whole. A shallow copy shares them all, so nothing is built or loaded twice.
        self.whole_image = copy.copy(recognizer)
        self.whole_image.classify_whole_image = True
        # The webcam stream's: the same again with its own detector at STREAM_DETECT_SIDE (measured for
        # libfacedetection only; another backend keeps the photos' detector).
        self.stream = copy.copy(recognizer)
        detector = recognizer.detector
        if detector.backend == "libfacedetection" and detector.max_side > STREAM_DETECT_SIDE:
            self.stream.detector = FaceDetector(detector.backend, score_threshold=detector.score_threshold,
                                                max_side=STREAM_DETECT_SIDE, min_face_size=detector.min_face_size)

    def analyze(self, photo: str | dict | None, whole_image: bool = False) -> tuple:
        """Photo -> (annotated photo, result JSON, scores of face 1, status)."""
        if photo is None:
            return self._outputs(None, None, "Upload a photo, paste one or take a webcam snapshot.")
        try:
            # Read as the recognizer reads photos, a big JPEG at reduced scale (several times faster
            # than at full size): the same results as from the file.
            image, note = read_upload(photo, self.recognizer.max_side, self.recognizer.min_side)
        except ValueError as error:
            return self._outputs(None, None, f"**Could not use this file.** {error}\n\n"
                                 f"Try a JPEG, PNG, WebP, GIF, BMP or TIFF photo of at most {MAX_FILE_SIZE.upper()}.")
        try:
            faces = (self.whole_image if whole_image else self.recognizer)(image)
        except Exception as error:  # a bug or a model that rejects this photo: say so, log the traceback
            logger.exception("Labelling %s failed", photo)
            return self._outputs(None, None, f"**Could not label this photo.** {type(error).__name__}: {error}")
        # The photo's own size: boxes are in its pixels, however small `image` was read.
        width, height = image.info.get("original_size", image.size)
        result = {"width": width, "height": height, "faces": faces}
        if not faces:
            return self._outputs(image, result, f"**No face found** in this photo{note}.")
        if faces[0]["detection_score"] is None:
            status = f"No face found{note}: these are the scores of the **whole image**."
        elif len(faces) == 1:
            status = f"Found **1 face**{note}."
        else:
            status = f"Found **{len(faces)} faces**{note}, numbered from the largest. Click a face or pick one below."
        return self._outputs(image, result, status)

    def analyze_whole_image(self, photo: str | dict | None) -> tuple:
        """Like analyze, but classifies the whole photo when it has no face."""
        return self.analyze(photo, whole_image=True)

    def show_face(self, photo: str | dict | None, result: Result | None, index: int | None) -> tuple:
        """The photo with face `index` highlighted, and that face's scores."""
        if photo is None or not result or not result["faces"] or index is None:
            return gr.skip(), gr.skip()
        index = min(max(int(index), 0), len(result["faces"]) - 1)
        image, _ = read_upload(photo, max_side=SHOWN_SIDE[1])
        size = (result["width"], result["height"])
        return self._shown(draw_faces(image, result["faces"], index, size)), result["faces"][index]["scores"]

    def pick_face(self, photo: str | dict | None, result: Result | None, event: gr.SelectData) -> tuple:
        """A click on the annotated photo selects the smallest face under it, else the nearest face."""
        if not result or not result["faces"]:
            return gr.skip(), gr.skip(), gr.skip()
        scale = shown_scale(result["width"], result["height"])
        x, y = event.index[0] / scale, event.index[1] / scale

        def rank(face: dict) -> tuple[int, float]:
            x0, y0, x1, y1 = face["box"]
            if x0 <= x < x1 and y0 <= y < y1:
                return 0, (x1 - x0) * (y1 - y0)  # under the click: the smallest box
            return 1, (x - (x0 + x1) / 2) ** 2 + (y - (y0 + y1) / 2) ** 2  # else the nearest centre

        index = min(range(len(result["faces"])), key=lambda i: rank(result["faces"][i]))
        return (index, *self.show_face(photo, result, index))

    def live(self, frame: np.ndarray | None, tracker: FaceTracker | None = None) -> tuple:
        """One webcam frame -> (frame with the faces boxed, scores of the largest face, status line, tracker).

        The tracker (one per viewer, in a gr.State) follows each face across frames and smooths its
        scores over time, so that a still face's label holds and a new expression shows within a
        fraction of a second (benchmarks/results/smoothing.md).
        """
        tracker = tracker or FaceTracker(self.recognizer.labels)
        if frame is None:
            return None, None, "", tracker
        start = time.perf_counter()
        faces = tracker.update(self.stream(frame), time.monotonic())
        image = self._shown(draw_faces(Image.fromarray(frame), faces))
        took = f"{(time.perf_counter() - start) * 1000:.0f} ms"
        if not faces:
            return image, None, f"No face in view ({took})", tracker
        return image, faces[0]["scores"], f"{len(faces)} face{'s' * (len(faces) > 1)} ({took})", tracker

    def label_video(self, video: str | None, progress: gr.Progress = gr.Progress()) -> tuple:
        """Video file -> (annotated mp4, emotion-over-time chart PNG, per-track summary, CSV file, status).

        The outputs are written to a new folder with an unguessable name in `cache_dir` (None: the
        system's temporary folder). A file that is not a readable video, or is too long or too big,
        gets a message naming it.
        """
        if video is None:
            return None, None, None, None, f"Upload a video ({self.video_limits()})."
        path = Path(video)
        name = path.name  # Gradio keeps an upload's own name, in a folder of its own

        def message(text: str) -> tuple:
            return None, None, None, None, f"**Could not use {name}.** {text.replace(str(path), name)}"

        if path.stat().st_size > MAX_FILE_MB * 1024 * 1024:
            return message(f"It is {path.stat().st_size / 2**20:.0f} MB; the limit is {MAX_FILE_MB} MB.")
        try:
            info = probe(path)
        except VideoReadError as error:
            return message(str(error))
        total = info.frames or (round(info.duration * info.fps) if info.duration else None)
        if info.duration and info.duration > MAX_VIDEO_SECONDS:
            return message(f"It lasts {info.duration:.0f} s; the limit is {MAX_VIDEO_SECONDS} s.")
        folder = Path(tempfile.mkdtemp(prefix="video-", dir=self.cache_dir))
        annotated, chart, table = folder / f"{path.stem}_labelled.mp4", folder / f"{path.stem}_chart.png", folder / f"{path.stem}.csv"
        timeline = Timeline(self.recognizer.labels)
        start = time.perf_counter()
        progress((0, total), desc="Labelling frames", unit="frames")
        rows = list(predict_video(self.recognizer, path, annotate=annotated, timeline=timeline,
                                  progress=lambda done: progress((done, total), desc="Labelling frames", unit="frames")))
        took = time.perf_counter() - start
        error = next((row["error"].replace(str(path), name) for row in rows if row["status"] == "error"), None)
        frames = len({row["frame"] for row in rows if row.get("frame") is not None})
        if not frames:
            return message(error or "No frame could be read.")
        write_results(rows, table, self.recognizer.labels)
        timeline.plot(chart, title=f"{name}: expression over time")
        tracks = timeline.summary()
        status = (f"Labelled **{frames} frames** of {name} ({info.width}x{info.height}, {frames / took:.0f} frames/s): "
                  + (f"{len(tracks)} face track{'s' * (len(tracks) > 1)}." if tracks else "no face found."))
        if error:
            status = f"**Stopped early.** {error}\n\n{status}"
        return str(annotated) if annotated.exists() else None, str(chart), self.track_summary(tracks), str(table), status

    def track_summary(self, tracks: list[dict[str, Any]]) -> pd.DataFrame:
        """Timeline.summary() as a table: track, seconds in view, dominant expression, % of time in each class."""
        labels = self.recognizer.labels
        rows = [[track["track"], round(track["first"], 1), round(track["last"], 1), track["dominant"],
                 *(round(100 * track["share"][label], 1) for label in labels)] for track in tracks]
        return pd.DataFrame(rows, columns=["track", "from (s)", "to (s)", "dominant", *(f"{label} %" for label in labels)])

    @staticmethod
    def video_limits() -> str:
        return f"at most {MAX_FILE_MB} MB and {MAX_VIDEO_SECONDS // 60} minutes"

    @staticmethod
    def face_picker(result: Result | None) -> tuple:
        """Result -> (face picker: shown for several faces, whole-image button: shown when no face was found)."""
        faces = result["faces"] if result else []
        choices = [(f"{i + 1}: {face['label']} {face['score']:.0%}", i) for i, face in enumerate(faces)]
        return (gr.update(choices=choices, value=0 if faces else None, visible=len(faces) > 1),
                gr.update(visible=result is not None and not faces))

    def _shown(self, image: Image.Image) -> Image.Image | str:
        """An annotated photo as the handlers return it: a file path in the cache, or the image itself."""
        return image if self.cache_dir is None else save_shown(image, self.cache_dir)

    def _outputs(self, image: Image.Image | None, result: Result | None, status: str) -> tuple:
        faces, size = (result["faces"], (result["width"], result["height"])) if result else ([], None)
        annotated = self._shown(draw_faces(image, faces, size=size)) if image is not None else None
        return annotated, result, faces[0]["scores"] if faces else None, status


def build_demo(model_name: str, flip_tta: bool = True, revision: str | None = None,
               stream_every: float = STREAM_EVERY, labels: list[str] | None = None) -> gr.Blocks:
    """Loads the model once and lays out the Photo, Live webcam and Video tabs.

    Args:
        model_name: Model folder or Hub repo id.
        flip_tta: Average each face's scores with its mirror image's (FaceExpressionRecognizer's
            flip_tta; only the faces it is unsure of): more accurate (benchmarks/results/mirror_margin.md).
        revision: Hub revision (branch, tag or commit) of a repo id; None: main.
        stream_every: Seconds between the webcam frames the browser sends.
        labels: Show only these of the model's classes, their scores renormalised (FaceExpressionRecognizer's
            labels), e.g. ["happy", "sad"]; None: all of them.

    Raises:
        ValueError: `labels` names a class the model does not have.
    """
    # Gradio names its example cache folder after a component id, not the model: a shared
    # .gradio/cached_examples would show the previous model's results after --model changes.
    if "GRADIO_EXAMPLES_CACHE" not in os.environ:
        os.environ["GRADIO_EXAMPLES_CACHE"] = cache = tempfile.mkdtemp(prefix="fer-hf-examples-")
        atexit.register(shutil.rmtree, cache, ignore_errors=True)
    model, image_processor = load_classifier(model_name, revision=revision)
    # Annotated photos go to Gradio's cache as files written race-free (save_shown), not as PIL images.
    recognizer = FaceExpressionRecognizer(model, image_processor, flip_tta=flip_tta, labels=labels)
    handlers = FaceDemo(recognizer, cache_dir=get_upload_folder())
    shown = ", ".join(recognizer.labels)
    if labels is not None:
        shown += f" (of its {len(recognizer.model_labels)} classes, scores renormalised)"

    with gr.Blocks(title="fer-hf: facial expressions", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        mirror = "unsure faces averaged with their mirror image" if flip_tta else "one view per face"
        pinned = f" at `{revision}`" if revision else ""
        gr.Markdown(f"# Facial expressions\nModel `{model_display_name(model_name)}`{pinned} · labels: {shown} · {mirror}")
        with gr.Tab("Photo"):
            with gr.Row():
                with gr.Column() as left:
                    photo = gr.Image(label="Photo", sources=["upload", "clipboard", "webcam"], type="filepath", height=400)
                with gr.Column():
                    annotated = gr.Image(label="Faces", interactive=False, height=400, elem_id="annotated")
                    status = gr.Markdown(elem_id="status")
                    whole = gr.Button("Classify the whole image", visible=False, elem_id="whole-image")
                    picker = gr.Radio(label="Face", visible=False, elem_id="picker")
                    scores = gr.Label(label="Expression of the selected face", elem_id="scores")
                    with gr.Accordion("All faces (JSON)", open=False):
                        details = gr.JSON(label="Result")
            # Values only, no gr.update: Gradio 6.31's lazy example cache fails on component updates;
            # the face picker and the whole-image button follow the result JSON instead (details.change).
            outputs = [annotated, details, scores, status]
            with left:  # below the photo; Examples needs the output components, declared above
                if EXAMPLES:
                    gr.Examples([[str(path)] for path in EXAMPLES], inputs=photo, outputs=outputs, fn=handlers.analyze,
                                cache_examples=True, cache_mode="lazy", preprocess=False, label="Example photos")
        with gr.Tab("Live webcam"):
            gr.Markdown(f"Click the webcam, then **Record**: a frame every {stream_every:g} s for up to "
                        f"{STREAM_TIME_LIMIT} s; frames that arrive while one is being labelled are dropped.")
            with gr.Row():
                webcam = gr.Image(label="Webcam", sources=["webcam"], streaming=True, type="numpy")
                with gr.Column():
                    overlay = gr.Image(label="Faces", interactive=False, elem_id="overlay")
                    live_status = gr.Markdown(elem_id="live-status")
                    live_scores = gr.Label(label="Expression of the largest face", elem_id="live-scores")
            tracks = gr.State(None)  # this viewer's FaceTracker
        with gr.Tab(BROWSER_TAB):  # the page labels the webcam itself; no frame is sent here
            browser_live_tab(model, server_tab="Live webcam")
        with gr.Tab("Video"):
            gr.Markdown(f"Upload a video ({FaceDemo.video_limits()}; mp4, mov, webm, mkv, avi): every frame is "
                        "labelled, each face followed as a track. One video is labelled at a time; others wait.")
            with gr.Row():
                with gr.Column():
                    video = gr.File(label="Video", file_types=sorted(VIDEO_EXTENSIONS), type="filepath", elem_id="video-upload")
                    video_status = gr.Markdown(elem_id="video-status")
                    video_csv = gr.File(label="Every frame's faces (CSV)", interactive=False, elem_id="video-csv")
                with gr.Column():
                    video_annotated = gr.Video(label="Annotated video", interactive=False, elem_id="video-annotated")
            video_chart = gr.Image(label="Expression over time", type="filepath", interactive=False, elem_id="video-chart")
            video_summary = gr.Dataframe(label="Per track: share of time in each expression", interactive=False,
                                         elem_id="video-summary")

        # upload: files, paste and webcam snapshots (not .change, which an example click also fires,
        # labelling the example again after its cached result). always_last: a paste clears, then
        # uploads, and the upload must not be dropped while the clear runs. preprocess=False: the
        # handler reads the file with load_image, which explains a bad upload; Gradio would not.
        gr.on([photo.upload, photo.clear], handlers.analyze, photo, outputs, preprocess=False, trigger_mode="always_last")
        details.change(handlers.face_picker, details, [picker, whole])
        whole.click(handlers.analyze_whole_image, photo, outputs, preprocess=False)
        picker.input(handlers.show_face, [photo, details, picker], [annotated, scores], preprocess=False)
        annotated.select(handlers.pick_face, [photo, details], [picker, annotated, scores], preprocess=False)
        # A stream holds one slot per frame: each frame the browser posts replaces the one waiting, and
        # the browser sends none while a frame is pending, so a slow model drops frames, never queues them.
        webcam.stream(handlers.live, [webcam, tracks], [overlay, live_scores, live_status, tracks], stream_every=stream_every,
                      time_limit=STREAM_TIME_LIMIT, concurrency_limit=STREAM_CONCURRENCY, show_progress="hidden")
        video.upload(handlers.label_video, video, [video_annotated, video_chart, video_summary, video_csv, video_status],
                     concurrency_limit=VIDEO_CONCURRENCY)
    return demo.queue(max_size=32)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder or Hub repo id (default: $FER_HF_MODEL, else models/)")
    parser.add_argument("--revision", default=os.environ.get("FER_HF_REVISION") or None,
                        help="Hub revision of a repo id: branch, tag or commit (default: $FER_HF_REVISION, else main)")
    parser.add_argument("--flip_tta", type=string_to_bool, nargs="?", const=True, default=True, metavar="{true,false}",
                        help="average each face's scores with its mirror image's (default: true; false: faster)")
    parser.add_argument("--labels", nargs="+", default=None, metavar="LABEL",
                        help="show only these classes, their scores renormalised (e.g. happy sad; default: all)")
    parser.add_argument("--host", default=None, help="0.0.0.0 to serve other machines (default: $GRADIO_SERVER_NAME, else 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="default: $GRADIO_SERVER_PORT, else 7860 or the next free port")
    parser.add_argument("--share", action="store_true", help="also open a public *.gradio.live link")
    parser.add_argument("--stream_every", type=float, default=STREAM_EVERY,
                        help=f"seconds between the webcam frames the browser sends (default: {STREAM_EVERY})")
    args = parser.parse_args()
    try:
        model_name = find_model(args.model, ROOT)
        demo = build_demo(model_name, flip_tta=args.flip_tta, revision=args.revision, stream_every=args.stream_every,
                          labels=args.labels)
    except Exception as error:  # no model, a wrong folder or repo id, no network and nothing cached
        raise SystemExit(f"Cannot start the demo: {explain_hub_error(error)}") from None
    # No allowed_paths: Gradio then serves only its static files, the uploads and its own cache.
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=MAX_FILE_SIZE)
