"""The fer-hf command line: `python -m fer_hf COMMAND ...` (`--help` on each command).

    evaluate MODEL --dataset_name SOURCE    accuracy, macro-F1, per-class report, confusion matrix, ECE/NLL/Brier
    calibrate FOLDER --dataset_name SOURCE  fit the temperatures of calibrated scores and the "unsure" threshold
    push FOLDER REPO_ID                     upload a trained model folder (and its model card) to the Hub
    push-dataset SOURCE REPO_ID             upload any dataset source as parquet to a Hub dataset repo
    push-space SPACE_ID --model REPO_ID     make or update a Gradio Space: the demo serving a Hub model
    predict PATH... [--output F.csv|.json]  label the faces in files, folders, cameras and streams, one row per face
    export MODEL OUT_DIR [--int8]           ONNX files (onnx/model.onnx, onnx/model_quantized.onnx) of a model
    feedback-report REPO_ID                 the demo's corrections: counts per label, predicted -> corrected table

Hub commands take the token from HF_TOKEN or `hf auth login`, never from the command line.
"""

import argparse
import json
import sys
from pathlib import Path

from transformers.hf_argparser import string_to_bool


def _load_model(args: argparse.Namespace):
    """`(model, processor)` of `--model` at `--revision`, or None after printing why it cannot be loaded."""
    from fer_hf.hub import explain_hub_error, load_classifier

    try:
        return load_classifier(args.model, revision=args.revision)
    except Exception as error:  # a wrong folder, repo id or revision; no network and nothing cached
        print(f"error: cannot load {args.model}: {explain_hub_error(error)}", file=sys.stderr)
        return None


def evaluate_command(args: argparse.Namespace) -> int:
    from datasets import DatasetDict

    from fer_hf.calibration import check_labels, view_logits
    from fer_hf.data import crop_faces, load_fer_dataset, select_labels
    from fer_hf.evaluation import channels_last_on_cpu, evaluate_on_dataset
    from fer_hf.faces import face_align, face_crop_margin

    loaded = _load_model(args)
    if loaded is None:
        return 1
    model, processor = channels_last_on_cpu(loaded[0]), loaded[1]
    dataset = load_fer_dataset(args.dataset_name, seed=args.seed)
    if args.labels:
        dataset = select_labels(dataset, args.labels)
    if args.split not in dataset:
        print(f"Split {args.split!r} not in {args.dataset_name} (it has {', '.join(dataset)}).", file=sys.stderr)
        return 2
    if args.crop_faces:  # only the split scored: detection costs ~20 ms a photo; cropped as the model asks
        align = face_align(processor) if args.align_faces is None else args.align_faces
        dataset = crop_faces(DatasetDict({args.split: dataset[args.split]}), margin=face_crop_margin(processor),
                             align=align)
    rows = dataset[args.split]
    # Where the split has the model's classes, the calibration figures need each face's and its mirror's logits:
    # one pass over the split gives them and the accuracy's logits too.
    try:
        check_labels(model, rows, args.split)
        views, no_calibration = view_logits(model, processor, rows, batch_size=args.batch_size), None
    except ValueError as error:
        views, no_calibration = None, error
    logits = None if views is None else (views.own + views.mirror) / 2 if args.flip_tta else views.own
    result = evaluate_on_dataset(model, processor, rows, output_dir=args.output_dir, split=args.split,
                                 batch_size=args.batch_size, flip_tta=args.flip_tta, logits=logits)
    print(f"{args.model} on {args.dataset_name} [{args.split}], {result['samples']} samples, labels {result['labels']}")
    print(f"accuracy {result['accuracy']:.4f}  macro-F1 {result['macro_f1']:.4f}")
    print(result["report"])
    if args.output_dir:
        print(f"Reports and confusion matrix written to {args.output_dir}")
    if views is None:
        print(f"No calibration figures: {no_calibration}")
    else:
        result["calibration"], result["unsure"] = _print_calibration(model, views, args)
        if args.output_dir:
            path = Path(args.output_dir) / f"{args.split}_logits.npz"
            views.save(path)
            print(f"Logits of each face and its mirror image written to {path}")
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "report"}))
    return 0


def _print_calibration(model, logits, args: argparse.Namespace) -> tuple[dict, dict]:
    """Prints ECE, NLL and Brier of each way scores are made, calibrated as the model is and uncalibrated, and how
    many faces are "unsure" and how right the others are, and draws the reliability diagram.

    Args:
        logits: the split's `fer_hf.calibration.ViewLogits`.

    Returns:
        The figures of each mode and `{threshold, unsure, sure_accuracy}` (the default scores).
    """
    from fer_hf.calibration import MODES, ECE_BINS, calibrated_probabilities, calibration_metrics, reliability_diagram
    print(f"Calibration (ECE: top score, {ECE_BINS} equal-width bins; NLL: negative log-likelihood; Brier: "
          f"multiclass, 0..2), as the model scores faces | uncalibrated (temperature 1):")
    print(f"{'scores':<58} {'T':>6} {'ECE':>7} {'NLL':>7} {'Brier':>7} | {'ECE':>7} {'NLL':>7} {'Brier':>7}")
    figures, curves = {}, {}
    for mode, (field, name) in MODES.items():
        calibrated = calibrated_probabilities(logits, mode, model.config)
        after, before = calibration_metrics(calibrated, logits.labels), calibration_metrics(logits.probabilities(mode), logits.labels)
        temperature = getattr(model.config, field, 1.0)
        figures[mode] = {"temperature": temperature, "calibrated": after, "uncalibrated": before}
        print(f"{name:<58} {temperature:>6.3f} {after['ece']:>7.4f} {after['nll']:>7.4f} {after['brier']:>7.4f} | "
              f"{before['ece']:>7.4f} {before['nll']:>7.4f} {before['brier']:>7.4f}")
        if mode in ("single", "flip"):
            curves[f"{name.split(' (')[0]}, uncalibrated"] = logits.probabilities(mode)
            curves[f"{name.split(' (')[0]}, calibrated"] = calibrated
    threshold = getattr(model.config, "unsure_threshold", 0.0)
    default = calibrated_probabilities(logits, "flip", model.config)
    sure = default.max(-1) >= threshold
    unsure = {"threshold": threshold, "unsure": float(1 - sure.mean()),
              "sure_accuracy": float((default.argmax(-1) == logits.labels)[sure].mean()) if sure.any() else None}
    right = f"{unsure['sure_accuracy']:.1%} right" if sure.any() else "none"
    print(f"unsure below {threshold}: {unsure['unsure']:.1%} of the faces, with the default scores; "
          f"the others: {right}")
    path = args.reliability or (Path(args.output_dir) / f"{args.split}_reliability.png" if args.output_dir else None)
    if path:
        reliability_diagram(curves, logits.labels, path, title=f"{args.model} on {args.split}")
        print(f"Reliability diagram written to {path}")
    return figures, unsure


def calibrate_command(args: argparse.Namespace) -> int:
    from fer_hf.calibration import MODES, calibrate_folder
    from fer_hf.data import load_fer_dataset
    from fer_hf.evaluation import channels_last_on_cpu

    folder = Path(args.model)
    if not (folder / "config.json").is_file():
        print(f"error: {args.model} is not a model folder (no config.json); download a Hub model first "
              "(hf download REPO_ID --local-dir FOLDER)", file=sys.stderr)
        return 1
    loaded = _load_model(args)
    if loaded is None:
        return 1
    loaded = channels_last_on_cpu(loaded[0]), loaded[1]
    dataset = load_fer_dataset(args.dataset_name, seed=args.seed)
    if args.split not in dataset:
        print(f"Split {args.split!r} not in {args.dataset_name} (it has {', '.join(dataset)}).", file=sys.stderr)
        return 2
    try:
        command = f"python -m fer_hf calibrate {args.model} --dataset_name {args.dataset_name}" + (
            f" --split {args.split}" if args.split != "validation" else "")
        report = calibrate_folder(*loaded, folder, dataset[args.split], split=args.split, batch_size=args.batch_size,
                                  command=command)
    except ValueError as error:  # the dataset's classes are not the model's, or a class has no face
        print(f"error: cannot calibrate {args.model} on {args.dataset_name} [{args.split}]: {error}", file=sys.stderr)
        return 2
    print(f"{args.model} calibrated on {args.dataset_name} [{args.split}], {report['faces']} faces "
          f"(ECE: {report['ece_bins']} bins; split half: fitted on one half, scored on the other, mean of both ways)")
    print(f"{'scores':<58} {'T':>6} {'ECE before':>10} {'after':>7} {'NLL before':>10} {'after':>7} | "
          f"{'split-half ECE before':>21} {'after':>7}")
    for mode, figures in report["modes"].items():
        halves = figures["split_half"]
        held_before = sum(h["before"]["ece"] for h in halves) / len(halves)
        held_after = sum(h["after"]["ece"] for h in halves) / len(halves)
        print(f"{MODES[mode][1]:<58} {figures['temperature']:>6.3f} {figures['before']['ece']:>10.4f} "
              f"{figures['after']['ece']:>7.4f} {figures['before']['nll']:>10.4f} {figures['after']['nll']:>7.4f} | "
              f"{held_before:>21.4f} {held_after:>7.4f}")
    unsure = report["unsure"]
    held = ", ".join(f"{h['threshold']:.2f}: {h['accuracy']:.1%} right at {h['coverage']:.1%} coverage" for h in unsure["split_half"])
    print(f"unsure below {unsure['threshold']:.2f}: the faces at or above it are {unsure['accuracy']:.1%} right, "
          f"{unsure['coverage']:.1%} of all (picked on one half, scored on the other: {held})")
    print(f"Wrote {folder / 'config.json'}, {folder / 'calibration.json'} and {folder / (args.split + '_reliability.png')}")
    if (folder / "onnx").is_dir():
        print(f"Its ONNX files now lack the temperature: python -m fer_hf export {folder} {folder} --int8")
    return 0


def push_command(args: argparse.Namespace) -> int:
    from fer_hf.hub import explain_hub_error, push_folder

    try:
        commit = push_folder(args.folder, args.repo_id, private=args.private, revision=args.revision,
                             commit_message=args.commit_message, include_onnx=not args.no_onnx)
    except Exception as error:  # token, permission, connection: one clear line; the folder is left as it was
        print(f"error: could not push {args.folder} to {args.repo_id}: {explain_hub_error(error)}\n"
              f"{args.folder} is unchanged; run the same command again once this is fixed.", file=sys.stderr)
        return 1
    print(f"Pushed {args.folder} to {args.repo_id} ({args.revision or 'main'}): commit {commit.oid}")
    print(f'Load exactly this upload with revision="{commit.oid}"')
    return 0


def push_dataset_command(args: argparse.Namespace) -> int:
    from fer_hf.hub import explain_hub_error, push_dataset

    try:
        commit = push_dataset(args.source, args.repo_id, private=args.private, revision=args.revision,
                              commit_message=args.commit_message, seed=args.seed)
    except Exception as error:  # bad data (DataError names the line), token, permission, connection
        print(f"error: could not push {args.source} to {args.repo_id}: {explain_hub_error(error)}", file=sys.stderr)
        return 1
    print(f"Pushed {args.source} to the dataset repo {args.repo_id}: commit {commit.oid}")
    print(f"Train on it with: python train.py --dataset_name {args.repo_id} ...")
    return 0


def push_space_command(args: argparse.Namespace) -> int:
    from fer_hf.hub import explain_hub_error
    from fer_hf.space import ModelUnreachableError, push_space

    try:
        commit = push_space(args.space_id, args.model, revision=args.revision, static=args.static,
                            private=args.private, commit_message=args.commit_message, feedback_repo=args.feedback_repo)
    except (ModelUnreachableError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}\nNothing was created or changed on the Hub.", file=sys.stderr)
        return 1
    except Exception as error:  # token, permission, connection: one clear line
        print(f"error: could not push the Space {args.space_id}: {explain_hub_error(error)}", file=sys.stderr)
        return 1
    kind = "static Space" if args.static else "Space"
    print(f"Pushed the {kind} {args.space_id}, serving {args.model} ({args.revision or 'main'}): commit {commit.oid}")
    return 0


def feedback_report_command(args: argparse.Namespace) -> int:
    from datasets import load_dataset

    from fer_hf.feedback import feedback_report
    from fer_hf.hub import explain_hub_error

    try:
        dataset = load_dataset(args.repo_id, revision=args.revision, split="train")
    except Exception as error:  # no such repo or no access, no connection, no data pushed yet
        print(f"error: cannot load the feedback dataset {args.repo_id}: {explain_hub_error(error)}", file=sys.stderr)
        return 1
    if "predicted" not in dataset.column_names:
        print(f"error: {args.repo_id} is not a feedback dataset (columns: {', '.join(dataset.column_names)}).",
              file=sys.stderr)
        return 1
    print(f"{args.repo_id}: {feedback_report(dataset)}")
    return 0


def export_command(args: argparse.Namespace) -> int:
    from fer_hf.export import export_model

    loaded = _load_model(args)
    if loaded is None:
        return 1
    model, processor = loaded
    try:
        written = export_model(model, processor, args.output_dir, int8=args.int8)
    except ValueError as error:  # a model torch.export cannot trace, or int8 of a model that is not a FER CNN
        print(f"error: cannot export {args.model}: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(f"Wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def predict_command(args: argparse.Namespace) -> int:
    from fer_hf.predict import predict_command as run_predict

    return run_predict(args)


def _add_repo_arguments(command: argparse.ArgumentParser, kind: str, commit_message: str | None) -> None:
    """The arguments of an upload: the repo, its visibility, the branch and the commit message."""
    command.add_argument("repo_id", help=f"NAMESPACE/NAME of the {kind} repo (created if missing)")
    command.add_argument("--private", action="store_true",
                         help="create the repo private (an existing one keeps its visibility)")
    command.add_argument("--revision", default=None, help="branch to commit to (created if missing)")
    command.add_argument("--commit_message", default=commit_message)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_hf", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    evaluate = commands.add_parser("evaluate", help="score a model on a dataset split")
    evaluate.add_argument("model", help="model folder or Hub repo id")
    evaluate.add_argument("--dataset_name", required=True, help="any source train.py accepts")
    evaluate.add_argument("--split", default="validation")
    evaluate.add_argument("--labels", nargs="+", default=None,
                          help="score only these classes, on their rows (e.g. --labels happy sad: a 7-class model by "
                               "its happy-vs-sad scores, as predict --labels gives them)")
    evaluate.add_argument("--revision", default=None, help="Hub revision of the model")
    evaluate.add_argument("--output_dir", default=None, help="write the report, confusion matrix and logits here")
    evaluate.add_argument("--batch_size", type=int, default=256)
    evaluate.add_argument("--flip_tta", action="store_true", help="average each face with its mirror image")
    evaluate.add_argument("--crop_faces", action="store_true",
                          help="score photos by their largest detected face, cropped as the demo crops it")
    evaluate.add_argument("--align_faces", type=string_to_bool, nargs="?", const=True, default=None,
                          metavar="{true,false}", help="with --crop_faces: turn each face's eyes level before "
                          "cropping it (default: as the model's processor says, face_align)")
    evaluate.add_argument("--seed", type=int, default=42, help="seed of a photo folder's split")
    evaluate.add_argument("--json", action="store_true", help="also print the metrics as one JSON line")
    evaluate.add_argument("--reliability", default=None, metavar="OUT.png",
                          help="draw the reliability diagram here (default: in --output_dir, if given)")
    evaluate.set_defaults(handler=evaluate_command)

    calibrate = commands.add_parser("calibrate", help="fit the temperatures and unsure threshold of a model folder")
    calibrate.add_argument("model", help="model folder (its config.json is rewritten; the weights are not touched)")
    calibrate.add_argument("--dataset_name", required=True, help="any source train.py accepts, with the model's classes")
    calibrate.add_argument("--split", default="validation", help="held-out faces to fit on (default: PublicTest)")
    calibrate.add_argument("--batch_size", type=int, default=256)
    calibrate.add_argument("--seed", type=int, default=42, help="seed of a photo folder's split")
    calibrate.set_defaults(handler=calibrate_command, revision=None)  # a local folder: no Hub revision

    push = commands.add_parser("push", help="upload a model folder to the Hub")
    push.add_argument("folder", help="a folder written by train.py (model.safetensors, run_info.json, ...)")
    _add_repo_arguments(push, "model", commit_message="Upload model with fer-hf")
    push.add_argument("--no_onnx", action="store_true", help="leave out the folder's onnx/ files")
    push.set_defaults(handler=push_command)

    push_data = commands.add_parser("push-dataset", help="upload a dataset source as parquet to the Hub")
    push_data.add_argument("source", help="any source train.py accepts, e.g. fer2013.csv")
    _add_repo_arguments(push_data, "dataset", commit_message=None)
    push_data.add_argument("--seed", type=int, default=42, help="seed of a photo folder's split")
    push_data.set_defaults(handler=push_dataset_command)

    space = commands.add_parser("push-space", help="make or update a Gradio Space that serves a Hub model")
    space.add_argument("space_id", help="NAMESPACE/NAME of the Space (created if missing)")
    space.add_argument("--model", required=True, help="Hub repo id of the model the Space serves (checked first)")
    space.add_argument("--revision", default=None, help="the model's branch, tag or commit the Space loads (default: main)")
    space.add_argument("--static", action="store_true",
                       help="push the in-browser page alone as a static Space (sdk: static): no server, the model's "
                            "ONNX file runs in each visitor's browser")
    space.add_argument("--private", action="store_true",
                       help="create the Space private (an existing one keeps its visibility)")
    space.add_argument("--commit_message", default="Update the demo with fer-hf")
    space.add_argument("--feedback_repo", default=None, metavar="NAMESPACE/NAME",
                       help="let visitors send corrections to this private dataset repo (the Space gets the "
                            "variable FER_HF_FEEDBACK_REPO and your token as its secret HF_TOKEN)")
    space.set_defaults(handler=push_space_command)

    export = commands.add_parser("export", help="write ONNX files of a model (transformers.js layout)")
    export.add_argument("model", help="model folder or Hub repo id")
    export.add_argument("output_dir", help="folder to write (onnx/ beside a copy of the model; may be the model folder)")
    export.add_argument("--int8", action="store_true",
                        help="also write onnx/model_quantized.onnx (int8; FER CNNs only)")
    export.add_argument("--revision", default=None, help="Hub revision of the model")
    export.set_defaults(handler=export_command)

    predict = commands.add_parser("predict", help="label the faces in images, videos, folders, cameras and streams")
    predict.add_argument("paths", nargs="+", metavar="PATH",
                         help="image or video files, folders searched recursively, cameras (0, /dev/video0) or "
                              "stream URLs (rtsp://, http://, udp://...) labelled in real time")
    predict.add_argument("--model", default=None,
                         help="model folder or Hub repo id (default: $FER_HF_MODEL, else models/fer2013-cnn, ...)")
    predict.add_argument("--revision", default=None, help="Hub revision of the model")
    predict.add_argument("--output", default=None, help="results.csv or results.json (default: CSV on stdout)")
    predict.add_argument("--batch_size", type=int, default=16, help="photos read and labelled together")
    predict.add_argument("--whole_image", action="store_true", help="classify the whole photo when no face is found")
    predict.add_argument("--labels", nargs="+", default=None,
                         help="report only these classes, their scores renormalised (e.g. --labels happy sad: "
                              "a 7-class model's happy-vs-sad view)")
    predict.add_argument("--flip_tta", type=string_to_bool, nargs="?", const=True, default=True, metavar="{true,false}",
                         help="average the scores of each face the model is unsure of (top two classes within "
                              "0.3) with its mirror image's (default: true)")
    predict.add_argument("--align_faces", type=string_to_bool, nargs="?", const=True, default=None,
                         metavar="{true,false}", help="turn each face's eyes level before cropping it (default: as "
                         "the model's processor says, face_align in its preprocessor_config.json)")
    predict.add_argument("--every", type=int, default=1, help="videos: analyse every N-th frame (default: every frame)")
    predict.add_argument("--smoothing", type=float, default=None, metavar="SECONDS",
                         help="videos and streams: time constant of each face's score smoothing (default: 0.2); "
                              "0 for each frame's own scores")
    predict.add_argument("--annotate", default=None, metavar="OUT.mp4",
                         help="videos: write the video with faces boxed and labelled (OUT_<video>.mp4 for several)")
    predict.add_argument("--plot", default=None, metavar="OUT.png",
                         help="videos and streams: write the expression-over-time chart per face track "
                              "(OUT_<video>.png for several)")
    predict.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                         help="cameras and streams: stop after this many seconds (default: when the source ends or "
                              "at Ctrl-C)")
    predict.add_argument("--explain", default=None, metavar="DIR",
                         help="photos: write one PNG per face to DIR, its heat map (Occlusion) over the face: warm "
                              "where the label came from (needs captum)")
    predict.add_argument("--explain_method", choices=("occlusion", "grad-cam"), default="occlusion",
                         help="with --explain: occlusion (default) or grad-cam, about 15x faster and less faithful "
                              "(benchmarks/results/explain.md)")
    predict.add_argument("--target", default=None, metavar="LABEL",
                         help="with --explain: the heat maps show where this label came from (default: each face's own)")
    predict.set_defaults(handler=predict_command)

    report = commands.add_parser("feedback-report", help="what the demo's users corrected: counts per label and "
                                 "the predicted -> corrected table")
    report.add_argument("repo_id", help="NAMESPACE/NAME of the feedback dataset (the demo's --feedback_repo)")
    report.add_argument("--revision", default=None, help="the dataset's branch, tag or commit (default: main)")
    report.set_defaults(handler=feedback_report_command)

    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
