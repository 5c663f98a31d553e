"""Training batches per second as the two data paths of train.py make them: PIL augmentation in Python
(the default) against faces held as one tensor and augmented in torch (`--device_augment`).

Each path makes the same batches from real FER-2013 faces: gather the rows, augment them (crop, flip,
rotation, brightness, contrast), normalise, stack. No model runs: this is what a GPU waits for on every
step. On a CPU the device path runs on the CPU; on a GPU machine pass `--device cuda`.

    python benchmarks/bench_device_augment.py [--batch_size 256] [--batches 20] [--device cpu]

Writes benchmarks/results/device_augment.md.
"""

import argparse
import time
from pathlib import Path

import torch

from common import machine, write_table  # first: puts the repo root on sys.path for fer_hf
from fer_hf import FerImageProcessor
from fer_hf.data import make_transform
from fer_hf.device_augment import DeviceFaces, FaceAugmentation
from fer_hf.training import collate

ROOT = Path(__file__).resolve().parents[1]
FER_TRAIN = ROOT.parent / "shared" / "data" / "fer2013" / "train.parquet"
FIXTURE_TRAIN = ROOT / "tests" / "fixtures" / "fer2013" / "train.parquet"


def faces_per_second(make_batch, batch_size: int, batches: int, device: str) -> float:
    make_batch()  # warm-up: first calls allocate
    synchronize = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    synchronize()
    start = time.perf_counter()
    for _ in range(batches):
        make_batch()
    synchronize()
    return batches * batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "device_augment.md"))
    args = parser.parse_args()

    from datasets import load_dataset

    source = FER_TRAIN if FER_TRAIN.exists() else FIXTURE_TRAIN
    rows = load_dataset("parquet", data_files=str(source), split="train")
    rows = rows.select(range(min(len(rows), 4096)))
    processor = FerImageProcessor()
    generator = torch.Generator().manual_seed(0)

    # The default path: the DataLoader's work for one batch, in the main process.
    pil_rows = rows.with_transform(make_transform(processor, train=True, grayscale=True))

    def pil_batch():
        indices = torch.randint(len(rows), (args.batch_size,), generator=generator).tolist()
        batch = pil_rows[indices]
        return collate([{"pixel_values": pixels, "labels": label}
                        for pixels, label in zip(batch["pixel_values"], batch["labels"])])

    faces = DeviceFaces(processor, args.device, FaceAugmentation(erasing=0.25))
    faces.hold(rows, rows["label"])

    def device_batch():
        indices = torch.randint(len(rows), (args.batch_size,), generator=generator)
        return faces.batch(indices, augment=True)

    pil = faces_per_second(pil_batch, args.batch_size, args.batches, "cpu")
    device = faces_per_second(device_batch, args.batch_size, args.batches, args.device)
    write_table(args.output, [
        "# Training batches per second: PIL augmentation against --device_augment",
        "",
        f"Command: `python benchmarks/bench_device_augment.py --batch_size {args.batch_size} --batches {args.batches} "
        f"--device {args.device}`  ",
        f"{machine()}; {source.parent.name}/{source.name}, {len(rows)} faces; {args.batches} timed batches of "
        f"{args.batch_size} after one warm-up batch. No model: only making the batches.",
        "",
        "| path | faces/s |",
        "|---|---|",
        f"| PIL in Python (default; one DataLoader process) | {pil:,.0f} |",
        f"| `--device_augment` on {args.device} (random erasing 0.25) | {device:,.0f} |",
        "",
        f"The device path makes batches {device / pil:.1f}x as fast on this machine.",
    ])


if __name__ == "__main__":
    main()
