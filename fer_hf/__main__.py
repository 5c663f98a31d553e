"""The fer-hf command line: `python -m fer_hf COMMAND ...` (`--help` on each command).

    evaluate MODEL --dataset_name SOURCE    accuracy, macro-F1, per-class report, confusion matrix
"""

import argparse
import json
import sys


def evaluate_command(args: argparse.Namespace) -> int:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    import fer_hf  # noqa: F401  (registers the FER CNN)
    from fer_hf.data import load_fer_dataset
    from fer_hf.evaluation import evaluate_on_dataset

    model = AutoModelForImageClassification.from_pretrained(args.model, revision=args.revision)
    processor = AutoImageProcessor.from_pretrained(args.model, revision=args.revision)
    dataset = load_fer_dataset(args.dataset_name, seed=args.seed)
    if args.split not in dataset:
        print(f"Split {args.split!r} not in {args.dataset_name} (it has {', '.join(dataset)}).", file=sys.stderr)
        return 2
    result = evaluate_on_dataset(model, processor, dataset[args.split], output_dir=args.output_dir, split=args.split,
                                 batch_size=args.batch_size, flip_tta=args.flip_tta)
    print(f"{args.model} on {args.dataset_name} [{args.split}], {result['samples']} samples, labels {result['labels']}")
    print(f"accuracy {result['accuracy']:.4f}  macro-F1 {result['macro_f1']:.4f}")
    print(result["report"])
    if args.output_dir:
        print(f"Reports and confusion matrix written to {args.output_dir}")
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "report"}))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_hf", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    evaluate = commands.add_parser("evaluate", help="score a model on a dataset split")
    evaluate.add_argument("model", help="model folder or Hub repo id")
    evaluate.add_argument("--dataset_name", required=True, help="any source train.py accepts")
    evaluate.add_argument("--split", default="validation")
    evaluate.add_argument("--revision", default=None, help="Hub revision of the model")
    evaluate.add_argument("--output_dir", default=None, help="write the report and confusion matrix here")
    evaluate.add_argument("--batch_size", type=int, default=256)
    evaluate.add_argument("--flip_tta", action="store_true", help="average each face with its mirror image")
    evaluate.add_argument("--seed", type=int, default=42, help="seed of a photo folder's split")
    evaluate.add_argument("--json", action="store_true", help="also print the metrics as one JSON line")
    evaluate.set_defaults(handler=evaluate_command)

    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
