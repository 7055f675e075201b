"""Giving back a model file's pages once LiteRT has packed its weights.

A model opened from a file is mapped read-only. XNNPACK copies every weight into its own packed
buffers while the interpreter is set up and first run. After that, most pages of the file are
never read again, yet they stay in the agent's resident set until the kernel needs the memory:
4 MB for the SSD, 3-4 MB for each backbone (bench/box.py). `release` tells the kernel we are done
with them (madvise MADV_DONTNEED). A page the runtime does read again (graph tables,
quantisation parameters, the weights of an op XNNPACK does not run) faults back in from the
page cache, so nothing can be lost. Only read-only mappings are touched; elsewhere than Linux
it does nothing.

The pages go back to the kernel only when the file is on a disk. A file on tmpfs is RAM
whatever we tell the kernel, so `on_disk` says where a patched model may be written to be read
this way.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MADV_RANDOM = 1
MADV_DONTNEED = 4
RAM_FILESYSTEMS = {"tmpfs", "ramfs", "devtmpfs", "hugetlbfs"}


def _madvise() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_MADVISE = _madvise()


def mappings(path: Path | str) -> list[tuple[int, int, str, int]]:
    """(start, end, permissions, resident kB) of this process's mappings of `path`."""
    target = os.path.realpath(path)
    found: list[list[Any]] = []
    current: list[Any] | None = None
    try:
        with open("/proc/self/smaps", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                head = line.split(maxsplit=5)
                if len(head) >= 5 and "-" in head[0] and ":" in head[3]:  # a mapping's first line
                    current = None
                    if len(head) == 6 and head[5].rstrip("\n") == target:
                        start, end = (int(x, 16) for x in head[0].split("-"))
                        current = [start, end, head[1], 0]
                        found.append(current)
                elif current is not None and line.startswith("Rss:"):
                    current[3] = int(line.split()[1])
    except OSError:  # no /proc (not Linux)
        return []
    return [(int(m[0]), int(m[1]), str(m[2]), int(m[3])) for m in found]


def resident_kb(path: Path | str) -> int:
    """kB of `path` resident in this process (its mappings' Rss)."""
    return sum(m[3] for m in mappings(path))


def release(path: Path | str) -> int:
    """Drop this process's resident pages of the read-only mappings of `path`; returns the kB dropped."""
    if _MADVISE is None:
        return 0
    dropped = 0
    for start, end, perms, rss in mappings(path):
        if "w" in perms or rss == 0:  # a writable mapping may hold changes: never dropped
            continue
        # No read-ahead on later faults: the runtime reads back a few scattered pages (graph
        # tables, the SSD's anchors), and each should bring in only itself.
        _MADVISE(start, end - start, MADV_RANDOM)
        if _MADVISE(start, end - start, MADV_DONTNEED) == 0:
            dropped += rss
        else:
            log.debug("madvise on %s failed: errno %d", path, ctypes.get_errno())
    if dropped:
        _drop_cached(path)
    return dropped


def _drop_cached(path: Path | str) -> None:
    """Ask the kernel to drop the file's clean, unmapped pages from its cache.

    Why: recent kernels keep a file read in one go as large folios (up to 2 MB), and a fault on
    any page of one maps all of it: after MADV_DONTNEED, the SSD's anchors (8 kB, read on every
    pass) brought 2-4 MB of the file back into the resident set (measured on Linux 6.18). Read
    again from disk after this, a fault brings in one page (12-64 kB in all).
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except (OSError, AttributeError):  # AttributeError: no posix_fadvise on this platform
        pass
    finally:
        os.close(fd)


def filesystem(path: Path | str) -> str:
    """The type of the filesystem `path` is on (the longest mount point above it in /proc/mounts); '' if unknown."""
    target = os.path.realpath(path)
    best, kind = "", ""
    try:
        with open("/proc/mounts", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mount = parts[1].replace("\\040", " ")
                inside = target == mount or target.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, parts[2]
    except OSError:
        return ""
    return kind


def on_disk(path: Path | str) -> bool:
    """True when pages of files under `path` can leave RAM (Linux, and not tmpfs or the like)."""
    kind = filesystem(path)
    return bool(kind) and kind not in RAM_FILESYSTEMS
