"""Aligned faces against plain crops: the happy-vs-sad call on real photos, upright and turned.

A face is cut either as the detector's box gives it (the plain crop) or after the photo is turned about
the eyes' midpoint so that libfacedetection's two eye landmarks are level (crop_face's align), with the
same side and centre rule. The model is the 7-class default seen through its happy and sad scores
(FaceExpressionRecognizer's labels=["happy", "sad"]), with the recognizer's defaults otherwise: mirror
averaging and the runtime that the demo and `predict` use; the label of a photo is that of its largest face.

1. The 301 photos of ../shared/data/happy_sad, and apart its 46 held-out test photos (fer_hf.data's
   seeded split, the one `evaluate --split test` scores); the 4 photos in tests/fixtures/photos
   (labelled by their file names).
2. Turned copies of the 4 fixture photos and of the 46 test photos: each photo as the recognizer reads
   it, turned by +15, -15, +30 and -30 degrees (counterclockwise positive, Pillow's Image.rotate with
   expand=True, bilinear, the new corners filled with black).
3. How tilted the photos' faces are, and how much of each turn the eye landmarks measure.

Both crops of a photo come from the same boxes, so a photo's label changes only by the crop; "fixed" and
"broken" count the photos that alignment turns from wrong to right and from right to wrong.

    python benchmarks/bench_alignment.py [--model models/fer2013-cnn]

Writes benchmarks/results/alignment.md.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

from PIL import Image

from common import ROOT, machine, write_table  # first: puts the repo root on sys.path for fer_hf
from fer_hf.data import load_photo_folder
from fer_hf.faces import FaceDetector, FaceExpressionRecognizer, crop_face, find_faces
from fer_hf.hub import load_classifier
from fer_hf.model.images import load_image

PHOTOS = ROOT.parent / "shared" / "data" / "happy_sad"
FIXTURES = ROOT / "tests" / "fixtures" / "photos"
LABELS = ["happy", "sad"]
ANGLES = (15, -15, 30, -30)


def test_photos() -> set[Path]:
    """The held-out test photos of fer_hf.data's seeded split of happy_sad."""
    from datasets import Image as ImageFeature

    test = load_photo_folder(PHOTOS)["test"].cast_column("image", ImageFeature(decode=False))
    return {Path(image["path"]).resolve() for image in test["image"]}


def faces_of(recognizers: dict[bool, FaceExpressionRecognizer], image: Image.Image) -> dict[bool, dict | None]:
    """The largest face with plain and with aligned crops (its label and scores); None where no face is found."""
    return {align: next(iter(recognizer(image, top_faces=1)), None) for align, recognizer in recognizers.items()}


def summary_row(name: str, results: list[tuple[str, dict[bool, dict | None]]]) -> str:
    """One table row: photos, faces found, accuracy plain and aligned (of photos with a face, and of all)."""
    total = len(results)
    found = [(truth, faces) for truth, faces in results if faces[False] is not None]
    right = {align: [faces[align]["label"] == truth for truth, faces in found] for align in (False, True)}
    fixed = sum(now and not before for before, now in zip(right[False], right[True]))
    broken = sum(before and not now for before, now in zip(right[False], right[True]))
    truth_score = {align: statistics.fmean(faces[align]["scores"][truth] for truth, faces in found) if found else 0.0
                   for align in (False, True)}

    def share(part: int, whole: int) -> str:
        return f"{part}/{whole} ({part / whole:.1%})" if whole else "-"

    change = (sum(right[True]) - sum(right[False])) / len(found) if found else 0.0
    return (f"| {name} | {total} | {share(len(found), total)} | {share(sum(right[False]), len(found))} | "
            f"{share(sum(right[True]), len(found))} | {100 * change:+.1f} | {fixed} | {broken} | "
            f"{truth_score[False]:.3f} | {truth_score[True]:.3f} | "
            f"{share(sum(right[False]), total)} | {share(sum(right[True]), total)} |")


def mirroring(recognizer: FaceExpressionRecognizer) -> str:
    """The recognizer's mirror averaging, as the table states it."""
    if not recognizer.flip_tta:
        return "single view"
    margin = getattr(recognizer, "flip_margin", 1)
    return "mirror-averaged" if margin >= 1 else f"mirror-averaged where the top two classes are within {margin}"


def _quartiles(values: list[float]) -> str:
    low, median, high = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return f"{median:.0%} ({low:.0%}-{high:.0%})"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/fer2013-cnn")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "alignment.md"))
    args = parser.parse_args()

    model, processor = load_classifier(args.model)
    detector = FaceDetector()
    recognizers = {align: FaceExpressionRecognizer(model, processor, detector, align=align, labels=LABELS)
                   for align in (False, True)}
    reader = recognizers[False]
    held_out = test_photos()
    photos = sorted(path for path in PHOTOS.glob("*/*") if path.is_file())
    fixtures = sorted(FIXTURES.glob("*.jpg"))

    upright = {"all": [], "test": [], "fixtures": []}
    turned = {(kind, angle): [] for kind in ("fixtures", "test") for angle in ANGLES}
    crop_ms = {False: [], True: []}
    tilts = []  # |eye angle| of the largest face of each happy_sad photo, in degrees
    caught = {angle: [] for angle in ANGLES}  # the turn the eye landmarks measure, as a share of the real one
    started = time.perf_counter()
    for number, path in enumerate(photos + fixtures, 1):
        is_fixture = path.parent == FIXTURES
        truth = path.name.split("_")[0] if is_fixture else path.parent.name
        # Read as the recognizer reads a file; given this image, it returns what it returns for the file.
        image = load_image(path, max_side=reader.max_side, min_side=reader.min_side)
        result = (truth, faces_of(recognizers, image))
        kind = "fixtures" if is_fixture else "test" if path.resolve() in held_out else None
        upright["fixtures" if is_fixture else "all"].append(result)
        if kind == "test":
            upright["test"].append(result)
        _, boxes, _ = find_faces(image, detector, max_side=None, top_faces=1)
        if kind is not None:
            rgb = image.convert("RGB")
            for angle in ANGLES:
                copy = rgb.rotate(angle, Image.Resampling.BILINEAR, expand=True, fillcolor=(0, 0, 0))
                turned[kind, angle].append((truth, faces_of(recognizers, copy)))
                found = detector(copy)[:1]
                if boxes and found and boxes[0].landmarks is not None and found[0].landmarks is not None:
                    # Pillow turns counterclockwise, eye_angle is clockwise: upright - turned = the turn.
                    caught[angle].append((boxes[0].eye_angle() - found[0].eye_angle()) / angle)
        # The time of the two crops of the largest face, at the resolution the photo is read.
        if boxes and not is_fixture and boxes[0].landmarks is not None:
            tilts.append(abs(boxes[0].eye_angle()))
        for align in (False, True) if boxes else ():
            times = []
            for _ in range(5):
                start = time.perf_counter()
                crop_face(image, boxes[0], reader.margin, align=align)
                times.append(time.perf_counter() - start)
            crop_ms[align].append(1000 * min(times))
        if number % 50 == 0:
            elapsed = time.perf_counter() - started
            print(f"{number}/{len(photos) + len(fixtures)} photos, {elapsed:.0f} s", file=sys.stderr)

    def turned_rows(kind: str, name: str) -> list[str]:
        rows = [summary_row(f"{name}, turned {angle:+d} degrees", turned[kind, angle]) for angle in ANGLES]
        for magnitude in (15, 30):
            both = turned[kind, magnitude] + turned[kind, -magnitude]
            rows.append(summary_row(f"{name}, turned +/-{magnitude} degrees", both))
        rows.append(summary_row(f"{name}, all four turns", [r for angle in ANGLES for r in turned[kind, angle]]))
        return rows

    command = " ".join(["python", "benchmarks/bench_alignment.py", *sys.argv[1:]])
    lines = [
        "# Aligned faces: eyes turned level before the crop, against the plain crop",
        "",
        f"Command: `{command}`  ",
        f"{machine()}; model: {args.model} through its happy and sad scores (labels={LABELS}), {mirroring(reader)}, "
        f"runtime {reader.runtime.mode}; detector: {detector!r}; crop margin {reader.margin}.",
        "",
        "The same boxes for both crops (so the same faces found); accuracy is the largest face's happy-vs-sad "
        "label against the photo's folder (the fixture photos: their file names), of the photos with a face "
        "found and, last two columns, of all photos (no face counts as wrong). Fixed / broken: photos that "
        "alignment turns from wrong to right / right to wrong. Score: the mean happy-vs-sad probability of the "
        "right label (a finer measure than accuracy on few photos). Turned copies: Pillow's rotate(angle, "
        "expand=True), counterclockwise positive, new corners black.",
        "",
        "| photos | count | with a face found | accuracy, plain crop | accuracy, aligned | change, points | fixed | broken "
        "| score, plain | score, aligned | of all photos, plain | of all photos, aligned |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        summary_row(f"happy_sad, all {len(upright['all'])} photos", upright["all"]),
        summary_row("happy_sad test split (held out)", upright["test"]),
        summary_row("tests/fixtures/photos", upright["fixtures"]),
        *turned_rows("test", "happy_sad test split"),
        *turned_rows("fixtures", "tests/fixtures/photos"),
        "",
        f"Crop time of the largest face, at the resolution photos are read (longer side <= {reader.max_side}), "
        f"fastest of 5, median over {len(crop_ms[False])} photos: plain {statistics.median(crop_ms[False]):.2f} ms, "
        f"aligned {statistics.median(crop_ms[True]):.2f} ms. Run time {time.perf_counter() - started:.0f} s.",
        "",
        f"How tilted the happy_sad faces are (the largest face of each of the {len(tilts)} photos with one, by "
        f"the angle of its eye landmarks): median {statistics.median(tilts):.1f} degrees; "
        f"{sum(t > 5 for t in tilts)} above 5, {sum(t > 10 for t in tilts)} above 10, "
        f"{sum(t > 20 for t in tilts)} above 20.",
        "",
        "How much of a turn the eye landmarks measure (the largest face of the turned copy against the upright "
        "photo's; 100% = all of it), median and quartiles over the copies: "
        + "; ".join(f"{angle:+d} degrees {_quartiles(caught[angle])} ({len(caught[angle])} copies)" for angle in ANGLES)
        + ".",
    ]
    write_table(args.output, lines)


if __name__ == "__main__":
    main()
