"""Where FER-2013's PublicTest labels and the FER+ annotators disagree, and how our errors fall there.

FER-2013's labels came from one web search and one labeller per face; FER+ (Microsoft) had ten
annotators vote on every face again. A face the FER+ majority calls neutral but FER-2013 calls sad is
one where a model's "happy" or "sad" is close to a coin toss for anyone, and a face whose FER+ votes
favour the *other* of the scored labels is one where a model that reads it as most people do is
marked wrong. This script counts both on PublicTest's rows of --labels (default: happy and sad), then splits each model's errors by the face's FER+ majority.

    python benchmarks/ferplus_agreement.py --models models/fer2013-cnn models/fer2013-cnn-fast

Models are scored as `python -m fer_hf evaluate MODEL --dataset_name ../shared/data/fer2013 --labels
happy sad [--flip_tta]` scores them (class_probabilities over the labels, matched by name). FER+
votes are read from publictest_meta.parquet, whose rows are PublicTest's in the same order (checked
row by row against its FER-2013 label). Writes benchmarks/results/ferplus_agreement.md.
"""

import argparse
from collections import Counter

import numpy as np
import pandas as pd

from common import ROOT, machine, write_table
from fer_hf.data import FERPLUS_VOTE_COLUMNS, DataError, load_fer_dataset
from fer_hf.evaluation import class_probabilities
from fer_hf.hub import load_classifier

FER_DIR = ROOT.parent / "shared" / "data" / "fer2013"
# The FER+ vote columns, in the order their majority is named: our seven classes, then FER+'s extras.
VOTES = {**FERPLUS_VOTE_COLUMNS, "contempt": "ferplus_contempt", "unknown": "ferplus_unknown", "not a face": "ferplus_NF"}


def ferplus_majority(meta: pd.DataFrame) -> np.ndarray:
    """Each row's most-voted FER+ class name ("tie" when two classes share the most votes)."""
    votes = meta[list(VOTES.values())].to_numpy()
    top = votes.max(axis=1, keepdims=True)
    names = np.array(list(VOTES))
    return np.where((votes == top).sum(axis=1) > 1, "tie", names[votes.argmax(axis=1)])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--labels", nargs="+", default=["happy", "sad"])
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "ferplus_agreement.md"))
    args = parser.parse_args()

    test = load_fer_dataset(FER_DIR)["validation"]  # PublicTest
    names = test.features["label"].names
    meta = pd.read_parquet(FER_DIR / "publictest_meta.parquet")
    if len(meta) != len(test) or (meta["label"].to_numpy() != np.array(test["label"])).any():
        raise DataError(f"{FER_DIR / 'publictest_meta.parquet'}: its rows are not PublicTest's rows in order "
                        "(row count or FER-2013 labels differ).")
    keep = np.flatnonzero(np.isin(np.array(test["label"]), [names.index(n) for n in args.labels]))
    rows, meta = test.select(keep), meta.iloc[keep].reset_index(drop=True)
    labelled = np.array([names[i] for i in rows["label"]])
    majority = ferplus_majority(meta)
    own = np.array([meta.at[i, VOTES[n]] for i, n in enumerate(labelled)])
    other = np.array([max(meta.at[i, VOTES[o]] for o in args.labels if o != n) for i, n in enumerate(labelled)])

    total = len(rows)
    data_rows = []
    for name in args.labels:
        mine = labelled == name
        counts = Counter(majority[mine])
        shown = ", ".join(f"{k} {v:,}" for k, v in counts.most_common())
        data_rows.append(f"| {name} | {mine.sum():,} | {shown} |")
    agree = majority == labelled
    favour_other = other > own
    summary = [
        f"- FER+ majority agrees with the FER-2013 label: {agree.sum():,} of {total:,} ({agree.mean():.2%}).",
        f"- FER+ votes favour the other label over the FER-2013 one: {favour_other.sum():,} faces "
        f"({favour_other.mean():.2%}). A model that reads these as most FER+ annotators do is marked wrong on "
        f"all of them: it scores at most {1 - favour_other.mean():.2%}.",
    ]

    model_rows = []
    for folder in args.models:
        model, processor = load_classifier(folder)
        for view, flip in (("single view", False), ("mirror-averaged", True)):
            predicted = np.array(args.labels)[class_probabilities(model, processor, rows, args.labels, flip_tta=flip).argmax(-1)]
            wrong = predicted != labelled
            by_majority = Counter(majority[wrong])
            shown = ", ".join(f"{k} {v}" for k, v in by_majority.most_common())
            by_label = ", ".join(f"{n} {(wrong & (labelled == n)).sum()}" for n in args.labels)
            model_rows.append(
                f"| `{folder}` | {view} | {1 - wrong.mean():.2%} ({(~wrong).sum():,}) | {wrong.sum()}: {by_label} | {shown} | "
                f"{(wrong & favour_other).sum()} | {1 - wrong[agree].mean():.2%} ({agree.sum():,}) |")
            print(model_rows[-1], flush=True)

    write_table(args.output, [
        f"# PublicTest's {' and '.join(args.labels)} faces against their FER+ votes",
        "",
        f"Command: `python benchmarks/ferplus_agreement.py --models {' '.join(args.models)}"
        f"{' --labels ' + ' '.join(args.labels) if args.labels != ['happy', 'sad'] else ''}`  ",
        f"{machine()}. PublicTest rows labelled {', '.join(args.labels)} in FER-2013: {total:,}; FER+ majority:",
        "the class with most of the face's ten FER+ votes (\"tie\" when two share the most).",
        "",
        "| FER-2013 label | faces | their FER+ majority |",
        "|---|---|---|",
        *data_rows,
        "",
        *summary,
        "",
        "| model | view | accuracy (right) | wrong: by FER-2013 label | the wrong faces by FER+ majority | wrong where FER+ favours the "
        "other label | accuracy where FER+ agrees with the label (faces) |",
        "|---|---|---|---|---|---|---|",
        *model_rows,
    ])


if __name__ == "__main__":
    main()
