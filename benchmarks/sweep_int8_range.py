"""How the int8 runtime's activation range K (fer_hf.inference.ACTIVATION_RANGE_SIGMAS) trades clipping
against resolution, for the bundled FER CNNs: fidelity of int8 to the fp32 model, per K.

Each int8 unit's activation range is K standard deviations above its channels' mean pre-activation,
as the batch norm recorded it (see Int8FerCNN). K is chosen on FER-2013 *training* faces: the
fraction of faces whose top class in int8 is fp32's, and the mean and largest absolute probability
difference.
No labels are used, so the choice does not look at any split we report accuracy on; PublicTest
faces are measured too, as a check.

    python benchmarks/sweep_int8_range.py [--faces 2000] [--sigmas 5 6 8 10 12 16] [--models FOLDER ...]

Writes benchmarks/results/int8_range.md.
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from datasets import load_dataset

from common import ROOT, machine, write_table
from fer_hf.hub import load_classifier
from fer_hf.inference import ACTIVATION_RANGE_SIGMAS, FerPixels, Int8FerCNN

FER_DIR = ROOT.parent / "shared" / "data" / "fer2013"
MODELS = [str(ROOT / "models" / name) for name in ("fer2013-cnn", "fer2013-cnn-fast")]


def evenly_spaced_faces(split: str, count: int) -> list:
    rows = load_dataset("parquet", data_files=str(FER_DIR / f"{split}.parquet"), split="train")
    return [rows[i]["image"] for i in range(0, len(rows), len(rows) // count)[:count]]


@torch.inference_mode()
def probabilities(forward, pixel_values: torch.Tensor) -> np.ndarray:
    return np.concatenate([forward(pixel_values[i : i + 256]).softmax(-1).numpy()
                           for i in range(0, len(pixel_values), 256)])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=2000)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[5, 6, 8, 10, 12, 16])
    parser.add_argument("--models", nargs="+", default=MODELS, help="FER CNN folders (default: the bundled ones)")
    args = parser.parse_args()
    extra = "" if args.models == MODELS else " --models " + " ".join(args.models)

    splits = {"train": evenly_spaced_faces("train", args.faces), "publictest": evenly_spaced_faces("publictest", args.faces)}
    header = " | ".join(f"K = {k:g}" for k in args.sigmas)
    lines = [
        "# int8 activation range K: fidelity to fp32",
        "",
        f"Command: `python benchmarks/sweep_int8_range.py --faces {args.faces} --sigmas "
        f"{' '.join(f'{k:g}' for k in args.sigmas)}{extra}`  ",
        f"{machine()}; K in use: {ACTIVATION_RANGE_SIGMAS:g}.",
        "",
        f"Each cell: the share of {args.faces} evenly spaced faces whose int8 top class is fp32's; the mean and the "
        "largest absolute probability difference. K is chosen on the training faces; PublicTest is a check.",
        "",
        f"| faces | model | {header} |",
        "|---|---|" + "---|" * len(args.sigmas),
    ]
    for split, faces in splits.items():
        for folder in args.models:
            name = Path(folder).name
            model, processor = load_classifier(folder)
            pixels = FerPixels.from_processor(processor)
            pixel_values = torch.from_numpy(pixels(faces))
            expected = probabilities(lambda x: model(pixel_values=x).logits, pixel_values)
            cells = []
            for sigmas in args.sigmas:
                int8 = Int8FerCNN(model, pixels.input_scale(), sigmas=sigmas).eval()
                got = probabilities(int8, pixel_values)
                agree = (got.argmax(1) == expected.argmax(1)).mean()
                difference = np.abs(got - expected)
                cells.append(f"{100 * agree:.2f}%, {difference.mean():.4f}, {difference.max():.3f}")
            lines.append(f"| {split} | {name} | {' | '.join(cells)} |")
    write_table(ROOT / "benchmarks" / "results" / "int8_range.md", lines)


if __name__ == "__main__":
    main()
