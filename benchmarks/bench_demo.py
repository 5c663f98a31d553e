"""What the demo and the predict CLI do, timed and scored on real photos, in one run.

1. Webcam-sized frames: 640x480 frames cut from the real happy/sad photos; per frame, the median and
   p90 latency of face detection alone, classification of the found faces alone, and detect +
   classify (the demo's path), with the frames per second that gives.
2. The 301 photos of ../shared/data/happy_sad: photos with a face found; with a model's happy-vs-sad
   scores on the largest face, photos called right (a photo with no face found counts as wrong);
   time per photo from the file (load + detect + classify), median, p90 and max.

    python benchmarks/bench_demo.py [--model models/fer2013-cnn] [--frames 60]

Writes benchmarks/results/demo.md. Run it on an otherwise idle machine.
"""

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common import machine, write_table  # first: puts the repo root on sys.path for fer_hf
from fer_hf.faces import FaceDetector, FaceExpressionRecognizer, crop_face, load_image
from fer_hf.hub import load_classifier

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "happy_sad"


def frames_from_photos(photos: list[Path], count: int) -> list[np.ndarray]:
    """640x480 RGB frames: each photo scaled to cover 640x480 and centre-cropped, as a camera frames a scene."""
    frames = []
    for path in photos[:count]:
        image = load_image(path)
        scale = max(640 / image.width, 480 / image.height)
        image = image.resize((max(640, round(image.width * scale)), max(480, round(image.height * scale))))
        left, top = (image.width - 640) // 2, (image.height - 480) // 2
        frames.append(np.asarray(image.crop((left, top, left + 640, top + 480))))
    return frames


def timed(function, inputs) -> tuple[list, list[float]]:
    outputs, times = [], []
    for item in inputs:
        start = time.perf_counter()
        outputs.append(function(item))
        times.append((time.perf_counter() - start) * 1e3)
    return outputs, times


def summary(times: list[float]) -> str:
    median = statistics.median(times)
    return f"{median:.1f} | {np.percentile(times, 90):.1f} | {1000 / median:.0f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "models" / "fer2013-cnn"))
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "demo.md"))
    args = parser.parse_args()
    if not PHOTOS.is_dir():
        raise SystemExit(f"needs the real photos in {PHOTOS}")

    model, processor = load_classifier(args.model)
    recognizer = FaceExpressionRecognizer(model, processor)
    detector = recognizer.detector
    labels = recognizer.labels
    photos = sorted(PHOTOS.glob("*/*"))

    # 1. frames
    frames = frames_from_photos(photos, args.frames)
    for frame in frames[:3]:
        recognizer(frame)  # warm-up
    boxes, detect_ms = timed(detector, frames)
    crops = [[crop_face(Image.fromarray(f), b) for b in found] for f, found in zip(frames, boxes)]
    _, classify_ms = timed(lambda faces: recognizer.classify(faces), [c for c in crops if c])
    _, both_ms = timed(recognizer, frames)

    # 2. photos
    found = right = 0
    photo_ms = []
    happy, sad = labels.index("happy"), labels.index("sad")
    for path in photos:
        start = time.perf_counter()
        faces = recognizer(path)
        photo_ms.append((time.perf_counter() - start) * 1e3)
        if faces:
            found += 1
            scores = faces[0]["scores"]
            call = "happy" if scores[labels[happy]] >= scores[labels[sad]] else "sad"
            right += call == path.parent.name

    n = len(photos)
    write_table(args.output, [
        "# Demo path: face detection + expression classification",
        "",
        f"Command: `python benchmarks/bench_demo.py --model {args.model} --frames {args.frames}`  ",
        f"{machine()}; "
        f"detector: {detector!r}; model: {args.model} ({', '.join(labels)}).",
        "",
        f"## {len(frames)} frames of 640x480 cut from the real happy/sad photos",
        "",
        "| step | median ms | p90 ms | frames/s at the median |",
        "|---|---|---|---|",
        f"| detection alone | {summary(detect_ms)} |",
        f"| classification alone (the frame's faces, one batch; {sum(map(len, crops))} faces in {sum(1 for c in crops if c)} frames) | {summary(classify_ms)} |",
        f"| detect + classify (the demo's path) | {summary(both_ms)} |",
        "",
        f"## The {n} photos of happy_sad (from the file: load + detect + classify)",
        "",
        "| photos with a face found | happy-vs-sad right, over all photos (no face = wrong) | median ms/photo | p90 ms/photo | max ms/photo |",
        "|---|---|---|---|---|",
        f"| {found}/{n} ({found / n:.1%}) | {right}/{n} ({right / n:.1%}) | {statistics.median(photo_ms):.0f} | "
        f"{np.percentile(photo_ms, 90):.0f} | {max(photo_ms):.0f} |",
    ])


if __name__ == "__main__":
    main()
