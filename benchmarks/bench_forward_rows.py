"""How many rows a CPU forward pass should take: the bundled models' fp32 logits over PublicTest, in passes of
256, 128, 64, 32 and 16 faces (what `fer_hf.model.heatmaps.CPU_FORWARD_ROWS` sets for `evaluate`, `calibrate`,
the training reports and occlusion heat maps), with the weights in PyTorch's default memory layout, and in
passes of CPU_FORWARD_ROWS with them in channels_last (`fer_hf.evaluation.channels_last_on_cpu`, which
`evaluate` and `calibrate` use).

Each size scores the same pixels (the model's processor, once, before timing) in several rounds; the table gives
the median seconds, faces/s, the ratio to 256 rows in the same run, and the largest difference of any logit from
the 256-row pass (0 means the same logits bit for bit, so every figure computed from them stays as it is).

    python benchmarks/bench_forward_rows.py [--rounds 3]
    python benchmarks/bench_forward_rows.py --occlusion [--rounds 3]

Writes benchmarks/results/forward_rows.md. With --occlusion it times occlusion heat maps instead
(fer_hf.model.heatmaps.face_heatmaps, the demo's "Why?"): 1 and 6 faces of the fixture's PublicTest rows, their
occluded copies in one pass against passes of CPU_FORWARD_ROWS rows, with the convolution weights in their own
layout and (as `heatmaps.model_shell` gives them on a CPU) in channels_last copies, to
benchmarks/results/occlusion_rows.md.
Run it on an otherwise idle machine.
"""

import argparse
import copy
import os
import statistics
import time

import torch

from common import ROOT, machine, write_table  # first: puts the repo root on sys.path for fer_hf
from fer_hf.hub import load_classifier

PUBLICTEST = ROOT.parent / "shared" / "data" / "fer2013" / "publictest.parquet"
FIXTURE = ROOT / "tests" / "fixtures" / "fer2013" / "publictest.parquet"
ROWS = [256, 128, 64, 32, 16]
LAYOUTS = {"default": torch.contiguous_format, "channels_last": torch.channels_last}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--occlusion", action="store_true", help="time occlusion heat maps instead")
    parser.add_argument("--output", default=None, help="default: benchmarks/results/forward_rows.md "
                                                       "(occlusion_rows.md with --occlusion)")
    args = parser.parse_args()
    if args.occlusion:
        return occlusion(args.rounds, args.output or str(ROOT / "benchmarks" / "results" / "occlusion_rows.md"))
    args.output = args.output or str(ROOT / "benchmarks" / "results" / "forward_rows.md")

    from datasets import load_dataset

    source = PUBLICTEST if PUBLICTEST.exists() else FIXTURE
    images = load_dataset("parquet", data_files=str(source), split="train")["image"]
    lines = ["# Rows per forward pass on a CPU", "",
             "Command: `python benchmarks/bench_forward_rows.py" + (f" --rounds {args.rounds}`" if args.rounds != 3 else "`"),
             f"{machine()}; load average {os.getloadavg()[0]:.1f} before the run. {len(images):,} faces of "
             f"`{source.relative_to(ROOT.parent)}`, fp32 eager PyTorch, `torch.inference_mode()`; median of "
             f"{args.rounds} rounds.", "",
             "| model | rows per pass | weights | seconds | faces/s | vs 256 rows | largest logit difference from 256 rows |",
             "|---|---|---|---|---|---|---|"]
    from fer_hf.model.heatmaps import CPU_FORWARD_ROWS

    passes = [(rows, "default") for rows in ROWS] + [(CPU_FORWARD_ROWS, "channels_last")]
    for folder in sorted(p for p in (ROOT / "models").glob("*") if (p / "config.json").exists()):
        model, processor = load_classifier(folder)
        model.eval()
        pixel_values = processor([image.convert("L") for image in images], return_tensors="pt")["pixel_values"]
        seconds, logits = {key: [] for key in passes}, {}
        with torch.inference_mode():
            for _ in range(args.rounds):
                for rows, layout in passes:  # interleaved, so that a slow spell of the machine hits every one
                    model.to(memory_format=LAYOUTS[layout])
                    began = time.perf_counter()
                    logits[rows, layout] = torch.cat([model(pixel_values=part).logits for part in pixel_values.split(rows)])
                    seconds[rows, layout].append(time.perf_counter() - began)
        base, reference = statistics.median(seconds[256, "default"]), logits[256, "default"]
        for rows, layout in passes:
            median = statistics.median(seconds[rows, layout])
            gap = float((logits[rows, layout] - reference).abs().max())
            lines.append(f"| `models/{folder.name}` | {rows} | {layout} | {median:.2f} | {len(images) / median:,.0f} | "
                         f"{base / median:.2f}x | {gap:.1e} |")
    lines += ["", "Load average after the run: " + f"{os.getloadavg()[0]:.1f}."]
    write_table(args.output, lines)


def occlusion(rounds: int, output: str) -> None:
    """Occlusion maps of 1 and 6 faces, the occluded copies in one forward pass and in 64-row passes."""
    from datasets import load_dataset

    from fer_hf.model import heatmaps

    rows = load_dataset("parquet", data_files=str(FIXTURE), split="train").select(range(6))
    lines = ["# Occlusion heat maps: rows per forward pass on a CPU", "",
             "Command: `python benchmarks/bench_forward_rows.py --occlusion"
             + (f" --rounds {rounds}`" if rounds != 3 else "`"),
             f"{machine()}; load average {os.getloadavg()[0]:.1f} before the run. The first faces of "
             f"`{FIXTURE.relative_to(ROOT)}`; `face_heatmaps(..., method=\"occlusion\")` for the class the model "
             f"predicts: {heatmaps.OCCLUSION_WINDOW}x{heatmaps.OCCLUSION_WINDOW} patch, stride "
             f"{heatmaps.OCCLUSION_STRIDE}, up to {heatmaps.OCCLUSION_BATCH} occluded copies per captum evaluation; "
             f"median of {rounds} rounds.", "",
             "| model | faces | rows per forward pass | seconds | vs one pass | largest map difference |",
             "|---|---|---|---|---|---|"]
    channels_last_shell = heatmaps.model_shell

    def default_layout_shell(model):  # every tensor shared, the convolution weights in their own layout too
        shared = {id(tensor): tensor for tensor in (*model.parameters(), *model.buffers())}
        return copy.deepcopy(model, memo=shared).eval()

    rows_64 = heatmaps.CPU_FORWARD_ROWS
    passes = {"one pass": (1 << 30, default_layout_shell), f"{rows_64}": (rows_64, default_layout_shell),
              f"{rows_64}, channels_last weights": (rows_64, channels_last_shell)}
    for folder in sorted(p for p in (ROOT / "models").glob("*") if (p / "config.json").exists()):
        model, processor = load_classifier(folder)
        model.eval()
        pixel_values = processor(list(rows["image"]), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            targets = model(pixel_values=pixel_values).logits.argmax(-1).tolist()
        for faces in (1, 6):
            seconds, maps = {name: [] for name in passes}, {}
            for _ in range(rounds):
                for name, (size, shell) in passes.items():  # interleaved, so that a slow spell hits every one
                    heatmaps.CPU_FORWARD_ROWS, heatmaps.model_shell = size, shell
                    began = time.perf_counter()
                    maps[name] = heatmaps.face_heatmaps(model, pixel_values[:faces], targets[:faces], "occlusion")
                    seconds[name].append(time.perf_counter() - began)
            base = statistics.median(seconds["one pass"])
            for name in passes:
                median = statistics.median(seconds[name])
                gap = float(abs(maps[name] - maps["one pass"]).max())
                lines.append(f"| `models/{folder.name}` | {faces} | {name} | {median:.2f} | {base / median:.2f}x | "
                             f"{gap:.1e} |")
    lines += ["", "Load average after the run: " + f"{os.getloadavg()[0]:.1f}."]
    write_table(output, lines)


if __name__ == "__main__":
    main()
