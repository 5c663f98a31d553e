"""How many rows a CPU forward pass should take: the bundled models' fp32 logits over PublicTest, in passes of
256, 128, 64, 32 and 16 faces (what `fer_hf.evaluation.CPU_FORWARD_ROWS` sets for `evaluate`, `calibrate` and
the training reports).

Each size scores the same pixels (the model's processor, once, before timing) in several rounds; the table gives
the median seconds, faces/s, the ratio to 256 rows in the same run, and the largest difference of any logit from
the 256-row pass (0 means the same logits bit for bit, so every figure computed from them stays as it is).

    python benchmarks/bench_forward_rows.py [--rounds 3]

Writes benchmarks/results/forward_rows.md. Run it on an otherwise idle machine.
"""

import argparse
import os
import statistics
import time

import torch

from common import ROOT, machine, write_table  # first: puts the repo root on sys.path for fer_hf
from fer_hf.hub import load_classifier

PUBLICTEST = ROOT.parent / "shared" / "data" / "fer2013" / "publictest.parquet"
FIXTURE = ROOT / "tests" / "fixtures" / "fer2013" / "publictest.parquet"
ROWS = [256, 128, 64, 32, 16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "forward_rows.md"))
    args = parser.parse_args()

    from datasets import load_dataset

    source = PUBLICTEST if PUBLICTEST.exists() else FIXTURE
    images = load_dataset("parquet", data_files=str(source), split="train")["image"]
    lines = ["# Rows per forward pass on a CPU", "",
             "Command: `python benchmarks/bench_forward_rows.py" + (f" --rounds {args.rounds}`" if args.rounds != 3 else "`"),
             f"{machine()}; load average {os.getloadavg()[0]:.1f} before the run. {len(images):,} faces of "
             f"`{source.relative_to(ROOT.parent)}`, fp32 eager PyTorch, `torch.inference_mode()`; median of "
             f"{args.rounds} rounds.", "",
             "| model | rows per pass | seconds | faces/s | vs 256 rows | largest logit difference from 256 rows |",
             "|---|---|---|---|---|---|"]
    for folder in sorted(p for p in (ROOT / "models").glob("*") if (p / "config.json").exists()):
        model, processor = load_classifier(folder)
        model.eval()
        pixel_values = processor([image.convert("L") for image in images], return_tensors="pt")["pixel_values"]
        seconds, logits = {rows: [] for rows in ROWS}, {}
        with torch.inference_mode():
            for _ in range(args.rounds):
                for rows in ROWS:  # interleaved, so that a slow spell of the machine hits every size
                    began = time.perf_counter()
                    logits[rows] = torch.cat([model(pixel_values=part).logits for part in pixel_values.split(rows)])
                    seconds[rows].append(time.perf_counter() - began)
        base = statistics.median(seconds[256])
        for rows in ROWS:
            median = statistics.median(seconds[rows])
            gap = float((logits[rows] - logits[256]).abs().max())
            lines.append(f"| `models/{folder.name}` | {rows} | {median:.2f} | {len(images) / median:,.0f} | "
                         f"{base / median:.2f}x | {gap:.1e} |")
    lines += ["", "Load average after the run: " + f"{os.getloadavg()[0]:.1f}."]
    write_table(args.output, lines)


if __name__ == "__main__":
    main()
