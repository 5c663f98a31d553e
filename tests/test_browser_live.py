"""The "Live, in your browser" tab and the static Space, in headless Chromium (see tests/test_app_browser.py).

The page runs YuNet and the model's int8 ONNX file in onnxruntime-web; these tests use the bundled
fer2013-cnn (its labels are real, so the browser's can be compared with Python's) and Chromium's fake camera
playing a clip of the fixture photos.
"""

from __future__ import annotations

import base64
import functools
import http.server
import io
import json
import shutil
import threading
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import numpy as np
import pytest
from PIL import Image
from transformers import pipeline

from fer_hf import FerImageProcessor
from fer_hf.demo.browser_live import TAB_NAME, WEB_DIR, served
from fer_hf.model.face_detection import FaceDetector, crop_face, face_crop_margin
from fer_hf.model.pipeline_fer import TASK, FacialExpressionRecognitionPipeline
from fer_hf.tracking import FaceTracker
from tests.apptools import PHOTOS, running_app, write_y4m
from tests.conftest import ROOT
from tests.hub_server import LoopbackHub
from tests.hubtools import run_hub_python
from tests.test_app_browser import CHROMIUM, CHROMIUM_ARGS, _missing, screenshot, sync_playwright
from tests.test_space import TOKEN, _fer_hf

pytestmark = pytest.mark.skipif(_missing is not None, reason=f"browser tests skipped: {_missing}")

MODEL = ROOT / "models" / "fer2013-cnn"
SERVER_TAB = "Live webcam"
# Boxes may differ by this many pixels per edge: YuNet in ONNX against libfacedetection's C build, and the
# browser's canvas resize against Pillow's (../shared/web/README.md measured 1-3 px).
BOX_TOLERANCE = 4
# Labelled frames the page must have drawn before a check: a few seconds of the fake camera.
FRAMES = 30
WAIT_MS = 120_000  # a loaded 2-core machine takes a while to start the runtime and the camera


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_y4m(tmp_path_factory.mktemp("webcam") / "faces.y4m", sorted(PHOTOS.glob("*.jpg")), size=(640, 480),
                     fps=30, noise=3)


@pytest.fixture(scope="module")
def playwright():
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(playwright, clip):
    args = CHROMIUM_ARGS + ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                            f"--use-file-for-fake-video-capture={clip}"]
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`python app.py` with the bundled model, which has its onnx/ files."""
    with running_app(tmp_path_factory.mktemp("app"), MODEL) as url:
        yield url


def open_tab(browser, url: str, camera: bool = True, init_script: str | None = None):
    """A new page on the app with the in-browser tab open, and the list its requests are recorded in."""
    context = browser.new_context(permissions=["camera"] if camera else [], viewport={"width": 1280, "height": 900})
    if init_script:
        context.add_init_script(init_script)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    requests = []
    page.on("request", lambda request: requests.append(request))
    page.goto(url, wait_until="load")
    page.get_by_role("tab", name=TAB_NAME).click()
    return page, requests


def wait_for_frames(page, frames: int = FRAMES) -> dict:
    page.wait_for_function("n => window.ferLive && (window.ferLive.frames >= n || window.ferLive.error)", arg=frames)
    state = page.evaluate("window.ferLive")
    assert state["error"] is None, state["error"]
    return state


@functools.cache
def face_pipeline():
    return pipeline(TASK, model=str(MODEL), pipeline_class=FacialExpressionRecognitionPipeline, trust_remote_code=False)


def python_faces(photo: Path) -> list[dict]:
    """The face pipeline's faces, single view (no mirror averaging, as the browser)."""
    return face_pipeline()(str(photo), flip_tta=False)


def test_browser_matches_python_on_the_fixture_photos(browser, server):
    page, _ = open_tab(browser, server)
    page.wait_for_function("window.ferLive && (window.ferLive.ready || window.ferLive.error)")
    assert page.evaluate("window.ferLive.error") is None
    checked = unsure = 0
    for photo in sorted(PHOTOS.glob("*.jpg")):
        url = "data:image/jpeg;base64," + base64.b64encode(photo.read_bytes()).decode()
        in_browser = page.evaluate("url => window.ferLabelImage(url)", url)
        in_python = python_faces(photo)
        assert len(in_browser) == len(in_python) > 0, (photo.name, in_browser, in_python)
        for mine, theirs in zip(in_browser, in_python):
            box = theirs["box"]
            expected = [box["xmin"], box["ymin"], box["xmax"], box["ymax"]]
            assert max(abs(a - b) for a, b in zip(mine["box"], expected)) <= BOX_TOLERANCE, (photo.name, mine, theirs)
            assert mine["label"] == theirs["label"], (photo.name, mine, theirs)
            # The model's unsure_threshold (config.json) read by the page as by Python; the two sad photos' faces
            # are well below it, the happy ones well above (int8 and fp32 scores differ by hundredths).
            assert mine["unsure"] == theirs["unsure"], (photo.name, mine, theirs)
            unsure += mine["unsure"]
            checked += 1
    assert checked == 6  # happy_three_women has three faces, the others one
    assert unsure == 2
    page.context.close()


# The page's crop of a box in a lossless image: classifier.js's toGrey and cropFace (square, margin, edge
# pixels repeated, Pillow's bilinear resize), run on the canvas's pixels of a PNG made grey whole (as for a
# photo), and read back region by region (canvasRegions, as for a webcam frame).
CROP_IN_PAGE = """async ([module, png, box, margin]) => {
  const { toGrey, cropFace, cropFaceFrom, canvasRegions } = await import(module);
  const image = new Image();
  image.src = png;
  await image.decode();
  const canvas = document.createElement("canvas");
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0);
  const grey = toGrey(context.getImageData(0, 0, canvas.width, canvas.height).data, canvas.width, canvas.height);
  const [x0, y0, x1, y1] = box;
  return [Array.from(cropFace(grey, canvas.width, canvas.height, {x0, y0, x1, y1}, margin, 48, 48)),
          Array.from(cropFaceFrom(canvasRegions(context), canvas.width, canvas.height, {x0, y0, x1, y1}, margin, 48, 48))];
}"""


def test_browser_crop_has_the_pixels_of_python(browser, server):
    page, _ = open_tab(browser, server)
    page.wait_for_function("window.ferLive && (window.ferLive.ready || window.ferLive.error)")
    module = urljoin(server, served(WEB_DIR / "classifier.js"))
    processor = FerImageProcessor.from_pretrained(MODEL)
    margin = face_crop_margin(processor)
    photo = Image.open(PHOTOS / "happy_three_women.jpg").convert("RGB")
    png = io.BytesIO()
    photo.save(png, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    # The photo's faces (crops enlarged to 48 px), a box past the left and top borders (edge pixels repeated)
    # and a large one (reduced about 4 times); margins the model's and 0.1.
    boxes = [face.as_tuple() for face in FaceDetector()(photo)] + [(-10, -5, 40, 50), (60, 10, 260, 185)]
    for box in boxes:
        for m in (margin, 0.1):
            whole, regions = (np.array(crop, dtype=np.uint8).reshape(48, 48)
                              for crop in page.evaluate(CROP_IN_PAGE, [module, url, list(box), m]))
            crop = crop_face(photo, box, margin=m)
            # FerImageProcessor's own resize of the crop (fer_pixel_values): Pillow's BILINEAR to 48x48.
            expected = np.asarray(crop.resize((48, 48), Image.Resampling.BILINEAR))
            assert np.array_equal(whole, expected), (box, m)
            assert np.array_equal(regions, expected), (box, m)
    page.context.close()


def test_browser_tracker_follows_faces_as_python_does(browser, server):
    # Two faces over frames at uneven times: one still and changing expression, one that leaves and comes back
    # after more than MAX_AGE (a new track), with overlaps near MIN_IOU; the same results from tracker.js.
    labels = ["happy", "sad", "neutral"]
    rng = np.random.default_rng(0)
    frames, time_now = [], 0.0
    for index in range(40):
        time_now += float(rng.uniform(0.02, 0.15)) + (1.5 if index == 25 else 0)
        faces = [{"box": [100 + index % 3, 80, 160, 150], "scores": list(rng.dirichlet([3, 1, 1] if index < 20 else [1, 3, 1]))}]
        if index % 9 not in (0, 1):
            shift = int(rng.integers(0, 30))
            faces.append({"box": [300 + shift, 90, 360 + shift, 160], "scores": list(rng.dirichlet([1, 1, 2]))})
        frames.append((time_now, faces))
    tracker = FaceTracker(labels)
    expected = [[(face["track"], face["label"], face["scores"]) for face in tracker.update(
        [{**face, "label": "", "scores": dict(zip(labels, face["scores"]))} for face in faces], time)]
        for time, faces in frames]
    page, _ = open_tab(browser, server)
    module = urljoin(server, served(WEB_DIR / "tracker.js"))
    in_browser = page.evaluate("""async ([module, labels, frames]) => {
      const { FaceTracker } = await import(module);
      const tracker = new FaceTracker(labels);
      return frames.map(([time, faces]) => tracker.update(faces, time).map(f => [f.track, f.label, f.scores]));
    }""", [module, labels, frames])
    assert len(in_browser) == len(expected)
    for mine, theirs in zip(in_browser, expected):
        assert [(track, label) for track, label, _ in mine] == [(track, label) for track, label, _ in theirs]
        for (_, _, scores), (_, _, python_scores) in zip(mine, theirs):
            assert np.allclose(scores, [python_scores[label] for label in labels], atol=1e-9)
    assert {track for frame in expected for track, _, _ in frame} >= {1, 2, 3}  # tracks ended and began
    page.context.close()


def test_live_tab_labels_the_camera_without_sending_frames(browser, server):
    page, requests = open_tab(browser, server)
    page.wait_for_function("window.ferLive && (window.ferLive.frames > 0 || window.ferLive.error)")
    running_from = len(requests)  # from the first labelled frame on
    state = wait_for_frames(page)
    screenshot(page, "browser_live.png")
    assert state["fps"] > 0 and state["frames"] >= FRAMES
    labels = set(page.evaluate("window.ferLive.faces.map(f => f.label)"))
    config = json.loads((MODEL / "config.json").read_text())
    assert labels and labels <= set(config["id2label"].values())
    text = page.locator("#browser-live").inner_text()
    assert "frames/s" in text and "labelled in this browser" in text
    # Nothing is asked of any host but the app's, and while the tab runs, nothing is sent to it: no upload,
    # no queued event, no request with a body.
    app = urlsplit(server).netloc
    assert {urlsplit(r.url).netloc for r in requests if not r.url.startswith(("data:", "blob:"))} == {app}
    during = requests[running_from:]
    assert not [r.url for r in during if r.method != "GET" or r.post_data_buffer]
    assert not [r.url for r in during if "upload" in r.url or "/queue/" in r.url]
    # The page's own files came from the app: the vendored runtime, the detector and the model's ONNX file.
    fetched = [urlsplit(r.url).path for r in requests]
    for name in ("ort-wasm-simd-threaded.wasm", "yunet_s_dynamic.onnx", "onnx/model_quantized.onnx"):
        assert any(path.endswith(name) for path in fetched), name
    # Leaving the tab turns the camera off.
    assert page.evaluate("window.ferLive.camera")
    page.get_by_role("tab", name="Photo").click()
    page.wait_for_function("!window.ferLive.camera")
    page.context.close()


def assert_error(page, words: str) -> None:
    page.wait_for_function("window.ferLive && window.ferLive.error")
    alert = page.locator("#browser-live .fer-live-error")
    assert words in alert.inner_text()
    # It offers the server-side tab, and the offer opens it.
    alert.get_by_text(f"Use the “{SERVER_TAB}” tab instead").click()
    page.get_by_role("tab", name=SERVER_TAB, selected=True).wait_for()


def test_no_webassembly_says_so(browser, server):
    page, _ = open_tab(browser, server, init_script="delete window.WebAssembly;")
    assert_error(page, "cannot run WebAssembly")
    page.context.close()


def test_camera_refused_says_so(playwright, server):
    # Without the fake-UI flag and without the permission, Chromium refuses the camera as a visitor would.
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                          args=CHROMIUM_ARGS + ["--use-fake-device-for-media-stream"])
    try:
        page, _ = open_tab(chromium, server, camera=False)
        assert_error(page, "The camera was not allowed")
    finally:
        chromium.close()


def test_model_without_onnx_files_says_so(browser, tmp_path):
    folder = shutil.copytree(MODEL, tmp_path / "no-onnx", ignore=shutil.ignore_patterns("onnx"))
    with running_app(tmp_path, folder) as url:
        page, requests = open_tab(browser, url)
        assert_error(page, "This model has no ONNX file")
        assert not [r.url for r in requests if "yunet" in r.url]  # nothing loaded for nothing
        page.context.close()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with LoopbackHub(tmp_path_factory.mktemp("hub"), tokens={TOKEN: "alice"}) as server:
        yield server


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002
        pass


def test_static_space_round_trip(hub, browser, tmp_path):
    model_folder = shutil.copytree(MODEL, tmp_path / "fer2013-cnn")  # a push rewrites the folder's card
    pushed = _fer_hf(hub, "push", model_folder, "alice/fer-cnn", hf_home=tmp_path / "hf")
    assert pushed.returncode == 0, pushed.stderr[-4000:]
    pushed = _fer_hf(hub, "push-space", "alice/fer-live", "--model", "alice/fer-cnn", "--static", hf_home=tmp_path / "hf")
    assert pushed.returncode == 0, pushed.stderr[-4000:]
    assert "Pushed the static Space alice/fer-live" in pushed.stdout

    space = tmp_path / "space"
    run_hub_python(hub, """
        from huggingface_hub import snapshot_download
        snapshot_download(ARGS["space"], repo_type="space", local_dir=ARGS["dir"])
    """, hf_home=tmp_path / "hf_download", token=None, args={"space": "alice/fer-live", "dir": str(space)})
    card = (space / "README.md").read_text()
    assert "sdk: static" in card and "app_file: index.html" in card
    assert not (space / "app.py").exists() and (space / "vendor" / "ort-wasm-simd-threaded.wasm").is_file()

    # A plain static server, as the Hub serves a static Space; the page fetches the model from the loopback Hub.
    handler = functools.partial(_QuietHandler, directory=str(space))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as static:
        threading.Thread(target=static.serve_forever, daemon=True).start()
        try:
            context = browser.new_context(permissions=["camera"])
            page = context.new_page()
            page.set_default_timeout(WAIT_MS)
            requests = []
            page.on("request", lambda request: requests.append(request))
            page.goto(f"http://127.0.0.1:{static.server_address[1]}/index.html", wait_until="load")
            state = wait_for_frames(page, 10)
            page.wait_for_function("window.ferLive.faces.length > 0")
            assert all(face["label"] for face in page.evaluate("window.ferLive.faces"))
            hosts = {urlsplit(r.url).netloc for r in requests}
            assert hosts <= {f"127.0.0.1:{static.server_address[1]}", urlsplit(hub.url).netloc,
                             urlsplit(hub.cdn_url).netloc}, hosts
            assert any("/alice/fer-cnn/resolve/main/onnx/model_quantized.onnx" in r.url for r in requests)
            assert state["frames"] >= 10
            context.close()
        finally:
            static.shutdown()
