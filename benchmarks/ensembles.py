"""Ensembles of FER CNNs: the mean class probabilities of 2-4 models, scored on PublicTest.

Do averages of our own 7-class models beat one model of the same size (5M parameters by default)? Every
combination of the given models whose parameters add up to at most --max_parameters is scored, with and
without mirror averaging (each member's logits averaged over a face and its mirror, as `evaluate
--flip_tta` does, then softmaxed: fer_hf.evaluation.class_probabilities, classes matched by name). Every combination is scored on PublicTest itself, so the best
one is the best of many tries on the split reported: read the medians, not the maxima.

    python benchmarks/ensembles.py --models models/fer2013-cnn runs/fer2013-kd ...

With --labels (say happy sad) only PublicTest's rows of those classes are scored, each member's
softmax taken over them (a 7-class model's happy-vs-sad scores, as `evaluate --labels` takes them).

The runs/ folders are the output folders of the runs in models/README.md (kept on the machine that
ran them, not in the repository). Writes benchmarks/results/ensembles.md.
"""

import argparse
import itertools
import statistics

import numpy as np

from common import ROOT, machine, write_table
from fer_hf.data import load_fer_dataset, select_labels
from fer_hf.evaluation import class_probabilities
from fer_hf.hub import load_classifier

FER_DIR = ROOT.parent / "shared" / "data" / "fer2013"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--sizes", nargs="+", type=int, default=[2, 3, 4])
    parser.add_argument("--max_parameters", type=float, default=5e6)
    parser.add_argument("--labels", nargs="+", help="score only PublicTest's rows of these classes, over these classes")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "ensembles.md"))
    args = parser.parse_args()

    fer = load_fer_dataset(FER_DIR)
    test = (select_labels(fer, args.labels) if args.labels else fer)["validation"]  # renumbered in --labels order
    labels, names = np.array(test["label"]), test.features["label"].names
    members = {}
    for folder in args.models:
        model, processor = load_classifier(folder)
        members[folder] = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "plain": class_probabilities(model, processor, test, names),
            "mirrored": class_probabilities(model, processor, test, names, flip_tta=True),
        }
        print(folder, flush=True)

    def accuracy(probabilities: np.ndarray) -> float:
        return float((probabilities.argmax(-1) == labels).mean())

    single_rows = [f"| `{folder}` | {m['parameters']:,} | {accuracy(m['plain']):.2%} | {accuracy(m['mirrored']):.2%} |"
                   for folder, m in members.items()]
    scored = []
    for size in args.sizes:
        for combination in itertools.combinations(members, size):
            parameters = sum(members[m]["parameters"] for m in combination)
            if parameters <= args.max_parameters:
                plain = accuracy(np.mean([members[m]["plain"] for m in combination], axis=0))
                mirrored = accuracy(np.mean([members[m]["mirrored"] for m in combination], axis=0))
                scored.append((size, combination, parameters, plain, mirrored))
    size_rows = []
    for size in args.sizes:
        rows = [s for s in scored if s[0] == size]
        if rows:
            plain, mirrored = [r[3] for r in rows], [r[4] for r in rows]
            size_rows.append(f"| {size} | {len(rows)} | {statistics.median(plain):.2%} | {max(plain):.2%} | "
                             f"{statistics.median(mirrored):.2%} | {max(mirrored):.2%} |")
    best_rows = [f"| {', '.join(f'`{m}`' for m in combination)} | {parameters:,} | {plain:.2%} | {mirrored:.2%} |"
                 for _, combination, parameters, plain, mirrored in sorted(scored, key=lambda s: -s[4])[:5]]

    write_table(args.output, [
        "# Ensembles of FER CNNs on PublicTest" + (f"'s {' and '.join(args.labels)} faces" if args.labels else ""),
        "",
        f"Command: `python benchmarks/ensembles.py --models {' '.join(args.models)}"
        f"{' --labels ' + ' '.join(args.labels) if args.labels else ''}`  ",
        f"{machine()}. PublicTest: {len(test):,} faces{' (its ' + ', '.join(args.labels) + ' rows)' if args.labels else ''}. Each ensemble: the mean of its members' class probabilities;",
        "mirror-averaged: each member's logits averaged over the face and its mirror first. All combinations are",
        "scored on PublicTest itself, so the maxima are the best of many tries on the split reported.",
        "",
        "| model | parameters | PublicTest accuracy | mirror-averaged |",
        "|---|---|---|---|",
        *single_rows,
        "",
        f"| members | combinations within {args.max_parameters:,.0f} parameters | median accuracy | best | "
        "median, mirror-averaged | best, mirror-averaged |",
        "|---|---|---|---|---|---|",
        *size_rows,
        "",
        "The five best combinations, mirror-averaged:",
        "",
        "| members | parameters | PublicTest accuracy | mirror-averaged |",
        "|---|---|---|---|",
        *best_rows,
    ])


if __name__ == "__main__":
    main()
