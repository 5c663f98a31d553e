"""The demo in a real browser: headless Debian Chromium driven by Playwright (see README, "Demo").

`python app.py` runs in a subprocess on 127.0.0.1 with a random "tiny" FER CNN, whose labels are
arbitrary: the tests check that a label of the model's label set and a score appear, not which.
The webcam is Chromium's fake capture device playing a 640x480 clip made from the fixture photos, each frame
with its own noise as a real camera's; the Video tab gets an mp4 made from them with PyAV.
Set FER_HF_SCREENSHOTS=DIR to keep screenshots of the photo result, the webcam stream and the video result.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest
from PIL import Image

from fer_hf import FER2013_LABELS
from tests.apptools import COUNT_FRAMES, PHOTOS, running_app, save_tiny_model, write_y4m
from tests.conftest import ROOT
from tests.videotools import still_frames, write_video

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# CI sets this, so that a missing browser fails the run instead of skipping the tests.
REQUIRED = os.environ.get("FER_HF_REQUIRE_BROWSER_TESTS") == "1"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCORE = re.compile(r"\b(\d{1,3})%")
# Every wait below is for an event in the page; its bound only stops a hung test. On a loaded 2-core machine
# the webcam stream's first labelled face has come after more than 40 s.
WAIT_BOUND_MS = 120_000
# Labelled frames the page must draw after the first ones: the stream goes on. How many a second it draws is a
# measurement, not a check: benchmarks/bench_live.py.
LIVE_FRAMES = 20
# Page script: records what the live tab shows from now on (each overlay <img> src, status line and scores text),
# so that the test waits for the first labelled frames instead of polling for a while.
RECORD_LIVE = """() => {
  const seen = window.liveSeen = {sources: new Set(), statuses: new Set(), scores: new Set()};
  const text = selector => document.querySelector(selector)?.innerText.trim();
  new MutationObserver(() => {
    const src = document.querySelector('#overlay img')?.getAttribute('src');
    for (const [found, value] of [[seen.sources, src], [seen.statuses, text('#live-status')], [seen.scores, text('#live-scores')]])
      if (value) found.add(value);
  }).observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true, attributeFilter: ['src']});
}"""
# Three overlay pictures, a status line with faces and a shown score: the stream's first labelled frames.
FIRST_LABELLED_FRAMES = r"""() => window.liveSeen.sources.size >= 3
  && [...window.liveSeen.statuses].some(status => /\d faces? \(\d+ ms\)/.test(status))
  && [...window.liveSeen.scores].some(scores => scores.includes('%'))"""

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

_missing = ("playwright is not installed (pip install -r tests/requirements.txt)" if sync_playwright is None else
            f"no Chromium at {CHROMIUM} (apt-get install chromium)" if not os.access(CHROMIUM, os.X_OK) else None)
if _missing and REQUIRED:
    raise RuntimeError(f"FER_HF_REQUIRE_BROWSER_TESTS=1 but {_missing}")
pytestmark = pytest.mark.skipif(_missing is not None, reason=f"browser tests skipped: {_missing}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`python app.py` on a free port, with Gradio's upload and example caches in a temporary folder."""
    tmp = tmp_path_factory.mktemp("app")
    with running_app(tmp, save_tiny_model(tmp / "model")) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    clip = write_y4m(tmp_path_factory.mktemp("webcam") / "faces.y4m", sorted(PHOTOS.glob("*.jpg")), size=(640, 480),
                     fps=30, noise=3)
    args = CHROMIUM_ARGS + ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                            f"--use-file-for-fake-video-capture={clip}"]
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(permissions=["camera", "clipboard-read", "clipboard-write"],
                                  viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_BOUND_MS)
    page.goto(server, wait_until="load")  # not "networkidle": Gradio keeps a connection open
    page.locator("input[type=file]").first.wait_for(state="attached")
    yield page
    context.close()


def screenshot(page, name: str) -> None:
    if folder := os.environ.get("FER_HF_SCREENSHOTS"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), full_page=True)


def top_label_and_score(page, selector: str) -> tuple[str, int] | None:
    """The label a gr.Label shows in large type and its score in percent; None while it is empty."""
    return label_and_score(page.locator(selector).inner_text())


def label_and_score(text: str) -> tuple[str, int] | None:
    """The top label and its score in percent in a gr.Label's text; None while it is empty."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # "<component label>", "<top label>", then "<label>", "<score>%" for each class, best first.
    if len(lines) < 4 or lines[1] not in lines[2:-1]:
        return None
    match = SCORE.match(lines[lines.index(lines[1], 2) + 1])
    return (lines[1], int(match.group(1))) if match else None


def wait_for_text(page, selector: str, text: str) -> str:
    page.wait_for_function("([sel, text]) => document.querySelector(sel)?.innerText.includes(text)", arg=[selector, text])
    return page.locator(selector).inner_text()


def test_photo_upload_shows_every_face_with_label_and_score(page):
    header = next(line for line in page.locator("body").inner_text().splitlines() if line.startswith("Model "))
    assert header.startswith("Model model ·")  # the model folder's name, not its path
    page.locator("input[type=file]").first.set_input_files(str(PHOTOS / "happy_three_women.jpg"))
    assert "Found 3 faces" in wait_for_text(page, "#status", "Found")
    label, score = top_label_and_score(page, "#scores")
    assert label in FER2013_LABELS and 0 < score <= 100
    page.locator("#picker label").nth(2).wait_for()  # the picker follows the result (details.change)
    choices = page.locator("#picker label").all_inner_texts()
    assert [choice.split(":")[0].strip() for choice in choices] == ["1", "2", "3"]
    assert all(choice.split()[1] in FER2013_LABELS for choice in choices)
    assert page.locator("#annotated img").first.get_attribute("src")
    screenshot(page, "photo.png")

    # Picking face 3 redraws the photo with it highlighted and shows its scores (those of its caption).
    before = page.locator("#annotated img").first.get_attribute("src")
    page.locator("#picker").get_by_text(choices[2].strip()).click()
    page.wait_for_function("([sel, src]) => document.querySelector(sel)?.getAttribute('src') !== src",
                           arg=["#annotated img", before])
    label, score = top_label_and_score(page, "#scores")
    assert label == choices[2].split()[1] and abs(score - int(SCORE.search(choices[2]).group(1))) <= 1


def test_paste_and_webcam_snapshot_are_labelled(page):
    png = io.BytesIO()
    Image.open(PHOTOS / "happy_man.jpg").save(png, format="PNG")
    page.evaluate("""async (b64) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        await navigator.clipboard.write([new ClipboardItem({"image/png": new Blob([bytes], {type: "image/png"})})]);
    }""", base64.b64encode(png.getvalue()).decode())
    page.get_by_label("Paste from clipboard").click()
    assert "Found 1 face" in wait_for_text(page, "#status", "Found")

    page.get_by_label("Capture from camera").click()  # clears the photo first
    wait_for_text(page, "#status", "Upload a photo")
    page.get_by_text("Click to Access Webcam").click()
    page.wait_for_function("[...document.querySelectorAll('video')].some(v => v.readyState >= 2 && v.videoWidth > 0)")
    page.get_by_label("capture photo").click()
    assert re.search(r"Found \d+ faces?", wait_for_text(page, "#status", "Found"))
    assert top_label_and_score(page, "#scores")[0] in FER2013_LABELS


def test_example_and_bad_upload(page, tmp_path):
    page.get_by_text("Example photos").scroll_into_view_if_needed()
    page.locator(".gallery-item").first.click()  # happy_man.jpg, labelled at first use
    assert "Found 1 face" in wait_for_text(page, "#status", "Found")
    assert top_label_and_score(page, "#scores")[0] in FER2013_LABELS

    truncated = tmp_path / "holiday.jpg"
    data = (PHOTOS / "sad_man.jpg").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    page.locator("input[type=file]").first.set_input_files(str(truncated))
    status = wait_for_text(page, "#status", "Could not use this file")
    assert "holiday.jpg" in status and "truncated" in status
    assert "Traceback" not in page.locator("body").inner_text()


def test_upload_above_max_file_size_is_refused_with_a_message(page, tmp_path):
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff\xd8" + os.urandom(21 * 1024 * 1024))  # above MAX_FILE_SIZE (20 MB)
    page.locator("input[type=file]").first.set_input_files(str(big))
    page.get_by_text("exceed the maximum allowed size").first.wait_for()


def test_webcam_stream_updates_the_overlay(page):
    page.get_by_role("tab", name="Live webcam").click()
    page.locator("#overlay").wait_for(state="attached")
    page.evaluate(RECORD_LIVE)
    page.get_by_text("Click to Access Webcam").click()
    page.locator("button:visible", has_text="Record").click()
    page.wait_for_function(FIRST_LABELLED_FRAMES)  # fails (TimeoutError) only after WAIT_BOUND_MS
    seen = page.evaluate("() => Object.fromEntries(Object.entries(window.liveSeen).map(([k, v]) => [k, [...v]]))")
    sources, statuses = seen["sources"], seen["statuses"]
    labels = {(label_and_score(text) or [None])[0] for text in seen["scores"]}
    assert len(sources) >= 3, f"the overlay changed {len(sources)} times"
    assert any(re.search(r"\d faces? \(\d+ ms\)", status) for status in statuses), statuses
    assert labels - {None} and labels - {None} <= set(FER2013_LABELS), labels
    screenshot(page, "webcam.png")

    # The frames the page draws from here on: each carries its own camera noise, so each is a new <img> src.
    page.evaluate(COUNT_FRAMES)
    page.wait_for_function(f"() => window.framesSeen >= {LIVE_FRAMES}")
    assert page.evaluate("window.framesSeen") >= LIVE_FRAMES


def test_video_upload_gives_the_annotated_video_chart_summary_and_csv(page, tmp_path):
    frames = [*still_frames(PHOTOS / "happy_man.jpg", 10, size=(320, 200)),
              *still_frames(PHOTOS / "sad_man.jpg", 10, size=(320, 200))]
    clip = write_video(tmp_path / "two_men.mp4", frames, fps=10)
    page.get_by_role("tab", name="Video").click()
    assert "at most 20 MB and 5 minutes" in page.locator("body").inner_text()
    page.locator("#video-upload input[type=file]").set_input_files(str(clip))
    status = wait_for_text(page, "#video-status", "Labelled")
    assert "20 frames" in status and "two_men.mp4" in status, status
    table = page.locator("#video-summary").inner_text()
    assert "dominant" in table and any(f"{label} %" in table for label in FER2013_LABELS), table
    page.locator("#video-annotated video").wait_for()
    assert page.locator("#video-annotated video").get_attribute("src").endswith("two_men_labelled.mp4")
    assert page.locator("#video-chart img").get_attribute("src")
    assert "two_men\n.csv" in page.locator("#video-csv").inner_text()  # the name, its extension on a line of its own
    href = page.locator("#video-csv a[href]").first.get_attribute("href")
    rows = httpx.get(urljoin(page.url, href), timeout=30).text.splitlines()
    assert rows[0].startswith("file,") and "frame" in rows[0] and len(rows) >= 21
    screenshot(page, "video.png")


def test_a_bad_video_gets_a_message_naming_it(page, tmp_path):
    page.get_by_role("tab", name="Video").click()
    bad = tmp_path / "holiday.mp4"
    bad.write_text("not a video")
    page.locator("#video-upload input[type=file]").set_input_files(str(bad))
    status = wait_for_text(page, "#video-status", "Could not use")
    assert "holiday.mp4" in status and "not a video" in status, status
    assert "Traceback" not in page.locator("body").inner_text()


def test_serves_no_file_outside_its_own_assets(server):
    for path in (ROOT / "app.py", Path("/etc/passwd")):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{server}gradio_api/file={path}", timeout=10)
        assert refused.value.code == 403
    config = json.loads(urllib.request.urlopen(f"{server}config", timeout=10).read())
    assert config["max_file_size"] == 20 * 1024 * 1024
    # The server itself refuses a bigger upload, whatever the page does.
    upload = httpx.post(f"{server}gradio_api/upload", files={"files": ("big.jpg", bytes(21 * 1024 * 1024))}, timeout=30)
    assert upload.status_code == 413


@pytest.fixture(scope="module")
def bundled_server(tmp_path_factory):
    """`python app.py` with the bundled fer2013-cnn: heat maps of a trained model mean something to look at."""
    tmp = tmp_path_factory.mktemp("app-bundled")
    with running_app(tmp, ROOT / "models" / "fer2013-cnn") as url:
        yield url


def test_the_why_switch_shows_heat_maps_and_their_legend(browser, bundled_server):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(bundled_server, wait_until="load")
    page.locator("input[type=file]").first.set_input_files(str(PHOTOS / "happy_three_women.jpg"))
    wait_for_text(page, "#status", "Found 3 faces")
    before = page.locator("#annotated img").first.get_attribute("src")
    page.locator("#why input[type=checkbox]").check()
    assert "warm" in wait_for_text(page, "#status", "Heat maps")
    page.wait_for_function("([sel, src]) => document.querySelector(sel)?.getAttribute('src') !== src",
                           arg=["#annotated img", before])
    with Image.open(io.BytesIO(httpx.get(urljoin(bundled_server, page.locator("#annotated img").first.get_attribute("src"))).content)) as shown:
        assert shown.height > shown.width * 201 / 320  # the photo (320x201) and the legend under it
    screenshot(page, "why.png")
    context.close()
