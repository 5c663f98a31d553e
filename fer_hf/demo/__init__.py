"""The Gradio demo's logic, one module per tab; `app.py` at the top of the repo is the layout and wires
each control to one handler here.

    common.py   reading uploads, drawing faces for display, the race-free cache writer
    photo.py    the Photo tab
    live.py     the Live webcam tab (frames streamed to the server)
    browser_live.py  the Live, in your browser tab (the page labels the webcam itself with fer_hf/web)
    video.py    the Video tab
    feedback.py corrections sent from the Photo tab to a Hub dataset (only with app.py's --feedback_repo)
"""

from __future__ import annotations

from .common import TabHandlers
from .live import LiveTab
from .photo import PhotoTab
from .video import VideoTab


class FaceDemo(PhotoTab, LiveTab, VideoTab):
    """Every tab's handlers around one loaded model: what app.py wires to its controls. Each tab's own set-up
    runs in turn (cooperative `__init__`s), on one shared recognizer."""


__all__ = ["FaceDemo", "LiveTab", "PhotoTab", "TabHandlers", "VideoTab"]
