"""fer-hf demo: the expression of every face in a photo, live from a webcam (on the server or in the browser), or
through a video file.

    python app.py [--model FOLDER_OR_HUB_ID] [--revision REV] [--flip_tta {true,false}] [--labels happy sad]
                  [--feedback_repo USER/NAME] [--host 127.0.0.1] [--port 7860] [--share]

The model (also FER_HF_MODEL=...) defaults to the bundled models/fer2013-cnn, else another folder in
models/; a Hub model's revision may be pinned (also FER_HF_REVISION=...). `--labels happy sad` shows only
those classes, their scores renormalised: the 7-class model's happy-vs-sad view. `--feedback_repo USER/NAME`
(also FER_HF_FEEDBACK_REPO=...) lets people send corrections of a face's expression to that private dataset
(fer_hf/demo/feedback.py says what is kept); without it there is no such control. The model is loaded once;
faces are found with fer_hf.faces and each is boxed and captioned. This file is the layout, one event line per control;
each tab's handlers live in fer_hf/demo/. As a Space (`python -m fer_hf push-space`), the
Space's variables FER_HF_MODEL and FER_HF_REVISION name the model, and Gradio's GRADIO_SERVER_NAME and
GRADIO_SERVER_PORT, which Spaces set, the address.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import tempfile
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder
from transformers.hf_argparser import string_to_bool

from fer_hf.demo import FaceDemo
from fer_hf.demo.browser_live import TAB_NAME as BROWSER_TAB, browser_live_tab
from fer_hf.demo.common import MAX_FILE_SIZE, model_display_name
from fer_hf.demo.feedback import FeedbackTab
from fer_hf.demo.live import STREAM_CONCURRENCY, STREAM_EVERY, STREAM_TIME_LIMIT
from fer_hf.demo.video import VIDEO_CONCURRENCY
from fer_hf.faces import FaceExpressionRecognizer
from fer_hf.hub import explain_hub_error, find_model, load_classifier
from fer_hf.video import VIDEO_EXTENSIONS

ROOT = Path(__file__).resolve().parent
# Real photos, a few KB each, shared with the tests (Gradio copies them into its cache to serve them).
EXAMPLES = sorted((ROOT / "tests" / "fixtures" / "photos").glob("*.jpg"))


def build_demo(model_name: str, flip_tta: bool = True, revision: str | None = None,
               stream_every: float = STREAM_EVERY, labels: list[str] | None = None,
               feedback_repo: str | None = None) -> gr.Blocks:
    """Loads the model once and lays out the Photo, Live webcam, Live in your browser and Video tabs.

    Args:
        model_name: Model folder or Hub repo id.
        flip_tta: Average each face's scores with its mirror image's (FaceExpressionRecognizer's
            flip_tta; only the faces it is unsure of): more accurate (benchmarks/results/mirror_margin.md).
        revision: Hub revision (branch, tag or commit) of a repo id; None: main.
        stream_every: Seconds between the webcam frames the browser sends.
        labels: Show only these of the model's classes, their scores renormalised (FaceExpressionRecognizer's
            labels), e.g. ["happy", "sad"]; None: all of them.
        feedback_repo: Dataset repo (`namespace/name`) that people may send corrections to; None: no corrections.

    Raises:
        ValueError: `labels` names a class the model does not have.
    """
    # Gradio names its example cache folder after a component id, not the model: a shared
    # .gradio/cached_examples would show the previous model's results after --model changes.
    if "GRADIO_EXAMPLES_CACHE" not in os.environ:
        os.environ["GRADIO_EXAMPLES_CACHE"] = cache = tempfile.mkdtemp(prefix="fer-hf-examples-")
        atexit.register(shutil.rmtree, cache, ignore_errors=True)
    model, image_processor = load_classifier(model_name, revision=revision)
    # Annotated photos go to Gradio's cache as files written race-free (save_shown), not as PIL images.
    recognizer = FaceExpressionRecognizer(model, image_processor, flip_tta=flip_tta, labels=labels)
    handlers = FaceDemo(recognizer, cache_dir=get_upload_folder())
    commit = getattr(model.config, "_commit_hash", None) or revision  # a Hub model's commit, kept with each correction
    feedback = FeedbackTab(recognizer, feedback_repo, model=model_display_name(model_name),
                           model_revision=commit) if feedback_repo else None
    shown = ", ".join(recognizer.labels)
    if labels is not None:
        shown += f" (of its {len(recognizer.model_labels)} classes, scores renormalised)"

    with gr.Blocks(title="fer-hf: facial expressions", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        mirror = "unsure faces averaged with their mirror image" if flip_tta else "one view per face"
        pinned = f" at `{revision}`" if revision else ""
        gr.Markdown(f"# Facial expressions\nModel `{model_display_name(model_name)}`{pinned} · labels: {shown} · {mirror}")
        with gr.Tab("Photo"):
            with gr.Row():
                with gr.Column() as left:
                    photo = gr.Image(label="Photo", sources=["upload", "clipboard", "webcam"], type="filepath", height=400)
                    why = gr.Checkbox(label="Why? Show where each label came from (heat maps)", elem_id="why")
                with gr.Column():
                    annotated = gr.Image(label="Faces", interactive=False, height=400, elem_id="annotated")
                    status = gr.Markdown(elem_id="status")
                    whole = gr.Button("Classify the whole image", visible=False, elem_id="whole-image")
                    picker = gr.Radio(label="Face", visible=False, elem_id="picker")
                    scores = gr.Label(label="Expression of the selected face", elem_id="scores")
                    with gr.Accordion("All faces (JSON)", open=False):
                        details = gr.JSON(label="Result")
                    if feedback:  # the consent line first, above the controls that send
                        with gr.Group(elem_id="feedback"):
                            gr.Markdown(feedback.problem or feedback.consent, elem_id="feedback-consent")
                            right_label = gr.Dropdown(feedback.choices, value=None, label="The right expression",
                                                      elem_id="feedback-label")
                            send = gr.Button("Send this correction", elem_id="feedback-send")
                            sent = gr.Markdown(elem_id="feedback-status")
            # Values only, no gr.update: Gradio 6.31's lazy example cache fails on component updates;
            # the face picker and the whole-image button follow the result JSON instead (details.change).
            outputs = [annotated, details, scores, status]
            with left:  # below the photo; Examples needs the output components, declared above
                if EXAMPLES:
                    gr.Examples([[str(path)] for path in EXAMPLES], inputs=photo, outputs=outputs, fn=handlers.analyze,
                                cache_examples=True, cache_mode="lazy", preprocess=False, label="Example photos")
        with gr.Tab("Live webcam"):
            gr.Markdown(f"Click the webcam, then **Record**: a frame every {stream_every:g} s for up to "
                        f"{STREAM_TIME_LIMIT} s; frames that arrive while one is being labelled are dropped.")
            with gr.Row():
                webcam = gr.Image(label="Webcam", sources=["webcam"], streaming=True, type="numpy")
                with gr.Column():
                    overlay = gr.Image(label="Faces", interactive=False, elem_id="overlay")
                    live_status = gr.Markdown(elem_id="live-status")
                    live_scores = gr.Label(label="Expression of the largest face", elem_id="live-scores")
            tracks = gr.State(None)  # this viewer's FaceTracker
        with gr.Tab(BROWSER_TAB):  # the page finds and labels the webcam's faces itself: no frame is sent here
            browser_live_tab(model, server_tab="Live webcam")
        with gr.Tab("Video"):
            gr.Markdown(f"Upload a video ({FaceDemo.video_limits()}; mp4, mov, webm, mkv, avi): every frame is "
                        "labelled, each face followed as a track. One video is labelled at a time; others wait.")
            with gr.Row():
                with gr.Column():
                    video = gr.File(label="Video", file_types=sorted(VIDEO_EXTENSIONS), type="filepath", elem_id="video-upload")
                    video_status = gr.Markdown(elem_id="video-status")
                    video_csv = gr.File(label="Every frame's faces (CSV)", interactive=False, elem_id="video-csv")
                with gr.Column():
                    video_annotated = gr.Video(label="Annotated video", interactive=False, elem_id="video-annotated")
            video_chart = gr.Image(label="Expression over time", type="filepath", interactive=False, elem_id="video-chart")
            video_summary = gr.Dataframe(label="Per track: share of time in each expression", interactive=False,
                                         elem_id="video-summary")

        # upload: files, paste and webcam snapshots (not .change, which an example click also fires,
        # labelling the example again after its cached result). always_last: a paste clears, then
        # uploads, and the upload must not be dropped while the clear runs. preprocess=False: the
        # handler reads the file with load_image, which explains a bad upload; Gradio would not.
        gr.on([photo.upload, photo.clear, why.input], handlers.analyze, [photo, why], outputs, preprocess=False,
              trigger_mode="always_last")
        details.change(handlers.face_picker, details, [picker, whole])
        whole.click(handlers.analyze_whole_image, [photo, why], outputs, preprocess=False)
        picker.input(handlers.show_face, [photo, details, picker, why], [annotated, scores], preprocess=False)
        annotated.select(handlers.pick_face, [photo, details, why], [picker, annotated, scores], preprocess=False)
        # A stream holds one slot per frame: each frame the browser posts replaces the one waiting, and
        # the browser sends none while a frame is pending, so a slow model drops frames, never queues them.
        webcam.stream(handlers.live, [webcam, tracks], [overlay, live_scores, live_status, tracks], stream_every=stream_every,
                      time_limit=STREAM_TIME_LIMIT, concurrency_limit=STREAM_CONCURRENCY, show_progress="hidden")
        if feedback:
            send.click(feedback.send, [photo, picker, right_label], sent, preprocess=False, api_visibility="private")
            photo.change(feedback.clear, None, [right_label, sent], api_visibility="private")
            gr.api(feedback.api, api_name="feedback")
        video.upload(handlers.label_video, video, [video_annotated, video_chart, video_summary, video_csv, video_status],
                     concurrency_limit=VIDEO_CONCURRENCY)
    return demo.queue(max_size=32)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder or Hub repo id (default: $FER_HF_MODEL, else models/)")
    parser.add_argument("--revision", default=os.environ.get("FER_HF_REVISION") or None,
                        help="Hub revision of a repo id: branch, tag or commit (default: $FER_HF_REVISION, else main)")
    parser.add_argument("--flip_tta", type=string_to_bool, nargs="?", const=True, default=True, metavar="{true,false}",
                        help="average each face's scores with its mirror image's (default: true; false: faster)")
    parser.add_argument("--labels", nargs="+", default=None, metavar="LABEL",
                        help="show only these classes, their scores renormalised (e.g. happy sad; default: all)")
    parser.add_argument("--feedback_repo", default=os.environ.get("FER_HF_FEEDBACK_REPO") or None, metavar="USER/NAME",
                        help="let people send corrections to this private dataset repo (default: $FER_HF_FEEDBACK_REPO, else off)")
    parser.add_argument("--host", default=None, help="0.0.0.0 to serve other machines (default: $GRADIO_SERVER_NAME, else 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="default: $GRADIO_SERVER_PORT, else 7860 or the next free port")
    parser.add_argument("--share", action="store_true", help="also open a public *.gradio.live link")
    parser.add_argument("--stream_every", type=float, default=STREAM_EVERY,
                        help=f"seconds between the webcam frames the browser sends (default: {STREAM_EVERY})")
    args = parser.parse_args()
    try:
        model_name = find_model(args.model, ROOT)
        demo = build_demo(model_name, flip_tta=args.flip_tta, revision=args.revision, stream_every=args.stream_every,
                          labels=args.labels, feedback_repo=args.feedback_repo)
    except Exception as error:  # no model, a wrong folder or repo id, no network and nothing cached
        raise SystemExit(f"Cannot start the demo: {explain_hub_error(error)}") from None
    # No allowed_paths: Gradio then serves only its static files, the uploads and its own cache.
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=MAX_FILE_SIZE)
