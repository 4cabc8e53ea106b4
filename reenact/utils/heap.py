"""Giving freed C-heap memory back to the operating system during long passes over a video.

glibc's allocator raises its mmap threshold each time a large mmapped block is freed, so after the first batches the
networks' large temporary buffers come from the heap instead of from their own mappings. Small allocations that
live on between batches (a batch's motion, the frames waiting for the encoder, the muxer's index) then sit between
freed stretches of that heap, and glibc returns only the free space at the heap's top. Over a 10-minute driving video
the process grew by hundreds of megabytes of memory it had freed (experiments/2026-12-06_animation.md).
``malloc_trim(0)`` hands back the free pages anywhere in the heap; it takes about a millisecond, so a long pass calls
it every few hundred frames through :class:`HeapTrimmer`. Elsewhere than glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

RELEASE_EVERY_FRAMES = 256  # frames between two trims of a long pass: ~1 ms each, against seconds of rendering


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        library = ctypes.CDLL(name)
        trim = library.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_freed_memory() -> bool:
    """Return the C heap's free pages to the system; True when memory was released, False when none was or the C
    library cannot (not glibc)."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


class HeapTrimmer:
    """Counts frames through a long pass and calls ``release`` every ``every`` of them."""

    def __init__(self, every: int = RELEASE_EVERY_FRAMES,
                 release: Callable[[], bool] = release_freed_memory) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1 frame, got {every}")
        self.every = every
        self.release = release
        self._since = 0

    def advance(self, frames: int) -> None:
        """``frames`` more frames are done; release the freed memory once ``every`` have passed since the last time."""
        self._since += frames
        if self._since >= self.every:
            self._since = 0
            self.release()
