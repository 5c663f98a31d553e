"""Metrics, batched prediction, batch-norm recompute and the reports a training or evaluation run leaves behind.

`evaluate.load("accuracy")` fetches the metric's script from the Hub at run time, which fails
offline (and on this project's machines). `FerMetrics` is the same computation as the Hub's
`accuracy` and `f1` (scikit-learn underneath) packaged as an `evaluate.Metric`, so it works anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import evaluate
import numpy as np
import torch
from sklearn.metrics import classification_report, confusion_matrix, f1_score

from fer_hf.model.heatmaps import model_logits


class FerMetrics(evaluate.Metric):
    """Accuracy and macro-F1 of class predictions."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Accuracy and macro-averaged F1 of single-label classification.",
            citation="",
            inputs_description="predictions and references: class indices.",
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references) -> dict[str, float]:
        predictions, references = np.asarray(predictions), np.asarray(references)
        return {
            "accuracy": float((predictions == references).mean()),
            "macro_f1": float(f1_score(references, predictions, average="macro", zero_division=0)),
        }


_METRIC = FerMetrics()


def compute_metrics(eval_pred) -> dict[str, float]:
    """`Trainer`'s `compute_metrics`: logits and labels in, accuracy and macro-F1 out."""
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    return _METRIC.compute(predictions=np.argmax(logits, axis=-1), references=labels)


def channels_last_on_cpu(model):
    """Puts a CPU model's weights in channels_last memory, in place, and returns it: fp32 passes over a whole split
    then run 1.38-1.51x faster in 64-row passes (benchmarks/results/forward_rows.md), with logits within 1e-5 of
    the default layout's and, on all of PublicTest, the same top classes. Only for a model that nothing else is
    running: its parameters are replaced (heat maps' `model_shell` gives its own shell channels_last copies)."""
    if next(model.parameters()).device.type == "cpu":
        model.to(memory_format=torch.channels_last)
    return model


def pixel_batches(model, image_processor, dataset, *, batch_size: int = 256):
    """Yields the `pixel_values` of `dataset`'s images (an `image` column), `batch_size` rows at a time,
    preprocessed as evaluation sees them (no augmentation) and on the model's device and dtype."""
    grayscale = getattr(model.config, "num_channels", 3) == 1
    for start in range(0, len(dataset), batch_size):
        images = [image.convert("L" if grayscale else "RGB") for image in dataset[start : start + batch_size]["image"]]
        yield image_processor(images, return_tensors="pt")["pixel_values"].to(model.device, model.dtype)


# Ten-crop views are cut from the face enlarged by 1 / TEN_CROP_SCALE: each shows about 90% of its side,
# as the training crops (0.8 to 1.0 of the side, resized back) show it.
TEN_CROP_SCALE = 0.9


def ten_crops(pixel_values: torch.Tensor, scale: float = TEN_CROP_SCALE) -> list[torch.Tensor]:
    """The ten test-time views of a batch: the batch enlarged (bilinear) by 1 / `scale`, cut back to its size
    at the four corners and the centre, and those five views mirrored."""
    height, width = pixel_values.shape[-2:]
    enlarged = torch.nn.functional.interpolate(pixel_values, size=(round(height / scale), round(width / scale)),
                                               mode="bilinear", align_corners=False)
    spare_y, spare_x = enlarged.shape[-2] - height, enlarged.shape[-1] - width
    corners = [(0, 0), (0, spare_x), (spare_y, 0), (spare_y, spare_x), (spare_y // 2, spare_x // 2)]
    crops = [enlarged[..., top: top + height, left: left + width] for top, left in corners]
    return crops + [crop.flip(-1) for crop in crops]


@torch.inference_mode()
def predict_logits(model, image_processor, dataset, *, batch_size: int = 256, flip_tta: bool = False,
                   ten_crop: bool = False) -> np.ndarray:
    """Logits of `model` over every row of `dataset` (an `image` column), in batches.

    Args:
        flip_tta: average the logits of each image and its mirror (test-time augmentation).
        ten_crop: average the class probabilities of the ten views of `ten_crops` (mirrors included);
            the log of that average is returned, so a softmax of the result gives it back.
    """
    model.eval()
    outputs = []
    for pixel_values in pixel_batches(model, image_processor, dataset, batch_size=batch_size):
        if ten_crop:
            views = ten_crops(pixel_values)
            probabilities = sum(model_logits(model, view).float().softmax(-1) for view in views) / len(views)
            outputs.append(probabilities.log().cpu().numpy())
            continue
        logits = model_logits(model, pixel_values)
        if flip_tta:
            logits = (logits + model_logits(model, pixel_values.flip(-1))) / 2
        outputs.append(logits.float().cpu().numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0, model.config.num_labels), dtype=np.float32)


@torch.no_grad()
def recompute_batch_norm_statistics(model, image_processor, dataset, *, batch_size: int = 256) -> int:
    """Sets each batch norm's running mean and variance to their average over `dataset` as evaluation sees it.

    Training leaves them an exponential average over augmented batches (other brightness, contrast and
    framing than the faces scored), taken with dropout on and while the weights still moved. One pass
    over the unaugmented training rows, dropout off, replaces them with what the final weights really
    produce ("precise BN"). It added about 0.45 points on PublicTest to each bundled model (models/README.md).

    Returns:
        The number of batch-norm layers updated; 0 (nothing changed) for a model without any, e.g. a ViT.
    """
    norms = [module for module in model.modules() if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or len(dataset) == 0:
        return 0
    model.eval()  # dropout off: the statistics must be those of the network that is scored
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative (equal-weight) average over the batches, not an exponential one
        norm.train()
    try:
        for pixel_values in pixel_batches(model, image_processor, dataset, batch_size=batch_size):
            model(pixel_values=pixel_values)
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.eval()
    return len(norms)


def class_probabilities(model, image_processor, dataset, names: list[str], *, batch_size: int = 256,
                        flip_tta: bool = False, logits: np.ndarray | None = None) -> np.ndarray:
    """Probabilities over the classes `names` (matched to the model's labels by name) of every row of `dataset`.

    The model's probabilities of those classes renormalised (fer_hf.faces.restrict_probabilities, as the
    recognizer's `labels` restricts them), so a 7-class model gives a happy/sad dataset its happy-vs-sad
    scores: a softmax over those classes' logits.

    `logits`: the model's logits of the rows, where already computed (the model's class order); the model is
    not run again.

    Raises:
        ValueError: the model has no label of that name (fer_hf.faces.label_indices).
    """
    from .faces import label_indices, restrict_probabilities

    model_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    columns = label_indices(model_names, names, model.config.name_or_path)
    if logits is None:
        logits = predict_logits(model, image_processor, dataset, batch_size=batch_size, flip_tta=flip_tta)
    logits = torch.as_tensor(logits)
    return restrict_probabilities(torch.softmax(logits.double(), dim=-1).numpy(), columns)


def write_reports(output_dir: str | Path, split: str, logits: np.ndarray, labels, label_names: list[str]) -> dict:
    """Writes `{split}_report.json`/`.txt` (per-class precision/recall/F1) and `{split}_confusion_matrix.png`.

    Returns:
        The split's metrics: accuracy, macro_f1 and the number of samples.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    predictions, labels = np.argmax(logits, axis=-1), np.asarray(labels)
    indices = list(range(len(label_names)))
    metrics = {**_METRIC.compute(predictions=predictions, references=labels), "samples": int(len(labels))}
    report = classification_report(
        labels, predictions, labels=indices, target_names=label_names, output_dict=True, zero_division=0
    )
    matrix = confusion_matrix(labels, predictions, labels=indices)
    # Rows: true class, columns: predicted, in label order; the model card reads its class weaknesses from it.
    (output_dir / f"{split}_report.json").write_text(json.dumps(
        {"metrics": metrics, "per_class": report, "confusion_matrix": matrix.tolist()}, indent=2))
    (output_dir / f"{split}_report.txt").write_text(
        classification_report(labels, predictions, labels=indices, target_names=label_names, digits=3, zero_division=0)
    )
    plot_confusion_matrix(matrix, label_names, output_dir / f"{split}_confusion_matrix.png", title=f"{split}: {metrics['accuracy']:.1%} accuracy")
    return metrics


def plot_confusion_matrix(matrix: np.ndarray, label_names: list[str], path: str | Path, title: str = "") -> None:
    """Saves a row-normalised confusion matrix (counts in the cells) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = 1.0 + 0.8 * len(label_names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(label_names)), label_names, rotation=45, ha="right")
    ax.set_yticks(range(len(label_names)), label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(label_names)):
        for j in range(len(label_names)):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", color="white" if normalised[i, j] > 0.5 else "black")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_training_curves(log_history: list[dict], path: str | Path) -> None:
    """Saves training/validation loss and validation accuracy against the step, from `Trainer`'s log history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e]
    evals = [(e["step"], e["eval_loss"], e.get("eval_accuracy")) for e in log_history if "eval_loss" in e]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    if train:
        loss_ax.plot(*zip(*train), label="train loss")
    if evals:
        loss_ax.plot([e[0] for e in evals], [e[1] for e in evals], "o-", label="validation loss")
        acc_ax.plot([e[0] for e in evals], [e[2] for e in evals], "o-", color="tab:green")
    loss_ax.set_xlabel("step")
    loss_ax.legend()
    acc_ax.set_xlabel("step")
    acc_ax.set_ylabel("validation accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = [
    "FerMetrics", "channels_last_on_cpu", "class_probabilities", "compute_metrics", "pixel_batches", "plot_confusion_matrix", "plot_training_curves",
    "predict_logits", "recompute_batch_norm_statistics", "ten_crops", "write_reports",
]


def evaluate_on_dataset(model, image_processor, dataset, *, output_dir=None, split="validation", batch_size=256,
                        flip_tta=False, logits: np.ndarray | None = None) -> dict:
    """Evaluates a classifier on a `Dataset`, matching classes by name.

    Rows whose class the model does not know are left out, and the model's scores are restricted to
    the dataset's classes: a happy/sad model is scored on FER-2013's happy and sad faces, and a
    7-class model on a happy/sad folder by its happy-vs-sad scores. `logits`: the model's logits of every row of
    `dataset`, where already computed (as `predict_logits` gives them), so that the model is not run again.

    Returns:
        accuracy, macro_f1, samples, the labels compared, and the per-class report.
    """
    dataset_names = dataset.features["label"].names
    model_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    common = [name for name in dataset_names if name in model_names]
    if len(common) < 2:
        raise ValueError(f"The model's labels {model_names} and the dataset's {dataset_names} share fewer than two classes.")
    keep = {dataset_names.index(name) for name in common}
    rows = dataset.filter(lambda label: label in keep, input_columns="label") if len(keep) < len(dataset_names) else dataset
    if logits is not None and len(rows) < len(dataset):
        logits = np.asarray(logits)[np.isin(np.asarray(dataset["label"]), list(keep))]
    # Probabilities over the common classes: their argmax is that of the logits, which is all the reports use.
    logits = class_probabilities(model, image_processor, rows, common, batch_size=batch_size, flip_tta=flip_tta,
                                 logits=logits)
    labels = [common.index(dataset_names[label]) for label in rows["label"]]
    if output_dir is None:
        predictions = np.argmax(logits, axis=-1)
        metrics = {**_METRIC.compute(predictions=predictions, references=labels), "samples": len(labels)}
    else:
        metrics = write_reports(output_dir, split, logits, labels, common)
    report = classification_report(labels, np.argmax(logits, axis=-1), labels=list(range(len(common))),
                                   target_names=common, digits=3, zero_division=0)
    return {**metrics, "labels": common, "report": report}
