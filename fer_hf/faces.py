"""Faces in photos: find the faces, crop them like FER-2013, classify their expressions.

    from fer_hf.faces import FaceDetector, FaceExpressionRecognizer, crop_face, find_faces
    from fer_hf.model.images import load_image

    image = load_image("group.jpg")                  # RGB, EXIF-rotated, alpha on white
    boxes = FaceDetector()(image)                    # largest face first
    face = crop_face(image, boxes[0])                # grayscale square, framed like FER-2013
    photo, boxes, crops = find_faces("group.jpg", FaceDetector())  # read, detect, crop: the recognizer's path
    recognizer = FaceExpressionRecognizer(model, processor)   # any transformers image classifier
    recognizer(image)                                # [{"box", "label", "score", "scores", "unsure", ...}, ...]
    recognizer(image, explain=True)                  # each face also with its "heatmap" (needs captum)
    FaceExpressionRecognizer(model, processor, labels=["happy", "sad"])  # a 7-class model's happy-vs-sad view

Finding and cropping faces live in fer_hf.model.face_detection, which every saved model also carries for its
face-aware pipeline (fer_hf.model.pipeline_fer); this module re-exports them beside the recognizer, which
classifies the crops with fer_hf.inference's fast CPU runtime.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from .model.face_detection import (
    BACKENDS,
    DEFAULT_MARGIN,
    DEFAULT_READ_SIDE,
    Box,
    FaceDetector,
    _min_side,
    crop_face,
    crop_square,
    face_align,
    face_crop_margin,
    find_faces,
)

# load_image, ImageReadError and ImageSource are part of this module's API too: photos go in as any ImageSource.
from .model.images import ImageReadError, ImageSource, load_image
from .model.pipeline_fer import FLIP_MARGIN, is_unsure, score_temperature, temper


# --------------------------------------------------------------------------------------------
# Classifying faces
# --------------------------------------------------------------------------------------------


def label_indices(labels: Sequence[str], names: Sequence[str], model_name: str = "the model") -> list[int]:
    """Where the classes `names` are among a model's `labels`, in the order of `names`.

    Raises:
        ValueError: a name that is not one of the labels (the message names it and lists the labels),
            a name given twice, or fewer than two names.
    """
    labels, names = list(labels), list(names)
    missing = [name for name in names if name not in labels]
    if missing:
        raise ValueError(f"{model_name}: no class {missing} among its labels {labels}.")
    if len(names) < 2 or len(set(names)) < len(names):
        raise ValueError(f"{model_name}: give two or more different classes among its labels {labels}, got {names}.")
    return [labels.index(name) for name in names]


def top_two_margin(probabilities: np.ndarray) -> np.ndarray:
    """How far each row's top class leads the runner-up (faces x classes -> faces): `flip_margin`'s measure."""
    top_two = np.sort(probabilities, axis=-1)[..., -2:]
    return top_two[..., 1] - top_two[..., 0]


def restrict_probabilities(probabilities: np.ndarray, indices: Sequence[int]) -> np.ndarray:
    """The columns `indices` of class probabilities (... x classes), renormalised to sum to 1 (float32).

    A 7-class model's happy and sad columns give its happy-vs-sad view: the same as a softmax over its
    happy and sad logits alone, so their argmax is that of those logits. Computed in float64, so that
    two tiny probabilities keep their ratio; a row whose chosen columns are all 0 gets equal shares.
    """
    chosen = np.asarray(probabilities, dtype=np.float64)[..., list(indices)]
    total = chosen.sum(-1, keepdims=True)
    return np.where(total > 0, chosen / np.where(total > 0, total, 1), 1 / len(indices)).astype(np.float32)


class FaceExpressionRecognizer:
    """Finds the faces in photos and classifies each with a transformers image classifier.

    Works with any `AutoModelForImageClassification` model and its image processor (the FER-2013
    CNN, a happy/sad model, a ViT): labels come from `model.config.id2label`, and crops are given
    to the processor in the model's channel count (`config.num_channels`: 1 gray, 3 gray as RGB).
    Loads nothing itself and puts the model in eval mode.

    Args:
        model: The classifier.
        image_processor: Its processor (turns PIL crops into `pixel_values`).
        detector: The face detector; a default FaceDetector() if None.
        margin: Passed to crop_face; None for the model's own (`face_crop_margin(image_processor)`).
            Photos are read, searched and cropped by find_faces.
        align: Turn each face so that its eyes are level before cropping it (crop_face's align; faces
            without landmarks, from Haar, are cropped plain); None for the model's own
            (`face_align(image_processor)`).
        classify_whole_image: When no face is found, classify the whole photo instead (its result
            has the whole image as box and detection_score None) rather than returning nothing.
        batch_size: Most faces per forward pass (crops and, with flip_tta, their mirrors).
        max_side: Photos are read at most this large, and a big JPEG at least half as large
            (load_image's min_side): it then decodes at 1/2, 1/4 or 1/8 scale, several times faster.
            The detector sees 480 px and crops end up 48x48, so nothing is lost; boxes are given in
            the original photo's pixels.
        runtime: How crops are classified: fer_hf.inference.InferenceRunner's mode ("auto": int8,
            bf16 or fp32 TorchScript for a FER CNN on the CPU, whichever this machine runs fastest;
            the model as it is for any other). `self.runtime.mode` says which one runs.
        flip_tta: Average the class probabilities of a crop and its mirror image (test-time
            augmentation) where the crop's own are unsure (flip_margin). It raises the bundled
            models' PublicTest accuracy (the "mirror-averaged" rows of benchmarks/results/inference.md).
        flip_margin: With flip_tta, mirror only the crops whose top two class probabilities are within
            this of each other, in a second forward pass: a sure face keeps its label with or without
            its mirror. 1 mirrors every crop (twice the work). See FLIP_MARGIN.
        labels: Report only these of the model's classes, in this order, their probabilities
            renormalised to sum to 1 (restrict_probabilities; the label is their argmax): e.g.
            ["happy", "sad"] for the 7-class model's happy-vs-sad view. None: all the model's classes.

    Raises:
        ValueError: `labels` names a class the model does not have (label_indices).
    """

    def __init__(
        self,
        model: Any,
        image_processor: Any,
        detector: FaceDetector | None = None,
        *,
        margin: float | None = None,
        align: bool | None = None,
        classify_whole_image: bool = False,
        batch_size: int = 64,
        max_side: int | None = DEFAULT_READ_SIDE,
        runtime: str = "auto",
        flip_tta: bool = True,
        flip_margin: float = FLIP_MARGIN,
        labels: Sequence[str] | None = None,
    ) -> None:
        from .inference import InferenceRunner  # imports torch: not needed to detect or crop faces

        self.model = model.eval()
        self.runtime = InferenceRunner(model, image_processor, runtime)
        self.max_side = max_side
        self.image_processor = image_processor
        self.detector = detector if detector is not None else FaceDetector()
        self.margin = face_crop_margin(image_processor) if margin is None else margin
        self.align = face_align(image_processor) if align is None else align
        self.classify_whole_image = classify_whole_image
        self.batch_size = batch_size
        self.flip_tta = flip_tta
        if not 0 <= flip_margin <= 1:
            raise ValueError(f"flip_margin must be in 0..1, got {flip_margin!r}.")
        self.flip_margin = flip_margin
        # The model's classes, and the columns of those reported (None: all of them).
        self.model_labels = self.runtime.labels
        name = getattr(model.config, "name_or_path", "") or "the model"
        self._columns = None if labels is None else label_indices(self.model_labels, labels, name)
        self.labels = self.model_labels if labels is None else list(labels)
        self._crop_mode = "L" if getattr(model.config, "num_channels", 3) == 1 else "RGB"
        self._temperature = getattr(model.config, "temperature", 1.0)
        self._multi_label = getattr(model.config, "problem_type", None) == "multi_label_classification"
        self._flip_temperature = score_temperature(model.config, True, flip_margin)

    @property
    def min_side(self) -> int | None:
        """load_image's min_side for the photos read here: half of max_side (see max_side above).

        `load_image(source, max_side=r.max_side, min_side=r.min_side)` reads a photo as this recognizer
        does: given that image it returns what it returns for the source, boxes in the source's pixels
        (the image keeps the photo's size in info["original_size"])."""
        return _min_side(self.max_side)

    def __call__(self, image: ImageSource, top_faces: int | None = None, explain: bool | str = False,
                 target: str | None = None) -> list[dict[str, Any]]:
        """Faces of one photo, largest first: dicts with box, label, score, scores, detection_score, unsure.

        Args:
            image: Anything load_image reads.
            top_faces: Classify only this many of the largest faces; None for all.
            explain: Add each face's "heatmap": which of its pixels the label came from, float32 in [0, 1],
                the box's height x width in the photo's pixels. True or "occlusion": Occlusion; "grad-cam": the
                faster, less faithful Grad-CAM (fer_hf.model.heatmaps, on the eager model). Needs captum.
            target: With explain, the label the heat maps are for; None: each face's own label.

        Raises:
            ValueError: a target that is not one of the model's labels (the message lists them).
        """
        return self.predict_batch([image], top_faces=top_faces, explain=explain, target=target)[0]

    def predict_batch(self, images: Sequence[ImageSource], top_faces: int | None = None, explain: bool | str = False,
                      target: str | None = None) -> list[list[dict[str, Any]]]:
        """Like __call__ for many photos; the crops of all photos share forward passes.

        Every crop is held until the forward passes, so give it photos in chunks (a few hundred).
        """
        from .model.heatmaps import box_heatmap, explain_method, target_index  # imports torch

        method, target_class = explain_method(explain), target_index(self.model_labels, target)
        found: list[list[tuple[tuple[int, int, int, int], float | None]]] = []
        crops: list[Image.Image] = []
        squares: list[tuple[float, float, float, float] | None] = []  # each crop's square in its photo
        for source in images:
            image, boxes, face_crops = find_faces(
                source, self.detector, max_side=self.max_side, margin=self.margin, top_faces=top_faces,
                align=self.align,
            )
            if boxes:
                found.append([(box.as_tuple(), box.score) for box in boxes])
                crops += face_crops
                squares += [crop_square(box, self.margin, self.align) for box in boxes]
            elif self.classify_whole_image:
                width, height = image.info.get("original_size", image.size)  # the photo's own size
                found.append([((0, 0, width, height), None)])
                crops.append(image.convert("L"))  # gray like the face crops, so the model sees what it was trained on
                squares.append(None)
            else:
                found.append([])
        probabilities = self.classify(crops)
        results, row = [], 0
        for faces in found:
            results.append([self.face_result(box, score, probabilities[row + i]) for i, (box, score) in enumerate(faces)])
            row += len(faces)
        if method:
            faces = [face for photo in results for face in photo]
            targets = [self.model_labels.index(face["label"]) if target_class is None else target_class for face in faces]
            for face, crop_map, square in zip(faces, self.heatmaps(crops, targets, method), squares):
                face["heatmap"] = box_heatmap(crop_map, face["box"], square)
        return results

    def heatmaps(self, crops: Sequence[Image.Image], targets: Sequence[int], method: str = "occlusion") -> np.ndarray:
        """Heat maps of already cropped faces for the model's classes `targets`: crops x side x side, float32 in [0, 1].

        Made on the eager model, batch_size crops at a time (fer_hf.model.heatmaps.face_heatmaps).
        """
        from .model.heatmaps import face_heatmaps  # imports torch

        maps = [
            face_heatmaps(self.model, self.runtime.pixel_values([crop.convert(self._crop_mode) for crop in
                                                                 crops[start : start + self.batch_size]]),
                          targets[start : start + self.batch_size], method)
            for start in range(0, len(crops), self.batch_size)
        ]
        return np.concatenate(maps) if maps else np.zeros((0, 0, 0), dtype=np.float32)

    def video(self, path, **kwargs):
        """Per-frame results for a video file: see `fer_hf.video.analyze_video` for the arguments."""
        from .video import analyze_video  # video imports this module

        return analyze_video(self, path, **kwargs)

    def stream(self, source, **kwargs):
        """Per-frame results of a camera or stream, in real time: see `fer_hf.stream.analyze_stream`."""
        from .stream import analyze_stream  # as video(): photos need no PyAV

        return analyze_stream(self, source, **kwargs)

    def classify(self, crops: Sequence[Image.Image]) -> np.ndarray:
        """Class probabilities (crops x labels) of already cropped faces, batch_size faces a forward pass.

        They are calibrated where the model was (`python -m fer_hf calibrate`): the temperature fitted for one
        view, or with flip_tta the one fitted for mirror-averaged scores (fer_hf.model.pipeline_fer.score_temperature).

        With flip_tta, a crop whose top two classes are within flip_margin gets the mean of its own and its
        mirror image's (the mirrors of a batch share a second forward pass).
        With `labels`, they are the chosen classes' probabilities renormalised (after the mirror average).
        """
        if not crops:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        chunks = []
        for start in range(0, len(crops), self.batch_size):
            batch = [crop.convert(self._crop_mode) for crop in crops[start : start + self.batch_size]]
            probabilities = self.runtime(batch)  # one view, calibrated by the model's own temperature
            if self.flip_tta and not self._multi_label:
                # Mirrored faces and labels are chosen on the uncalibrated scores, as before calibration, and the
                # mirror-averaged scores get the temperature fitted for them.
                probabilities = temper(probabilities, 1 / self._temperature)
                # Only the faces whose top two classes are close gain from their mirror image's opinion.
                unsure = np.flatnonzero(top_two_margin(probabilities) < self.flip_margin)
                if len(unsure):
                    mirrored = temper(self.runtime([ImageOps.mirror(batch[i]) for i in unsure]), 1 / self._temperature)
                    probabilities[unsure] = (probabilities[unsure] + mirrored) / 2
                probabilities = temper(probabilities, self._flip_temperature)
            chunks.append(probabilities)
        probabilities = np.concatenate(chunks)
        return probabilities if self._columns is None else restrict_probabilities(probabilities, self._columns)

    def face_result(
        self, box: tuple[int, int, int, int], detection_score: float | None, probs: np.ndarray
    ) -> dict[str, Any]:
        """One face as this recognizer reports it: box, label, score, scores (by label), detection_score, and
        unsure (the score is below the model's `unsure_threshold`; with `labels`, the renormalised score)."""
        best = int(np.argmax(probs))
        return {
            "box": box,
            "label": self.labels[best],
            "score": float(probs[best]),
            "scores": {label: float(p) for label, p in zip(self.labels, probs)},
            "detection_score": detection_score,
            "unsure": is_unsure(float(probs[best]), self.model.config),
        }


__all__ = ["BACKENDS", "DEFAULT_MARGIN", "DEFAULT_READ_SIDE", "Box", "FaceDetector", "FaceExpressionRecognizer",
           "ImageReadError", "ImageSource", "crop_face", "face_align", "face_crop_margin",
           "find_faces", "label_indices", "load_image", "restrict_probabilities", "top_two_margin"]
