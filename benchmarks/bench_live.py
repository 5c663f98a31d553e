"""The live webcam tab as a viewer sees it: labelled frames per second received by the browser.

Starts `python app.py --stream_every S` for each setting, opens the page in headless Chromium whose fake
camera plays a 640x480 clip made from the fixture photos (each photo for a second, with a little
per-frame noise, as a real sensor has: Gradio names an output by its content, so identical frames would
not be redrawn and a still clip would read far too low), clicks Record, and counts the labelled frames
the page draws (a MutationObserver on <img> src changes in the overlay) over `--seconds` after a
warm-up. The server's own time per frame is read from the tab's status line ("N faces (12 ms)").

    python benchmarks/bench_live.py [--stream_every 0.2 0.04] [--seconds 15]

Writes benchmarks/results/live.md. Chromium renders on the same 2 cores as the server, as a laptop
running both would.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, machine, write_table  # first: puts the repo root on sys.path
from playwright.sync_api import sync_playwright

from tests.apptools import COUNT_FRAMES, PHOTOS, free_port, stop, wait_until_up, write_y4m

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def measure(stream_every: float, clip: Path, seconds: float, warmup: float, tmp: Path) -> dict:
    """Frames per second the page drew, and the server's ms per frame, for one --stream_every."""
    port = free_port()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(tmp / "gradio"), "HF_HUB_OFFLINE": "1"}
    log = open(tmp / f"app-{stream_every}.log", "w")
    server = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--stream_every", str(stream_every)],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until_up(url, server)
        args = CHROMIUM_ARGS + ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                                f"--use-file-for-fake-video-capture={clip}"]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
            page = browser.new_context(permissions=["camera"], viewport={"width": 1280, "height": 1000}).new_page()
            page.set_default_timeout(60_000)
            page.goto(url, wait_until="load")
            page.get_by_role("tab", name="Live webcam").click()
            page.get_by_text("Click to Access Webcam").click()
            page.locator("button:visible", has_text="Record").click()
            page.locator("#overlay img").first.wait_for()
            time.sleep(warmup)
            page.evaluate(COUNT_FRAMES)
            started, took = time.monotonic(), []
            while time.monotonic() - started < seconds:
                match = re.search(r"\((\d+) ms\)", page.locator("#live-status").inner_text())
                if match:
                    took.append(int(match.group(1)))
                time.sleep(0.25)
            frames = page.evaluate("window.framesSeen")
            elapsed = time.monotonic() - started
            browser.close()
        return {"fps": frames / elapsed, "frames": frames, "seconds": elapsed,
                "server_ms": statistics.median(took) if took else float("nan")}
    finally:
        stop(server)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stream_every", type=float, nargs="+", default=[0.2, 0.04])
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "live.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        clip = write_y4m(tmp / "faces.y4m", sorted(PHOTOS.glob("*.jpg")), size=(640, 480), fps=30, noise=3)
        rows = [(every, measure(every, clip, args.seconds, args.warmup, tmp)) for every in args.stream_every]
    load = os.getloadavg()[0]
    lines = [
        "# The live webcam tab: labelled frames per second the browser received",
        "",
        f"Command: `python benchmarks/bench_live.py --stream_every {' '.join(map(str, args.stream_every))} "
        f"--seconds {args.seconds:g}`  ",
        f"{machine()}; load average {load:.1f} at the end. The default model (`app.py` without --model); the fake camera "
        "plays a 640x480 30 fps clip of the four fixture photos with per-frame noise; Chromium (headless) on the same "
        "2 cores. Frames counted by a MutationObserver on the overlay's <img> src over the timed seconds, after a "
        f"{args.warmup:g} s warm-up.",
        "",
        "| --stream_every (s) | frames received | seconds | frames/s received | server ms per frame (median of the status line) |",
        "|---|---|---|---|---|",
    ]
    for every, row in rows:
        lines.append(f"| {every:g} | {row['frames']} | {row['seconds']:.1f} | {row['fps']:.1f} | {row['server_ms']:.0f} |")
    write_table(args.output, lines)


if __name__ == "__main__":
    main()
