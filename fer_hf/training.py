"""The pieces `train.py` is built from: data and model set-up, soft targets, batch mixing, the Trainer,
resumption after a crash, and the record and reports a run leaves in its output folder.

`train.py` parses the flags and calls these in order; each one can also be used on its own.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from datasets import Dataset, DatasetDict, concatenate_datasets
from torch import nn
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from .model.configuration_fer import FerConfig
from .data import (
    DataError, crop_faces, ferplus_distributions, load_fer_dataset, make_transform, select_labels, soft_targets,
)
from .device_augment import DeviceFaces, DeviceRows, FaceAugmentation
from .evaluation import class_probabilities, predict_logits, recompute_batch_norm_statistics, write_reports
from .faces import DEFAULT_MARGIN
from .hub import explain_hub_error, load_classifier, push_folder, write_model_card
from .model.image_processing_fer import FerImageProcessor
from .inference import bf16_supported, cpu_name
from .model.modeling_fer import FerCNNForImageClassification
from .model import copy_model_code

logger = logging.getLogger(__name__)

# --- data -----------------------------------------------------------------------------------------


def load_training_data(
    source: str,
    *,
    revision: str | None = None,
    labels: list[str] | None = None,
    add_train_dataset: list[str] | None = None,
    add_train_dataset_repeats: int = 1,
    ferplus_votes: bool = False,
    crop: bool = False,
    face_crop_margin: float = DEFAULT_MARGIN,
    face_align: bool = False,
    validation_split_percentage: float = 0.1,
    split_seed: int = 42,
    skip_bad_images: bool = False,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    seed: int = 42,
) -> DatasetDict:
    """Loads `source` with train, validation and (where the source has one) test splits, ready to train on.

    Args:
        source: Anything `fer_hf.data.load_fer_dataset` reads.
        revision: Hub dataset revision.
        labels: Keep only these classes, in this order.
        add_train_dataset: Further sources whose train rows join the training rows (see `add_train_rows`).
        add_train_dataset_repeats: How many times each added source's rows are added.
        ferplus_votes: Attach each training row's FER+ vote distribution as a `ferplus_votes` column.
        crop: Replace each photo by its largest face, cropped with `face_crop_margin`.
        face_crop_margin: How much larger than the detector's box the square crop is.
        face_align: Turn each face's eyes level before cropping it (crop_face's align).
        validation_split_percentage: Share of train held out as validation when the source has none.
        split_seed: Seed of photo-folder splits and of the held-out validation share.
        skip_bad_images: Skip unreadable image files instead of stopping.
        max_train_samples: Keep this many training rows, shuffled with `seed`.
        max_eval_samples: Keep at most this many rows of each evaluation split.
        seed: The training seed (only the `max_train_samples` shuffle uses it).

    Raises:
        DataError: a source cannot be read, or its FER+ votes do not line up with its train rows.
    """
    dataset = load_fer_dataset(source, seed=split_seed, skip_bad_images=skip_bad_images, revision=revision)
    if ferplus_votes:
        # Attached while the train rows are still in train_meta.parquet's order; --labels and the row
        # selections below carry the column along with its row.
        votes = ferplus_distributions(source, labels or dataset["train"].features["label"].names)
        if len(votes) != len(dataset["train"]):
            raise DataError(f"{source}: train_meta.parquet has {len(votes)} rows, the train split "
                            f"{len(dataset['train'])}; they must be the same rows in the same order.")
        dataset["train"] = dataset["train"].add_column("ferplus_votes", votes.tolist())
    if labels:
        dataset = select_labels(dataset, labels)
    if add_train_dataset:
        dataset["train"] = add_train_rows(dataset["train"], add_train_dataset, repeats=add_train_dataset_repeats,
                                          split_seed=split_seed, skip_bad_images=skip_bad_images)
    if crop:
        dataset = crop_faces(dataset, margin=face_crop_margin, align=face_align)
    if "validation" not in dataset:
        held_out = dataset["train"].train_test_split(
            test_size=validation_split_percentage, stratify_by_column="label", seed=split_seed
        )
        dataset["train"], dataset["validation"] = held_out["train"], held_out["test"]
    if max_train_samples is not None:
        dataset["train"] = dataset["train"].shuffle(seed=seed).select(range(max_train_samples))
    if max_eval_samples is not None:
        for split in ("validation", "test"):
            if split in dataset:
                dataset[split] = dataset[split].select(range(min(max_eval_samples, len(dataset[split]))))
    return dataset


def add_train_rows(train: Dataset, sources: list[str], *, repeats: int = 1, split_seed: int = 42,
                   skip_bad_images: bool = False) -> Dataset:
    """Appends the train split of each source, its classes matched to `train`'s by name, `repeats` times.

    Raises:
        DataError: a source lacks one of `train`'s classes (the message names the flag and the classes).
    """
    names = train.features["label"].names
    parts = [train]
    for source in sources:
        extra = load_fer_dataset(source, seed=split_seed, skip_bad_images=skip_bad_images)
        missing = sorted(set(names) - set(extra["train"].features["label"].names))
        if missing:
            raise DataError(f"--add_train_dataset {source}: it has no {missing} rows; pick common classes with "
                            "--labels.")
        extra = select_labels(extra, names)["train"]  # same classes, same order
        parts.extend([extra.cast(train.features)] * repeats)
        logger.info("Added %d training rows from %s, %d times", len(extra), source, repeats)
    return concatenate_datasets(parts)


def add_soft_targets(train: Dataset, *, label_distribution: str | None, weight: float, label_smoothing: float,
                     teacher_models: list[str] | None, training_args: TrainingArguments,
                     trust_remote_code: bool = False, distribution_classes: list[str] | None = None) -> Dataset:
    """Adds the `target` column: each row's class distribution, `(1 - w) * one-hot + w * distribution`.

    Args:
        train: The training rows (with a `ferplus_votes` column for `label_distribution="ferplus"`).
        label_distribution: "ferplus", "teacher", or None for batch mixing alone.
        weight: The distribution's share `w`.
        label_smoothing: With no label distribution, the smoothing folded into the targets (the soft-target
            loss does not smooth, as Trainer's own loss would).
        teacher_models: The classifiers whose probabilities are the "teacher" distribution.
        training_args: Where and how to predict the teachers' probabilities.
        trust_remote_code: Allow the teachers' custom code.
        distribution_classes: Only rows labelled one of these classes take the distribution; the others
            keep their one-hot label (None: every row).

    Raises:
        DataError: a `distribution_classes` name is not one of the dataset's classes.
    """
    names = train.features["label"].names
    if label_distribution == "ferplus":
        distributions = np.array(train["ferplus_votes"], dtype=np.float32)
    elif label_distribution == "teacher":
        distributions = teacher_distributions(teacher_models, train, training_args, trust_remote_code=trust_remote_code)
    else:
        distributions = np.full((len(train), len(names)), 1 / len(names), dtype=np.float32)
        weight = label_smoothing
    labels = np.array(train["label"])
    if label_distribution and distribution_classes:
        unknown = sorted(set(distribution_classes) - set(names))
        if unknown:
            raise DataError(f"--label_distribution_classes {unknown}: not among the dataset's classes {names}.")
        chosen = np.isin(labels, [names.index(name) for name in distribution_classes])
        distributions = np.where(chosen[:, None], distributions, 0).astype(np.float32)  # all-zero rows stay one-hot
    targets = soft_targets(labels, distributions, weight)
    return train.add_column("target", targets.tolist())


def set_transforms(dataset: DatasetDict, image_processor, *, grayscale: bool, soft_labels: bool) -> None:
    """Sets each split's on-the-fly transform: augmented for train, as they are for evaluation."""
    dataset["train"].set_transform(make_transform(image_processor, train=True, grayscale=grayscale,
                                                  soft_labels=soft_labels))
    for split in ("validation", "test"):
        if split in dataset:
            dataset[split].set_transform(make_transform(image_processor, train=False, grayscale=grayscale))


def hold_on_device(
    dataset: DatasetDict, image_processor, device: torch.device | str, *, grayscale: bool, soft_labels: bool,
    augmentation: FaceAugmentation | None,
) -> tuple[DeviceFaces, DeviceRows, DeviceRows]:
    """`--device_augment`: the training and validation faces decoded once into one tensor on `device`.

    Returns:
        `(faces, train_rows, validation_rows)`: the held faces, and the two splits' rows for the DataLoader,
        the training rows with their targets (distributions with `soft_labels`), the validation rows with
        their class ids.
    """
    faces = DeviceFaces(image_processor, device, augmentation, grayscale=grayscale)
    train, validation = dataset["train"].with_format(None), dataset["validation"].with_format(None)
    train_rows = faces.hold(train, train["target"] if soft_labels else train["label"])
    validation_rows = faces.hold(validation, validation["label"])
    logger.info("Device faces: %d rows, %.1f MB of uint8 on %s", len(faces.pixels), faces.pixels.numel() / 1e6,
                faces.pixels.device)
    return faces, train_rows, validation_rows


def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Stacks transformed rows into a batch of `pixel_values` and `labels` (class ids or distributions).

    Rows of faces held on the device (`fer_hf.device_augment.DeviceRows`) become `rows` and `labels`:
    `FerTrainer` gathers their pixels there.
    """
    if "row" in examples[0]:
        return {"rows": torch.tensor([example["row"] for example in examples]),
                "labels": torch.stack([example["labels"] for example in examples])}
    return {
        "pixel_values": torch.stack([example["pixel_values"] for example in examples]),
        "labels": torch.tensor([example["labels"] for example in examples]),
    }


def teacher_distributions(teachers: list[str], train: Dataset, training_args: TrainingArguments, *,
                          trust_remote_code: bool = False) -> np.ndarray:
    """The teachers' class probabilities on each training row (mirror-averaged, then averaged over teachers).

    Predicted on the rows as stored, before augmentation: an augmented view keeps its face's expression,
    and one pass over the rows costs minutes where a teacher pass per training step would double every
    epoch. Saved in output_dir, so a resumed run reads them back instead of predicting again.

    Raises:
        ValueError: a teacher has no label of one of the dataset's class names.
    """
    names = train.features["label"].names
    labels = np.array(train["label"])
    saved = Path(training_args.output_dir) / "teacher_distributions.npz"
    if saved.is_file():
        cached = np.load(saved)
        if (cached["teachers"].tolist(), cached["names"].tolist()) == (list(teachers), names) and \
                np.array_equal(cached["labels"], labels):
            logger.info("Teacher distributions read back from %s", saved)
            return cached["distributions"]
    device = training_args.device
    total = np.zeros((len(train), len(names)), dtype=np.float64)
    for teacher in teachers:
        model, processor = load_classifier(teacher, trust_remote_code=trust_remote_code)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=training_args.bf16):
            probabilities = class_probabilities(model.to(device), processor, train, names, flip_tta=True,
                                                batch_size=training_args.per_device_eval_batch_size)
        logger.info("Teacher %s agrees with the labels on %.2f%% of the %d training rows", teacher,
                    100 * (probabilities.argmax(1) == labels).mean(), len(labels))
        total += probabilities
    distributions = (total / len(teachers)).astype(np.float32)
    if training_args.process_index == 0:  # one writer; written aside and renamed, so no rank reads half a file
        saved.parent.mkdir(parents=True, exist_ok=True)
        partial = saved.with_name(f"{saved.stem}.partial.npz")
        np.savez(partial, distributions=distributions, teachers=np.array(teachers), names=np.array(names),
                 labels=labels)
        os.replace(partial, saved)
    return distributions


# --- model ----------------------------------------------------------------------------------------


def build_model(
    labels: list[str],
    *,
    model_name_or_path: str | None = None,
    variant: str = "small",
    revision: str = "main",
    trust_remote_code: bool = False,
    head_from_parent: bool = True,
    face_crop_margin: float | None = None,
    face_align: bool | None = None,
) -> tuple[nn.Module, Any, list[str]]:
    """The model and image processor to train: a new FER CNN, or `model_name_or_path` with a head for `labels`.

    Args:
        labels: The classes of the new head, in order.
        model_name_or_path: A classifier (folder or Hub id) to fine-tune; None: a FER CNN from scratch.
        variant: The FER CNN size variant.
        revision: Hub revision of `model_name_or_path`.
        trust_remote_code: Allow the custom code of `model_name_or_path`.
        head_from_parent: Start the head from the parent's rows for `labels` (see `head_from_parent_labels`).
        face_crop_margin: The margin the training photos were cropped with; saved in the processor, so
            the recognizer crops photos the way the model learnt them.
        face_align: Whether the training photos' faces were aligned (eyes turned level); saved in the
            processor as `face_align` likewise. None keeps the processor's own (a parent model's).

    Returns:
        `(model, image_processor, carried)`, where `carried` lists the labels whose head rows were taken
        from the parent model (see `head_from_parent_labels`), empty if none.
    """
    id2label, label2id = dict(enumerate(labels)), {name: i for i, name in enumerate(labels)}
    carried = []
    if model_name_or_path is None:
        config = FerConfig.from_variant(variant, id2label=id2label, label2id=label2id)
        model, image_processor = FerCNNForImageClassification(config), FerImageProcessor()
    else:
        common = {"revision": revision, "trust_remote_code": trust_remote_code}
        model = AutoModelForImageClassification.from_pretrained(
            model_name_or_path, num_labels=len(labels), id2label=id2label, label2id=label2id,
            ignore_mismatched_sizes=True, **common,  # a new head for our labels
        )
        if head_from_parent:
            carried = head_from_parent_labels(model_name_or_path, model, labels, common)
            if carried:
                logger.info("Head: the rows of %s for %s", model_name_or_path, carried)
        image_processor = AutoImageProcessor.from_pretrained(model_name_or_path, **common)
    if face_crop_margin is not None:
        image_processor.face_crop_margin = face_crop_margin
    if face_align is not None:
        image_processor.face_align = face_align
    return model, image_processor, carried


def head_from_parent_labels(parent_name: str, model: nn.Module, labels: list[str], common: dict) -> list[str]:
    """Sets the new head to the parent's rows for `labels`; returns `labels` if done, else [].

    A 2-label head made of a 7-class model's happy and sad rows gives exactly that model's happy-vs-sad
    decision, where `ignore_mismatched_sizes` starts from random rows. It also keeps a same-size head right
    when the labels come in another order, which `from_pretrained` alone would load as they stand.

    Args:
        parent_name: The parent's folder or Hub id.
        model: The model loaded from the parent with a head for `labels`; changed in place.
        labels: The new head's labels, in order.
        common: Further `from_pretrained` arguments (revision, trust_remote_code).
    """
    parent_config = AutoConfig.from_pretrained(parent_name, **common)
    parent_labels = [str(parent_config.id2label[i]) for i in range(len(parent_config.id2label))]
    if parent_labels == labels or not set(labels) <= set(parent_labels):
        return []
    parent = AutoModelForImageClassification.from_pretrained(parent_name, **common)
    old, new = getattr(parent, "classifier", None), getattr(model, "classifier", None)
    if not (isinstance(old, nn.Linear) and isinstance(new, nn.Linear) and old.in_features == new.in_features):
        logger.warning("Head: %s has no linear `classifier` to take rows from; the head starts new.", parent_name)
        return []
    rows = [parent_labels.index(name) for name in labels]
    with torch.no_grad():
        new.weight.copy_(old.weight[rows])
        new.bias.copy_(old.bias[rows])
    return labels


def enable_cpu_fast_path(model: nn.Module, training_args: TrainingArguments) -> bool:
    """On a CPU with bf16 support, trains under bf16 autocast in channels_last memory; returns whether it did.

    benchmarks/results/train_throughput.md: 1.8x to 3.2x the fp32 throughput, by variant.
    """
    if training_args.device.type != "cpu" or not bf16_supported():
        return False
    # TrainingArguments turns `bf16` into `mixed_precision` when it is built; setting `bf16` alone
    # afterwards would leave Trainer in fp32.
    training_args.bf16, training_args.mixed_precision = True, "bf16"
    model.to(memory_format=torch.channels_last)
    return True


def recompute_batch_norm(trainer: Trainer, train: Dataset) -> bool:
    """Sets every batch norm's statistics of the trained model to their average over the unaugmented `train` rows.

    Every rank does the same pass, so under DDP all save and score the same model. Returns whether the
    model had batch norms to recompute (a ViT has none).
    """
    updated = recompute_batch_norm_statistics(trainer.model, trainer.processing_class, train.with_format(None),
                                              batch_size=trainer.args.per_device_eval_batch_size)
    logger.info("Batch norm: %d layers recomputed on %d training rows", updated, len(train))
    return updated > 0


def calibrate_saved_model(trainer: Trainer, validation: Dataset, dataset_name: str) -> dict | None:
    """Fits the saved model's temperatures and unsure threshold on the validation rows (`python -m fer_hf
    calibrate`: config.json, calibration.json, the reliability diagram) and gives them to the model in memory,
    so a later save or push keeps them. None, with a warning naming why, where the rows lack one of its classes."""
    from .calibration import MODES, calibrate_folder

    output_dir = Path(trainer.args.output_dir)
    try:
        report = calibrate_folder(*load_classifier(output_dir), output_dir, validation.with_format(None),
                                  split="validation", batch_size=trainer.args.per_device_eval_batch_size,
                                  command=f"python -m fer_hf calibrate {output_dir} --dataset_name {dataset_name}")
    except ValueError as error:
        logger.warning("Not calibrated: %s", error)
        return None
    config = trainer.model.config
    for mode, (field, _) in MODES.items():
        setattr(config, field, report["modes"][mode]["temperature"])
    config.unsure_threshold = report["unsure"]["threshold"]
    logger.info("Calibrated: temperatures %s, unsure below %s",
                {mode: figures["temperature"] for mode, figures in report["modes"].items()}, config.unsure_threshold)
    return report


# --- loss, batch mixing and the Trainer -----------------------------------------------------------

# `--class_weighting`: the power p of each class's loss weight, count ** -p.
CLASS_WEIGHTINGS = {"none": 0.0, "inverse_sqrt": 0.5, "inverse": 1.0}


def class_weights(labels, num_classes: int, weighting: str) -> torch.Tensor | None:
    """Each class's loss weight, `count ** -p` (`CLASS_WEIGHTINGS`), scaled so that the mean training row weighs 1.

    The scaling keeps the loss, and so the learning rate, on the scale of an unweighted run. A class
    with no rows gets weight 0. Returns None for "none".
    """
    if CLASS_WEIGHTINGS[weighting] == 0:
        return None
    counts = np.bincount(np.asarray(labels), minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, np.maximum(counts, 1) ** -CLASS_WEIGHTINGS[weighting], 0.0)
    return torch.tensor(weights * counts.sum() / (weights * counts).sum(), dtype=torch.float32)


def soft_target_cross_entropy(outputs, labels: torch.Tensor, num_items_in_batch=None,
                              class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy against class distributions (batch x classes, training) or class ids (evaluation).

    Trainer's `compute_loss_func`. Trainer counts `num_items_in_batch` as the label entries over the whole
    accumulated (and, in DDP, gathered) batch, i.e. rows x classes for distributions: dividing the summed
    loss by the row count keeps it a per-row mean under gradient accumulation and several processes.
    `class_weights` (see `class_weights`) weigh each class's term: a row of class c counts w_c times.
    """
    logits = outputs["logits"].float()  # fp32 log-softmax under bf16 autocast
    weight = None if class_weights is None else class_weights.to(logits.device)
    # Takes class ids or probabilities alike; with probabilities the weights apply inside the sum over classes.
    losses = F.cross_entropy(logits, labels, weight=weight, reduction="none")
    if num_items_in_batch is None:
        return losses.mean()
    rows = num_items_in_batch / labels.shape[-1] if labels.is_floating_point() else num_items_in_batch
    return losses.sum() / rows


def mix_batch(pixel_values: torch.Tensor, targets: torch.Tensor, mixup_alpha: float,
              cutmix_alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or CutMix of a training batch with the same batch reversed, as timm pairs them.

    Mixup blends each image with its partner by a share `lam` drawn from Beta(mixup_alpha, mixup_alpha).
    CutMix pastes a box of the partner covering about 1 - lam of the image (lam from Beta(cutmix_alpha,
    cutmix_alpha)); the box is clipped at the border, and lam recounted from the area really pasted. With
    both alphas above 0, each batch takes one of the two at random. Draws from torch's global generator,
    which Trainer seeds and checkpoints, so a resumed run mixes as the uninterrupted one would.

    Args:
        pixel_values: The batch, `(batch, channels, height, width)`.
        targets: Class distributions, `(batch, classes)`; mixed by the same lam as the pixels.

    Returns:
        The mixed pixel values and targets.
    """
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or bool(torch.rand(()) < 0.5))
    alpha = torch.tensor(cutmix_alpha if use_cutmix else mixup_alpha)
    lam = torch.distributions.Beta(alpha, alpha).sample().item()
    partner = pixel_values.flip(0)
    if use_cutmix:
        height, width = pixel_values.shape[-2:]
        box_h, box_w = round(height * (1 - lam) ** 0.5), round(width * (1 - lam) ** 0.5)
        center_y, center_x = torch.randint(height, ()).item(), torch.randint(width, ()).item()
        top, bottom = max(center_y - box_h // 2, 0), min(center_y + (box_h + 1) // 2, height)
        left, right = max(center_x - box_w // 2, 0), min(center_x + (box_w + 1) // 2, width)
        mixed = pixel_values.clone()
        mixed[..., top:bottom, left:right] = partner[..., top:bottom, left:right]
        lam = 1 - (bottom - top) * (right - left) / (height * width)
    else:
        mixed = lam * pixel_values + (1 - lam) * partner
    return mixed, lam * targets + (1 - lam) * targets.flip(0)


class FerTrainer(Trainer):
    """`Trainer` with batch mixing, and whose Hub push is `fer_hf.hub.push_folder`: our model card,
    safetensors only, one commit.

    `Trainer.push_to_hub` uploads everything in output_dir but `_*` and `checkpoint-*`, training_args.bin
    included (a pickle that holds any `--hub_token` in clear), under a card of its own; and with
    `--push_to_hub`, every `save_model()` pushes too. Here saving never pushes, and `push_to_hub()`
    uploads what `python -m fer_hf push OUTPUT_DIR REPO` would.

    Args:
        mixup_alpha: Mixup's Beta parameter for training batches (0: off); see `mix_batch`.
        cutmix_alpha: CutMix's Beta parameter for training batches (0: off).
        device_faces: The faces held on the device, for datasets of `DeviceRows` (`--device_augment`):
            each batch's `rows` are gathered there, and training batches augmented there.
    """

    def __init__(self, *args, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
                 device_faces: DeviceFaces | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.device_faces = device_faces

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "rows" in inputs:  # faces held on the device: gather them there, augmented for training only
            pixel_values = self.device_faces.batch(inputs["rows"], augment=model.training)
            inputs = {"pixel_values": pixel_values, "labels": inputs["labels"]}
        # Training batches only: evaluation (model.eval()) scores the faces as they are.
        if model.training and (self.mixup_alpha > 0 or self.cutmix_alpha > 0):
            pixel_values, labels = mix_batch(inputs["pixel_values"], inputs["labels"], self.mixup_alpha,
                                             self.cutmix_alpha)
            inputs = {**inputs, "pixel_values": pixel_values, "labels": labels}
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        # Called when the Trainer is built with --push_to_hub: a bad token stops the run before training.
        try:
            super().init_hf_repo(token=token, private=private)
        except Exception as error:
            raise SystemExit(f"Cannot create the Hub repo {self.args.hub_model_id or self.args.output_dir}: "
                             f"{explain_hub_error(error)}\nNothing was trained.") from error

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call=True)  # no push as a side effect of saving
        if self.is_world_process_zero():  # the face-aware pipeline travels with every saved model
            copy_model_code(output_dir or self.args.output_dir)

    def create_model_card(self, **kwargs) -> None:
        if self.is_world_process_zero():
            write_model_card(self.args.output_dir, repo_id=self.hub_model_id or self.args.hub_model_id,
                             revision=self.args.hub_revision)

    def push_to_hub(self, commit_message: str | None = "End of training", blocking: bool = True,
                    token: str | None = None, revision: str | None = None, private: bool | None = None, **kwargs):
        """Saves the model, then pushes output_dir with its card (always blocking); returns the commit."""
        if self.hub_model_id is None:
            self.init_hf_repo(token=token, private=private)
        self.save_model()
        if not self.is_world_process_zero():
            return None
        return push_folder(
            self.args.output_dir, self.hub_model_id, revision=revision or self.args.hub_revision,
            private=bool(self.args.hub_private_repo if private is None else private),
            token=token or self.args.hub_token, commit_message=commit_message or "End of training",
        )

    def precision(self, channels_last: bool) -> str:
        """What the run computes in, read back from the accelerator (so the log says what really ran)."""
        precision = self.accelerator.mixed_precision
        precision = "fp32" if precision == "no" else f"{precision} autocast"
        return precision + (" + channels_last" if channels_last else "")


# --- resuming -------------------------------------------------------------------------------------


def lock_output_dir(output_dir: str):
    """Refuses a second train.py on the same output_dir while one runs: both would write the same
    checkpoints, and a rerun meant to resume a crashed run is easily started next to a live one.

    Returns:
        The open lock file (an advisory `flock`, released by the OS when the process ends, crash or
        not); None where there is no `fcntl` (Windows), which runs unguarded.
    """
    try:
        import fcntl
    except ImportError:
        return None
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / ".train.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        raise SystemExit(f"{output_dir}: another train.py (pid {owner}) is training into this folder. Wait for "
                         "it to end or stop it; rerunning the command then resumes from its last checkpoint.")
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest checkpoint that was written to the end, skipping (and naming) any a crash cut short.

    Trainer writes a checkpoint in place and `trainer_state.json` after the weights, optimizer and RNG
    state; `transformers.trainer_utils.get_last_checkpoint` would pick a half-written folder.
    """
    def step(folder: Path) -> int:
        suffix = folder.name.rsplit("-", 1)[-1]
        return int(suffix) if suffix.isdigit() else -1

    for folder in sorted(Path(output_dir).glob("checkpoint-*"), key=step, reverse=True):
        try:
            json.loads((folder / "trainer_state.json").read_text())
            return str(folder)
        except (OSError, ValueError):
            logger.warning("Skipping %s: incomplete (its trainer_state.json is missing or cut short).", folder.name)
    return None


def checkpoint_to_resume(training_args: TrainingArguments) -> str | None:
    """`--resume_from_checkpoint`, else the last complete checkpoint in output_dir: a rerun of the same
    command picks up where a crashed or stopped run left off."""
    checkpoint = training_args.resume_from_checkpoint
    if checkpoint is None and Path(training_args.output_dir).is_dir():
        checkpoint = last_complete_checkpoint(training_args.output_dir)
    if checkpoint is not None:
        logger.warning("Resuming from %s", Path(checkpoint).name)
    return checkpoint


class TrainingTimeCallback(TrainerCallback):
    """Training time summed over a run and its resumptions: each checkpoint records the seconds so far.

    `train_runtime` from `Trainer.train()` counts only the last part of a resumed run.
    """

    FILE = "training_time.json"

    def __init__(self, resumed_from: str | None):
        record = Path(resumed_from or "") / self.FILE
        self.before = json.loads(record.read_text())["seconds"] if resumed_from and record.exists() else 0.0
        self.started = time.time()
        self.seconds_at_end = None

    def seconds(self) -> float:
        return round(self.before + time.time() - self.started, 1)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            (checkpoint / self.FILE).write_text(json.dumps({"seconds": self.seconds()}))

    def on_train_end(self, args, state, control, **kwargs):
        self.seconds_at_end = self.seconds()


# --- what a run leaves behind ---------------------------------------------------------------------


def write_split_reports(output_dir: str | Path, dataset: DatasetDict, labels: list[str], *,
                        batch_size: int = 256) -> dict[str, dict]:
    """Scores the saved model on the validation and test splits and writes their reports and confusion matrices.

    The model is loaded back from `output_dir` by the loader `python -m fer_hf evaluate` uses, so the
    reports and the card's figures are exactly what that command reproduces (the in-memory model can
    differ from the reloaded one on a near-tie).

    Returns:
        Each split's metrics (accuracy, macro_f1, samples).
    """
    model, processor = load_classifier(output_dir)
    metrics = {}
    for split in ("validation", "test"):
        if split in dataset:
            rows = dataset[split].with_format(None)  # raw images: predict_logits preprocesses itself
            logits = predict_logits(model, processor, rows, batch_size=batch_size)
            metrics[split] = write_reports(output_dir, split, logits, rows["label"], labels)
            logger.info("%s: %s", split, metrics[split])
    return metrics


def write_tta_reports(output_dir: str | Path, dataset: DatasetDict, labels: list[str], views: list[str], *,
                      batch_size: int = 256, device: torch.device | str = "cpu") -> dict[str, dict[str, dict]]:
    """Scores the saved model with test-time augmentation and writes `{split}_{view}_report.json`/`.txt`.

    Views: `mirror` (each face's logits averaged with its mirror image's, as `evaluate --flip_tta` does) and
    `ten_crop` (the probabilities of ten views averaged, `fer_hf.evaluation.ten_crops`). Loaded back as
    `write_split_reports` loads the model, but scored on `device`: ten views of every face would take a CPU minutes.

    Returns:
        `{view: {split: metrics}}`; empty without views.
    """
    if not views:
        return {}
    model, processor = load_classifier(output_dir)
    model.to(device)
    results = {}
    for view in views:
        results[view] = {}
        for split in ("validation", "test"):
            if split in dataset:
                rows = dataset[split].with_format(None)
                logits = predict_logits(model, processor, rows, batch_size=batch_size, flip_tta=view == "mirror",
                                        ten_crop=view == "ten_crop")
                results[view][split] = write_reports(output_dir, f"{split}_{view}", logits, rows["label"], labels)
                logger.info("%s, %s: %s", split, view, results[view][split])
    return results


def hub_id(name: str | None) -> str | None:
    """`name` if it is a Hub repo id rather than a local path (the card links Hub datasets and base models)."""
    return name if name and not Path(name).expanduser().exists() else None


def redact(argv: list[str], secret: str | None) -> list[str]:
    """`argv` with `secret` (a `--hub_token`, however the flag was spelled) hidden, for run_info.json and the card."""
    return [arg.replace(secret, "<HUB_TOKEN>") for arg in argv] if secret else list(argv)


def hardware_description(training_args: TrainingArguments) -> str:
    """The device the run trained on, as the card shows it (GPU name, or CPU name and thread count)."""
    if training_args.device.type == "cuda":
        return f"{training_args.n_gpu or 1}x {torch.cuda.get_device_name()}"
    threads = torch.get_num_threads()
    return f"CPU: {cpu_name()}, {threads} thread{'s' if threads != 1 else ''}, {training_args.world_size} process(es)"


def build_run_info(trainer: Trainer, model_args: Any, data_args: Any, dataset: DatasetDict, *, argv: list[str],
                   carried: list[str], precision: str, batch_norm_recomputed: bool, train_runtime_s: float | None,
                   started: float, checkpoint: str | None, metrics: dict, tta_metrics: dict | None = None) -> dict:
    """The record of a run that `run_info.json` holds and the model card is written from.

    Args:
        trainer: The trainer after training (its state gives epochs and steps).
        model_args: train.py's `ModelArguments`.
        data_args: train.py's `DataTrainingArguments`.
        dataset: The splits trained and scored on.
        argv: The command's arguments (the token in `--hub_token` is hidden).
        carried: Labels whose head rows came from the parent model.
        precision: What the run computed in (`FerTrainer.precision`).
        batch_norm_recomputed: Whether batch-norm statistics were recomputed after training.
        train_runtime_s: Training seconds summed over every resumed part (`TrainingTimeCallback`).
        started: When the command started (`time.time()`).
        checkpoint: The checkpoint this command resumed from, if any.
        metrics: Each split's metrics from `write_split_reports`.
        tta_metrics: Each test-time view's metrics from `write_tta_reports`, if any.
    """
    training_args = trainer.args
    labels = dataset["train"].features["label"].names
    mixing = data_args.mixup_alpha > 0 or data_args.cutmix_alpha > 0
    return {
        "command": "python train.py " + shlex.join(redact(argv, training_args.hub_token)),
        "dataset": data_args.dataset_name,
        "hub_dataset": hub_id(data_args.dataset_name),
        "splits": {name: len(part) for name, part in dataset.items()},
        "labels": labels,
        "label_distribution": (f"{data_args.label_distribution} (weight {data_args.label_distribution_weight})"
                               if data_args.label_distribution else None),
        "teacher_models": data_args.teacher_models,
        "batch_mixing": ({"mixup_alpha": data_args.mixup_alpha, "cutmix_alpha": data_args.cutmix_alpha}
                         if mixing else None),
        "class_weighting": None if data_args.class_weighting == "none" else data_args.class_weighting,
        "label_distribution_classes": data_args.label_distribution_classes if data_args.label_distribution else None,
        "device_augment": ({"random_erasing": data_args.random_erasing} if data_args.device_augment else None),
        "model": model_args.model_name_or_path or f"fer-cnn-{model_args.model_variant}",
        "hub_base_model": hub_id(model_args.model_name_or_path),
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "head_from_parent": (f"the head started from the rows of {model_args.model_name_or_path} for "
                             f"{', '.join(carried)}" if carried else None),
        "precision": precision,
        "batch_norm": (f"statistics recomputed on the {len(dataset['train'])} unaugmented training rows"
                       if batch_norm_recomputed else None),
        "hardware": hardware_description(training_args),
        "epochs": trainer.state.epoch,
        "steps": trainer.state.global_step,
        "train_runtime_s": train_runtime_s,
        "wall_time_s": round(time.time() - started, 1),  # this command only, start to end
        "resumed_from": Path(checkpoint).name if checkpoint else None,
        "metrics": metrics,
        "tta_metrics": tta_metrics or None,
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
    }


def write_card_or_push(trainer: FerTrainer) -> None:
    """Writes the model card (README.md) into output_dir, or with `--push_to_hub` pushes the folder with it.

    Raises:
        SystemExit: the push failed; the message says why and gives the command that pushes the saved folder.
    """
    args = trainer.args
    if not args.push_to_hub:
        trainer.create_model_card()
        return
    try:
        commit = trainer.push_to_hub()
    except Exception as error:  # the trained model is safe on disk: say what failed and how to push it again
        retry = f"python -m fer_hf push {shlex.quote(args.output_dir)} {trainer.hub_model_id}"
        if args.hub_revision:
            retry += f" --revision {args.hub_revision}"
        raise SystemExit(f"Pushing to the Hub failed: {explain_hub_error(error)}\n"
                         f"The trained model is in {args.output_dir}; push it with: {retry}") from error
    if commit is not None:
        logger.warning("Pushed to %s: commit %s", trainer.hub_model_id, commit.oid)  # shown at every log level


__all__ = [
    "FerTrainer",
    "TrainingTimeCallback",
    "add_soft_targets",
    "add_train_rows",
    "build_model",
    "build_run_info",
    "calibrate_saved_model",
    "checkpoint_to_resume",
    "class_weights",
    "collate",
    "enable_cpu_fast_path",
    "hardware_description",
    "head_from_parent_labels",
    "hold_on_device",
    "hub_id",
    "last_complete_checkpoint",
    "load_training_data",
    "lock_output_dir",
    "mix_batch",
    "recompute_batch_norm",
    "redact",
    "set_transforms",
    "soft_target_cross_entropy",
    "teacher_distributions",
    "write_card_or_push",
    "write_split_reports",
    "write_tta_reports",
]
