"""Reading the biggest real photos as the demo does, with and without fer_hf.memory.reuse_freed_memory.

A progressive JPEG makes libjpeg allocate coefficient buffers for the whole image even at 1/8 scale;
by default glibc maps them afresh for every photo. app.py and `python -m fer_hf` call
reuse_freed_memory() so that the pages are kept and reused. This measures what that buys: the N
largest photos of ../shared/data/happy_sad (by pixels), each read `--repeats` times with
`load_image(path, max_side=1280, min_side=640)` (the recognizer's reading) in a worker thread, as
Gradio runs the demo's handlers. Each setting runs in a process of its own, because the setting is
process-wide; the two processes run one after the other on the same photos.

    python benchmarks/bench_read.py [--photos 8] [--repeats 7]

Writes benchmarks/results/read.md: per photo, median ms and minor page faults per read, both ways.
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from PIL import Image

from common import ROOT, machine, write_table

PHOTOS = ROOT.parent / "shared" / "data" / "happy_sad"

# Runs in a fresh process: argv = [setting, repeats, path...]; prints {path: [[ms, faults], ...]}.
WORKER = """
import json, resource, sys, threading, time
from fer_hf.images import load_image
from fer_hf.memory import reuse_freed_memory
setting, repeats, paths = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
if setting == "reuse" and not reuse_freed_memory():
    sys.exit("reuse_freed_memory() is not available here (not glibc)")
results = {}
def read_all():
    for path in paths:
        load_image(path, max_side=1280, min_side=640)  # warm-up
        runs = []
        for _ in range(repeats):
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            load_image(path, max_side=1280, min_side=640)
            runs.append([1e3 * (time.perf_counter() - start), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults])
        results[path] = runs
thread = threading.Thread(target=read_all)
thread.start()
thread.join()
print(json.dumps(results))
"""


def run(setting: str, repeats: int, paths: list[Path]) -> dict:
    out = subprocess.run([sys.executable, "-c", WORKER, setting, str(repeats), *map(str, paths)], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "read.md"))
    args = parser.parse_args()
    if not PHOTOS.is_dir():
        raise SystemExit(f"needs the real photos in {PHOTOS}")

    def pixels(path: Path) -> int:
        with Image.open(path) as image:
            return image.width * image.height

    paths = sorted(PHOTOS.glob("*/*"), key=pixels, reverse=True)[: args.photos]
    default, reuse = run("default", args.repeats, paths), run("reuse", args.repeats, paths)
    rows = []
    for path in paths:
        with Image.open(path) as image:
            kind = f"{image.format}{' progressive' if image.info.get('progressive') else ''}"
            size = f"{image.width}x{image.height}"
        a, b = default[str(path)], reuse[str(path)]
        ms_a, ms_b = statistics.median(r[0] for r in a), statistics.median(r[0] for r in b)
        rows.append(f"| {path.parent.name}/{path.name} | {size} | {kind} | {ms_a:.0f} | {statistics.median(r[1] for r in a):,.0f} "
                    f"| {ms_b:.0f} | {statistics.median(r[1] for r in b):,.0f} | {ms_b / ms_a:.2f} |")
    write_table(args.output, [
        "# Reading the biggest photos: glibc's default vs reuse_freed_memory()",
        "",
        f"Command: `python benchmarks/bench_read.py --photos {args.photos} --repeats {args.repeats}`  ",
        f"{machine()}. Each read: `load_image(path, max_side=1280, min_side=640)` in a worker thread; "
        f"median of {args.repeats} reads after one warm-up; each setting in a process of its own.",
        "",
        "| photo | size | format | default: ms | default: page faults | reuse_freed_memory: ms "
        "| reuse_freed_memory: page faults | time ratio |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ])


if __name__ == "__main__":
    main()
