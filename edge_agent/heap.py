"""Handing freed heap back to the kernel (glibc's `malloc_trim`), so RSS follows what is in use.

glibc keeps what threads free inside its arenas, for reuse. On a camera box that is a lot:
the packet rings turn over keyframes of a few hundred kB (under MALLOC_MMAP_THRESHOLD_, so
from the arenas), the detectors make per-frame arrays, evidence bundles make big transients;
bench/box.py found 10-25 MB free but held in the arenas at any time. `malloc_trim(0)` gives
the free pages of every arena back (madvise), in ~2 ms on the bench box with two cameras.
`HeapTrim.maybe()` does it at most every `every_s` seconds, from whichever thread asks
(the vision workers, after a frame). Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to call
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _malloc_trim()


class HeapTrim:
    """Rate-limited `malloc_trim(0)`; thread-safe (one caller trims, the others go on)."""

    def __init__(self, every_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self._clock = clock
        self._next = clock() + every_s
        self._lock = threading.Lock()
        self.trims = 0
        self.ms_last = 0.0

    @property
    def available(self) -> bool:
        return _TRIM is not None

    def maybe(self) -> bool:
        """Trim if `every_s` has passed since the last trim; True if this call trimmed."""
        if _TRIM is None or self._clock() < self._next or not self._lock.acquire(blocking=False):
            return False
        try:
            self._next = self._clock() + self.every_s
            t0 = time.perf_counter()
            _TRIM(0)
            self.ms_last = (time.perf_counter() - t0) * 1000
            self.trims += 1
            return True
        except Exception as exc:  # never let housekeeping take a worker down
            log.debug("malloc_trim failed: %s", exc)
            return False
        finally:
            self._lock.release()
