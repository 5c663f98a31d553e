"""fer-hf demo: upload a face photo, get its expression.

    python app.py [--model FOLDER_OR_HUB_ID]      (or FER_HF_MODEL=...)

A minimal first version: one image in, the class probabilities out. The face-finding demo replaces it.
"""

import argparse
import os
from pathlib import Path

import gradio as gr
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

import fer_hf  # noqa: F401  (registers the FER CNN with the Auto classes)

ROOT = Path(__file__).resolve().parent
DEFAULT_MODELS = [ROOT / "models" / "fer2013-cnn", ROOT / "models" / "happy-sad-cnn"]


def find_model(requested: str | None) -> str:
    """The model to serve: the one asked for, else the first bundled model folder that exists."""
    if requested:
        return requested
    for folder in DEFAULT_MODELS:
        if (folder / "config.json").exists():
            return str(folder)
    raise SystemExit(f"No model given and no bundled model in {', '.join(map(str, DEFAULT_MODELS))}; pass --model.")


def build_demo(model_name: str) -> gr.Blocks:
    model = AutoModelForImageClassification.from_pretrained(model_name)
    classifier = pipeline("image-classification", model=model, image_processor=AutoImageProcessor.from_pretrained(model_name))

    def classify(image):
        if image is None:
            return None
        return {p["label"]: p["score"] for p in classifier(image, top_k=model.config.num_labels)}

    with gr.Blocks(title="fer-hf") as demo:
        gr.Markdown(f"# fer-hf: facial expressions\nModel: `{model_name}`")
        image = gr.Image(type="pil", label="Face photo")
        label = gr.Label(label="Expression")
        image.change(classify, inputs=image, outputs=label)
    return demo


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=os.environ.get("FER_HF_MODEL"), help="model folder or Hub repo id")
    args = parser.parse_args()
    build_demo(find_model(args.model)).launch()
