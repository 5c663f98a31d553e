"""Live streams: frames/s labelled and dropped on a 30 frames/s source, and the delay from a frame to its result.

The source is a real face video (../shared/data/videos/woman2.mp4, 596x336, one face) served live at
30 frames/s over HTTP on 127.0.0.1 by tests/streamtools.LiveStream: each frame H.264-encoded when it
is due and sent as MPEG-TS, as a camera or an encoder box serves a stream. The server runs in this
process, on the same cores. Two readers, alternating in this one run:
- newest frame: fer_hf.stream.analyze_stream (a reader thread keeps only the newest frame; the frames
  that arrive while one is labelled are dropped);
- in order (the baseline): the usual loop, every frame decoded and labelled in turn
  (`for frame in container.decode(...)`, the same fer_hf.video.FrameLabeller), so frames wait in the
  socket and the decoder when labelling is slower than the source.
Both label with the default model (its fastest CPU runtime, flip TTA on), warmed up on a frame first.
Each is also run with a slowdown: the recognizer's classify sleeps that many seconds more per frame,
standing in for a slower machine or a heavier model. Figures: frames labelled per second (from the
first frame sent to the last result) and dropped per second of the stream; the first result's delay
from the first frame sent (opening the stream included); the delay from a frame being sent by the
server (its capture, for this purpose) to its result, median, 95th percentile and worst, over the
frames after the first second; and "behind at the end", how long after the last frame was sent the
last result came.

    python benchmarks/bench_stream.py [--seconds 15] [--slowdown 0 0.05] [--quick] [--note TEXT]

`--quick` streams 5 s with no slowdown only. Writes benchmarks/results/stream.md.
"""

import argparse
import os
import time

from common import ROOT, machine, write_table  # first: puts the repo root on sys.path

import av
import numpy as np

from fer_hf.faces import FaceExpressionRecognizer
from fer_hf.hub import find_model, load_classifier
from fer_hf.stream import analyze_stream
from fer_hf.video import FrameLabeller
from tests.streamtools import LiveStream

VIDEO = ROOT.parent / "shared" / "data" / "videos" / "woman2.mp4"
FPS = 30


class SlowedRecognizer(FaceExpressionRecognizer):
    """The recognizer, taking `slowdown` seconds more to classify each frame's faces (it sleeps)."""

    slowdown = 0.0

    def classify(self, crops):
        time.sleep(self.slowdown)
        return super().classify(crops)


def clip_frames() -> list[np.ndarray]:
    with av.open(str(VIDEO)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def newest_frame(recognizer, live: LiveStream) -> tuple[list[int], list[float]]:
    """fer_hf.stream: the labelled frames' indices and each one's delay from being sent to its result."""
    indices, delays = [], []
    for result in analyze_stream(recognizer, live.url):
        delays.append(time.monotonic() - live.sent_at[result.index])
        indices.append(result.index)
    return indices, delays


def in_order(recognizer, live: LiveStream) -> tuple[list[int], list[float]]:
    """The baseline: every frame decoded and labelled in turn, the same finder, classifier and tracker."""
    labeller = FrameLabeller(recognizer)
    indices, delays = [], []
    with av.open(live.url, timeout=10) as container:
        start = None
        for index, frame in enumerate(container.decode(video=0)):
            start = frame.time if start is None else start
            labeller.label([labeller.find(frame, frame.time - start)])
            delays.append(time.monotonic() - live.sent_at[index])
            indices.append(index)
    return indices, delays


def run(reader, recognizer, frames, seconds: float) -> dict:
    with LiveStream(frames, fps=FPS, seconds=seconds) as live:
        indices, delays = reader(recognizer, live)
        sent = len(live.sent_at)
        behind = time.monotonic() - live.sent_at[-1]
    # Opening the stream (FFmpeg probes its first frames) delays the first results of either reader alike;
    # the delays are those of the frames sent after the first second.
    first = delays[0] + live.sent_at[indices[0]] - live.sent_at[0]
    milliseconds = np.array([delay for index, delay in zip(indices, delays) if index >= FPS]) * 1000
    return {"sent": sent, "labelled": len(indices), "dropped": sent - len(indices),
            "per_s": len(indices) / (live.sent_at[-1] - live.sent_at[0] + behind),  # until the last result
            "dropped_per_s": (sent - len(indices)) / (sent / FPS),
            "first": first, "median": np.median(milliseconds), "p95": np.percentile(milliseconds, 95),
            "worst": milliseconds.max(), "behind": behind}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds streamed per run (the clip is 15.5 s)")
    parser.add_argument("--slowdown", type=float, nargs="+", default=[0.0, 0.05],
                        help="seconds added to each frame's classification")
    parser.add_argument("--quick", action="store_true", help="5 s, no slowdown")
    parser.add_argument("--note", default=None, help="added to the machine line (e.g. the load)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "stream.md"))
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.slowdown = 5.0, [0.0]
    if not VIDEO.is_file():
        raise SystemExit(f"{VIDEO} is missing: the benchmark streams that real clip.")

    model_name = find_model(args.model)
    recognizer = SlowedRecognizer(*load_classifier(model_name))
    frames = clip_frames()
    recognizer(frames[0])  # the first call builds the runtime: not part of any run
    load = os.getloadavg()[0]
    rows = []
    for slowdown in args.slowdown:
        recognizer.slowdown = slowdown
        for name, reader in [("in order (baseline)", in_order), ("newest frame: `analyze_stream`", newest_frame)]:
            figures = run(reader, recognizer, frames, args.seconds)
            print(name, slowdown, {key: round(float(value), 3) for key, value in figures.items()})
            rows.append((name, slowdown, figures))

    note = f"; {args.note}" if args.note else ""
    command = "python benchmarks/bench_stream.py" + (" --quick" if args.quick else "")
    lines = [
        "# Live streams: frames labelled and dropped on a 30 frames/s source, delay from a frame to its result",
        "",
        f"- Command: `{command}`",
        f"- {machine()}; load average {load:.1f} at the start on {os.cpu_count()} cores{note}",
        f"- Source: `{VIDEO.name}` (596x336, one face) served live at {FPS} frames/s for {args.seconds:g} s over HTTP "
        f"(H.264 in MPEG-TS) on 127.0.0.1 by a thread of this process; model `{os.path.basename(model_name)}` "
        f"({recognizer.runtime.mode}, flip TTA on). Slowdown: seconds slept in each frame's classification.",
        "- Labelled /s: from the first frame sent to the last result. First result: from the first frame sent to "
        "the first result (opening included). Delay: from the server sending a frame to its result, frames after "
        "the first second. Behind at the end: from the last frame sent to the last result.",
        "",
        "| Reader | Slowdown s | Frames sent | Labelled | Dropped | Labelled /s | Dropped /s of stream "
        "| First result s | Delay median ms | p95 ms | worst ms | Behind at the end s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, slowdown, f in rows:
        lines.append(f"| {name} | {slowdown:g} | {f['sent']} | {f['labelled']} | {f['dropped']} | {f['per_s']:.1f} "
                     f"| {f['dropped_per_s']:.1f} | {f['first']:.2f} | {f['median']:.0f} | {f['p95']:.0f} "
                     f"| {f['worst']:.0f} | {f['behind']:.2f} |")
    lines.append("")
    for slowdown in args.slowdown:
        base, ours = (f for name, s, f in rows if s == slowdown)
        lines.append(f"Slowdown {slowdown:g} s: median delay newest frame / in order = "
                     f"{ours['median'] / base['median']:.2f}x; worst {ours['worst'] / base['worst']:.2f}x.")
    write_table(args.output, lines)


if __name__ == "__main__":
    main()
