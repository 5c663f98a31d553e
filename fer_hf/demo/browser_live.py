"""The demo's "Live, in your browser" tab: the page itself finds and labels the webcam's faces.

The browser runs fer_hf/web/live.js: YuNet and the model's `onnx/model_quantized.onnx` in onnxruntime-web
(WASM, one thread), with the crop, tracking and smoothing of the server-side live tab. The server only
serves files: the vendored runtime and detector (fer_hf/web) and the model's config.json,
preprocessor_config.json and int8 ONNX file, each made reachable on its own with gr.set_static_paths.
No webcam frame is sent to the server.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

import gradio as gr

from ..export import ONNX_INT8_FILE

logger = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
TAB_NAME = "Live, in your browser"
MODEL_FILES = {"config": "config.json", "preprocessor": "preprocessor_config.json", "model": ONNX_INT8_FILE}


def model_files(model: Any) -> dict[str, Path | None]:
    """The local paths of the model's config.json, preprocessor_config.json and int8 ONNX file (None: missing).

    A model loaded from a folder has them there; one loaded from the Hub has them in the Hub cache at the
    commit it was loaded from (fetched now if the ONNX file was not yet, and the Hub is reachable).
    """
    source = str(getattr(model, "name_or_path", "") or "")
    folder = Path(source)
    if folder.is_dir():
        return {key: (folder / name if (folder / name).is_file() else None) for key, name in MODEL_FILES.items()}
    from huggingface_hub import hf_hub_download

    revision = getattr(model.config, "_commit_hash", None)
    files: dict[str, Path | None] = {}
    for key, name in MODEL_FILES.items():
        try:
            files[key] = Path(hf_hub_download(source, name, revision=revision))
        except Exception as error:  # no such file in the repo, or offline and not cached: the page says so
            logger.warning("The in-browser tab has no %s of %s: %s", name, source, error)
            files[key] = None
    return files


def served(file: Path) -> str:
    """The URL, relative to the page, at which Gradio serves a file of a static path."""
    # Resolved: a Hub cache file is a link into the cache's blobs, and Gradio checks the real path.
    return f"gradio_api/file={quote(str(file.resolve()))}"


def page_options(files: dict[str, Path | None], server_tab: str | None) -> dict[str, Any]:
    """live.js's start() options, with URLs relative to the page (made absolute in it)."""
    return {
        "runtime": served(WEB_DIR / "vendor") + "/",
        "detector": served(WEB_DIR / "yunet_s_dynamic.onnx"),
        **{key: None if file is None else served(file) for key, file in files.items()},
        "serverTab": server_tab,
    }


def browser_live_tab(model: Any, server_tab: str | None) -> gr.HTML:
    """Lays out the tab: a line on what it does and the page's own component; call inside `with gr.Tab(TAB_NAME):`.

    Args:
        model: The loaded model (its folder or Hub commit holds the files the page loads).
        server_tab: The name of the tab that labels webcam frames on the server, offered when the browser
            cannot (no camera permission, no WebAssembly, no ONNX file).
    """
    files = model_files(model)
    if files["config"] is None or files["preprocessor"] is None:
        files["model"] = None  # the page cannot read the labels or the crop: as good as no model
    gr.set_static_paths([WEB_DIR, *(file.resolve() for file in files.values() if file is not None)])
    options = page_options(files, server_tab)
    # Tabs mount lazily: live.js loads, and the camera is asked for, only once the tab is opened.
    script = f"""
        const base = document.baseURI;
        const options = {json.dumps(options)};
        for (const key of ["runtime", "detector", "config", "preprocessor", "model"]) {{
          if (options[key]) options[key] = new URL(options[key], base).href;
        }}
        import(new URL({json.dumps(served(WEB_DIR / "live.js"))}, base).href).then((live) => live.start(element, options));
    """
    gr.Markdown("This page finds and labels the faces of your webcam itself (WebAssembly): no frame is sent to the "
                "server. One view per face (no mirror averaging); each face is followed and its scores smoothed, as "
                "in the server-side live tab. The camera runs while this tab is open.")
    return gr.HTML("<div class='fer-live-root'></div>", js_on_load=script, elem_id="browser-live", padding=False)


__all__ = ["TAB_NAME", "WEB_DIR", "browser_live_tab", "model_files", "page_options"]
