"""A real, small filesystem that really fills up: a tmpfs of a few MB, mounted for one test.

Mounting needs root (CI runs as root); elsewhere the tests that need it are skipped. The mount
is always removed, lazily if something still holds a file open on it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_filesystem(path: Path, size_kb: int) -> Iterator[Path]:
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0755", "edge-test-fs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path, leave_bytes: int = 0) -> Path:
    """Write a filler file until the filesystem holding `path` is full (but `leave_bytes`)."""
    filler = path / "filler.bin"
    chunk = b"\xff" * 4096
    with open(filler, "ab") as fh:
        try:
            while shutil.disk_usage(path).free > leave_bytes + len(chunk):
                fh.write(chunk)
                fh.flush()
            while shutil.disk_usage(path).free > leave_bytes:
                fh.write(b"\xff")
                fh.flush()
        except OSError:
            pass
    return filler
