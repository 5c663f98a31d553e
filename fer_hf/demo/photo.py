"""The Photo tab: every face in an uploaded, pasted or snapped photo, boxed and labelled; click a face for its
scores. The "Why?" switch draws each face's heat map over it (fer_hf.model.heatmaps' Occlusion), with a legend."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..drawing import heatmap_colours, overlay_heatmap
from ..faces import FaceExpressionRecognizer
from .common import (MAX_FILE_SIZE, SHOWN_SIDE, Result, TabHandlers, draw_faces, face_caption, read_upload,
                     shown_scale)

logger = logging.getLogger("fer_hf.app")

# What the heat maps' colours mean: under the photo, and in the status line.
LEGEND_COOL, LEGEND_WARM = "cool: no part in the label", "warm: where the label came from"
WHY_NOTE = ("Heat maps (Occlusion): **warm** (red) marks the pixels that raised each face's label most, **cool** "
            "(blue) those that did not raise it.")


class PhotoTab(TabHandlers):
    """Photo -> annotated photo, result JSON, the selected face's scores and a status line."""

    def __init__(self, recognizer: FaceExpressionRecognizer, cache_dir: str | Path | None = None) -> None:
        super().__init__(recognizer, cache_dir)
        # The same recognizer (model, detector, runtime, settings), but a photo without a face is
        # classified as a whole. A shallow copy shares them all, so nothing is built or loaded twice.
        self.whole_image = copy.copy(recognizer)
        self.whole_image.classify_whole_image = True

    def analyze(self, photo: str | dict | None, why: bool = False, whole_image: bool = False) -> tuple:
        """Photo -> (annotated photo, result JSON, scores of face 1, status); with `why`, each face's heat map drawn."""
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
            faces = (self.whole_image if whole_image else self.recognizer)(image, explain=why)
        except Exception as error:  # a bug or a model that rejects this photo: say so, log the traceback
            logger.exception("Labelling %s failed", photo)
            return self._outputs(None, None, f"**Could not label this photo.** {type(error).__name__}: {error}")
        # The photo's own size: boxes are in its pixels, however small `image` was read.
        width, height = image.info.get("original_size", image.size)
        heatmaps = [face.pop("heatmap") for face in faces] if why else None  # drawn, not in the JSON
        result = {"width": width, "height": height, "faces": faces}
        if not faces:
            return self._outputs(image, result, f"**No face found** in this photo{note}.")
        if faces[0]["detection_score"] is None:
            status = f"No face found{note}: these are the scores of the **whole image**."
        elif len(faces) == 1:
            status = f"Found **1 face**{note}."
        else:
            status = f"Found **{len(faces)} faces**{note}, numbered from the largest. Click a face or pick one below."
        status += self._unsure_note(faces)
        return self._outputs(image, result, f"{status}\n\n{WHY_NOTE}" if why else status, heatmaps)

    def _unsure_note(self, faces: list[dict]) -> str:
        """" **Unsure** of face 2: sad 41% / neutral 35% (below the model's 70% threshold).", or "" if none is."""
        unsure = [f"face {i + 1}: {face_caption(face).removeprefix('unsure: ')}" for i, face in enumerate(faces)
                  if face.get("unsure")]
        if not unsure:
            return ""
        threshold = getattr(self.recognizer.model.config, "unsure_threshold", 0.0)
        return f" **Unsure** of {'; '.join(unsure)} (below the model's {threshold:.0%} threshold)."

    def analyze_whole_image(self, photo: str | dict | None, why: bool = False) -> tuple:
        """Like analyze, but classifies the whole photo when it has no face."""
        return self.analyze(photo, why, whole_image=True)

    def show_face(self, photo: str | dict | None, result: Result | None, index: int | None, why: bool = False) -> tuple:
        """The photo with face `index` highlighted, and that face's scores."""
        if photo is None or not result or not result["faces"] or index is None:
            return gr.skip(), gr.skip()
        index = min(max(int(index), 0), len(result["faces"]) - 1)
        size = (result["width"], result["height"])
        if why:  # the maps again, from the photo read as analyze reads it: the same faces
            image, _ = read_upload(photo, self.recognizer.max_side, self.recognizer.min_side)
            whole = result["faces"][0]["detection_score"] is None
            heatmaps = [face["heatmap"] for face in (self.whole_image if whole else self.recognizer)(image, explain=True)]
            shown = self._drawn(image, result["faces"], index, size, heatmaps)
        else:
            image, _ = read_upload(photo, max_side=SHOWN_SIDE[1])
            shown = draw_faces(image, result["faces"], index, size, face_caption)
        return self._shown(shown), result["faces"][index]["scores"]

    def pick_face(self, photo: str | dict | None, result: Result | None, event: gr.SelectData, why: bool = False) -> tuple:
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
        return (index, *self.show_face(photo, result, index, why))

    @staticmethod
    def face_picker(result: Result | None) -> tuple:
        """Result -> (face picker: shown for several faces, whole-image button: shown when no face was found)."""
        faces = result["faces"] if result else []
        choices = [(f"{i + 1}: {face_caption(face)}", i) for i, face in enumerate(faces)]
        return (gr.update(choices=choices, value=0 if faces else None, visible=len(faces) > 1),
                gr.update(visible=result is not None and not faces))

    def _outputs(self, image: Image.Image | None, result: Result | None, status: str,
                 heatmaps: list[np.ndarray] | None = None) -> tuple:
        faces, size = (result["faces"], (result["width"], result["height"])) if result else ([], None)
        annotated = self._shown(self._drawn(image, faces, 0, size, heatmaps)) if image is not None else None
        return annotated, result, faces[0]["scores"] if faces else None, status

    @staticmethod
    def _drawn(image: Image.Image, faces: list[dict], selected: int, size: tuple[int, int] | None,
               heatmaps: list[np.ndarray] | None) -> Image.Image:
        """draw_faces, each face's heat map first blended over its box and a legend added below, if there are maps."""
        if heatmaps is None:
            return draw_faces(image, faces, selected, size, face_caption)
        scale = image.width / (size or image.size)[0]  # boxes are in the photo's own pixels
        for face, heatmap in zip(faces, heatmaps):
            image = overlay_heatmap(image, tuple(round(v * scale) for v in face["box"]), heatmap)
        return with_legend(draw_faces(image, faces, selected, size, face_caption))


def with_legend(shown: Image.Image) -> Image.Image:
    """The annotated photo with the heat maps' legend below it: the colour bar from cool to warm, and what they mean."""
    font = ImageFont.load_default(size=max(12, shown.width // 48))
    pad, bar = font.size // 2, font.size
    legend = Image.new("RGB", (shown.width, bar + font.size + 4 * pad), "white")
    colours = heatmap_colours(np.tile(np.linspace(0, 1, shown.width - 2 * pad), (bar, 1)))
    legend.paste(Image.fromarray(colours), (pad, pad))
    draw = ImageDraw.Draw(legend)
    draw.text((pad, 2 * pad + bar), LEGEND_COOL, fill="black", font=font)
    draw.text((shown.width - pad, 2 * pad + bar), LEGEND_WARM, fill="black", font=font, anchor="ra")
    combined = Image.new("RGB", (shown.width, shown.height + legend.height), "white")
    combined.paste(shown, (0, 0))
    combined.paste(legend, (0, shown.height))
    return combined
