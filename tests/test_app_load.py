"""The demo under concurrent users: every request answered, every annotated photo downloaded whole.

Gradio saves a PIL image that a handler returns to a file named after a hash of its bytes, rewriting
that file in place for every request that returns the same picture; a user still downloading it then
got a cut-off file (11 of 1,019 requests of benchmarks/bench_load.py). common.save_shown writes each
picture once, atomically. The load itself, with latency and memory, is benchmarks/bench_load.py.
"""

from __future__ import annotations

import hashlib
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from fer_hf.demo import common
from tests.apptools import PHOTOS, running_app, save_tiny_model

USERS, REQUESTS_EACH = 5, 40
# Two photos for all users: most requests return a picture another request is returning too.
SENT = [PHOTOS / "happy_three_women.jpg", PHOTOS / "happy_man.jpg"]


def test_save_shown_stores_a_picture_once_and_never_rewrites_it(tmp_path):
    image = Image.open(SENT[0]).convert("RGB")
    first = Path(common.save_shown(image, tmp_path))
    inode = first.stat().st_ino
    again = Path(common.save_shown(image.copy(), tmp_path))
    assert again == first and again.stat().st_ino == inode  # the same file, not rewritten
    assert first.suffix == ".jpeg" and Image.open(first).size == image.size
    other = Path(common.save_shown(image.rotate(90, expand=True), tmp_path))
    assert other != first
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["faces.jpeg", "faces.jpeg"]  # no leftovers


def test_readers_never_see_a_partial_file_while_the_same_picture_is_saved(tmp_path):
    """Threads save one picture over and over while others read it: every read is the whole file."""
    image = Image.open(SENT[0]).convert("RGB")
    path = Path(common.save_shown(image, tmp_path))
    size, stop, short_reads = path.stat().st_size, threading.Event(), []

    def save() -> None:
        while not stop.is_set():
            common.save_shown(image, tmp_path)

    def read() -> None:
        for _ in range(300):
            if len(path.read_bytes()) != size:
                short_reads.append(1)

    writers = [threading.Thread(target=save) for _ in range(2)]
    for thread in writers:
        thread.start()
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda _: read(), range(2)))
    finally:
        stop.set()
        for thread in writers:
            thread.join()
    assert not short_reads


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app-load")
    with running_app(tmp, save_tiny_model(tmp / "model")) as url:
        yield url


def test_concurrent_users_get_every_request_answered_with_a_whole_photo(server, tmp_path):
    """5 gradio_client users, 40 photo requests each, against `python app.py` on loopback."""
    from gradio_client import Client, handle_file

    errors: list[str] = []
    digests: dict[str, set[str]] = defaultdict(set)  # photo name -> sha256 of each annotated picture received
    lock = threading.Lock()

    def user(index: int) -> None:
        # ssl_verify=False: the app is plain HTTP on loopback, with no certificate to verify; verifying would only
        # load the CA bundle again for each of the several httpx clients gradio_client opens per call (2/3 of the
        # client's CPU here, ~47 ms each).
        client = Client(server, verbose=False, download_files=str(tmp_path / f"user{index}"), ssl_verify=False)
        for k in range(REQUESTS_EACH):
            photo = SENT[(index + k) % len(SENT)]
            try:
                annotated, result, _, _ = client.predict(handle_file(str(photo)), api_name="/analyze")
                data = Path(annotated).read_bytes()
                with Image.open(annotated) as shown:
                    shown.load()  # the whole JPEG decodes
                    scale = common.shown_scale(result["width"], result["height"])
                    assert shown.size == (round(result["width"] * scale), round(result["height"] * scale))
                with lock:
                    digests[photo.name].add(hashlib.sha256(data).hexdigest())
            except Exception as error:  # a dropped download, a short or broken file: collect, go on
                with lock:
                    errors.append(f"user {index} request {k} ({photo.name}): {type(error).__name__}: {error}"[:300])

    with ThreadPoolExecutor(USERS) as pool:
        list(pool.map(user, range(USERS)))
    assert not errors, f"{len(errors)} of {USERS * REQUESTS_EACH} requests failed:\n" + "\n".join(errors[:10])
    # The model is deterministic: every user got the same annotated picture of a photo.
    assert {name: len(found) for name, found in digests.items()} == {photo.name: 1 for photo in SENT}
