"""Does a happy/sad model beat the 7-class default's own happy-vs-sad scores? The rule for bundling one.

A second bundled model earns its place only if it beats the 7-class default restricted to happy and sad
(`--labels happy sad`: its two probabilities renormalised), at the same mirror setting, on both:

- PublicTest's happy and sad faces (1,548): `python -m fer_hf evaluate MODEL --dataset_name
  ../shared/data/fer2013 --labels happy sad [--flip_tta]`;
- the held-out test photos of happy_sad (46), through face detection and cropping: `python -m fer_hf
  evaluate MODEL --dataset_name ../shared/data/happy_sad --split test --crop_faces --labels happy sad
  [--flip_tta]`.

The decision is taken mirror-averaged, the setting the demo and `predict` run by default; the single
view is shown beside it. A tie is not a win. Each figure is that CLI command's own output (run here
in-process with --json).

    python benchmarks/happy_sad_decision.py --candidates PATH/happy-sad-model

Writes benchmarks/results/happy_sad_decision.md.
"""

import argparse
import contextlib
import io
import json

from common import ROOT, machine, write_table
from fer_hf.__main__ import main as cli

DATA = ROOT.parent / "shared" / "data"
LABELS = ["happy", "sad"]
# (what is scored, the evaluate arguments after the model)
SETS = [
    ("PublicTest happy/sad faces", ["--dataset_name", str(DATA / "fer2013")]),
    ("happy_sad test photos", ["--dataset_name", str(DATA / "happy_sad"), "--split", "test", "--crop_faces"]),
]


def evaluate(model: str, arguments: list[str], flip_tta: bool) -> dict:
    """The metrics `python -m fer_hf evaluate MODEL ARGUMENTS --labels happy sad [--flip_tta] --json` prints."""
    command = ["evaluate", model, *arguments, "--labels", *LABELS, *(["--flip_tta"] if flip_tta else []), "--json"]
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        if cli(command) != 0:
            raise SystemExit(f"python -m fer_hf {' '.join(command)} failed")
    return json.loads(printed.getvalue().strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="models/fer2013-cnn", help="the 7-class default")
    parser.add_argument("--candidates", nargs="*", default=[], help="happy/sad models that would be bundled beside it")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "happy_sad_decision.md"))
    args = parser.parse_args()

    scores = {}  # (model, set, flip_tta) -> metrics
    rows = []
    for model in [args.baseline, *args.candidates]:
        for name, arguments in SETS:
            for flip_tta in (False, True):
                metrics = scores[model, name, flip_tta] = evaluate(model, arguments, flip_tta)
                right = round(metrics["accuracy"] * metrics["samples"])
                rows.append(f"| `{model}` | {name} | {'mirror-averaged' if flip_tta else 'single view'} | "
                            f"{metrics['accuracy']:.2%} ({right:,} of {metrics['samples']:,}) | {metrics['macro_f1']:.3f} |")
                print(rows[-1], flush=True)

    decisions = []
    for candidate in args.candidates:
        wins = {name: scores[candidate, name, True]["accuracy"] > scores[args.baseline, name, True]["accuracy"]
                for name, _ in SETS}
        verdict = "keep it" if all(wins.values()) else "do not bundle it"
        decisions.append(f"- `{candidate}` against `{args.baseline}` (mirror-averaged): "
                         + ", ".join(f"{name} {'better' if won else 'not better'}" for name, won in wins.items())
                         + f": **{verdict}**.")

    candidates = f" --candidates {' '.join(args.candidates)}" if args.candidates else ""
    write_table(args.output, [
        "# One model or two: a happy/sad model against the 7-class default's happy-vs-sad scores",
        "",
        f"Command: `python benchmarks/happy_sad_decision.py --baseline {args.baseline}{candidates}`  ",
        f"{machine()}.",
        "",
        "Each row is `python -m fer_hf evaluate MODEL --labels happy sad [--flip_tta]` on PublicTest "
        "(`--dataset_name ../shared/data/fer2013`) or on the held-out photos (`--dataset_name "
        "../shared/data/happy_sad --split test --crop_faces`, each photo's largest face cropped with the "
        "model's margin). A 7-class model is scored by its happy and sad probabilities renormalised.",
        "",
        "| model | scored on | view | accuracy (right) | macro-F1 |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "Rule: a happy/sad model is bundled only if, mirror-averaged, it beats the baseline on both; a tie is not a win.",
        "",
        *(decisions or ["- No candidate given."]),
    ])


if __name__ == "__main__":
    main()
