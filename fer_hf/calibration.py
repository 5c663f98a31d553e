"""Calibrated scores: temperature scaling fitted on held-out faces, the figures that judge it, and "unsure".

    from fer_hf.calibration import calibrate_model

    report = calibrate_model(model, processor, dataset["validation"])   # sets model.config's temperatures
    model.save_pretrained(folder)                                          # and `unsure_threshold`

Scores are made three ways (`MODES`): one view of each face; a face mirror-averaged where its own top two
classes are within FLIP_MARGIN (the default of the pipeline, the recognizer, the demo and `predict`); every
face mirror-averaged. Each gets its own temperature T, fitted by minimising the negative log-likelihood of
softmax(log p / T) over the held-out faces (p: the uncalibrated scores); T only divides log-scores, so labels
and accuracy do not change. A face is "unsure" when its calibrated top score is below `unsure_threshold`:
the lowest threshold at which the faces at or above it are right at least UNSURE_ACCURACY of the time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import brier_score_loss, log_loss

from .evaluation import model_logits, pixel_batches
from .model.pipeline_fer import FLIP_MARGIN, score_temperature, temper

# Way of making scores -> (FerConfig field of its temperature, name in reports).
MODES = {
    "single": ("temperature", "single view"),
    "flip": ("flip_temperature", f"mirrored where unsure (top two within {FLIP_MARGIN}; the default)"),
    "flip_all": ("flip_all_temperature", "every face mirrored"),
}
ECE_BINS = 15
# The faces at or above the unsure threshold are right at least this often (on the faces it was picked on).
UNSURE_ACCURACY = 0.85
# Thresholds tried, lowest first.
THRESHOLD_GRID = np.round(np.arange(0.0, 1.0, 0.01), 2)


@dataclass
class ViewLogits:
    """Uncalibrated logits of each face (faces x classes) and of its mirror image, and the true class indices."""

    own: np.ndarray
    mirror: np.ndarray
    labels: np.ndarray

    def probabilities(self, mode: str, flip_margin: float = FLIP_MARGIN) -> np.ndarray:
        """Uncalibrated scores (faces x classes, float64) made the way `mode` says, as the face pipeline makes them."""
        own = _softmax(self.own)
        if mode == "single":
            return own
        averaged = (own + _softmax(self.mirror)) / 2
        if mode == "flip_all":
            return averaged
        top_two = np.sort(own, axis=-1)[:, -2:]
        return np.where((top_two[:, 1] - top_two[:, 0] < flip_margin)[:, None], averaged, own)

    def save(self, path: str | Path) -> None:
        """Writes the three arrays to `path` (.npz: `own`, `mirror`, `labels`), for analysis without the model."""
        np.savez(path, own=self.own, mirror=self.mirror, labels=self.labels)

    @classmethod
    def load(cls, path: str | Path) -> ViewLogits:
        with np.load(path) as saved:
            return cls(saved["own"], saved["mirror"], saved["labels"])


def _softmax(logits: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.as_tensor(logits, dtype=torch.float64), dim=-1).numpy()


def check_labels(model: Any, dataset: Any, split: str = "the split") -> list[str]:
    """The model's labels, after checking that `dataset` (a `label` ClassLabel column) has exactly those classes,
    each on at least one row: a temperature fitted without some class would not hold for it.

    Raises:
        ValueError: naming the classes the dataset lacks, has in addition, or has no rows of.
    """
    model_labels = [str(model.config.id2label[i]) for i in range(model.config.num_labels)]
    names = list(dataset.features["label"].names)
    missing, extra = [n for n in model_labels if n not in names], [n for n in names if n not in model_labels]
    if missing or extra:
        raise ValueError(
            f"The dataset's labels {names} differ from the model's {model_labels}: "
            + "; ".join(part for part in (f"missing {missing}" if missing else "",
                                          f"not the model's {extra}" if extra else "") if part)
            + ". Calibrate on data with the model's classes.")
    counts = np.bincount(np.asarray(dataset["label"]), minlength=len(names))
    empty = [names[i] for i in range(len(names)) if counts[i] == 0]
    if empty:
        raise ValueError(f"{split} has no face of the class(es) {empty} (of the model's {model_labels}); "
                         "calibrate on a split with every class.")
    return model_labels


@torch.inference_mode()
def view_logits(model: Any, image_processor: Any, dataset: Any, *, batch_size: int = 256) -> ViewLogits:
    """The uncalibrated logits of every row of `dataset` and of its mirror image, and the rows' class indices in
    the model's label order (by name). The model's own temperature is taken back off its logits."""
    model.eval()
    names = dataset.features["label"].names
    to_model = {i: model.config.label2id[name] for i, name in enumerate(names)}
    temperature = getattr(model.config, "temperature", 1.0)
    own, mirror = [], []
    for pixel_values in pixel_batches(model, image_processor, dataset, batch_size=batch_size):
        own.append(model_logits(model, pixel_values).float().cpu().numpy() * temperature)
        mirror.append(model_logits(model, pixel_values.flip(-1)).float().cpu().numpy() * temperature)
    labels = np.array([to_model[label] for label in dataset["label"]], dtype=np.int64)
    return ViewLogits(np.concatenate(own).astype(np.float64), np.concatenate(mirror).astype(np.float64), labels)


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the negative log-likelihood of softmax(log(probabilities) / T) (LBFGS on log T)."""
    log_p = torch.as_tensor(np.log(np.clip(probabilities, 1e-300, None)), dtype=torch.float64)
    targets = torch.as_tensor(labels)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(log_p / log_t.exp(), targets)
        loss.backward()
        return loss

    optimizer.step(closure)
    return round(float(log_t.detach().exp()), 4)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE: the faces' share-weighted gap between accuracy and mean top score in `bins` equal-width bins."""
    confidence, right = probabilities.max(-1), probabilities.argmax(-1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    gaps = [abs(right[which == b].mean() - confidence[which == b].mean()) * (which == b).sum()
            for b in range(bins) if (which == b).any()]
    return float(sum(gaps) / len(labels))


def calibration_metrics(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, ECE (ECE_BINS bins), negative log-likelihood and multiclass Brier score (0..2) of scores."""
    classes = list(range(probabilities.shape[-1]))
    probabilities = probabilities / probabilities.sum(-1, keepdims=True)  # float64 sums: float32 scores are off by 1e-7
    return {
        "accuracy": float((probabilities.argmax(-1) == labels).mean()),
        "ece": expected_calibration_error(probabilities, labels),
        "nll": float(log_loss(labels, probabilities, labels=classes)),
        "brier": float(brier_score_loss(labels, probabilities, labels=classes)),
    }


def unsure_threshold(probabilities: np.ndarray, labels: np.ndarray, accuracy: float = UNSURE_ACCURACY) -> float:
    """The lowest threshold of THRESHOLD_GRID at which the faces whose top score is at or above it are right at least
    `accuracy` of the time (0 if every face's is; the grid's last if none is)."""
    confidence, right = probabilities.max(-1), probabilities.argmax(-1) == labels
    for threshold in THRESHOLD_GRID:
        kept = confidence >= threshold
        if kept.any() and right[kept].mean() >= accuracy:
            return float(threshold)
    return float(THRESHOLD_GRID[-1])


def coverage_at(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """The share of faces at or above `threshold` (coverage) and how often those are right (accuracy; nan if none)."""
    kept = probabilities.max(-1) >= threshold
    right = probabilities.argmax(-1) == labels
    return {"coverage": float(kept.mean()), "accuracy": float(right[kept].mean()) if kept.any() else float("nan")}


def calibrated_probabilities(logits: ViewLogits, mode: str, config: Any) -> np.ndarray:
    """Scores made the way `mode` says, with the temperature `config` holds for it: what the product reports."""
    mirrored, margin = mode != "single", 1.0 if mode == "flip_all" else FLIP_MARGIN
    return temper(logits.probabilities(mode), score_temperature(config, mirrored, margin)).astype(np.float64)


def calibrate_model(model: Any, image_processor: Any, dataset: Any, *, batch_size: int = 256, seed: int = 0,
                    split: str = "the split") -> dict[str, Any]:
    """Fits the three temperatures and the unsure threshold on `dataset` and stores them in `model.config`.

    Returns:
        The report: per mode, the temperature and the figures before and after on all rows, and a split-half
        check (fit on a seeded half, score the other half, both ways) so in-sample figures fool nobody; the
        threshold, and the accuracy and coverage at it (on all rows, and picked on one half, scored on the other).

    Raises:
        ValueError: the dataset's classes are not the model's, or a class has no row (check_labels).
    """
    check_labels(model, dataset, split)
    return fit_calibration(model.config, view_logits(model, image_processor, dataset, batch_size=batch_size), seed=seed)


def fit_calibration(config: Any, logits: ViewLogits, *, seed: int = 0) -> dict[str, Any]:
    """`calibrate_model` on logits already computed: sets `config`'s temperatures and threshold, returns the report."""
    halves = np.array_split(np.random.default_rng(seed).permutation(len(logits.labels)), 2)
    report: dict[str, Any] = {"faces": len(logits.labels), "ece_bins": ECE_BINS, "modes": {}}
    for mode, (field, _) in MODES.items():
        raw = logits.probabilities(mode)
        temperature = fit_temperature(raw, logits.labels)
        setattr(config, field, temperature)
        held_out = []
        for fit_rows, score_rows in (halves, halves[::-1]):
            fitted = fit_temperature(raw[fit_rows], logits.labels[fit_rows])
            held_out.append({
                "temperature": fitted,
                "before": calibration_metrics(raw[score_rows], logits.labels[score_rows]),
                "after": calibration_metrics(temper(raw[score_rows], fitted).astype(np.float64), logits.labels[score_rows]),
            })
        report["modes"][mode] = {
            "temperature": temperature,
            "before": calibration_metrics(raw, logits.labels),
            "after": calibration_metrics(temper(raw, temperature).astype(np.float64), logits.labels),
            "split_half": held_out,
        }
    # The threshold is picked on the default scores (mirrored where unsure), calibrated.
    default = calibrated_probabilities(logits, "flip", config)
    config.unsure_threshold = unsure_threshold(default, logits.labels)
    split_half = []
    for pick_rows, score_rows in (halves, halves[::-1]):
        picked = unsure_threshold(default[pick_rows], logits.labels[pick_rows])
        split_half.append({"threshold": picked, **coverage_at(default[score_rows], logits.labels[score_rows], picked)})
    report["unsure"] = {"threshold": config.unsure_threshold, "target_accuracy": UNSURE_ACCURACY,
                        **coverage_at(default, logits.labels, config.unsure_threshold), "split_half": split_half}
    return report


def calibrate_folder(model: Any, image_processor: Any, folder: str | Path, dataset: Any, *, split: str = "validation",
                     batch_size: int = 256, seed: int = 0, command: str | None = None) -> dict[str, Any]:
    """Calibrates `model`, loaded from `folder` (fer_hf.hub.load_classifier), on `dataset` and writes the folder's
    config.json (temperatures and threshold; the weights are not touched), `calibration.json` (the report, which
    the model card shows) and `{split}_reliability.png` (before and after, the default scores)."""
    folder, processor = Path(folder), image_processor
    check_labels(model, dataset, split)
    logits = view_logits(model, processor, dataset, batch_size=batch_size)
    from .inference import cpu_name

    report = {"split": split, "command": command or f"python -m fer_hf calibrate {folder} --split {split}",
              "machine": cpu_name(), **fit_calibration(model.config, logits, seed=seed)}
    model.config.save_pretrained(folder)
    (folder / "calibration.json").write_text(json.dumps(report, indent=2) + "\n")
    reliability_diagram({"uncalibrated": logits.probabilities("flip"),
                         "calibrated": calibrated_probabilities(logits, "flip", model.config)},
                        logits.labels, folder / f"{split}_reliability.png",
                        title=f"{folder.name} on {split}: default scores (mirrored where unsure)")
    return report


def reliability_diagram(curves: dict[str, np.ndarray], labels: np.ndarray, path: str | Path, title: str = "") -> None:
    """Saves a reliability diagram: per named set of scores, accuracy against mean top score in ECE_BINS bins,
    with the share of faces per bin below."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    fig, (ax, counts) = plt.subplots(2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="perfectly calibrated")
    edges = np.linspace(0, 1, ECE_BINS + 1)
    for name, probabilities in curves.items():
        confidence, right = probabilities.max(-1), probabilities.argmax(-1) == labels
        which = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
        used = [b for b in range(ECE_BINS) if (which == b).any()]
        ece = expected_calibration_error(probabilities, labels)
        ax.plot([confidence[which == b].mean() for b in used], [right[which == b].mean() for b in used], "o-",
                label=f"{name} (ECE {ece:.3f})")
        counts.stairs(np.bincount(which, minlength=ECE_BINS) / len(labels), edges, label=name)
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title, fontsize=9)
    counts.set_xlabel(f"top score ({ECE_BINS} equal-width bins)")
    counts.set_ylabel("share of faces")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = [
    "ECE_BINS",
    "MODES",
    "THRESHOLD_GRID",
    "UNSURE_ACCURACY",
    "ViewLogits",
    "calibrate_folder",
    "calibrate_model",
    "calibrated_probabilities",
    "calibration_metrics",
    "check_labels",
    "coverage_at",
    "expected_calibration_error",
    "fit_calibration",
    "fit_temperature",
    "reliability_diagram",
    "unsure_threshold",
    "view_logits",
]
