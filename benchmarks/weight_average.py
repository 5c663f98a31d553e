"""Uniform weight averages ("model soups") of FER CNNs fine-tuned from one model, batch norm recomputed.

Models fine-tuned from the same weights often sit in one basin, where the average of their weights
scores better than each. Each soup is the element-wise mean of its members' weights (folders with a
model.safetensors, or Trainer checkpoints), loaded into the first member's architecture; its batch-norm
statistics are then recomputed on the unaugmented FER-2013 training faces (as train.py does after
training), since averaged weights make the members' statistics stale. A soup of one model measures the
recompute alone. Scored on PublicTest, with and without mirror averaging; with --labels (e.g. `happy sad`
for happy/sad models), on those classes' faces only, and recomputed on those classes' training faces.

    python benchmarks/weight_average.py --soups "models/fer2013-cnn" "models/fer2013-cnn runs/fer2013-kd" ...

The runs/ folders are the output folders of the runs in models/README.md (kept on the machine that
ran them, not in the repository). Writes benchmarks/results/weight_average.md. With --save_dir (one
soup), the soup's mean weights are also saved as a model folder, which train.py then recomputes, scores
and cards like any model:

    python benchmarks/weight_average.py --soups "runs/a runs/b" --save_dir runs/soup
    python train.py --dataset_name ../shared/data/fer2013 --model_name_or_path runs/soup --num_train_epochs 0 ...
"""

import argparse

import numpy as np
from safetensors.torch import load_file

from common import ROOT, machine, write_table
from fer_hf.data import load_fer_dataset, select_labels
from fer_hf.evaluation import predict_logits, recompute_batch_norm_statistics
from fer_hf.hub import load_classifier
from fer_hf.model import copy_model_code

FER_DIR = ROOT.parent / "shared" / "data" / "fer2013"


def averaged_model(members: list[str]):
    """The first member's model and processor, carrying the mean of all members' weights."""
    model, processor = load_classifier(members[0])
    states = [load_file(f"{member}/model.safetensors") for member in members]
    mean = {name: (sum(state[name].double() for state in states) / len(states)).to(tensor.dtype)
            if tensor.is_floating_point() else tensor for name, tensor in states[0].items()}
    model.load_state_dict(mean)
    return model, processor


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--soups", nargs="+", required=True, help='each a quoted, space-separated list of members')
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "weight_average.md"))
    parser.add_argument("--save_dir", help="with one soup: save its mean weights (before the recompute) here")
    parser.add_argument("--labels", nargs="+", help="score on these classes only, as the members' labels (e.g. happy sad)")
    args = parser.parse_args()
    if args.save_dir and len(args.soups) != 1:
        parser.error("--save_dir saves one soup: give one --soups entry")

    dataset = load_fer_dataset(FER_DIR)
    if args.labels:
        dataset = select_labels(dataset, args.labels)
    train, test = dataset["train"], dataset["validation"]
    labels = np.array(test["label"])
    rows = []
    for soup in args.soups:
        members = soup.split()
        model, processor = averaged_model(members)
        if args.save_dir:  # the mean itself; train.py --num_train_epochs 0 redoes the recompute and keeps its own
            model.save_pretrained(args.save_dir)
            processor.save_pretrained(args.save_dir)
            copy_model_code(args.save_dir)  # its config names the face pipeline: the code comes along
        recompute_batch_norm_statistics(model, processor, train)
        plain = (predict_logits(model, processor, test).argmax(-1) == labels).mean()
        mirrored = (predict_logits(model, processor, test, flip_tta=True).argmax(-1) == labels).mean()
        rows.append(f"| {', '.join(f'`{m}`' for m in members)} | {plain:.2%} | {mirrored:.2%} |")
        print(rows[-1], flush=True)

    quoted = " ".join(f'"{soup}"' for soup in args.soups)
    labels_flag = f" --labels {' '.join(args.labels)}" if args.labels else ""
    faces = f"{', '.join(args.labels)} faces" if args.labels else "faces"
    write_table(args.output, [
        "# Weight averages of FER CNNs, batch norm recomputed",
        "",
        f"Command: `python benchmarks/weight_average.py --soups {quoted}{labels_flag}`  ",
        f"{machine()}. Each row: the mean of its members' weights, batch-norm statistics recomputed on the",
        f"{len(train):,} unaugmented FER-2013 training {faces}, scored on PublicTest ({len(test):,} {faces}).",
        "",
        "| members | PublicTest accuracy | with mirror averaging |",
        "|---|---|---|",
        *rows,
    ])


if __name__ == "__main__":
    main()
