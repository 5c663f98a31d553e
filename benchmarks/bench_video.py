"""Video files: frames/s of `python -m fer_hf predict VIDEO --annotate` beside the `fer` package, and memory over a long video.

1. Speed. Every frame of the clip (../shared/data/videos/woman2.mp4: 596x336, 464 frames) labelled, with
   the annotated video written, timed in this one run, alternating (peer, ours, peer, ours):
   - ours: fer_hf.predict.predict_video (fer_hf.video.analyze_video: detection, tracking, smoothing, the
     annotated mp4) with its rows written to a CSV file, the default model, as the CLI does it;
   - the peer: `fer` 25.10.3, `FER()` (Haar cascade + its Keras mini-Xception) and
     `Video(path).analyze(detector, display=False, frequency=1, save_video=True, annotate_frames=True)`,
     its other arguments at their defaults, in its own virtual environment (`--peer_venv DIR`, created
     with pip if missing: fer, tensorflow-cpu, moviepy<2, opencv, setuptools<81 for its pkg_resources).
   Each side is timed from the first frame to the returned results (model loading excluded).
2. Memory. A 10-minute video made by looping the clip's real frames (encoded with PyAV in a temporary
   folder), labelled and annotated by the same path; the resident memory (VmRSS) of this process after
   10 seconds, 1 minute and 10 minutes of video.

    python benchmarks/bench_video.py [--peer_venv /tmp/fervenv] [--minutes 10] [--note TEXT]

Writes benchmarks/results/video.md.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, machine, write_table  # first: puts the repo root on sys.path

import av

from fer_hf.faces import FaceExpressionRecognizer
from fer_hf.hub import find_model, load_classifier
from fer_hf.predict import VIDEO_FIELDS, _write_csv, predict_video
from fer_hf.video import Timeline

VIDEO = ROOT.parent / "shared" / "data" / "videos" / "woman2.mp4"
PEER_PACKAGES = ["fer==25.10.3", "tensorflow-cpu", "moviepy<2", "opencv-python-headless", "setuptools<81"]
PEER_SCRIPT = """
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from fer.classes import Video
from fer.fer import FER
detector = FER()
video = Video(sys.argv[1], outdir=sys.argv[2])
start = time.perf_counter()
frames = video.analyze(detector, display=False, frequency=1, save_video=True, annotate_frames=True)
print(json.dumps({"frames": len(frames), "seconds": time.perf_counter() - start}))
"""


def rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024


def peer_python(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
    return python


def run_peer(python: Path, video: Path, folder: Path) -> dict:
    out = folder / f"peer{time.monotonic_ns()}"
    # In the run's temporary folder: the peer's Video.analyze also writes a data.csv into its working directory.
    result = subprocess.run([str(python), "-c", PEER_SCRIPT, str(video), str(out)], capture_output=True, text=True,
                            env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}, cwd=folder)
    if result.returncode != 0:
        raise RuntimeError(f"the peer failed:\n{result.stderr[-3000:]}")
    found = json.loads(result.stdout.strip().splitlines()[-1])
    found["annotated"] = sorted(p.name for p in out.iterdir())
    return found


def run_ours(recognizer, video: Path, folder: Path, on_frame=None) -> dict:
    """The CLI's path for one video: rows to a CSV file as they come, the annotated mp4, the chart's timeline."""
    csv_path, annotated = folder / "rows.csv", folder / f"ours_{video.stem}.mp4"
    timeline = Timeline(recognizer.labels)
    frames = faces = 0
    start = time.perf_counter()
    with open(csv_path, "w", newline="") as handle:
        _write_csv([], handle, recognizer.labels, VIDEO_FIELDS)
        for row in predict_video(recognizer, video, annotate=annotated, timeline=timeline):
            if row["status"] == "error":
                raise RuntimeError(row["error"])
            _write_csv([row], handle, recognizer.labels, VIDEO_FIELDS, header=False)
            if row["face"] in (None, 0):
                frames += 1
                if on_frame is not None:
                    on_frame(row["frame"], row["time"])
            faces += row["status"] == "face"
    seconds = time.perf_counter() - start
    with av.open(str(annotated)) as container:
        written = container.streams.video[0].frames
    return {"frames": frames, "faces": faces, "seconds": seconds, "written": written}


def make_long_video(source: Path, path: Path, minutes: float) -> int:
    """Loops the clip's frames into a `minutes`-long mp4 (streamed: one frame held at a time); returns its frames."""
    with av.open(str(source)) as probe:
        stream = probe.streams.video[0]
        rate, width, height = stream.average_rate, stream.width, stream.height
    total = int(minutes * 60 * rate)
    written = 0
    with av.open(str(path), "w") as output:
        out = output.add_stream("libx264", rate=rate, options={"preset": "ultrafast"})
        out.width, out.height, out.pix_fmt = width, height, "yuv420p"
        out.codec_context.time_base = 1 / rate
        while written < total:
            with av.open(str(source)) as container:
                for frame in container.decode(video=0):
                    if written == total:
                        break
                    frame.pts, frame.time_base = written, out.codec_context.time_base
                    for packet in out.encode(frame.reformat(format="yuv420p")):
                        output.mux(packet)
                    written += 1
        for packet in out.encode():
            output.mux(packet)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--video", type=Path, default=VIDEO)
    parser.add_argument("--peer_venv", type=Path, default=Path("/tmp/fervenv"))
    parser.add_argument("--no_peer", action="store_true")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--model", default=None)
    parser.add_argument("--note", default="")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "video.md")
    args = parser.parse_args()

    load_at_start = os.getloadavg()[0]
    model_name = find_model(args.model)
    recognizer = FaceExpressionRecognizer(*load_classifier(model_name))
    peer = None if args.no_peer else peer_python(args.peer_venv)
    ours_runs, peer_runs = [], []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        run_ours(recognizer, args.video, folder)  # warm-up: TorchScript's first passes, the encoder's libraries
        for _ in range(args.rounds):
            if peer is not None:
                peer_runs.append(run_peer(peer, args.video, folder))
                print("peer", peer_runs[-1], flush=True)
            ours_runs.append(run_ours(recognizer, args.video, folder))
            print("ours", ours_runs[-1], flush=True)

        long_video = folder / "long.mp4"
        total = make_long_video(args.video, long_video, args.minutes)
        marks = {mark: None for mark in sorted({10.0, 60.0, args.minutes * 60}) if mark <= args.minutes * 60}
        start_rss = rss_mb()

        def sample(frame: int, seconds: float) -> None:
            for mark in marks:
                if marks[mark] is None and seconds >= mark - 0.05:
                    marks[mark] = rss_mb()

        long_run = run_ours(recognizer, long_video, folder, on_frame=sample)
        last = long_run["frames"]
        if marks[args.minutes * 60] is None:  # the last frame is a frame short of the mark
            marks[args.minutes * 60] = rss_mb()
        print("long", long_run, marks, flush=True)

    def fps(run: dict) -> float:
        return run["frames"] / run["seconds"]

    lines = [
        "# Video files: frames/s beside the `fer` package, and memory over a long video",
        "",
        f"- Command: `python benchmarks/bench_video.py{' --peer_venv ' + str(args.peer_venv) if peer else ' --no_peer'}"
        f"{' --minutes ' + str(args.minutes) if args.minutes != 10 else ''}`",
        f"- {machine()}; load average {load_at_start:.1f} at the start on {os.cpu_count()} cores; {args.note}".rstrip("; "),
        f"- Clip: `{args.video.name}` ({args.video.stat().st_size / 1e6:.1f} MB), every frame labelled and the annotated"
        " video written; model "
        f"`{Path(model_name).name}` ({recognizer.runtime.mode}, flip TTA {'on' if recognizer.flip_tta else 'off'}).",
        "- Ours: fer_hf.predict.predict_video, rows to CSV, annotated mp4 (H.264), chart timeline; the peer: `fer` 25.10.3"
        " `FER()` + `Video.analyze(display=False, frequency=1, save_video=True, annotate_frames=True)` (its defaults"
        " also save every frame as an image and zip them). Runs alternate; each from the first frame to the results.",
        "",
        "| Run | Ours: frames | s | frames/s | Peer: frames | s | frames/s | Ours / peer |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for i, ours in enumerate(ours_runs):
        theirs = peer_runs[i] if peer_runs else None
        peer_cells = (f"{theirs['frames']} | {theirs['seconds']:.1f} | {fps(theirs):.1f} | {fps(ours) / fps(theirs):.1f}x"
                      if theirs else "- | - | - | -")
        lines.append(f"| {i + 1} | {ours['frames']} ({ours['written']} written) | {ours['seconds']:.1f} | {fps(ours):.1f} "
                     f"| {peer_cells} |")
    if peer_runs:
        best_ours, best_peer = max(map(fps, ours_runs)), max(map(fps, peer_runs))
        lines += ["", f"Best of {args.rounds}: ours {best_ours:.1f} frames/s, peer {best_peer:.1f} frames/s: "
                      f"**{best_ours / best_peer:.1f}x**."]
    lines += [
        "",
        f"## Resident memory over a {args.minutes:g}-minute video",
        "",
        f"The clip's real frames looped into {total} frames ({args.minutes:g} min at the clip's rate), labelled and"
        f" annotated as above ({last} frames in {long_run['seconds']:.0f} s, {fps(long_run):.1f} frames/s). VmRSS of the"
        " process (model loaded, one video analysed before):",
        "",
        "| Video time | RSS (MB) |",
        "| --- | ---: |",
        f"| before | {start_rss:.0f} |",
        *(f"| {mark / 60:g} min | {value:.0f} |" if mark >= 60 else f"| {mark:g} s | {value:.0f} |"
          for mark, value in marks.items()),
    ]
    write_table(args.output, lines)


if __name__ == "__main__":
    main()
