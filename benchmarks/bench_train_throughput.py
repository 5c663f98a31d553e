"""Training throughput of the FER CNN variants: plain fp32 against the CPU fast path, in one run.

The fast path is what `train.py` turns on by itself on a CPU with bf16 support: bf16 autocast and
channels_last memory format. Each cell times full optimisation steps (forward, loss, backward,
AdamW) on real FER-2013 faces when ../shared/data is there, else random pixels (said in the table).

    python benchmarks/bench_train_throughput.py [--variants tiny small] [--steps 20] [--batch_size 64]

Writes benchmarks/results/train_throughput.md.
"""

import argparse
import time
from pathlib import Path

import torch

from common import machine, write_table  # first: puts the repo root on sys.path for fer_hf
from fer_hf import FER_CNN_VARIANTS, FerCNNForImageClassification, FerConfig, FerImageProcessor
from fer_hf.inference import bf16_supported

ROOT = Path(__file__).resolve().parents[1]
FER_TRAIN = ROOT.parent / "shared" / "data" / "fer2013" / "train.parquet"


def real_batch(batch_size: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    if FER_TRAIN.exists():
        from datasets import load_dataset

        rows = load_dataset("parquet", data_files=str(FER_TRAIN), split="train").select(range(batch_size))
        pixels = FerImageProcessor()(list(rows["image"]), return_tensors="pt")["pixel_values"]
        return pixels, torch.tensor(rows["label"]), "real FER-2013 faces"
    return torch.randn(batch_size, 1, 48, 48), torch.randint(0, 7, (batch_size,)), "random pixels (no ../shared)"


def images_per_second(variant: str, fast: bool, pixels: torch.Tensor, labels: torch.Tensor, steps: int) -> float:
    torch.manual_seed(0)
    model = FerCNNForImageClassification(FerConfig.from_variant(variant)).train()
    if fast:
        model = model.to(memory_format=torch.channels_last)
        pixels = pixels.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    warmup = 3  # the first steps build oneDNN kernels; not counted
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast):
            loss = model(pixel_values=pixels, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * len(pixels) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(FER_CNN_VARIANTS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "train_throughput.md"))
    args = parser.parse_args()

    pixels, labels, source = real_batch(args.batch_size)
    bf16 = bf16_supported()
    rows = []
    for variant in args.variants:
        params = sum(p.numel() for p in FerCNNForImageClassification(FerConfig.from_variant(variant)).parameters())
        fp32 = images_per_second(variant, False, pixels, labels, args.steps)
        fast = images_per_second(variant, True, pixels, labels, args.steps) if bf16 else float("nan")
        rows.append(f"| {variant} | {params / 1e6:.2f}M | {fp32:.0f} | {fast:.0f} | {fast / fp32:.2f}x |")
        print(rows[-1], flush=True)

    write_table(args.output, [
        "# FER CNN training throughput: fp32 vs the CPU fast path (bf16 autocast + channels_last)",
        "",
        f"Command: `python benchmarks/bench_train_throughput.py --steps {args.steps} --batch_size {args.batch_size}`  ",
        f"{machine()}; "
        f"batch {args.batch_size} of {source}; {args.steps} timed AdamW steps after 3 warm-up steps.",
        "" if bf16 else "This CPU has no bf16 support: the fast path column is empty.",
        "| variant | parameters | fp32 images/s | fast path images/s | speed-up |",
        "|---|---|---|---|---|",
        *rows,
    ])


if __name__ == "__main__":
    main()
