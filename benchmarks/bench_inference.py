"""Classification speed of FER CNN models on 48x48 faces, preprocessing included, in one run.

For each model (trained folders, and untrained size variants for the architecture trade-off) and
each way of running it, measures:
- faces/s in batches of 256 (image processor + forward pass, from PIL crops to probabilities);
- one face: median and p90 latency in ms;
- PublicTest accuracy of trained models under that precision (bf16 can move it).

    python benchmarks/bench_inference.py [--models models/fer2013-cnn ...] [--variants tiny small base]

Writes benchmarks/results/inference.md. Run it on an otherwise idle machine.
"""

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common import machine, write_table  # first: puts the repo root on sys.path for fer_hf
import fer_hf  # noqa: F401  (registers the FER CNN)
from fer_hf import FerCNNForImageClassification, FerConfig, FerImageProcessor
from transformers import AutoImageProcessor, AutoModelForImageClassification

ROOT = Path(__file__).resolve().parents[1]
PUBLICTEST = ROOT.parent / "shared" / "data" / "fer2013" / "publictest.parquet"


class LogitsOnly(torch.nn.Module):
    """The model as a tensor-in, tensor-out module, which is what TorchScript tracing needs."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values, return_dict=False)[0]


class Runner:
    """One way of running a model: precision and runtime. `__call__` takes PIL faces, returns probabilities."""

    def __init__(self, model, processor, mode: str):
        self.processor, self.mode = processor, mode
        model = model.eval()
        if mode.startswith("bf16"):
            model = model.to(memory_format=torch.channels_last)
        if mode.endswith("torchscript"):
            example = torch.zeros(1, model.config.num_channels, model.config.image_size, model.config.image_size)
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode.startswith("bf16")):
                traced = torch.jit.trace(LogitsOnly(model).requires_grad_(False), example, check_trace=False)
            # freeze() folds batch norm into the convolutions and inlines the weights as constants.
            self.forward = torch.jit.freeze(traced.eval())
        else:
            self.forward = lambda x: model(pixel_values=x).logits

    @torch.inference_mode()
    def __call__(self, faces: list[Image.Image]) -> np.ndarray:
        pixel_values = self.processor(faces, return_tensors="pt")["pixel_values"]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.mode.startswith("bf16")):
            logits = self.forward(pixel_values)
        return torch.softmax(logits.float(), dim=-1).numpy()


def faces_per_second(runner: Runner, faces: list[Image.Image], repeats: int) -> float:
    runner(faces)  # warm-up: oneDNN builds its kernels on the first call of each shape
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner(faces)
        times.append(time.perf_counter() - start)
    return len(faces) / statistics.median(times)


def single_face_ms(runner: Runner, faces: list[Image.Image], repeats: int) -> tuple[float, float]:
    for face in faces[:5]:
        runner([face])
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        runner([faces[i % len(faces)]])
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), float(np.percentile(times, 90))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=[str(p) for p in (ROOT / "models").glob("*") if (p / "config.json").exists()])
    parser.add_argument("--variants", nargs="*", default=["tiny", "small", "base"])
    parser.add_argument("--modes", nargs="+", default=["fp32", "bf16", "fp32+torchscript", "bf16+torchscript"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "inference.md"))
    args = parser.parse_args()

    if PUBLICTEST.exists():
        from datasets import load_dataset

        test = load_dataset("parquet", data_files=str(PUBLICTEST), split="train")
        faces, labels, source = list(test["image"]), np.array(test["label"]), "real FER-2013 PublicTest faces"
    else:
        rng = np.random.default_rng(0)
        faces = [Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)) for _ in range(512)]
        labels, source = None, "random 48x48 images (no ../shared)"
    batch = faces[:256]

    candidates = [(Path(m).name, AutoModelForImageClassification.from_pretrained(m), AutoImageProcessor.from_pretrained(m))
                  for m in args.models]
    candidates += [(f"{v} (untrained)", FerCNNForImageClassification(FerConfig.from_variant(v)), FerImageProcessor())
                   for v in args.variants]
    rows = []
    for name, model, processor in candidates:
        params = sum(p.numel() for p in model.parameters())
        for mode in args.modes:
            runner = Runner(model, processor, mode)
            batch_rate = faces_per_second(runner, batch, args.repeats)
            median_ms, p90_ms = single_face_ms(runner, faces, max(50, 5 * args.repeats))
            accuracy = ""
            if labels is not None and "untrained" not in name:
                names = [model.config.id2label[i] for i in range(model.config.num_labels)]
                fer = test.features["label"].names
                keep = np.array([fer[l] in names for l in labels])
                probabilities = np.concatenate([runner([faces[i] for i in np.flatnonzero(keep)[s : s + 256]])
                                                for s in range(0, int(keep.sum()), 256)])
                truth = np.array([names.index(fer[l]) for l in labels[keep]])
                accuracy = f"{(probabilities.argmax(-1) == truth).mean():.2%} ({keep.sum()})"
            rows.append(f"| {name} | {params / 1e6:.2f}M | {mode} | {batch_rate:,.0f} | {median_ms:.2f} | {p90_ms:.2f} | {accuracy} |")
            print(rows[-1], flush=True)

    write_table(args.output, [
        "# FER CNN inference speed, preprocessing included",
        "",
        f"Command: `python benchmarks/bench_inference.py --repeats {args.repeats}`  ",
        f"{machine()}; inputs: {source}.",
        "faces/s: batches of 256 PIL faces through the image processor and the model (median of the repeats).",
        "One face: the same path for a single face. bf16 = bf16 autocast + channels_last. Accuracy: PublicTest",
        "rows of the model's classes (their count in brackets), under that mode.",
        "",
        "| model | parameters | mode | faces/s (batch 256) | one face, median ms | one face, p90 ms | PublicTest accuracy |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ])


if __name__ == "__main__":
    main()
