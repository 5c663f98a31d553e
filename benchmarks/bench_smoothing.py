"""Tracks and smoothing on video: label flicker of still faces, and the delay to follow a change of expression.

Clips are made from the real fixture photos (tests/fixtures/photos) and encoded with PyAV, at 10 and
30 frames/s:
- still: each photo held still for --seconds, with fresh sensor noise in every frame (Gaussian, std 3
  grey levels) and H.264 compression, as a camera on a tripod gives;
- change: one face for 3 s, then another face with another expression at the same place for 3 s
  (every ordered pair of the photos' faces whose per-frame labels mostly differ), each face cut from
  its photo with some context and shown at the same size.
Every clip is labelled once by fer_hf.video.analyze_video with smoothing off, and its faces (boxes and
each frame's own scores) replayed through fer_hf.tracking.FaceTracker under each setting, so that all
settings see the same frames. Figures:
- flicker: label changes per track per second on the still clips (0 is best: a still face's label holds);
- delay: seconds from the cut to the first frame whose label differs from the label before the cut,
  mean and worst over the pairs; how many pairs reach the new face's label (its most frequent
  per-frame label) at all; and whether the face kept its track id over the cut.

    python benchmarks/bench_smoothing.py [--seconds 10] [--model models/fer2013-cnn]

Writes benchmarks/results/smoothing.md.
"""

import argparse
import tempfile
from collections import Counter
from pathlib import Path

from common import ROOT, machine, write_table  # first: puts the repo root on sys.path

import numpy as np
from PIL import Image

from fer_hf.faces import FaceExpressionRecognizer
from fer_hf.hub import find_model, load_classifier
from fer_hf.tracking import DEFAULT_HYSTERESIS, DEFAULT_TIME_CONSTANT, FaceTracker
from fer_hf.video import analyze_video
from tests.videotools import still_frames, write_video

PHOTOS = sorted((ROOT / "tests" / "fixtures" / "photos").glob("*.jpg"))
FRAME_RATES = (10, 30)
CUT = 3.0  # seconds of the first face in a change clip, then as long of the second
SETTINGS = [  # (name, time constant s, hysteresis)
    ("off: each frame's own label", 0.0, 0.0),
    ("EMA 0.1 s", 0.1, 0.0),
    ("EMA 0.2 s", 0.2, 0.0),
    ("EMA 0.5 s", 0.5, 0.0),
    ("EMA 0.1 s + hysteresis 0.1", 0.1, 0.1),
    ("EMA 0.2 s + hysteresis 0.1", 0.2, 0.1),
    ("EMA 0.5 s + hysteresis 0.1", 0.5, 0.1),
]


def raw_faces(recognizer, path: Path) -> list[tuple[float, list[dict]]]:
    """Each frame's time and faces, smoothing off (the frame's own scores)."""
    return [(r.time, r.faces) for r in analyze_video(recognizer, path, time_constant=0, hysteresis=0)]


def replay(frames, labels, time_constant: float, hysteresis: float) -> list[tuple[float, list[dict]]]:
    """The frames' faces tracked anew under one setting, from each frame's own scores."""
    tracker = FaceTracker(labels, time_constant=time_constant, hysteresis=hysteresis)
    return [(time, tracker.update([{**f, "scores": f["raw_scores"]} for f in faces], time)) for time, faces in frames]


def flicker(frames) -> tuple[int, float]:
    """Label changes and track-seconds over a clip's tracks."""
    labels: dict[int, list[tuple[float, str]]] = {}
    for time, faces in frames:
        for face in faces:
            labels.setdefault(face["track"], []).append((time, face["label"]))
    changes = sum(sum(a[1] != b[1] for a, b in zip(seq, seq[1:])) for seq in labels.values())
    seconds = sum(seq[-1][0] - seq[0][0] for seq in labels.values() if len(seq) > 1)
    return changes, seconds


def face_cutouts(recognizer) -> list[tuple[str, Image.Image]]:
    """Each photo's faces with context (2x the box), 200x200."""
    cutouts = []
    for photo in PHOTOS:
        image = Image.open(photo).convert("RGB")
        for index, face in enumerate(recognizer(image)):
            x0, y0, x1, y1 = face["box"]
            side, cx, cy = 2 * max(x1 - x0, y1 - y0), (x0 + x1) / 2, (y0 + y1) / 2
            box = tuple(round(v) for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
            cutouts.append((f"{photo.stem}#{index + 1}", image.crop(box).resize((200, 200), Image.Resampling.BICUBIC)))
    return cutouts


def on_canvas(face: Image.Image) -> Image.Image:
    canvas = Image.new("RGB", (320, 240), (120, 120, 120))
    canvas.paste(face, (60, 20))
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--model", default=None)
    parser.add_argument("--max_pairs", type=int, default=16)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "smoothing.md")
    args = parser.parse_args()

    model_name = find_model(args.model)
    recognizer = FaceExpressionRecognizer(*load_classifier(model_name))
    still: dict[int, list] = {fps: [] for fps in FRAME_RATES}
    changes: dict[int, list] = {fps: [] for fps in FRAME_RATES}
    cutouts = face_cutouts(recognizer)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for fps in FRAME_RATES:
            count = round(args.seconds * fps)
            for i, photo in enumerate(PHOTOS):
                clip = write_video(folder / f"still{fps}_{i}.mp4", still_frames(photo, count, seed=i), fps=fps)
                still[fps].append(raw_faces(recognizer, clip))
        # The label each cutout mostly gets, frame by frame, held still: pairs whose labels differ.
        majority = {}
        for name, face in cutouts:
            clip = write_video(folder / "probe.mp4", still_frames(on_canvas(face), 10), fps=10)
            votes = Counter(f["raw_label"] for _, faces in raw_faces(recognizer, clip) for f in faces)
            majority[name] = votes.most_common(1)[0][0] if votes else None
        pairs = [(a, b) for a in cutouts for b in cutouts
                 if a[0] != b[0] and majority[a[0]] and majority[b[0]] and majority[a[0]] != majority[b[0]]]
        pairs = pairs[: args.max_pairs]
        for fps in FRAME_RATES:
            half = round(CUT * fps)
            for k, ((_, a), (name_b, b)) in enumerate(pairs):
                frames = [*still_frames(on_canvas(a), half, seed=k), *still_frames(on_canvas(b), half, seed=k + 100)]
                clip = write_video(folder / f"change{fps}_{k}.mp4", frames, fps=fps)
                changes[fps].append((majority[name_b], raw_faces(recognizer, clip)))

    lines = [
        "# Tracks and smoothing: flicker of still faces, delay to follow a change",
        "",
        f"- Command: `python benchmarks/bench_smoothing.py{' --seconds ' + format(args.seconds, 'g') if args.seconds != 10 else ''}`",
        f"- {machine()}",
        f"- Model `{Path(model_name).name}` ({recognizer.runtime.mode}, flip TTA on). Still clips: the {len(PHOTOS)} fixture"
        f" photos ({sum(len(recognizer(Image.open(p))) for p in PHOTOS)} faces), {args.seconds:g} s each. Change clips:"
        f" {len(pairs)} ordered pairs of faces ({', '.join(f'{a[0]}->{b[0]}' for a, b in pairs)}), {CUT:g} s + {CUT:g} s."
        f" Default: time constant {DEFAULT_TIME_CONSTANT} s, hysteresis {DEFAULT_HYSTERESIS}.",
        "",
        "| Smoothing | fps | Flicker: label changes per track per s | Delay until the label changes after the cut:"
        " mean s | worst s | Pairs whose label changed | Pairs that reach the new face's label | Same track over the cut |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, time_constant, hysteresis in SETTINGS:
        for fps in FRAME_RATES:
            counted = [flicker(replay(frames, recognizer.labels, time_constant, hysteresis)) for frames in still[fps]]
            rate = sum(c for c, _ in counted) / sum(s for _, s in counted)
            delays, reached, same_track = [], 0, 0
            for target, frames in changes[fps]:
                played = replay(frames, recognizer.labels, time_constant, hysteresis)
                before = [faces[0] for t, faces in played if t < CUT - 1e-6 and faces]
                after = [(t, faces[0]) for t, faces in played if t >= CUT - 1e-6 and faces]
                same_track += bool(after) and after[0][1]["track"] == before[-1]["track"]
                change = next((t - CUT for t, face in after if face["label"] != before[-1]["label"]), None)
                delays.append(change if change is not None else float("inf"))
                reached += any(face["label"] == target for _, face in after)
            shown = [d for d in delays if d != float("inf")]
            mean = f"{np.mean(shown):.2f}" if shown else "-"
            worst = f"{max(delays):.2f}" if shown else "-"
            marker = " **(default)**" if (time_constant, hysteresis) == (DEFAULT_TIME_CONSTANT, DEFAULT_HYSTERESIS) else ""
            count = len(changes[fps])
            lines.append(f"| {name}{marker} | {fps} | {rate:.2f} | {mean} | {worst} | {len(shown)}/{count} "
                         f"| {reached}/{count} | {same_track}/{count} |")
    write_table(args.output, lines)


if __name__ == "__main__":
    main()
