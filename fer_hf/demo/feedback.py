"""Corrections in the Photo tab, opt-in: a person picks the right expression of a face and sends it to a private
Hub dataset (fer_hf.feedback), which `train.py --add_train_dataset` reads. Only built with app.py's
--feedback_repo (or FER_HF_FEEDBACK_REPO); without it nothing here shows or runs.

Kept per correction: the face as the model saw it, the chosen and predicted labels, the scores, the model, the
time and a submission id shown to the person. Never kept: the photo, its metadata, webcam frames, or anything
not sent with a click.
"""

from __future__ import annotations

import copy
import logging
import signal
import threading
from typing import Any

import gradio as gr
import numpy as np

from ..faces import FaceExpressionRecognizer, find_faces
from ..feedback import DEFAULT_EVERY, FeedbackError, FeedbackScheduler, feedback_row, model_input_face, model_input_size
from ..hub import explain_hub_error
from .common import read_upload

logger = logging.getLogger("fer_hf.app")


class FeedbackTab:
    """The correction controls of the Photo tab and the `feedback` API endpoint.

    Args:
        recognizer: The demo's recognizer; corrections are of the faces it finds.
        repo_id: The dataset repo the corrections go to (created private if missing).
        model: The model's Hub repo id or folder name, kept with each row.
        model_revision: The model's commit, kept with each row.
        every: Minutes between pushes (and one at start and at exit).

    If the dataset cannot be used (no write access, no connection, a repo of another model's labels), `problem`
    says why, the tab shows it and sends nothing; the rest of the demo works as without it.
    """

    def __init__(self, recognizer: FaceExpressionRecognizer, repo_id: str, *, model: str,
                 model_revision: str | None = None, every: float = DEFAULT_EVERY) -> None:
        self.recognizer, self.repo_id = recognizer, repo_id
        self.model, self.model_revision = model, model_revision
        # The same recognizer with all the model's classes: a row's scores are over every label, in id order,
        # even where the demo shows a few (--labels happy sad).
        self.every_label = copy.copy(recognizer)
        self.every_label._columns, self.every_label.labels = None, recognizer.model_labels
        self.problem: str | None = None
        self.scheduler: FeedbackScheduler | None = None
        try:
            self.scheduler = FeedbackScheduler(repo_id, recognizer.model_labels, every=every,
                                               face_size=model_input_size(recognizer.image_processor))
        except Exception as error:  # no write access, no connection, other labels: the demo goes on without it
            self.problem = f"Corrections are off: the dataset {repo_id} cannot be used ({explain_hub_error(error)})."
            logger.error(self.problem)
        else:
            push_at_termination()

    @property
    def consent(self) -> str:
        """The line shown before anything is sent: what is kept, where, and why."""
        return (f"**Wrong label? Pick the right one and send it.** Only then is something kept: this face as the model "
                f"saw it (a small grey crop), your label, the model's guess and the time, in the private dataset "
                f"`{self.repo_id}`, to train the model on real faces. Never the photo, its details or webcam frames. "
                "You get an id to have it deleted.")

    @property
    def choices(self) -> list[str]:
        """The labels a person may pick: those the demo shows."""
        return list(self.recognizer.labels)

    def correct(self, photo: str | dict | None, face_index: int | None, label: str | None) -> str:
        """Keeps one correction; returns its submission id.

        Raises:
            FeedbackError: corrections are off, no photo, a label the demo does not show, no face at `face_index`,
                or a photo that cannot be read (the message says which).
        """
        if self.scheduler is None:
            raise FeedbackError(self.problem or "Corrections are off.")
        if label not in self.choices:
            raise FeedbackError(f"{label!r} is not one of the labels: {', '.join(self.choices)}."
                                if label else f"Pick the right expression first: {', '.join(self.choices)}.")
        if photo is None:
            raise FeedbackError("Upload a photo first.")
        image, _ = read_upload(photo, self.recognizer.max_side, self.recognizer.min_side)
        recognizer = self.recognizer
        # As the recognizer found them (largest first), so that index i is the face the demo numbered i + 1.
        _, _, crops = find_faces(image, recognizer.detector, max_side=recognizer.max_side, margin=recognizer.margin,
                                 align=recognizer.align)
        index = 0 if face_index is None else int(face_index)
        if not 0 <= index < len(crops):
            raise FeedbackError("No face was found in this photo: there is nothing to correct." if not crops else
                                f"There is no face {index} here: this photo has {len(crops)} face"
                                f"{'s' * (len(crops) > 1)}, 0 (the largest) to {len(crops) - 1}.")
        crop = crops[index]
        shown = recognizer.classify([crop])[0]
        row = feedback_row(model_input_face(crop, recognizer.image_processor), label,
                           predicted=recognizer.labels[int(np.argmax(shown))], scores=self.every_label.classify([crop])[0],
                           labels=recognizer.model_labels, model=self.model, model_revision=self.model_revision)
        return self.scheduler.submit(row)

    def send(self, photo: str | dict | None, face_index: int | None, label: str | None) -> str:
        """The Send button: a correction -> a status line with its submission id, or why nothing was kept."""
        try:
            submission = self.correct(photo, face_index, label)
        except (FeedbackError, ValueError) as error:
            return f"**Nothing was kept.** {error}"
        number = 1 if face_index is None else int(face_index) + 1
        status = (f"Thank you: face {number} is kept as **{label}**. Submission id `{submission}`: quote it to have "
                  f"it deleted. It reaches `{self.repo_id}` within {self.scheduler.every:g} minutes.")
        if self.scheduler.last_error:  # the Hub failed the last push: the rows wait on disk for the next one
            status += " (The last upload failed and is tried again; nothing is lost.)"
        return status

    @staticmethod
    def clear() -> tuple[None, str]:
        """A new photo: no label picked, no answer about the last one."""
        return None, ""

    def api(self, photo: gr.FileData, face_index: int, label: str) -> str:
        """Sends a correction: the photo, the face (0 = the largest), the right label -> the submission id."""
        try:
            return self.correct(photo, face_index, label)
        except (FeedbackError, ValueError) as error:
            raise gr.Error(str(error), print_exception=False) from None  # the caller's mistake: no traceback in the log


def push_at_termination() -> None:
    """Makes SIGTERM (a stopped container, `kill`) close the demo like Ctrl+C, so that the exit push runs.

    Python's default for SIGTERM ends the process without running atexit; Gradio's launch() closes the
    server on KeyboardInterrupt and returns, and the interpreter's exit then pushes the rows on disk.
    Only from the main thread, and only where no one set a handler of their own.
    """
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        def interrupt(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, interrupt)


__all__ = ["FeedbackTab", "push_at_termination"]
