"""What every tab of the demo shares: reading an upload, drawing faces on a copy for display, and saving it
race-free in Gradio's cache."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from ..drawing import draw_captioned_box
from ..faces import FaceExpressionRecognizer
from ..model.images import load_image

MAX_FILE_MB = 20
MAX_FILE_SIZE = f"{MAX_FILE_MB}mb"  # uploads above this are refused by Gradio before they reach a handler
SHOWN_SIDE = (640, 1024)  # the annotated photo's longer side: small photos are enlarged, big ones reduced
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


def label_and_score(face: dict) -> str:
    """A face's caption after its number: "label score%"."""
    return f"{face['label']} {face['score']:.0%}"


def face_caption(face: dict) -> str:
    """"happy 87%"; for a face the model is unsure of (its calibrated top score below the model's threshold), its
    top two: "unsure: happy 41% / neutral 35%", so that nobody takes a coin toss for an answer."""
    if not face.get("unsure"):
        return f"{face['label']} {face['score']:.0%}"
    (first, p1), (second, p2) = sorted(face["scores"].items(), key=lambda item: item[1], reverse=True)[:2]
    return f"unsure: {first} {p1:.0%} / {second} {p2:.0%}"


def draw_faces(image: Image.Image, faces: list[dict], selected: int = 0, size: tuple[int, int] | None = None,
               caption: Callable[[dict], str] = label_and_score) -> Image.Image:
    """A copy of the image for display, each face boxed and captioned "N label score%" ("#T ..." for track T).

    Args:
        image: The photo, possibly already reduced.
        faces: FaceExpressionRecognizer results; boxes in pixels of the original photo.
        selected: The face drawn thicker and in the highlight colour.
        size: The original photo's (width, height) if `image` was reduced; None: `image.size`.
        caption: A face's caption after its number.
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
                           f"{number} {caption(face)}", SELECTED if index == selected else OTHER,
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


class TabHandlers:
    """The event handlers of one tab around one loaded model; the tests call them directly.

    Args:
        recognizer: The face finder and classifier, shared by every tab and user.
        cache_dir: Where annotated photos are saved (save_shown), handed to Gradio as file paths;
            None (the tests): handlers return PIL images.
    """

    def __init__(self, recognizer: FaceExpressionRecognizer, cache_dir: str | Path | None = None) -> None:
        self.recognizer = recognizer
        self.cache_dir = cache_dir

    def _shown(self, image: Image.Image) -> Image.Image | str:
        """An annotated photo as the handlers return it: a file path in the cache, or the image itself."""
        return image if self.cache_dir is None else save_shown(image, self.cache_dir)
