#!/usr/bin/env python
"""Train the FER CNN, or fine-tune any Hub image classifier, on FER-2013 or a folder of photos.

    python train.py --dataset_name ../shared/data/fer2013 --output_dir runs/fer --num_train_epochs 30
    python train.py --dataset_name data/happy_sad --output_dir runs/vit --model_name_or_path google/vit-base-patch16-224

Every `TrainingArguments` flag works too (`python train.py --help`). Rerunning the same command
after a crash resumes from the last checkpoint in `--output_dir`. With `--push_to_hub --hub_model_id
USER/NAME` the best model, its card and reports are pushed once, at the end (token: `HF_TOKEN` or
`hf auth login`); `python -m fer_hf push OUTPUT_DIR USER/NAME` pushes a finished folder.

The steps live in `fer_hf.training`; this script parses the flags and runs them in order.
"""

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import transformers
from transformers import EarlyStoppingCallback, HfArgumentParser, TrainingArguments, set_seed

from fer_hf import FER_CNN_VARIANTS
from fer_hf.device_augment import FaceAugmentation
from fer_hf.evaluation import compute_metrics, plot_training_curves
from fer_hf.faces import DEFAULT_MARGIN
from fer_hf.training import (
    CLASS_WEIGHTINGS, FerTrainer, TrainingTimeCallback, add_soft_targets, build_model, build_run_info, calibrate_saved_model,
    checkpoint_to_resume, class_weights, collate, enable_cpu_fast_path, hold_on_device, load_training_data,
    lock_output_dir, recompute_batch_norm, set_transforms, soft_target_cross_entropy, write_card_or_push,
    write_split_reports, write_tta_reports,
)

logger = logging.getLogger("train")

# Our CNN trains from scratch and wants a far larger step than the 5e-5 meant for fine-tuning.
FER_CNN_DEFAULT_LEARNING_RATE = 2e-3


@dataclass
class DataTrainingArguments:
    dataset_name: str = field(
        metadata={"help": "A FER-2013 CSV, a parquet file or folder, a Kaggle-layout folder, a folder of class "
                  "subfolders of photos, or a Hub dataset id."}
    )
    dataset_revision: str | None = field(default=None, metadata={"help": "Hub dataset revision."})
    validation_split_percentage: float = field(
        default=0.1, metadata={"help": "Share of `train` held out for validation when the source has no validation split."}
    )
    split_seed: int = field(
        default=42,
        metadata={"help": "Seed of the train/validation/test split of photo folders (--dataset_name and "
                  "--add_train_dataset) and of --validation_split_percentage. Kept apart from --seed, so that a "
                  "run with another training seed holds out the same photos (evaluate splits with 42 too)."},
    )
    skip_bad_images: bool = field(
        default=False, metadata={"help": "Skip unreadable image files (each one logged by name) instead of stopping."}
    )
    labels: list[str] | None = field(
        default=None, metadata={"help": "Keep only these classes, in this order (e.g. --labels happy sad)."}
    )
    add_train_dataset: list[str] | None = field(
        default=None,
        metadata={"help": "Further sources whose train split is added to the training rows (e.g. a photo folder "
                  "next to FER-2013); their classes must match --labels or the main dataset's. Validation and "
                  "test stay those of --dataset_name."},
    )
    add_train_dataset_repeats: int = field(
        default=1,
        metadata={"help": "How many times each --add_train_dataset source's train rows are added: oversamples a small "
                  "source (209 photos next to FER-2013's 12,045 happy and sad faces) so that it weighs more."},
    )
    crop_faces: bool = field(
        default=False,
        metadata={"help": "Replace each photo by its largest detected face, cropped as the demo crops it (images of "
                  "96 px or less, such as FER-2013's, are taken as faces already)."},
    )
    face_crop_margin: float = field(
        default=DEFAULT_MARGIN,
        metadata={"help": "With --crop_faces: how much larger than the detector's box the square crop is (0.1: "
                  "FER-2013's framing). Saved in the model's processor, so the demo crops photos the same way."},
    )
    align_faces: bool = field(
        default=False,
        metadata={"help": "With --crop_faces: turn each face so that its eyes are level before cropping it (its "
                  "detector landmarks). Saved in the model's processor (face_align), so the demo aligns alike."},
    )
    label_distribution: str | None = field(
        default=None,
        metadata={"choices": ["ferplus", "teacher"],
                  "help": "Train on soft targets: `ferplus` mixes each training row's one-hot label with its FER+ "
                  "annotator votes, read from the train_meta.parquet beside a FER-2013 parquet source; `teacher` "
                  "with the mean class probabilities of the --teacher_models on the row (knowledge distillation). "
                  "Validation and test keep their hard labels."},
    )
    label_distribution_weight: float = field(
        default=0.5,
        metadata={"help": "Share of the distribution in each target: (1 - w) * one-hot + w * distribution."},
    )
    label_distribution_classes: list[str] | None = field(
        default=None,
        metadata={"help": "With --label_distribution: only the rows labelled one of these classes (e.g. disgust fear "
                  "sad) take the distribution; the others keep their one-hot label."},
    )
    class_weighting: str = field(
        default="none",
        metadata={"choices": list(CLASS_WEIGHTINGS),
                  "help": "Class-balanced loss: each class's term weighs count ** -1 (`inverse`) or count ** -0.5 "
                  "(`inverse_sqrt`) of its training rows, scaled so that the mean row weighs 1; the validation loss "
                  "is weighted alike. Trains on soft targets, as mixing does."},
    )
    device_augment: bool = field(
        default=False,
        metadata={"help": "Decode the training and validation faces once into one uint8 tensor on the training device, "
                  "and gather and augment each batch there in torch (fer_hf.device_augment): a GPU is not starved by "
                  "a Python image loader. Same augmentation as the default path, drawn from the device's generator."},
    )
    random_erasing: float = field(
        default=0.0,
        metadata={"help": "With --device_augment: the probability that a training face gets a random box (2-20%% of "
                  "its area) set to the mean gray (0: off; 0.25 is usual)."},
    )
    mixup_alpha: float = field(
        default=0.0,
        metadata={"help": "Mixup: each training batch is blended with itself reversed, by a share drawn from "
                  "Beta(alpha, alpha), targets alike (0: off; 0.2 is usual)."},
    )
    cutmix_alpha: float = field(
        default=0.0,
        metadata={"help": "CutMix: each training face gets a box pasted from its partner in the reversed batch, "
                  "the targets mixed by the box's area (0: off; 1.0 is usual). With --mixup_alpha too, each "
                  "batch takes one of the two at random."},
    )
    teacher_models: list[str] | None = field(
        default=None,
        metadata={"help": "With --label_distribution teacher: the classifiers (folders or Hub ids) whose mirror-averaged "
                  "probabilities, averaged over them, are the distribution. Their labels must include the "
                  "dataset's (matched by name). Predicted once; saved in output_dir for resumed runs."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only this many training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only this many rows of each evaluation split."})

    def __post_init__(self):
        if self.label_distribution or self.teacher_models:
            if not 0 <= self.label_distribution_weight <= 1:
                raise ValueError(f"--label_distribution_weight {self.label_distribution_weight}: must be in [0, 1].")
            if (self.label_distribution == "teacher") != bool(self.teacher_models):
                raise ValueError("--teacher_models and --label_distribution teacher go together: give both or neither.")
            if self.label_distribution == "ferplus" and self.add_train_dataset:
                raise ValueError("--label_distribution cannot be combined with --add_train_dataset: the added "
                                 "sources' rows have no FER+ votes.")
        for flag in ("mixup_alpha", "cutmix_alpha"):
            if not getattr(self, flag) >= 0:
                raise ValueError(f"--{flag} {getattr(self, flag)}: must be 0 (off) or positive.")
        if self.label_distribution_classes and not self.label_distribution:
            raise ValueError("--label_distribution_classes needs --label_distribution: it says which rows take it.")
        if not 0 <= self.random_erasing <= 1:
            raise ValueError(f"--random_erasing {self.random_erasing}: a probability must be in [0, 1].")
        if self.random_erasing > 0 and not self.device_augment:
            raise ValueError("--random_erasing is part of the device augmentation: add --device_augment true.")
        if self.add_train_dataset_repeats < 1:
            raise ValueError(f"--add_train_dataset_repeats {self.add_train_dataset_repeats}: must be 1 or more.")
        if not self.face_crop_margin > -1:
            raise ValueError(f"--face_crop_margin {self.face_crop_margin}: must be above -1 (a crop needs a side).")


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Any AutoModelForImageClassification checkpoint (Hub id or folder) to fine-tune. "
                  "Without it, the FER CNN is trained from scratch."},
    )
    model_variant: str = field(
        default="small", metadata={"help": f"FER CNN size variant: {', '.join(FER_CNN_VARIANTS)}."}
    )
    model_revision: str = field(default="main", metadata={"help": "Revision of --model_name_or_path."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom code from --model_name_or_path."})
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop after this many evaluations without a better validation accuracy."}
    )
    cpu_fast_path: bool = field(
        default=True,
        metadata={"help": "On a CPU with bf16 support: bf16 autocast and channels_last memory (about 2x faster). "
                  "fp32 otherwise, or with --cpu_fast_path false."},
    )
    recompute_batch_norm: bool = field(
        default=True,
        metadata={"help": "After training, set every batch norm's statistics to their average over the unaugmented "
                  "training rows (one pass, dropout off) before the model is saved and scored. Models without "
                  "batch norm (a ViT) are unchanged. With --num_train_epochs 0 it does only this to --model_name_or_path."},
    )
    calibrate: bool = field(
        default=True,
        metadata={"help": "After the best model is saved and scored, fit the temperatures of its calibrated scores "
                  "and its unsure threshold on the validation split, as `python -m fer_hf calibrate` does."},
    )
    tta_reports: list[str] | None = field(
        default=None,
        metadata={"choices": ["mirror", "ten_crop"],
                  "help": "Also score the saved model with test-time augmentation and write {split}_{view}_report.json "
                  "for each view: `mirror` (each face averaged with its mirror, as evaluate --flip_tta does), `ten_crop` (the "
                  "probabilities of 5 crops of a 1/0.9 enlarged face, corners and centre, and their mirrors, "
                  "averaged). run_info.json keeps them as tta_metrics."},
    )
    head_from_parent_labels: bool = field(
        default=True,
        metadata={"help": "When --model_name_or_path was trained on labels that include all of ours (a 7-class model "
                  "fine-tuned for --labels happy sad, or the same labels in another order), start the head from its "
                  "rows for our labels instead of a new random head."},
    )


def parse_args() -> tuple[ModelArguments, DataTrainingArguments, TrainingArguments]:
    """Parses the flags with this task's defaults, and checks those that depend on `TrainingArguments`."""
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, TrainingArguments))
    # Defaults suited to this task; every one can still be overridden on the command line.
    parser.set_defaults(
        eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="accuracy",
        save_total_limit=2, per_device_train_batch_size=64, per_device_eval_batch_size=256,
        lr_scheduler_type="cosine", logging_steps=20, remove_unused_columns=False, report_to="none",
        # With --push_to_hub, one push at the end (the best model, its card and reports), not one per checkpoint.
        hub_strategy="end",
    )
    model_args, data_args, training_args = parser.parse_args_into_dataclasses()
    if data_args.label_distribution and training_args.label_smoothing_factor > 0:  # before minutes of loading
        raise ValueError("--label_distribution cannot be combined with --label_smoothing_factor > 0: the "
                         "distribution already smooths the targets; set --label_smoothing_factor 0.")
    if model_args.model_name_or_path is None and "--learning_rate" not in sys.argv:
        training_args.learning_rate = FER_CNN_DEFAULT_LEARNING_RATE
    return model_args, data_args, training_args


def main():
    model_args, data_args, training_args = parse_args()

    # Logging, the output folder's lock (one per run: under `accelerate launch` only the main process
    # takes it) and the checkpoint a rerun resumes from.
    lock = lock_output_dir(training_args.output_dir) if training_args.process_index == 0 else None  # noqa: F841
    log_level = training_args.get_process_log_level()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=log_level)
    transformers.utils.logging.set_verbosity(log_level)
    started = time.time()
    checkpoint = checkpoint_to_resume(training_args)
    set_seed(training_args.seed)  # before the model's random initialisation, as run_image_classification.py does

    # Data.
    dataset = load_training_data(
        data_args.dataset_name, revision=data_args.dataset_revision, labels=data_args.labels,
        add_train_dataset=data_args.add_train_dataset, add_train_dataset_repeats=data_args.add_train_dataset_repeats,
        ferplus_votes=data_args.label_distribution == "ferplus", crop=data_args.crop_faces,
        face_crop_margin=data_args.face_crop_margin, face_align=data_args.align_faces,
        validation_split_percentage=data_args.validation_split_percentage,
        split_seed=data_args.split_seed, skip_bad_images=data_args.skip_bad_images, seed=training_args.seed,
        max_train_samples=data_args.max_train_samples, max_eval_samples=data_args.max_eval_samples)
    labels = dataset["train"].features["label"].names
    logger.info("Data: %s; labels %s", {k: len(v) for k, v in dataset.items()}, labels)

    # Model and image processor (which keeps the margin photos were cropped with, for the demo to crop alike).
    model, image_processor, carried = build_model(
        labels, model_name_or_path=model_args.model_name_or_path, variant=model_args.model_variant,
        revision=model_args.model_revision, trust_remote_code=model_args.trust_remote_code,
        head_from_parent=model_args.head_from_parent_labels,
        face_crop_margin=data_args.face_crop_margin if data_args.crop_faces else None,
        face_align=data_args.align_faces if data_args.crop_faces else None,
    )
    fast_path = model_args.cpu_fast_path and enable_cpu_fast_path(model, training_args)

    # Targets and transforms. Mixed batches need class distributions as targets, so mixing trains on soft targets
    # too; so does a class-weighted loss, whose loss function is ours.
    soft_labels = (data_args.label_distribution is not None or data_args.mixup_alpha > 0 or data_args.cutmix_alpha > 0
                   or data_args.class_weighting != "none")
    if soft_labels:
        dataset["train"] = add_soft_targets(
            dataset["train"], label_distribution=data_args.label_distribution,
            weight=data_args.label_distribution_weight, label_smoothing=training_args.label_smoothing_factor,
            teacher_models=data_args.teacher_models, training_args=training_args,
            trust_remote_code=model_args.trust_remote_code, distribution_classes=data_args.label_distribution_classes)
    weights = class_weights(dataset["train"]["label"], len(labels), data_args.class_weighting)
    if weights is not None:
        logger.info("Class weights: %s", dict(zip(labels, weights.tolist())))
    grayscale = getattr(model.config, "num_channels", 3) == 1  # our CNN reads "L" images, Hub models "RGB"
    set_transforms(dataset, image_processor, grayscale=grayscale, soft_labels=soft_labels)
    # With --device_augment the loaders hand out row numbers; the faces wait on the device (fer_hf.device_augment).
    train_rows, eval_rows, device_faces = dataset["train"], dataset["validation"], None
    if data_args.device_augment:
        device_faces, train_rows, eval_rows = hold_on_device(
            dataset, image_processor, training_args.device, grayscale=grayscale, soft_labels=soft_labels,
            augmentation=FaceAugmentation(erasing=data_args.random_erasing))

    # Trainer. Soft targets need our loss (a model's own loss expects class ids); it also scores the int eval labels.
    training_time = TrainingTimeCallback(checkpoint)
    callbacks = [training_time]
    if model_args.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=model_args.early_stopping_patience))
    trainer = FerTrainer(
        model=model, args=training_args, train_dataset=train_rows, eval_dataset=eval_rows,
        compute_metrics=compute_metrics, data_collator=collate, processing_class=image_processor, callbacks=callbacks,
        compute_loss_func=partial(soft_target_cross_entropy, class_weights=weights) if soft_labels else None,
        mixup_alpha=data_args.mixup_alpha, cutmix_alpha=data_args.cutmix_alpha, device_faces=device_faces)
    precision = trainer.precision(channels_last=fast_path)
    logger.info("Precision: %s", precision)

    # Train, then set batch norm statistics from the unaugmented training rows.
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    recomputed = model_args.recompute_batch_norm and recompute_batch_norm(trainer, dataset["train"])

    # Save the best model (load_best_model_at_end), its processor and code files; evaluate it.
    trainer.save_model()
    trainer.save_state()
    for split, split_metrics in (("train", train_result.metrics), ("eval", trainer.evaluate())):
        trainer.log_metrics(split, split_metrics)
        trainer.save_metrics(split, split_metrics)

    # Reports of the saved model, training curves and run_info.json, which the model card is written from.
    if trainer.is_world_process_zero():
        output_dir = Path(training_args.output_dir)
        metrics = write_split_reports(output_dir, dataset, labels, batch_size=training_args.per_device_eval_batch_size)
        tta_metrics = write_tta_reports(output_dir, dataset, labels, model_args.tta_reports or [],
                                        batch_size=training_args.per_device_eval_batch_size,
                                        device=training_args.device)
        if model_args.calibrate and "validation" in dataset:
            calibrate_saved_model(trainer, dataset["validation"], data_args.dataset_name)
        plot_training_curves(trainer.state.log_history, output_dir / "training_curves.png")
        run_info = build_run_info(
            trainer, model_args, data_args, dataset, argv=sys.argv[1:], carried=carried, precision=precision,
            batch_norm_recomputed=recomputed, train_runtime_s=training_time.seconds_at_end, started=started,
            checkpoint=checkpoint, metrics=metrics, tta_metrics=tta_metrics)
        (output_dir / "run_info.json").write_text(json.dumps(run_info, indent=2))
        logger.info("Model, processor, code and reports are in %s", output_dir)

    # The model card (README.md); with --push_to_hub, the push of the folder with it.
    write_card_or_push(trainer)


if __name__ == "__main__":
    main()
