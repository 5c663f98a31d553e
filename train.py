#!/usr/bin/env python
"""Train the FER CNN, or fine-tune any Hub image classifier, on FER-2013 or a folder of photos.

    python train.py --dataset_name ../shared/data/fer2013 --output_dir runs/fer --num_train_epochs 30
    python train.py --dataset_name data/happy_sad --output_dir runs/vit --model_name_or_path google/vit-base-patch16-224

Every `TrainingArguments` flag works too (`python train.py --help`). Rerunning the same command
after a crash resumes from the last checkpoint in `--output_dir`. With `--push_to_hub --hub_model_id
USER/NAME` the best model, its card and reports are pushed once, at the end (token: `HF_TOKEN` or
`hf auth login`); `python -m fer_hf push OUTPUT_DIR USER/NAME` pushes a finished folder.
"""

import json
import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
import transformers
from datasets import Dataset, concatenate_datasets
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    EarlyStoppingCallback,
    HfArgumentParser,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from fer_hf import FER_CNN_VARIANTS, FerCNNForImageClassification, FerConfig, FerImageProcessor
from fer_hf.data import (
    DataError, crop_faces, ferplus_distributions, load_fer_dataset, make_transform, select_labels, soft_targets,
)
from fer_hf.evaluation import (
    class_probabilities, compute_metrics, plot_training_curves, predict_logits, recompute_batch_norm_statistics, write_reports,
)
from fer_hf.faces import DEFAULT_MARGIN
from fer_hf.hub import explain_hub_error, load_classifier, push_folder, write_model_card
from fer_hf.inference import bf16_supported, cpu_name

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
    head_from_parent_labels: bool = field(
        default=True,
        metadata={"help": "When --model_name_or_path was trained on labels that include all of ours (a 7-class model "
                  "fine-tuned for --labels happy sad, or the same labels in another order), start the head from its "
                  "rows for our labels instead of a new random head."},
    )


def main():
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
    if data_args.label_distribution or data_args.teacher_models:
        check_label_distribution_args(data_args, training_args)  # before minutes of loading
    for flag in ("mixup_alpha", "cutmix_alpha"):
        if not getattr(data_args, flag) >= 0:
            raise ValueError(f"--{flag} {getattr(data_args, flag)}: must be 0 (off) or positive.")
    if data_args.add_train_dataset_repeats < 1:
        raise ValueError(f"--add_train_dataset_repeats {data_args.add_train_dataset_repeats}: must be 1 or more.")
    if not data_args.face_crop_margin > -1:
        raise ValueError(f"--face_crop_margin {data_args.face_crop_margin}: must be above -1 (a crop needs a side).")

    # One lock per run: under `accelerate launch` / torchrun only the main process takes it.
    lock = lock_output_dir(training_args.output_dir) if training_args.process_index == 0 else None  # noqa: F841

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=training_args.get_process_log_level())
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    started = time.time()

    # A rerun of the same command picks up where a crashed or stopped run left off.
    checkpoint = training_args.resume_from_checkpoint
    if checkpoint is None and Path(training_args.output_dir).is_dir():
        checkpoint = last_complete_checkpoint(training_args.output_dir)
    if checkpoint is not None:
        logger.warning("Resuming from %s", Path(checkpoint).name)

    dataset = load_fer_dataset(
        data_args.dataset_name, seed=data_args.split_seed, skip_bad_images=data_args.skip_bad_images,
        revision=data_args.dataset_revision,
    )
    if data_args.label_distribution == "ferplus":
        # Attached while the train rows are still in train_meta.parquet's order; --labels and the row
        # selections below carry the column along with its row.
        names = data_args.labels or dataset["train"].features["label"].names
        votes = ferplus_distributions(data_args.dataset_name, names)
        if len(votes) != len(dataset["train"]):
            raise DataError(f"{data_args.dataset_name}: train_meta.parquet has {len(votes)} rows, the train split "
                            f"{len(dataset['train'])}; they must be the same rows in the same order.")
        dataset["train"] = dataset["train"].add_column("ferplus_votes", votes.tolist())
    if data_args.labels:
        dataset = select_labels(dataset, data_args.labels)
    if data_args.add_train_dataset:
        dataset["train"] = add_train_rows(dataset["train"], data_args)
    if data_args.crop_faces:
        dataset = crop_faces(dataset, margin=data_args.face_crop_margin)
    if "validation" not in dataset:
        held_out = dataset["train"].train_test_split(
            test_size=data_args.validation_split_percentage, stratify_by_column="label", seed=data_args.split_seed
        )
        dataset["train"], dataset["validation"] = held_out["train"], held_out["test"]
    if data_args.max_train_samples is not None:
        dataset["train"] = dataset["train"].shuffle(seed=training_args.seed).select(range(data_args.max_train_samples))
    if data_args.max_eval_samples is not None:
        for split in ("validation", "test"):
            if split in dataset:
                dataset[split] = dataset[split].select(range(min(data_args.max_eval_samples, len(dataset[split]))))
    labels = dataset["train"].features["label"].names
    id2label, label2id = dict(enumerate(labels)), {name: i for i, name in enumerate(labels)}
    logger.info("Data: %s; labels %s", {k: len(v) for k, v in dataset.items()}, labels)

    carried = []  # the parent's labels whose head rows the new head starts from
    if model_args.model_name_or_path is None:
        config = FerConfig.from_variant(model_args.model_variant, id2label=id2label, label2id=label2id)
        model = FerCNNForImageClassification(config)
        image_processor = FerImageProcessor()
        if "--learning_rate" not in sys.argv:
            training_args.learning_rate = FER_CNN_DEFAULT_LEARNING_RATE
    else:
        common = {"revision": model_args.model_revision, "trust_remote_code": model_args.trust_remote_code}
        model = AutoModelForImageClassification.from_pretrained(
            model_args.model_name_or_path, num_labels=len(labels), id2label=id2label, label2id=label2id,
            ignore_mismatched_sizes=True, **common,  # a new head for our labels
        )
        if model_args.head_from_parent_labels:
            carried = head_from_parent_labels(model_args.model_name_or_path, model, labels, common)
            if carried:
                logger.info("Head: the rows of %s for %s", model_args.model_name_or_path, carried)
        image_processor = AutoImageProcessor.from_pretrained(model_args.model_name_or_path, **common)
    if data_args.crop_faces:  # the model learns photos framed so: the recognizer must crop them so too
        image_processor.face_crop_margin = data_args.face_crop_margin
    grayscale = getattr(model.config, "num_channels", 3) == 1

    on_cpu = training_args.device.type == "cpu"
    fast_path = on_cpu and model_args.cpu_fast_path and bf16_supported()
    if fast_path:
        # TrainingArguments turns `bf16` into `mixed_precision` when it is built; setting `bf16` alone
        # afterwards would leave Trainer in fp32 (measured: 177 instead of 360 images/s for `base`).
        training_args.bf16, training_args.mixed_precision = True, "bf16"
        model = model.to(memory_format=torch.channels_last)

    mixing = data_args.mixup_alpha > 0 or data_args.cutmix_alpha > 0
    # Mixed batches need class distributions as targets, so mixing trains on soft targets too.
    soft_labels = data_args.label_distribution is not None or mixing
    if soft_labels:
        train = dataset["train"]
        if data_args.label_distribution == "ferplus":
            distributions = np.array(train["ferplus_votes"], dtype=np.float32)
            weight = data_args.label_distribution_weight
        elif data_args.label_distribution == "teacher":
            distributions = teacher_distributions(data_args.teacher_models, train, training_args,
                                                  trust_remote_code=model_args.trust_remote_code)
            weight = data_args.label_distribution_weight
        else:  # one-hot targets for mixing, label smoothing folded in (the soft-target loss does not smooth)
            distributions = np.full((len(train), len(labels)), 1 / len(labels), dtype=np.float32)
            weight = training_args.label_smoothing_factor
        targets = soft_targets(np.array(train["label"]), distributions, weight)
        dataset["train"] = train.add_column("target", targets.tolist())
    dataset["train"].set_transform(make_transform(image_processor, train=True, grayscale=grayscale,
                                                  soft_labels=soft_labels))
    for split in ("validation", "test"):
        if split in dataset:
            dataset[split].set_transform(make_transform(image_processor, train=False, grayscale=grayscale))

    training_time = TrainingTimeCallback(checkpoint)
    callbacks = [training_time]
    if model_args.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=model_args.early_stopping_patience))
    trainer = FerTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset["train"],
        eval_dataset=dataset["validation"],
        compute_metrics=compute_metrics,
        data_collator=collate,
        processing_class=image_processor,
        # Soft targets need our loss (a model's own loss expects class ids); it also scores the int eval labels.
        compute_loss_func=soft_target_cross_entropy if soft_labels else None,
        callbacks=callbacks,
        mixup_alpha=data_args.mixup_alpha,
        cutmix_alpha=data_args.cutmix_alpha,
    )
    # Read back from the accelerator, so the log and run_info.json say what really ran.
    precision = trainer.accelerator.mixed_precision
    precision = ("fp32" if precision == "no" else f"{precision} autocast") + (" + channels_last" if fast_path else "")
    logger.info("Precision: %s", precision)
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    updated = 0
    if model_args.recompute_batch_norm:
        # Every rank does the same pass, so under DDP all score the same model.
        updated = recompute_batch_norm_statistics(trainer.model, image_processor, dataset["train"].with_format(None),
                                                  batch_size=training_args.per_device_eval_batch_size)
        logger.info("Batch norm: %d layers recomputed on %d training rows", updated, len(dataset["train"]))
    trainer.save_model()  # the best model (load_best_model_at_end), its processor and code files
    trainer.save_state()
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)

    eval_metrics = trainer.evaluate()
    trainer.log_metrics("eval", eval_metrics)
    trainer.save_metrics("eval", eval_metrics)

    if trainer.is_world_process_zero():
        output_dir = Path(training_args.output_dir)
        # Scored as saved and loaded back by the loader `python -m fer_hf evaluate` uses, so the reports and
        # the card's figures are exactly what that command reproduces (the in-memory model, scored directly,
        # once flipped a face's prediction against the reloaded one).
        saved_model, saved_processor = load_classifier(output_dir)
        split_metrics = {}
        for split in ("validation", "test"):
            if split in dataset:
                rows = dataset[split].with_format(None)  # raw images: predict_logits preprocesses itself
                logits = predict_logits(saved_model, saved_processor, rows,
                                        batch_size=training_args.per_device_eval_batch_size)
                split_metrics[split] = write_reports(output_dir, split, logits, rows["label"], labels)
                logger.info("%s: %s", split, split_metrics[split])
        plot_training_curves(trainer.state.log_history, output_dir / "training_curves.png")
        run_info = {
            "command": "python train.py " + shlex.join(redact(sys.argv[1:], training_args.hub_token)),
            "dataset": data_args.dataset_name,
            "hub_dataset": hub_id(data_args.dataset_name),
            "splits": {name: len(part) for name, part in dataset.items()},
            "labels": labels,
            "label_distribution": (f"{data_args.label_distribution} (weight {data_args.label_distribution_weight})"
                                   if data_args.label_distribution else None),
            "teacher_models": data_args.teacher_models,
            "batch_mixing": ({"mixup_alpha": data_args.mixup_alpha, "cutmix_alpha": data_args.cutmix_alpha}
                             if mixing else None),
            "model": model_args.model_name_or_path or f"fer-cnn-{model_args.model_variant}",
            "hub_base_model": hub_id(model_args.model_name_or_path),
            "parameters": sum(p.numel() for p in model.parameters()),
            "head_from_parent": (f"the head started from the rows of {model_args.model_name_or_path} for "
                                 f"{', '.join(carried)}" if carried else None),
            "precision": precision,
            "batch_norm": (f"statistics recomputed on the {len(dataset['train'])} unaugmented training rows"
                           if updated else None),
            "hardware": hardware_description(training_args),
            "epochs": trainer.state.epoch,
            "steps": trainer.state.global_step,
            "train_runtime_s": training_time.seconds_at_end,  # summed over every resumed part
            "wall_time_s": round(time.time() - started, 1),  # this command only, start to end
            "resumed_from": Path(checkpoint).name if checkpoint else None,
            "metrics": split_metrics,
            "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
        }
        (output_dir / "run_info.json").write_text(json.dumps(run_info, indent=2))
        logger.info("Model, processor, code and reports are in %s", output_dir)

    # The model card (README.md) from run_info.json and the reports; pushing writes it for the repo.
    if not training_args.push_to_hub:
        trainer.create_model_card()
    else:
        try:
            commit = trainer.push_to_hub()
        except Exception as error:  # the trained model is safe on disk: say what failed and how to push it again
            retry = f"python -m fer_hf push {shlex.quote(training_args.output_dir)} {trainer.hub_model_id}"
            if training_args.hub_revision:
                retry += f" --revision {training_args.hub_revision}"
            raise SystemExit(f"Pushing to the Hub failed: {explain_hub_error(error)}\n"
                             f"The trained model is in {training_args.output_dir}; push it with: {retry}") from error
        if commit is not None:
            logger.warning("Pushed to %s: commit %s", trainer.hub_model_id, commit.oid)  # shown at every log level


class FerTrainer(Trainer):
    """`Trainer` whose Hub push is `fer_hf.hub.push_folder`: our model card, safetensors only, one commit.

    `Trainer.push_to_hub` uploads everything in output_dir but `_*` and `checkpoint-*`, training_args.bin
    included (a pickle that holds any `--hub_token` in clear), under a card of its own; and with
    `--push_to_hub`, every `save_model()` pushes too. Here saving never pushes, and `push_to_hub()`
    uploads what `python -m fer_hf push OUTPUT_DIR REPO` would.
    """

    def __init__(self, *args, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
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


def hub_id(name: str | None) -> str | None:
    """`name` if it is a Hub repo id rather than a local path (the card links Hub datasets and base models)."""
    return name if name and not Path(name).expanduser().exists() else None


def redact(argv: list[str], secret: str | None) -> list[str]:
    """`argv` with `secret` (a `--hub_token`, however the flag was spelled) hidden, for run_info.json and the card."""
    return [arg.replace(secret, "<HUB_TOKEN>") for arg in argv] if secret else list(argv)


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


def add_train_rows(train: Dataset, data_args: DataTrainingArguments) -> Dataset:
    """Appends the train split of each --add_train_dataset source, its classes matched by name."""
    names = train.features["label"].names
    parts = [train]
    for source in data_args.add_train_dataset:
        extra = load_fer_dataset(source, seed=data_args.split_seed, skip_bad_images=data_args.skip_bad_images)
        missing = sorted(set(names) - set(extra["train"].features["label"].names))
        if missing:
            raise DataError(f"--add_train_dataset {source}: it has no {missing} rows; pick common classes with --labels.")
        extra = select_labels(extra, names)["train"]  # same classes, same order
        parts.extend([extra.cast(train.features)] * data_args.add_train_dataset_repeats)
        logger.info("Added %d training rows from %s, %d times", len(extra), source, data_args.add_train_dataset_repeats)
    return concatenate_datasets(parts)


def check_label_distribution_args(data_args: DataTrainingArguments, training_args: TrainingArguments) -> None:
    """Refuses the flag combinations --label_distribution cannot honour, naming the flag."""
    if not 0 <= data_args.label_distribution_weight <= 1:
        raise ValueError(f"--label_distribution_weight {data_args.label_distribution_weight}: must be in [0, 1].")
    if (data_args.label_distribution == "teacher") != bool(data_args.teacher_models):
        raise ValueError("--teacher_models and --label_distribution teacher go together: give both or neither.")
    if data_args.label_distribution == "ferplus" and data_args.add_train_dataset:
        raise ValueError("--label_distribution cannot be combined with --add_train_dataset: the added sources' "
                         "rows have no FER+ votes.")
    if training_args.label_smoothing_factor > 0:
        raise ValueError("--label_distribution cannot be combined with --label_smoothing_factor > 0: the "
                         "distribution already smooths the targets; set --label_smoothing_factor 0.")


def head_from_parent_labels(parent_name: str, model: nn.Module, labels: list[str], common: dict) -> list[str]:
    """Set the new head to the parent's rows for `labels`; returns `labels` if done, else [].

    A 2-label head made of a 7-class model's happy and sad rows gives exactly that model's happy-vs-sad
    decision, where `ignore_mismatched_sizes` starts from random rows. It also keeps a same-size head right
    when the labels come in another order, which `from_pretrained` alone would load as they stand.
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


def teacher_distributions(teachers: list[str], train: Dataset, training_args: TrainingArguments, *,
                          trust_remote_code: bool = False) -> np.ndarray:
    """The teachers' class probabilities on each training row (mirror-averaged, then averaged over teachers).

    Predicted on the rows as stored, before augmentation: an augmented view keeps its face's expression,
    and one pass over the rows costs minutes where a teacher pass per training step would double every
    epoch. Saved in output_dir, so a resumed run reads them back instead of predicting again.
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


def soft_target_cross_entropy(outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """Cross-entropy against class distributions (batch x classes, training) or class ids (evaluation).

    Trainer's `compute_loss_func`. Trainer counts `num_items_in_batch` as the label entries over the whole
    accumulated (and, in DDP, gathered) batch, i.e. rows x classes for distributions: dividing the summed
    loss by the row count keeps it a per-row mean under gradient accumulation and several processes.
    """
    logits = outputs["logits"].float()  # fp32 log-softmax under bf16 autocast
    losses = F.cross_entropy(logits, labels, reduction="none")  # takes class ids or probabilities alike
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
        pixel_values: the batch, `(batch, channels, height, width)`.
        targets: class distributions, `(batch, classes)`; mixed by the same lam as the pixels.

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


def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
    return {
        "pixel_values": torch.stack([example["pixel_values"] for example in examples]),
        "labels": torch.tensor([example["labels"] for example in examples]),
    }


def hardware_description(training_args: TrainingArguments) -> str:
    if training_args.device.type == "cuda":
        return f"{training_args.n_gpu or 1}x {torch.cuda.get_device_name()}"
    threads = torch.get_num_threads()
    return f"CPU: {cpu_name()}, {threads} thread{'s' if threads != 1 else ''}, {training_args.world_size} process(es)"


if __name__ == "__main__":
    main()
