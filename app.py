"""fer-hf demo: the expression of every face in a photo, or live from a webcam.

    python app.py [--model FOLDER_OR_HUB_ID] [--flip_tta {true,false}] [--host 127.0.0.1] [--port 7860] [--share]

The model (also FER_HF_MODEL=...) defaults to the bundled models/fer2013-cnn, else another folder in
models/. It is loaded once; faces are found with fer_hf.faces and each is boxed and captioned.
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
from gradio.utils import get_upload_folder
from PIL import Image, ImageDraw, ImageFont
from transformers.hf_argparser import string_to_bool

from fer_hf.faces import FaceDetector, FaceExpressionRecognizer
from fer_hf.hub import explain_hub_error, find_model, load_classifier
from fer_hf.images import load_image

logger = logging.getLogger("fer_hf.app")
ROOT = Path(__file__).resolve().parent
# Real photos, a few KB each, shared with the tests (Gradio copies them into its cache to serve them).
EXAMPLES = sorted((ROOT / "tests" / "fixtures" / "photos").glob("*.jpg"))

MAX_FILE_SIZE = "20mb"  # uploads above this are refused by Gradio before they reach a handler
SHOWN_SIDE = (640, 1024)  # the annotated photo's longer side: small photos are enlarged, big ones reduced
STREAM_EVERY = 0.2  # seconds between the webcam frames the browser sends
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
    """A copy of the image for display, each face boxed and captioned "N label score%".

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
        x0, y0, x1, y1 = (round(value * scale) for value in face["box"])
        colour = SELECTED if index == selected else OTHER
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=colour, width=line * (2 if index == selected else 1))
        caption = f"{index + 1} {face['label']} {face['score']:.0%}"
        left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
        text_w, text_h = right - left + 2 * line, bottom - top + 2 * line
        # Above the box when there is room, else inside its top edge.
        tx, ty = min(x0, shown.width - text_w), y0 - text_h if y0 >= text_h else y0
        draw.rectangle((tx, ty, tx + text_w, ty + text_h), fill=colour)
        draw.text((tx + line - left, ty + line - top), caption, fill="black", font=font)
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

    def live(self, frame: np.ndarray | None) -> tuple:
        """One webcam frame -> (frame with the faces boxed, scores of the largest face, status line)."""
        if frame is None:
            return None, None, ""
        start = time.perf_counter()
        faces = self.stream(frame)
        image = self._shown(draw_faces(Image.fromarray(frame), faces))
        took = f"{(time.perf_counter() - start) * 1000:.0f} ms"
        if not faces:
            return image, None, f"No face in view ({took})"
        return image, faces[0]["scores"], f"{len(faces)} face{'s' * (len(faces) > 1)} ({took})"

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


def build_demo(model_name: str, flip_tta: bool = True) -> gr.Blocks:
    """Loads the model once and lays out the Photo and Live webcam tabs.

    Args:
        model_name: Model folder or Hub repo id.
        flip_tta: Average each face's scores with its mirror image's (FaceExpressionRecognizer's
            flip_tta): more accurate, and about half the faces per second (benchmarks/results/inference.md).
    """
    # Gradio names its example cache folder after a component id, not the model: a shared
    # .gradio/cached_examples would show the previous model's results after --model changes.
    if "GRADIO_EXAMPLES_CACHE" not in os.environ:
        os.environ["GRADIO_EXAMPLES_CACHE"] = cache = tempfile.mkdtemp(prefix="fer-hf-examples-")
        atexit.register(shutil.rmtree, cache, ignore_errors=True)
    model, image_processor = load_classifier(model_name)
    # Annotated photos go to Gradio's cache as files written race-free (save_shown), not as PIL images.
    handlers = FaceDemo(FaceExpressionRecognizer(model, image_processor, flip_tta=flip_tta), cache_dir=get_upload_folder())
    labels = ", ".join(handlers.recognizer.labels)

    with gr.Blocks(title="fer-hf: facial expressions", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        mirror = "each face averaged with its mirror image" if flip_tta else "one view per face"
        gr.Markdown(f"# Facial expressions\nModel `{model_display_name(model_name)}` · labels: {labels} · {mirror}")
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
            gr.Markdown(f"Click the webcam, then **Record**: a frame every {STREAM_EVERY} s for up to "
                        f"{STREAM_TIME_LIMIT} s; frames that arrive while one is being labelled are dropped.")
            with gr.Row():
                webcam = gr.Image(label="Webcam", sources=["webcam"], streaming=True, type="numpy")
                with gr.Column():
                    overlay = gr.Image(label="Faces", interactive=False, elem_id="overlay")
                    live_status = gr.Markdown(elem_id="live-status")
                    live_scores = gr.Label(label="Expression of the largest face", elem_id="live-scores")

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
        webcam.stream(handlers.live, webcam, [overlay, live_scores, live_status], stream_every=STREAM_EVERY,
                      time_limit=STREAM_TIME_LIMIT, concurrency_limit=STREAM_CONCURRENCY, show_progress="hidden")
    return demo.queue(max_size=32)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder or Hub repo id (default: $FER_HF_MODEL, else models/)")
    parser.add_argument("--flip_tta", type=string_to_bool, nargs="?", const=True, default=True, metavar="{true,false}",
                        help="average each face's scores with its mirror image's (default: true; false: faster)")
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines")
    parser.add_argument("--port", type=int, default=None, help="default: 7860, or the next free port")
    parser.add_argument("--share", action="store_true", help="also open a public *.gradio.live link")
    args = parser.parse_args()
    try:
        model_name = find_model(args.model, ROOT)
        demo = build_demo(model_name, flip_tta=args.flip_tta)
    except Exception as error:  # no model, a wrong folder or repo id, no network and nothing cached
        raise SystemExit(f"Cannot start the demo: {explain_hub_error(error)}") from None
    # No allowed_paths: Gradio then serves only its static files, the uploads and its own cache.
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=MAX_FILE_SIZE)
