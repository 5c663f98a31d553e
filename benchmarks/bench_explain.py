"""Are the heat maps faithful? Deletion and model randomisation on PublicTest faces, and their time per face.

For each method (Grad-CAM on the map heat maps use and on a coarser one, Occlusion; fer_hf.model.heatmaps) and
each face, the map is made for the class the model predicts. (a) Deletion: the 10% of the face's pixels with the highest attribution are replaced by the
face's mean pixel; the map passes on a face when that lowers the predicted class's probability more than
replacing a random 10% does (the mean of 10 random draws). The method passes when it does so on at least 75%
of the faces. (b) Model randomisation: maps of the same faces and classes from a model with re-initialised
weights; the method passes when the mean Spearman rank correlation with the trained model's maps is below 0.3
(a map that survives randomisation shows the image, not the model). Time: ms per face, maps made one face at
a time (a photo with one face), against one forward pass of the same face in the same run.

    python benchmarks/bench_explain.py [--model models/fer2013-cnn] [--faces 300] [--quick]

Writes benchmarks/results/explain.md (--quick: 40 faces, to benchmarks/results/explain_quick.md).
Needs ../shared/data/fer2013/publictest.parquet and captum.
"""

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from common import machine, write_table  # first: puts the repo root on sys.path for fer_hf
import fer_hf  # noqa: F401  (registers the FER CNN)
from fer_hf.faithfulness import DELETION_FRACTION, RANDOM_DRAWS, deletion_test, randomised_copy, rank_correlations
from fer_hf.model.heatmaps import MIN_SIDE, OCCLUSION_STRIDE, OCCLUSION_WINDOW, face_heatmaps, gradcam_layer, model_shell
from transformers import AutoImageProcessor, AutoModelForImageClassification

ROOT = Path(__file__).resolve().parents[1]
PUBLICTEST = ROOT.parent / "shared" / "data" / "fer2013" / "publictest.parquet"
DELETION_PASS = 0.75  # share of faces on which the map must beat random pixels
RANDOMISATION_PASS = 0.3  # mean rank correlation with a re-initialised model's maps must stay below this
BATCH = 16  # faces per call: occlusion then puts 16 occluded copies of each in a forward pass
# Grad-CAM is also measured on the last map with half MIN_SIDE's cells a side (fer2013-cnn's last, 6x6).
COARSER = MIN_SIDE // 2


def per_face_ms(function, pixel_values: torch.Tensor, faces: int) -> float:
    """Median milliseconds of `function(one face)` over the first `faces` faces."""
    times = []
    for face in pixel_values[:faces]:
        start = time.perf_counter()
        function(face[None])
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def batched_maps(model, pixel_values: torch.Tensor, targets: list[int], method: str, min_side: int) -> np.ndarray:
    return np.concatenate([face_heatmaps(model, pixel_values[i : i + BATCH], targets[i : i + BATCH], method, min_side)
                           for i in range(0, len(pixel_values), BATCH)])


def _side(model, layer, example: torch.Tensor) -> int:
    """The height of `layer`'s output for `example`."""
    sides = []
    handle = layer.register_forward_hook(lambda _module, _inputs, output: sides.append(output.shape[-2]))
    try:
        with torch.no_grad():
            model(pixel_values=example)
    finally:
        handle.remove()
    return sides[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "models" / "fer2013-cnn"))
    parser.add_argument("--faces", type=int, default=300, help="PublicTest faces, drawn at random (seeded)")
    parser.add_argument("--timed_faces", type=int, default=20, help="faces timed one at a time per method")
    parser.add_argument("--quick", action="store_true", help="40 faces, 5 timed: a check that it runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    if args.quick:
        args.faces, args.timed_faces = 40, 5
    output = args.output or ROOT / "benchmarks" / "results" / ("explain_quick.md" if args.quick else "explain.md")
    from datasets import load_dataset

    load_average = os.getloadavg()[0]
    test = load_dataset("parquet", data_files=str(PUBLICTEST), split="train")
    chosen = np.sort(np.random.default_rng(args.seed).choice(len(test), min(args.faces, len(test)), replace=False))
    faces = [test[int(i)]["image"] for i in chosen]
    model = AutoModelForImageClassification.from_pretrained(args.model).eval()
    processor = AutoImageProcessor.from_pretrained(args.model)
    mode = "L" if model.config.num_channels == 1 else "RGB"
    pixel_values = processor(images=[face.convert(mode) for face in faces], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        targets = torch.cat([model(pixel_values=pixel_values[i : i + BATCH]).logits.argmax(-1)
                             for i in range(0, len(pixel_values), BATCH)]).tolist()
    randomised = randomised_copy(model, seed=args.seed)
    shell = model_shell(model)
    layer = gradcam_layer(shell, pixel_values[:1])
    last = gradcam_layer(shell, pixel_values[:1], COARSER)
    names = {module: name for name, module in shell.named_modules()}
    layer_name, last_name = (f"{names[module]} ({side}x{side})" for module, side in
                             ((layer, _side(shell, layer, pixel_values[:1])), (last, _side(shell, last, pixel_values[:1]))))

    with torch.no_grad():
        forward_ms = per_face_ms(lambda face: model(pixel_values=face), pixel_values, args.timed_faces)
    rows = []
    # Grad-CAM on the map the heat maps use (the last with MIN_SIDE cells a side), and on a coarser one.
    variants = [("grad-cam", MIN_SIDE, f"grad-cam, {layer_name}"), ("grad-cam", COARSER, f"grad-cam, {last_name}"),
                ("occlusion", MIN_SIDE, f"occlusion {OCCLUSION_WINDOW}x{OCCLUSION_WINDOW}, stride {OCCLUSION_STRIDE}")]
    for method, min_side, name in variants:
        maps = batched_maps(model, pixel_values, targets, method, min_side)
        deletion = deletion_test(model, pixel_values, maps, targets, seed=args.seed)
        beats = float(deletion.beats_random.mean())
        correlations = rank_correlations(maps, batched_maps(randomised, pixel_values, targets, method, min_side))
        defined = correlations[~np.isnan(correlations)]
        mean_rho = float(defined.mean()) if len(defined) else float("nan")
        ms = per_face_ms(lambda face: face_heatmaps(model, face, targets[:1], method, min_side), pixel_values,
                         args.timed_faces)
        rows.append(
            f"| {name} | {beats:.1%} ({'pass' if beats >= DELETION_PASS else 'fail'}) | "
            f"{deletion.top.mean():.3f} | {deletion.random.mean():.3f} | {deletion.bottom.mean():.3f} | "
            f"{mean_rho:.3f} ({'pass' if mean_rho < RANDOMISATION_PASS else 'fail'}) | "
            f"{np.median(defined):.3f} | {len(correlations) - len(defined)} | {ms:.1f} | {ms / forward_ms:.0f}x |"
        )
    write_table(output, [
        "# Heat maps: faithfulness and time per face",
        "",
        f"Command: `python benchmarks/bench_explain.py {shlex.join(sys.argv[1:])}`  ",
        f"{machine()}; load average {load_average:.1f} when it started; model {Path(args.model).name} "
        f"(eager); {len(faces)} PublicTest faces drawn at random (seed {args.seed}); "
        "each map for the class the model predicts.",
        "",
        f"- **Deletion**: the {DELETION_FRACTION:.0%} of a face's pixels with the highest attribution replaced by "
        f"the face's mean; a face counts when its predicted class loses more probability than when a random "
        f"{DELETION_FRACTION:.0%} is replaced (mean of {RANDOM_DRAWS} draws). Pass: at least {DELETION_PASS:.0%} "
        "of the faces. The least-attributed 10% replaced instead: the drop a map's order should beat.",
        "- **Randomisation**: Spearman rank correlation of each face's map with the map a model with "
        f"re-initialised weights gives for the same class. Pass: mean below {RANDOMISATION_PASS}. Maps that are "
        "all zero (nothing raises the class) have no rank correlation and are left out (counted).",
        f"- **Time**: median ms per face, one face at a time, and as a multiple of one forward pass of a face "
        f"({forward_ms:.1f} ms in this run).",
        "",
        "| method (layer) | deletion: faces where top pixels beat random | mean drop: top pixels | random pixels "
        "| bottom pixels | randomisation: mean rank corr. | median | constant maps | ms per face | x forward |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])


if __name__ == "__main__":
    main()
