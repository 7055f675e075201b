"""Serial test parts: a socat pty pair (two device paths wired together), and small waiting helpers.

`socat pty,raw,echo=0,link=A pty,raw,echo=0,link=B` gives two paths; bytes written to one
come out of the other. Killing socat makes both paths vanish, which is how a pulled USB
adapter looks to the agent; starting it again with the same links brings them back.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from drivers.types import Quality, Reading


def require_socat() -> str:
    path = shutil.which("socat")
    if path is None:
        pytest.skip("socat is not installed (apt-get install socat)")
    return path


class SocatPair:
    """Two linked pty paths: `meter` (the simulator's end) and `agent` (the poller's end)."""

    def __init__(self, folder: Path):
        self.socat = require_socat()
        self.meter = str(folder / "ttyMETER")
        self.agent = str(folder / "ttyAGENT")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SocatPair:
        self.proc = subprocess.Popen(
            [self.socat, f"pty,raw,echo=0,link={self.meter}", f"pty,raw,echo=0,link={self.agent}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        if not wait_for(lambda: os.path.exists(self.meter) and os.path.exists(self.agent), 5.0):
            self.stop()
            raise RuntimeError("socat did not create the pty pair")
        return self

    def stop(self) -> None:
        """Kill socat: both paths vanish, like an unplugged USB adapter."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        wait_for(lambda: not os.path.exists(self.agent), 2.0)


@contextlib.contextmanager
def socat_pair(folder: Path) -> Iterator[SocatPair]:
    """A running pair for the block; wrap it in a fixture: `with socat_pair(tmp_path) as p: yield p`."""
    pair = SocatPair(folder).start()
    try:
        yield pair
    finally:
        pair.stop()


def wait_for(predicate: Callable[[], object], timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


class Collector:
    """Thread-safe sink for Readings, with the arrival time of each (monotonic)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[tuple[float, Reading]] = []

    def __call__(self, reading: Reading) -> None:
        with self._lock:
            self.items.append((time.monotonic(), reading))

    def readings(self, quantity: str | None = None, since: float = 0.0) -> list[Reading]:
        with self._lock:
            return [r for t, r in self.items if t >= since and (quantity is None or r.quantity == quantity)]

    def first(self, since: float, quality: Quality, quantity: str | None = None) -> tuple[float, Reading] | None:
        with self._lock:
            for t, r in self.items:
                if t >= since and r.quality is quality and (quantity is None or r.quantity == quantity):
                    return t, r
        return None

    def wait(self, since: float, quality: Quality, timeout: float,
             quantity: str | None = None) -> tuple[float, Reading]:
        found: list[tuple[float, Reading]] = []

        def check() -> bool:
            hit = self.first(since, quality, quantity)
            if hit:
                found.append(hit)
            return bool(hit)

        if not wait_for(check, timeout):
            raise AssertionError(f"no {quality.value} reading within {timeout} s; got "
                                 f"{[r.quality.value for r in self.readings(since=since)][-10:]}")
        return found[0]
