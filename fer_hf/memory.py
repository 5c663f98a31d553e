"""Process-wide malloc tuning for applications that read big photos (the demo, `python -m fer_hf`).

    from fer_hf.memory import reuse_freed_memory

    reuse_freed_memory()  # once, at start-up, before any thread is started

benchmarks/results/read.md measures what it buys (`python benchmarks/bench_read.py`).
"""

from __future__ import annotations

import ctypes

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


def reuse_freed_memory(limit: int = 1 << 30) -> bool:
    """Makes glibc keep freed memory (up to `limit` bytes a block) for reuse; False where it cannot.

    Even at 1/8 scale, libjpeg decodes a progressive JPEG into coefficient buffers for the whole
    image: about 200 MB for a 7,360x4,912 photo. glibc maps blocks that size afresh and unmaps them
    when freed, so every such photo pays tens of thousands of page faults; kept, the next photo reuses
    the same pages. One malloc arena for all threads, because a thread's own arena cannot hold a
    block above 64 MB and maps it afresh (Gradio runs handlers in threads).

    The cost: the process keeps its peak heap instead of returning it. It is a process-wide setting,
    so the application calls it, once, before starting threads (app.py and `python -m fer_hf` do), not
    the library.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt  # glibc's; macOS and Windows have none
    except (OSError, AttributeError):
        return False
    settings = ((_M_MMAP_THRESHOLD, limit), (_M_TRIM_THRESHOLD, limit), (_M_ARENA_MAX, 1))
    return all(mallopt(option, value) == 1 for option, value in settings)


__all__ = ["reuse_freed_memory"]
