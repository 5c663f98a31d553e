"""Threads per test worker: two processes at once (as pyproject's two pytest-xdist workers run), each scoring the
same faces with the default model in fp32, with torch's threads at 2 (its default on 2 cores) and at 1.

Each process times its own pass (2,048 random 48x48 faces in 64-row passes); the table gives both processes'
seconds and the ratio of the slower one's to the 2-thread case in the same run. tests/conftest.py sets one
thread per worker from this.

    python benchmarks/bench_worker_threads.py

Writes benchmarks/results/worker_threads.md. Run it on an otherwise idle machine.
"""

import argparse
import json
import os
import subprocess
import sys

from common import ROOT, machine, write_table  # first: puts the repo root on sys.path for fer_hf

WORK = """
import json, time, torch
from fer_hf.hub import load_classifier
model, _ = load_classifier("models/fer2013-cnn")
faces = torch.randn(2048, 1, 48, 48, generator=torch.Generator().manual_seed(0))
with torch.inference_mode():
    model(pixel_values=faces[:64])  # warm-up
    began = time.perf_counter()
    for rows in faces.split(64):
        model(pixel_values=rows)
print(json.dumps({"threads": torch.get_num_threads(), "seconds": time.perf_counter() - began}))
"""


def two_at_once(threads: int) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    runs = [subprocess.Popen([sys.executable, "-c", WORK], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True) for _ in range(2)]
    return [json.loads(run.communicate()[0].strip().splitlines()[-1]) for run in runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "worker_threads.md"))
    args = parser.parse_args()
    load = os.getloadavg()[0]
    results = {threads: two_at_once(threads) for threads in (2, 1)}
    base = max(r["seconds"] for r in results[2])
    lines = ["# Threads per test worker: two processes at once", "",
             "Command: `python benchmarks/bench_worker_threads.py`  ",
             f"{machine()}; load average {load:.1f} before the run. Two processes started together, each scoring "
             "2,048 faces with models/fer2013-cnn (fp32, 64-row passes).", "",
             "| threads per process | process 1 (s) | process 2 (s) | slower one vs 2 threads |", "|---|---|---|---|"]
    for threads, runs in results.items():
        assert all(r["threads"] == threads for r in runs), runs
        slower = max(r["seconds"] for r in runs)
        lines.append(f"| {threads} | {runs[0]['seconds']:.1f} | {runs[1]['seconds']:.1f} | {base / slower:.2f}x |")
    write_table(args.output, lines)


if __name__ == "__main__":
    main()
