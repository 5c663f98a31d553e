"""A live video stream served on loopback, for the stream tests and the benchmark.

    with LiveStream(frames, fps=30, seconds=4) as live:   # HxWx3 uint8 RGB frames, cycled
        live.url                                         # http://127.0.0.1:PORT/live.ts
        live.sent_at[i]                                  # time.monotonic() when frame i went out

Each frame is encoded when it is due (H.264 without B-frames or look-ahead, as a camera encodes),
muxed as MPEG-TS and sent over HTTP at the source's pace, as a camera or an encoder box serves a
stream. The server never drops a frame: one that falls behind its time is sent at once. A client
that goes away ends the stream (`live.disconnected` is set); `stall_after=N` sends N frames and then
holds the connection open without sending anything more, as a hung encoder does.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Sequence
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import av
import numpy as np


class LiveStream:
    """Serves `seconds` of video at `fps` (frames cycled) to each GET of /live.ts on 127.0.0.1."""

    def __init__(self, frames: Sequence[np.ndarray], *, fps: float = 30, seconds: float = 4,
                 stall_after: int | None = None) -> None:
        self.frames = [np.ascontiguousarray(frame) for frame in frames]
        self.fps = fps
        self.count = round(seconds * fps)
        self.stall_after = stall_after
        self.sent_at: list[float] = []  # of the last client
        self.disconnected = threading.Event()
        self.finished = threading.Event()
        self._stop = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/live.ts":
                    self.send_error(404, "no such stream")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.send_header("Transfer-Encoding", "chunked")  # a live body: its length is not known
                self.end_headers()
                if owner._serve(self.wfile):
                    self.wfile.write(b"0\r\n\r\n")  # the last chunk: the stream ends cleanly
                self.close_connection = True

            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep the test output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/live.ts"

    def __enter__(self) -> LiveStream:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()

    def _serve(self, out) -> bool:
        """Sends the frames as HTTP chunks at their pace; whether they were all sent."""
        buffer = io.BytesIO()
        container = av.open(buffer, "w", format="mpegts")
        stream = container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
        stream.height, stream.width = self.frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        stream.codec_context.time_base = Fraction(1, 90000)
        self.sent_at = []
        start = time.monotonic()
        try:
            for index in range(self.count):
                if self.stall_after is not None and index == self.stall_after:
                    self._stop.wait()  # connected, silent, until the test ends
                    return False
                delay = start + index / self.fps - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return False
                frame = av.VideoFrame.from_ndarray(self.frames[index % len(self.frames)], format="rgb24")
                frame.pts, frame.time_base = round(index * 90000 / self.fps), Fraction(1, 90000)
                for packet in stream.encode(frame):
                    container.mux(packet)
                data = buffer.getvalue()
                if data:  # an empty chunk would end the body
                    out.write(b"%x\r\n%s\r\n" % (len(data), data))
                    out.flush()
                self.sent_at.append(time.monotonic())
                buffer.seek(0)
                buffer.truncate()
            self.finished.set()
            return True
        except (BrokenPipeError, ConnectionResetError):
            self.disconnected.set()
            return False
        finally:
            try:
                container.close()
            except Exception:  # the muxer's trailer to a closed buffer: nothing to keep
                pass
