"""Risk and coverage: how often the faces a model is sure of are right, and how many faces that leaves.

For each threshold, the faces whose calibrated top score is at or above it are kept ("sure"): the table gives
their share (coverage) and how often their label is right (accuracy), for the scores made three ways (single view;
mirrored where unsure, the default; every face mirrored), with the temperatures stored in the model's config.json
(`python -m fer_hf calibrate`). The model's own `unsure_threshold` is among the rows; it was picked on the same
PublicTest faces, so its row is in-sample (`calibrate` prints its split-half check).

    python benchmarks/risk_coverage.py [--model models/fer2013-cnn ...] [--quick]

Writes benchmarks/results/risk_coverage.md (--quick: the first 600 PublicTest faces, printed only).
Needs ../shared/data/fer2013.
"""

import argparse
import shlex
import sys

from common import ROOT, machine, write_table  # first: puts the repo root on sys.path for fer_hf
from fer_hf.calibration import MODES, calibrated_probabilities, coverage_at, view_logits
from fer_hf.data import load_fer_dataset
from fer_hf.hub import load_classifier

FER_DIR = ROOT.parent / "shared" / "data" / "fer2013"
THRESHOLDS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=["models/fer2013-cnn", "models/fer2013-cnn-fast"])
    parser.add_argument("--quick", action="store_true", help="the first 600 faces; prints the table, writes nothing")
    args = parser.parse_args()

    rows = load_fer_dataset(str(FER_DIR))["validation"]
    if args.quick:
        rows = rows.select(range(600))
    lines = [
        "# Risk and coverage of calibrated scores",
        "",
        f"Command: `python benchmarks/risk_coverage.py {shlex.join(sys.argv[1:])}`  ",
        f"{machine()}; PublicTest ({len(rows):,} faces), fp32 (the model's forward).",
        "Coverage: the share of faces whose calibrated top score is at or above the threshold; accuracy: how often",
        "those are right. Threshold 0 keeps every face (the model's accuracy). The row marked * is the model's",
        "`unsure_threshold`, picked on these faces (in-sample): faces below it are reported as unsure.",
    ]
    for name in args.model:
        model, processor = load_classifier(ROOT / name)
        logits = view_logits(model, processor, rows)
        scores = {mode: calibrated_probabilities(logits, mode, model.config) for mode in MODES}
        own = model.config.unsure_threshold
        lines += ["", f"## `{name}`", "",
                  "| threshold | " + " | ".join(f"{MODES[mode][1]}: accuracy / coverage" for mode in MODES) + " |",
                  "|---|" + "---|" * len(MODES)]
        for threshold in sorted({*THRESHOLDS, own}):
            cells = []
            for mode in MODES:
                kept = coverage_at(scores[mode], logits.labels, threshold)
                cells.append(f"{kept['accuracy']:.2%} / {kept['coverage']:.1%}" if kept["coverage"] else "- / 0%")
            marker = " *" if threshold == own else ""
            lines.append(f"| {threshold:.2f}{marker} | " + " | ".join(cells) + " |")
    if args.quick:
        print("\n".join(lines))
    else:
        write_table(ROOT / "benchmarks" / "results" / "risk_coverage.md", lines)


if __name__ == "__main__":
    main()
