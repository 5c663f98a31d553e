"""The demo under load: N concurrent users of its photo endpoint, through gradio's own client.

Starts `python app.py --port P` (127.0.0.1, the default model) and, with one gradio_client.Client per
user thread, sends the real photos of tests/fixtures/photos to the photo upload handler (/analyze)
in a loop for a fixed time. Reports per-request latency (p50, p95), requests/s and failures (with
their error text), and the server's memory (VmRSS of the process and its children) before the load,
after a warm-up of ~50 requests and at the end, after at least --min-requests in all (a second,
concurrent phase tops the timed one up if needed), to show whether memory stays flat.

    python benchmarks/bench_load.py [--users 20] [--seconds 60] [--warmup 50] [--min-requests 1000]

Writes benchmarks/results/load.md. Run it on an otherwise idle machine.
"""

import argparse
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np

from common import machine, write_table  # first: puts the repo root on sys.path
from gradio_client import Client, handle_file

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = sorted((ROOT / "tests" / "fixtures" / "photos").glob("*.jpg"))
ENDPOINT = "/analyze"  # app.py: gr.on([photo.upload, photo.clear], handlers.analyze, ...)
REQUEST_TIMEOUT = 120  # seconds; a request not answered by then counts as failed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def wait_until_up(url: str, server: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"app.py exited with {server.returncode} before answering")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"app.py did not answer {url} within {timeout} s")


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
            _, result, _, status = client.submit(handle_file(str(photo)), api_name=ENDPOINT).result(timeout=REQUEST_TIMEOUT)
            if not isinstance(result, dict) or not result.get("faces"):
                error = f"no faces in the answer: {status!r}"
        except Exception as exc:  # a refused, dropped or timed-out request: count it, keep going
            error = f"{type(exc).__name__}: {exc}"[:200]
        with self.lock:
            self.records.append(((time.perf_counter() - start) * 1e3, error))

    def run(self, users: int, until: float | None = None, total: int | None = None) -> float:
        """`users` threads send photos until the time `until` or `total` records; returns the wall time."""
        def user(index: int) -> None:
            client = Client(self.url, verbose=False, download_files=self.downloads)
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60, help="duration of the timed phase")
    parser.add_argument("--warmup", type=int, default=50, help="requests before the warm memory reading")
    parser.add_argument("--min-requests", type=int, default=1000, help="requests in all before the last memory reading")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "load.md"))
    args = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = tempfile.TemporaryFile()  # the server's output; a pipe nobody reads could fill and block it
    server = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, stdout=log, stderr=log)
    try:
        wait_until_up(url, server)
        with tempfile.TemporaryDirectory(prefix="bench-load-") as downloads:
            load = Load(url, downloads)
            mem_before = rss_mb(server.pid)
            load.run(min(args.users, 5), total=args.warmup)
            warm = list(load.records)
            mem_warm = rss_mb(server.pid)
            load.records = []
            elapsed = load.run(args.users, until=time.monotonic() + args.seconds)
            timed = list(load.records)
            extra = 0
            if len(warm) + len(timed) < args.min_requests:  # top up to --min-requests in all
                load.run(args.users, total=args.min_requests - len(warm))
                extra = len(load.records) - len(timed)
            everything = warm + load.records
            mem_end = rss_mb(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.seek(0)
        errors = [l for l in log.read().decode(errors="replace").splitlines() if "Error" in l or "Traceback" in l]
        log.close()
        if errors:
            print("server log:", *errors[-10:], sep="\n  ")

    ms = [t for t, e in timed if e is None]
    failures = Counter(e for _, e in everything if e)
    n_failed = sum(failures.values())
    lines = [
        "# Demo under load: concurrent users of the photo endpoint",
        "",
        f"Command: `python benchmarks/bench_load.py --users {args.users} --seconds {args.seconds:g} "
        f"--warmup {args.warmup} --min-requests {args.min_requests}`  ",
        f"{machine()}; server: `python app.py --port {port}` (default model, queue max_size 32); "
        f"client: gradio_client, one Client per user thread, `{ENDPOINT}` with the {len(PHOTOS)} photos of "
        f"tests/fixtures/photos in turn (the annotated photo downloaded too).",
        "",
        f"## Timed phase: {args.users} users for {elapsed:.0f} s",
        "",
        "| requests | answered | failed | requests/s | p50 latency ms | p95 latency ms | max latency ms |",
        "|---|---|---|---|---|---|---|",
        f"| {len(timed)} | {len(ms)} | {len(timed) - len(ms)} | {len(ms) / elapsed:.1f} | "
        + (f"{np.percentile(ms, 50):.0f} | {np.percentile(ms, 95):.0f} | {max(ms):.0f} |" if ms else "- | - | - |"),
        "",
        f"## Server memory (VmRSS, process and children), {len(everything)} requests in all "
        f"({len(warm)} warm-up, {len(timed)} timed, {extra} top-up), {n_failed} failed",
        "",
        "| before the load MB | after the warm-up MB | at the end MB | growth warm-up -> end MB |",
        "|---|---|---|---|",
        f"| {mem_before:.0f} | {mem_warm:.0f} | {mem_end:.0f} | {mem_end - mem_warm:+.1f} |",
    ]
    if failures:
        lines += ["", "Failures:", "", *(f"- {count} x {text}" for text, count in failures.most_common(10))]
    write_table(args.output, lines)


if __name__ == "__main__":
    main()
