#!/usr/bin/env python
"""The long GPU recipe: the `large` FER CNN (4.69M parameters) for 300 epochs, faces held and augmented on the GPU.

    python recipes/gpu_long.py runs/gpu-long                  # FER-2013 from ../shared/data/fer2013
    python recipes/gpu_long.py runs/gpu-long --epochs 100     # a shorter schedule, to fit a lease
    python recipes/gpu_long.py runs/smoke --smoke             # 4 steps of `tiny` on the CPU, on the fixture faces
    python recipes/gpu_long.py OUT -- --class_weighting inverse_sqrt   # any train.py flag after `--` wins

It runs `train.py` with the recipe's flags (printed first): random resized crops, flips, rotations,
brightness, contrast and random erasing done on the device (`--device_augment`), Mixup, a cosine
schedule, bf16 autocast on a GPU with bf16 (fp16 on one without), a checkpoint every epoch. The model
kept is the last one, not the epoch that scored best on PublicTest (which is also the split reported).
Rerunning the same command resumes from the newest checkpoint in OUTPUT_DIR.

Then it scores the trained model and the bundled default (`--baseline`) on the validation split (FER-2013's
PublicTest) as a single view, mirror-averaged and ten-crop averaged, and writes OUTPUT_DIR/recipe_report.md
and .json: accuracy, macro-F1 and per-class recall of each.
"""

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python recipes/gpu_long.py` puts only recipes/ on the path

FER2013 = ROOT.parent / "shared" / "data" / "fer2013"
FIXTURE = ROOT / "tests" / "fixtures" / "fer2013"
VIEWS = {"single": "single view", "mirror": "mirror-averaged", "ten_crop": "ten-crop averaged"}


def train_arguments(args: argparse.Namespace, gpu: str | None) -> list[str]:
    """The train.py flags of the recipe (`gpu`: "bf16", "fp16", or None on a CPU)."""
    flags = [
        "--dataset_name", args.dataset_name, "--output_dir", args.output_dir, "--model_variant", args.variant,
        "--num_train_epochs", str(args.epochs), "--learning_rate", str(args.learning_rate), "--warmup_steps", "0.02",
        "--weight_decay", "0.05", "--label_smoothing_factor", "0.1", "--mixup_alpha", "0.2",
        "--device_augment", "true", "--random_erasing", "0.25",
        "--per_device_train_batch_size", str(args.batch_size), "--per_device_eval_batch_size", "1024",
        "--eval_strategy", "epoch", "--save_strategy", "epoch", "--save_total_limit", "2",
        # The last model, chosen before looking: PublicTest both picks the best epoch and is the figure reported.
        "--load_best_model_at_end", "false",
        "--tta_reports", "mirror", "ten_crop", "--seed", str(args.seed), "--logging_steps", "50",
        "--disable_tqdm", "true",
    ]
    if gpu:
        flags += [f"--{gpu}", "true", "--tf32", "true"]
    if args.smoke:  # a few steps, a checkpoint every two, so that a rerun has one to resume from
        flags += ["--max_steps", "4", "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "64",
                  "--eval_strategy", "steps", "--eval_steps", "2", "--save_strategy", "steps", "--save_steps", "2",
                  "--logging_steps", "1"]
    return flags + args.train_flags


def per_class_recall(report: dict, labels: list[str]) -> dict[str, float]:
    return {label: report["per_class"][label]["recall"] for label in labels}


def score_baseline(baseline: str, dataset_name: str, output_dir: Path, labels: list[str]) -> dict[str, dict]:
    """The bundled model's reports on the same validation rows, in each view (written to OUTPUT_DIR/baseline/)."""
    from fer_hf.data import load_fer_dataset
    from fer_hf.evaluation import channels_last_on_cpu, predict_logits, write_reports
    from fer_hf.hub import load_classifier

    import torch

    model, processor = load_classifier(baseline)
    model = channels_last_on_cpu(model.to("cuda" if torch.cuda.is_available() else "cpu"))  # ten views of every face
    rows = load_fer_dataset(dataset_name)["validation"]
    if rows.features["label"].names != labels or [model.config.id2label[i] for i in range(len(labels))] != labels:
        raise SystemExit(f"--baseline {baseline}: its labels or the dataset's are not the trained model's {labels}.")
    results = {}
    for view in VIEWS:
        logits = predict_logits(model, processor, rows, flip_tta=view == "mirror", ten_crop=view == "ten_crop")
        write_reports(output_dir / "baseline", f"validation_{view}", logits, rows["label"], labels)
        results[view] = json.loads((output_dir / "baseline" / f"validation_{view}_report.json").read_text())
    return results


def write_report(output_dir: Path, command: list[str], baseline: str | None, dataset_name: str) -> dict:
    """Gathers the run's reports into recipe_report.json and recipe_report.md; returns the JSON."""
    info = json.loads((output_dir / "run_info.json").read_text())
    labels = info["labels"]
    names = {"single": "validation_report.json", "mirror": "validation_mirror_report.json",
             "ten_crop": "validation_ten_crop_report.json"}
    trained = {view: json.loads((output_dir / name).read_text()) for view, name in names.items()}
    base = score_baseline(baseline, dataset_name, output_dir, labels) if baseline else {}
    result = {
        "command": shlex.join(command), "dataset": dataset_name, "parameters": info["parameters"],
        "hardware": info["hardware"], "precision": info["precision"], "epochs": info["epochs"],
        "steps": info["steps"], "train_runtime_s": info["train_runtime_s"], "resumed_from": info["resumed_from"],
        "baseline": baseline, "labels": labels,
        "views": {view: {"trained": {**report["metrics"], "recall": per_class_recall(report, labels)},
                         **({"baseline": {**base[view]["metrics"], "recall": per_class_recall(base[view], labels)}}
                            if base else {})}
                  for view, report in trained.items()},
    }
    (output_dir / "recipe_report.json").write_text(json.dumps(result, indent=2))

    who = ["trained"] + (["baseline"] if base else [])
    lines = [
        "# Long GPU recipe: validation split (FER-2013 PublicTest)", "",
        f"Command: `{result['command']}`  ",
        f"Data: {dataset_name}; {info['parameters']:,} parameters; {info['steps']} steps, {info['epochs']:.4g} epochs "
        f"in {info['train_runtime_s']} s on {info['hardware']} ({info['precision']})."
        + (f" Baseline: `{baseline}`, scored here on the same rows." if base else ""), "",
        "| model | view | samples | accuracy | macro-F1 | " + " | ".join(labels) + " |",
        "|---|---|---|---|---|" + "---|" * len(labels),
    ]
    for view, title in VIEWS.items():
        for model in who:
            figures = result["views"][view][model]
            recall = " | ".join(f"{figures['recall'][label]:.3f}" for label in labels)
            lines.append(f"| {model} | {title} | {figures['samples']} | {100 * figures['accuracy']:.2f}% | "
                         f"{figures['macro_f1']:.3f} | {recall} |")
    lines += ["", "Per-class columns are recall. Each figure comes from the reports in this folder "
              "(`validation_*report.json`, `baseline/`)."]
    (output_dir / "recipe_report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    train_flags = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", nargs="?", default="runs/gpu-long")
    parser.add_argument("--dataset_name", default=None, help=f"default: {FER2013} ({FIXTURE} with --smoke)")
    parser.add_argument("--variant", default=None,
                        help="FER CNN variant (default: large, 4.69M parameters; tiny with --smoke)")
    parser.add_argument("--epochs", type=float, default=300)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--learning_rate", type=float, default=4e-3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--baseline", default=str(ROOT / "models" / "fer2013-cnn"),
                        help="bundled model scored alongside ('none': skip)")
    parser.add_argument("--smoke", action="store_true",
                        help="4 steps of the tiny variant on the committed fixture faces: the recipe end to end")
    args = parser.parse_args(argv)
    args.dataset_name = args.dataset_name or str(FIXTURE if args.smoke else FER2013)
    args.variant = args.variant or ("tiny" if args.smoke else "large")
    args.train_flags = train_flags

    import torch

    gpu = None
    if torch.cuda.is_available():
        gpu = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    command = [sys.executable, str(ROOT / "train.py"), *train_arguments(args, gpu)]
    print("+", shlex.join(command), flush=True)
    started = time.time()
    subprocess.run(command, cwd=ROOT, check=True)
    print(f"train.py ended after {time.time() - started:.0f} s", flush=True)
    baseline = None if args.baseline.lower() == "none" else args.baseline
    shown = ["python", "train.py", *command[2:]]  # the report names the command, not this machine's interpreter
    write_report(Path(args.output_dir), shown, baseline, args.dataset_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
