"""What the demo and the predict CLI do, timed and scored on real photos, in one run.

1. Webcam-sized frames: 640x480 frames cut from the real happy/sad photos, through the demo's live
   path (fer_hf.demo.FaceDemo's stream recognizer, its detector at fer_hf.demo.live.STREAM_DETECT_SIDE); per frame, the
   median and p90 latency of face detection alone, classification of the found faces alone, and
   detect + classify, with the frames per second that gives; the photos' detector (480 px) on the
   same frames for comparison. Then the faces found on the frames at the stream's side and at other
   sides against those found at 480, by face size, with each side's detection time against 480's.
2. The 301 photos of ../shared/data/happy_sad through the demo's path from the file
   (`FaceExpressionRecognizer` with its defaults): photos with a face found, split by what each photo
   shows as judged by eye (benchmarks/happy_sad_by_eye.csv: a photographed face, only drawn faces
   (cartoons, emoji, faces drawn on fingers), or no face at all (text, silhouettes, hidden faces));
   with the model's happy-vs-sad scores on the largest face, photos called right, counting a photo
   with no face found as wrong (the rule the `fer` package was measured by) and with the demo's
   whole-image fallback; time per photo from the file (load + detect + classify, the faster of two
   runs): wall clock and the process's CPU time, which a machine shared with other work inflates less.
3. Detector settings on the same photos (read once, as the recognizer reads them): the default and
   lower score thresholds, and second passes tried only when the first finds nothing (a larger
   image, a grey border for faces cut by the frame, the image turned 20 degrees either way, OpenCV's
   Haar cascade); a face "found" in a photo marked "no face" is a false one.
4. The happy-vs-sad call against the crop (margin, square or the box's own shape, averaged with the
   mirror image) and the decision rule, on the largest face the default detector finds: over all 301
   photos, and apart for the train + validation photos of fer_hf.data's seeded split (where a crop
   may be chosen) and its 46 test photos (where the choice is checked).

    python benchmarks/bench_demo.py [--model models/fer2013-cnn] [--frames 60] [--note "what else ran"]

Writes benchmarks/results/demo.md. Times are best taken on an otherwise idle machine; the table
states the load average it ran under.
"""

import argparse
import csv
import os
import statistics
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from common import machine, write_table  # first: puts the repo root on sys.path for fer_hf
from fer_hf.demo import FaceDemo
from fer_hf.data import load_photo_folder
from fer_hf.faces import Box, FaceDetector, FaceExpressionRecognizer, crop_face
from fer_hf.model.images import load_image
from fer_hf.hub import load_classifier

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "happy_sad"
BY_EYE = ROOT / "benchmarks" / "happy_sad_by_eye.csv"
KINDS = ("photo", "drawn", "none")  # the `face` column of BY_EYE
NEGATIVE = ("angry", "disgust", "fear", "sad")
LARGE_FACE = 80  # box height (px of a 640x480 frame) from which a face counts as webcam-sized


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


def read_by_eye(photos: list[Path]) -> dict[str, str]:
    """'happy/x.jpg' -> 'photo', 'drawn' or 'none'; photos the file does not list are 'unjudged'."""
    judged = {}
    if BY_EYE.exists():
        with BY_EYE.open(newline="") as file:
            judged = {row["photo"]: row["face"] for row in csv.DictReader(file)}
    return {key(path): judged.get(key(path), "unjudged") for path in photos}


def key(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def pct(part: int, whole: int) -> str:
    return f"{part}/{whole} ({part / whole:.1%})" if whole else "0/0"


def by_kind(hits: dict[str, bool], kinds: dict[str, str]) -> str:
    """'a | b | c' counts of photos with a hit among the photographed / drawn / no-face photos."""
    totals, found = Counter(kinds.values()), Counter(kinds[k] for k, hit in hits.items() if hit)
    return " | ".join(f"{found[kind]}/{totals[kind]}" for kind in KINDS)


# ------------------------------------------------------------------------ 1. the stream's detector side


def found_again(box: Box, others: list[Box]) -> bool:
    return any(box.iou(other) >= 0.5 for other in others)


def stream_sides(frames: list[np.ndarray], stream: FaceDetector, photo: FaceDetector, repeats: int = 3) -> list[str]:
    """Faces found on the frames by the stream's detector and at a few other sides, against the photos' detector.

    The sides are timed in turn on each frame, so that other work on the machine slows them alike;
    per frame the fastest of `repeats` runs.
    """
    base = photo.max_side
    sides = sorted({base, 400, stream.max_side, 256}, reverse=True)
    detectors = {side: FaceDetector(stream.backend, score_threshold=stream.score_threshold, max_side=side) for side in sides}
    boxes = {side: [detector(frame) for frame in frames] for side, detector in detectors.items()}  # and warm-up
    times = {side: [] for side in sides}
    for frame in frames:
        best = dict.fromkeys(sides, float("inf"))
        for _ in range(repeats):
            for side, detector in detectors.items():
                start = time.perf_counter()
                detector(frame)
                best[side] = min(best[side], (time.perf_counter() - start) * 1e3)
        for side in sides:
            times[side].append(best[side])
    reference = [(frame, box) for frame, found in enumerate(boxes[base]) for box in found]
    sizes = {"h < 40 px": (0, 40), f"h 40-{LARGE_FACE - 1} px": (40, LARGE_FACE), f"h >= {LARGE_FACE} px": (LARGE_FACE, 10**6)}
    largest = [frame for frame, found in enumerate(boxes[base]) if found and found[0].height >= LARGE_FACE]
    lines = [
        f"### Faces found on the {len(frames)} frames, by the detector's longer side, against {base} px (the photos')",
        "",
        f"A face found at {base} counts as found again at a side where a box overlaps it with IoU >= 0.5; h is its "
        f"box height in the 640x480 frame (a face in a webcam frame is usually >= {LARGE_FACE} px high). "
        f"Detection time per frame against {base}'s, the sides timed in turn on each frame.",
        "",
        f"| longer side | frames with a face | faces | of the faces found at {base}: " + " | ".join(sizes)
        + f" | faces h >= {LARGE_FACE} px not found at {base} | frames whose largest face at {base} "
          f"(h >= {LARGE_FACE} px) is found | median detection ms | time against {base} |",
        "|---|---|---|" + "---|" * len(sizes) + "---|---|---|---|",
    ]
    for side in sides:
        found = boxes[side]
        kept = []
        for low, high in sizes.values():
            group = [(frame, box) for frame, box in reference if low <= box.height < high]
            kept.append(f"{sum(found_again(box, found[frame]) for frame, box in group)}/{len(group)}")
        new = sum(box.height >= LARGE_FACE and not found_again(box, boxes[base][frame])
                  for frame, in_frame in enumerate(found) for box in in_frame)
        largest_kept = sum(found_again(boxes[base][frame][0], found[frame]) for frame in largest)
        name = {base: f"{side} (the photos')", stream.max_side: f"{side} (the stream's)"}.get(side, str(side))
        median = statistics.median(times[side])
        lines.append(
            f"| {name} | {sum(map(bool, found))}/{len(frames)} | {sum(map(len, found))} | {' | '.join(kept)} | {new} | "
            f"{largest_kept}/{len(largest)} | {median:.1f} | {median / statistics.median(times[base]):.2f} |"
        )
    return lines + [""]


# ---------------------------------------------------------------------------------------- 2. photos


def demo_path(recognizer, whole_image, photos, kinds, happy_sad) -> tuple[list[str], dict]:
    """The recognizer on every photo from its file: faces found, happy-vs-sad calls, time per photo."""
    for path in photos[:3]:
        recognizer(path)  # warm-up
    wall, cpu, found, right, right_whole = [], [], {}, 0, 0
    for path in photos:
        best = (float("inf"), 0.0)
        for _ in range(2):
            start, start_cpu = time.perf_counter(), time.process_time()
            faces = recognizer(path)
            best = min(best, ((time.perf_counter() - start) * 1e3, (time.process_time() - start_cpu) * 1e3))
        wall.append(best[0])
        cpu.append(best[1])
        found[key(path)] = bool(faces)
        truth = path.parent.name
        if faces:
            call = happy_sad(faces[0]["scores"])
            right += call == truth
            right_whole += call == truth
        else:  # the demo's "classify the whole image" button: the same model on the whole photo, in gray
            right_whole += happy_sad(whole_image(path)[0]["scores"]) == truth
    n = len(photos)
    slowest = sorted(range(n), key=lambda i: -cpu[i])[:3]
    totals = Counter(kinds.values())
    lines = [
        f"## The {n} photos of happy_sad through the demo's path (from the file: load + detect + classify)",
        "",
        "| photos with a face found | of which: photographed-face photos | drawn-face photos | no-face photos (false faces) |",
        "|---|---|---|---|",
        f"| {pct(sum(found.values()), n)} | {by_kind(found, kinds)} |",
        "",
        f"By eye (benchmarks/happy_sad_by_eye.csv), {totals['photo']} photos show a photographed human face, "
        f"{totals['drawn']} only drawn faces (cartoons, emoji and smileys, faces drawn on fingers) and "
        f"{totals['none']} no face at all (text and logos, silhouettes, faces hidden or turned away).",
        "",
        "| happy-vs-sad right, over all photos: no face found = wrong | with the whole-image fallback for photos with no face found |",
        "|---|---|",
        f"| {pct(right, n)} | {pct(right_whole, n)} |",
        "",
        "| time per photo (faster of 2 runs) | median ms | p90 ms | max ms | slowest photos (CPU ms) |",
        "|---|---|---|---|---|",
        f"| wall clock | {statistics.median(wall):.0f} | {np.percentile(wall, 90):.0f} | {max(wall):.0f} | |",
        f"| CPU time of the process | {statistics.median(cpu):.0f} | {np.percentile(cpu, 90):.0f} | {max(cpu):.0f} | "
        + ", ".join(f"{key(photos[i])} ({cpu[i]:.0f})" for i in slowest) + " |",
        "",
    ]
    return lines, found


# ------------------------------------------------------------------------------- 3. detector settings


def detector_settings(images: dict[str, Image.Image], kinds: dict[str, str]) -> tuple[list[str], dict]:
    """Photos with a face, by kind, for the default detector and for passes tried when it finds nothing."""
    import cv2

    cv2.setNumThreads(1)
    every = FaceDetector(score_threshold=0.2)  # scores filtered below, so one run serves every threshold
    larger = {side: FaceDetector(score_threshold=0.5, max_side=side) for side in (640, 960)}
    haar = FaceDetector("haar", haar_min_neighbors=5)
    default = FaceDetector()

    def with_border(image: Image.Image) -> list[Box]:
        pad = round(0.15 * max(image.size))
        framed = ImageOps.expand(image, border=pad, fill=(128, 128, 128))
        boxes = []
        for b in default(framed):
            x0, y0 = max(0, b.x0 - pad), max(0, b.y0 - pad)
            x1, y1 = min(image.width, b.x1 - pad), min(image.height, b.y1 - pad)
            if x1 > x0 and y1 > y0:
                boxes.append(Box(x0, y0, x1, y1, b.score))
        return boxes

    def turned(image: Image.Image) -> list[Box]:  # boxes on the turned image: counted, not mapped back
        return [b for angle in (20, -20) for b in default(image.rotate(angle, Image.Resampling.BILINEAR))]

    second_passes = {
        "then, if none: longer side 640": larger[640],
        "then, if none: longer side 960": larger[960],
        "then, if none: a 15% grey border": with_border,
        "then, if none: turned 20 degrees either way": turned,
        "then, if none: OpenCV Haar cascade (minNeighbors 5)": haar,
    }
    first, first_ms, boxes = {}, {}, {}
    for name, image in images.items():
        start = time.process_time()
        first[name] = [(b, b.score) for b in every(image)]
        first_ms[name] = (time.process_time() - start) * 1e3
    rows = []
    for threshold in (0.5, 0.4, 0.3):
        hits = {name: any(s >= threshold for _, s in found) for name, found in first.items()}
        label = "libfacedetection at 480 px, score >= 0.5 (the default)" if threshold == 0.5 else f"score >= {threshold}"
        rows.append((label, hits, list(first_ms.values())))
        if threshold == 0.5:
            boxes = {name: [b for b, s in found if s >= threshold] for name, found in first.items()}
    for label, detect in second_passes.items():
        hits, times = {}, []
        for name, image in images.items():
            extra = 0.0
            found = bool(boxes[name])
            if not found:
                start = time.process_time()
                found = bool(detect(image))
                extra = (time.process_time() - start) * 1e3
            hits[name] = found
            times.append(first_ms[name] + extra)
        rows.append((label, hits, times))
    lines = [
        "## Detector settings on the photos (read as the recognizer reads them; CPU ms of detection per photo)",
        "",
        "| detector | photos with a face | photographed | drawn | no face (false) | median ms | p90 ms | max ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, hits, times in rows:
        lines.append(
            f"| {label} | {pct(sum(hits.values()), len(hits))} | {by_kind(hits, kinds)} | "
            f"{statistics.median(times):.0f} | {np.percentile(times, 90):.0f} | {max(times):.0f} |"
        )
    return lines + [""], boxes


# ------------------------------------------------------------------------------ 4. crops and rules


def box_crop(image: Image.Image, box: Box, margin: float) -> Image.Image:
    """The box itself, widened by `margin` of its width and height, in gray: not squared."""
    dx, dy = margin / 2 * box.width, margin / 2 * box.height
    return image.crop((round(box.x0 - dx), round(box.y0 - dy), round(box.x1 + dx), round(box.y1 + dy))).convert("L")


def photo_splits() -> dict[str, str]:
    """Each photo's split ("train", "validation" or "test") in fer_hf.data's seeded split of happy_sad,
    the one train.py and `python -m fer_hf evaluate` use."""
    from datasets import Image as ImageFeature

    splits = {}
    for split, dataset in load_photo_folder(PHOTOS).items():
        for image in dataset.cast_column("image", ImageFeature(decode=False))["image"]:
            splits[key(Path(image["path"]))] = split
    return splits


def crop_sweep(recognizer, images, boxes, kinds, splits, default_margin) -> list[str]:
    labels = recognizer.labels
    happy, sad = labels.index("happy"), labels.index("sad")
    negative = [labels.index(label) for label in NEGATIVE if label in labels]
    names = sorted(images)
    truth = {name: name.split("/")[0] for name in names}
    with_face = [name for name in names if boxes[name]]
    no_face = [name for name in names if not boxes[name]]

    def probabilities(crops: list[Image.Image], flip: bool) -> np.ndarray:
        # The recognizer's own switch: classify() mirror-averages when flip_tta is on (the demo's default).
        default, recognizer.flip_tta = recognizer.flip_tta, flip
        try:
            return recognizer.classify(crops)
        finally:
            recognizer.flip_tta = default

    def square(image, box, margin):
        return crop_face(image, box, margin)

    crops = {f"square, margin {m:g}": (square, m) for m in (-0.1, 0.0, 0.1, 0.2, 0.3)}
    crops |= {f"the box's shape, margin {m:g}": (box_crop, m) for m in (0.0, 0.1, 0.2)}
    rules = {"p(happy) >= p(sad)": lambda p: p[:, happy] >= p[:, sad]}
    if len(negative) > 1:
        rules["p(happy) >= p(angry + disgust + fear + sad)"] = lambda p: p[:, happy] >= p[:, negative].sum(axis=1)
    whole = {
        "the whole photo": [images[n].convert("L") for n in no_face],
        "its centred square": [ImageOps.fit(images[n], (min(images[n].size),) * 2).convert("L") for n in no_face],
    }
    is_happy = np.array([truth[n] == "happy" for n in with_face])
    photo_rows = np.array([kinds[n] == "photo" for n in with_face])
    no_face_happy = np.array([truth[n] == "happy" for n in no_face])
    # Which photos are held out: a crop chosen on these labels is chosen on train + validation only.
    held_out = np.array([splits[n] == "test" for n in with_face + no_face])
    fallback_probs = {label: recognizer.classify(c) for label, c in whole.items()}
    lines = [
        f"## The happy-vs-sad call against the crop and the rule (largest face; {len(with_face)} photos with a face, "
        f"{len(no_face)} without)",
        "",
        "| crop | mirror-averaged | rule | right of all 301, no face = wrong | with the whole-photo fallback | "
        "with the fallback: train + validation photos | with the fallback: test photos | "
        "right on the photographed-face photos with a face found |",
        "|---|---|---|---|---|---|---|---|",
    ]
    fallback = "the whole photo"
    for crop_label, (cut, margin) in crops.items():
        cut_crops = [cut(images[n], boxes[n][0], margin) for n in with_face]
        for flip in (False, True):
            probs = probabilities(cut_crops, flip)
            for rule_label, rule in rules.items():
                ok = rule(probs) == is_happy
                fb = rule(fallback_probs[fallback]) == no_face_happy if no_face else np.zeros(0, bool)
                mark = " (the default)" if (margin == default_margin and cut is square and flip == recognizer.flip_tta
                                             and rule_label == "p(happy) >= p(sad)") else ""
                right = np.concatenate([ok, fb])  # with_face, then no_face: the order of held_out
                lines.append(
                    f"| {crop_label}{mark} | {'yes' if flip else 'no'} | {rule_label} | {pct(int(ok.sum()), len(names))} | "
                    f"{pct(int(right.sum()), len(names))} | {pct(int(right[~held_out].sum()), int((~held_out).sum()))} | "
                    f"{pct(int(right[held_out].sum()), int(held_out.sum()))} | "
                    f"{pct(int(ok[photo_rows].sum()), int(photo_rows.sum()))} |"
                )
    lines += ["", "| fallback for photos with no face found (p(happy) >= p(sad)) | right |", "|---|---|"]
    for label, probs in fallback_probs.items():
        ok = (probs[:, happy] >= probs[:, sad]) == no_face_happy
        lines.append(f"| {label}, in gray | {pct(int(ok.sum()), len(no_face))} |")
    return lines + [""]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "models" / "fer2013-cnn"))
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "demo.md"))
    parser.add_argument("--note", default="", help="a sentence on the conditions, printed under the machine line")
    args = parser.parse_args()
    if not PHOTOS.is_dir():
        raise SystemExit(f"needs the real photos in {PHOTOS}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    model, processor = load_classifier(args.model)
    recognizer = FaceExpressionRecognizer(model, processor)
    whole_image = FaceExpressionRecognizer(model, processor, recognizer.detector, classify_whole_image=True)
    detector = recognizer.detector
    labels = recognizer.labels
    if "happy" not in labels or "sad" not in labels:
        raise SystemExit(f"the model's labels {labels} lack happy or sad")
    photos = sorted(PHOTOS.glob("*/*"))
    kinds = read_by_eye(photos)

    def happy_sad(scores: dict) -> str:
        return "happy" if scores["happy"] >= scores["sad"] else "sad"

    # 1. frames, through the demo's live path (FaceDemo.live runs its stream recognizer on each frame)
    frames = frames_from_photos(photos, args.frames)
    stream = FaceDemo(recognizer).stream
    for frame in frames[:3]:
        stream(frame)  # warm-up
        recognizer(frame)
    boxes, detect_ms = timed(stream.detector, frames)
    crops = [[crop_face(Image.fromarray(f), b) for b in found] for f, found in zip(frames, boxes)]
    _, classify_ms = timed(lambda faces: stream.classify(faces), [c for c in crops if c])
    _, both_ms = timed(stream, frames)
    _, photo_detect_ms = timed(detector, frames)
    _, photo_both_ms = timed(recognizer, frames)
    side_lines = stream_sides(frames, stream.detector, detector)

    # 2. photos, the demo's path
    photo_lines, _ = demo_path(recognizer, whole_image, photos, kinds, happy_sad)

    # 3 and 4 on the photos read once, as the recognizer reads them
    side = recognizer.max_side
    images = {key(p): load_image(p, max_side=side, min_side=side and side // 2) for p in photos}
    detector_lines, default_boxes = detector_settings(images, kinds)
    sweep_lines = crop_sweep(recognizer, images, default_boxes, kinds, photo_splits(), recognizer.margin)

    model_path = Path(args.model).resolve()
    shown = model_path.relative_to(ROOT) if model_path.is_relative_to(ROOT) else args.model
    write_table(args.output, [
        "# Demo path: face detection + expression classification",
        "",
        f"Command: `python benchmarks/bench_demo.py --model {shown} --frames {args.frames}"
        + (f' --note "{args.note}"' if args.note else "") + "`  ",
        f"{machine()}; load average {load:.1f} at the start; "
        f"detector: {detector!r}; the webcam stream's: {stream.detector!r}; model: {shown} ({', '.join(labels)}).",
        *([f"Note: {args.note}"] if args.note else []),
        "",
        f"## {len(frames)} frames of 640x480 cut from the real happy/sad photos, through the live webcam path",
        "",
        "| step | median ms | p90 ms | frames/s at the median |",
        "|---|---|---|---|",
        f"| detection alone, at {stream.detector.max_side} px (the stream's detector) | {summary(detect_ms)} |",
        f"| classification alone (the frame's faces, one batch; {sum(map(len, crops))} faces in {sum(1 for c in crops if c)} frames) | {summary(classify_ms)} |",
        f"| detect + classify (the live stream's path) | {summary(both_ms)} |",
        f"| for comparison: detection alone at {detector.max_side} px (the photos' detector) | {summary(photo_detect_ms)} |",
        f"| for comparison: detect + classify with the photos' detector | {summary(photo_both_ms)} |",
        "",
        *side_lines,
        *photo_lines,
        *detector_lines,
        *sweep_lines,
    ])


if __name__ == "__main__":
    main()
