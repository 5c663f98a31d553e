"""Live labelling in the visitor's browser against the server-side live tab, in one run on one server.

Starts `python app.py` (the default model) once, and opens it in headless Chromium whose fake camera plays a
640x480 30 fps clip made from the fixture photos (per-frame noise, as bench_live.py). For each tab, in a fresh
page:

- first label: seconds from the tab's click to the first labelled frame on the page (the server tab also needs
  its "Click to Access Webcam" and "Record" clicks, made at once; the browser tab starts its camera itself
  and first loads the runtime, the detector and the model);
- labelled frames/s: frames the page drew over `--seconds` after a warm-up (server tab: <img> src changes in
  the overlay, as bench_live.py counts them; browser tab: window.ferLive.frames);
- server CPU: the app process's user + system CPU seconds over the same seconds (/proc/PID/stat), per second
  of stream; the baseline row is a page left open on its first tab, no stream, for as long.

    python benchmarks/bench_browser_live.py [--seconds 15] [--quick]

Writes benchmarks/results/browser_live.md. Chromium runs on the same 2 cores as the server, as a laptop running
both would; the load average from other jobs is written beside the figures.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, machine, write_table  # first: puts the repo root on sys.path
from playwright.sync_api import sync_playwright

from fer_hf.demo.browser_live import TAB_NAME
from tests.apptools import COUNT_FRAMES, PHOTOS, free_port, stop, wait_until_up, write_y4m

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SERVER_TAB = "Live webcam"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def measure_idle(page, pid: int, seconds: float, warmup: float) -> dict:
    """The baseline: the page open on its first tab, no stream; what the server spends on a page anyway."""
    time.sleep(warmup)
    cpu, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return {"first": None, "frames": 0, "seconds": time.monotonic() - started, "cpu": cpu_seconds(pid) - cpu}


def measure_server_tab(page, pid: int, seconds: float, warmup: float) -> dict:
    opened = time.monotonic()
    page.get_by_role("tab", name=SERVER_TAB).click()
    page.get_by_text("Click to Access Webcam").click()
    page.locator("button:visible", has_text="Record").click()
    page.locator("#overlay img").first.wait_for()
    first = time.monotonic() - opened
    time.sleep(warmup)
    page.evaluate(COUNT_FRAMES)
    cpu, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    frames, elapsed = page.evaluate("window.framesSeen"), time.monotonic() - started
    return {"first": first, "frames": frames, "seconds": elapsed, "cpu": cpu_seconds(pid) - cpu}


def measure_browser_tab(page, pid: int, seconds: float, warmup: float) -> dict:
    opened = time.monotonic()
    page.get_by_role("tab", name=TAB_NAME).click()
    page.wait_for_function("window.ferLive && (window.ferLive.faces.length > 0 || window.ferLive.error)")
    if error := page.evaluate("window.ferLive.error"):
        raise RuntimeError(f"the in-browser tab failed: {error}")
    first = time.monotonic() - opened
    time.sleep(warmup)
    frames, cpu, started = page.evaluate("window.ferLive.frames"), cpu_seconds(pid), time.monotonic()
    samples = []  # the page's last-frame milliseconds, read 4 times a second
    while time.monotonic() - started < seconds:
        samples.append(page.evaluate("window.ferLive.ms"))
        time.sleep(0.25)
    frames, elapsed = page.evaluate("window.ferLive.frames") - frames, time.monotonic() - started
    ms = {key: statistics.median(sample[key] for sample in samples) for key in ("grab", "detect", "classify", "total")}
    return {"first": first, "frames": frames, "seconds": elapsed, "cpu": cpu_seconds(pid) - cpu, "ms": ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--quick", action="store_true", help="5 s per tab after a 2 s warm-up")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "browser_live.md"))
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.warmup = 5, 2
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        clip = write_y4m(tmp / "faces.y4m", sorted(PHOTOS.glob("*.jpg")), size=(640, 480), fps=30, noise=3)
        port = free_port()
        env = {**os.environ, "GRADIO_TEMP_DIR": str(tmp / "gradio"), "HF_HUB_OFFLINE": "1"}
        with open(tmp / "app.log", "w") as log:
            server = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env, stdout=log,
                                      stderr=subprocess.STDOUT)
            try:
                url = f"http://127.0.0.1:{port}/"
                wait_until_up(url, server)
                chromium_args = CHROMIUM_ARGS + ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                                                 f"--use-file-for-fake-video-capture={clip}"]
                rows = {}
                with sync_playwright() as playwright:
                    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=chromium_args)
                    tabs = (("none (page open, no stream)", measure_idle), (SERVER_TAB, measure_server_tab),
                            (TAB_NAME, measure_browser_tab))
                    for name, measure in tabs:
                        context = browser.new_context(permissions=["camera"], viewport={"width": 1280, "height": 1000})
                        page = context.new_page()
                        page.set_default_timeout(120_000)
                        page.goto(url, wait_until="load")
                        page.locator("input[type=file]").first.wait_for(state="attached")
                        rows[name] = measure(page, server.pid, args.seconds, args.warmup)
                        context.close()
                    browser.close()
            finally:
                stop(server)
    load_after = os.getloadavg()[0]
    quick = " --quick" if args.quick else f" --seconds {args.seconds:g}"
    lines = [
        "# Live labelling in the browser against the server-side live tab",
        "",
        f"Command: `python benchmarks/bench_browser_live.py{quick}`  ",
        f"{machine()}; load average {load_before:.1f} before and {load_after:.1f} after the run (the run's own"
        " Chromium and server count in the second)"
        + (" (the machine was loaded by other jobs: pessimistic figures)" if load_before > 2 else "")
        + ". One `app.py` (the default model), headless Chromium on the same 2 cores; the fake camera plays a 640x480 "
        f"30 fps clip of the four fixture photos with per-frame noise. Each tab in a fresh page: {args.warmup:g} s "
        f"warm-up, then {args.seconds:g} s timed. The server tab streams with its default --stream_every 0.04; the "
        "browser tab runs YuNet and the model's onnx/model_quantized.onnx in onnxruntime-web 1.31.1 (WASM, one thread).",
        "",
        "| tab | first label after the tab opens (s) | labelled frames | seconds | labelled frames/s "
        "| server CPU s per stream-second |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        first = "" if row["first"] is None else f"{row['first']:.1f}"
        lines.append(f"| {name} | {first} | {row['frames']} | {row['seconds']:.1f} "
                     f"| {row['frames'] / row['seconds']:.1f} | {row['cpu'] / row['seconds']:.3f} |")
    ms = rows[TAB_NAME]["ms"]
    lines += ["", "In the browser, per labelled frame (medians of the page's last-frame times, window.ferLive.ms, sampled "
              f"4 times a second): {ms['grab']:.1f} ms to take the frame, {ms['detect']:.1f} ms to find the faces (YuNet at "
              f"320 px, its input included), {ms['classify']:.1f} ms to crop (grey squares read back from the frame) and "
              f"classify them, {ms['total']:.1f} ms in all (drawing included).",
              "", "Goals: at least 25 labelled frames/s in the browser; about zero server CPU for it."]
    write_table(args.output, lines)


if __name__ == "__main__":
    main()
