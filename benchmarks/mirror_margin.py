"""Mirror averaging only where it pays: accuracy and share of faces mirrored per top-two margin.

A face is classified on its own view; only when its top two classes are within MARGIN of each other is
its mirror image classified too and the two averaged. The margin is chosen without looking at the
faces it is scored on: PublicTest is split in two halves (even and odd rows); on each half the smallest
margin of the grid whose accuracy reaches full mirror averaging's on that half is taken, and scored on
the other half.

    python benchmarks/mirror_margin.py [--model models/fer2013-cnn] [--mode auto]

Writes benchmarks/results/mirror_margin.md. Needs ../shared/data/fer2013/publictest.parquet.
"""

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
from PIL import ImageOps

from common import machine, write_table  # first: puts the repo root on sys.path for fer_hf
import fer_hf  # noqa: F401  (registers the FER CNN)
from fer_hf.faces import top_two_margin  # the recognizer's measure of an unsure face
from fer_hf.inference import InferenceRunner
from transformers import AutoImageProcessor, AutoModelForImageClassification

ROOT = Path(__file__).resolve().parents[1]
PUBLICTEST = ROOT.parent / "shared" / "data" / "fer2013" / "publictest.parquet"
GRID = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.8, 1.0)


def accuracy_at(margin: float, single: np.ndarray, mirrored: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(accuracy, share of faces mirrored) when faces with a margin below `margin` are mirror-averaged."""
    use = top_two_margin(single) < margin
    probabilities = np.where(use[:, None], (single + mirrored) / 2, single)
    return float((probabilities.argmax(1) == truth).mean()), float(use.mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "models" / "fer2013-cnn"))
    parser.add_argument("--mode", default="auto", help="fer_hf.inference mode (auto: the demo's)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "mirror_margin.md"))
    args = parser.parse_args()
    from datasets import load_dataset

    test = load_dataset("parquet", data_files=str(PUBLICTEST), split="train")
    model = AutoModelForImageClassification.from_pretrained(args.model)
    runner = InferenceRunner(model, AutoImageProcessor.from_pretrained(args.model), args.mode)
    faces, truth = list(test["image"]), np.array(test["label"])  # the model's labels are FER-2013's, in order

    def classify(images):
        return np.concatenate([runner(images[i : i + 256]) for i in range(0, len(images), 256)])

    single, mirrored = classify(faces), classify([ImageOps.mirror(face) for face in faces])
    halves = {"even rows": np.arange(0, len(faces), 2), "odd rows": np.arange(1, len(faces), 2)}
    rows = []
    for margin in GRID:
        cells = [accuracy_at(margin, single[h], mirrored[h], truth[h]) for h in [np.arange(len(faces)), *halves.values()]]
        rows.append(f"| {margin:g} | {cells[0][1]:.1%} | {cells[0][0]:.2%} | {cells[1][0]:.2%} | {cells[2][0]:.2%} |")
    full = {name: accuracy_at(2.0, single[h], mirrored[h], truth[h])[0] for name, h in halves.items()}
    chosen = []
    for (name, h), (other_name, other) in zip(halves.items(), reversed(list(halves.items()))):
        margin = next(m for m in GRID if accuracy_at(m, single[h], mirrored[h], truth[h])[0] >= full[name])
        accuracy, share = accuracy_at(margin, single[other], mirrored[other], truth[other])
        chosen.append(f"| {name} | {margin:g} | {other_name} | {share:.1%} | {accuracy:.2%} | {full[other_name]:.2%} |")
    write_table(args.output, [
        "# Mirror averaging only where it pays",
        "",
        f"Command: `python benchmarks/mirror_margin.py {shlex.join(sys.argv[1:])}`  ",
        f"{machine()}; model {Path(args.model).name}, runtime mode {runner.mode}; PublicTest ({len(faces):,} faces).",
        "A face is mirror-averaged only when its single view's top two classes are within the margin;",
        "margin 0: never (single view), 1: always. Cost: one pass per face plus one per mirrored face.",
        "",
        "| margin | faces mirrored | PublicTest | even rows | odd rows |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "The margin chosen on one half (the smallest of the grid that reaches full mirror averaging's accuracy",
        "there), scored on the other:",
        "",
        "| chosen on | margin | scored on | faces mirrored | accuracy | full mirror averaging there |",
        "|---|---|---|---|---|---|",
        *chosen,
    ])


if __name__ == "__main__":
    main()
