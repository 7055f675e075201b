"""Run edge_agent/demo/rtsp_server.py (system Python + GStreamer) as a child process, and read its clock barcode."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from edge_agent.demo.scenes import SERVER, SYSTEM_PYTHON, rtsp_available  # one definition for demo and tests
from edge_agent.loopback import free_port  # noqa: F401  (re-exported: tests import it from here)

BITS, WIDTH = 40, 320


def require_rtsp() -> None:
    reason = rtsp_available()
    if reason:
        pytest.skip(reason)


def require_ffmpeg() -> None:
    if not (shutil.which("ffmpeg") and shutil.which("ffprobe")):
        pytest.skip("ffmpeg/ffprobe are missing (apt-get install ffmpeg)")



class RtspServer:
    """One server process; `args` are rtsp_server.py's options after --port."""

    def __init__(self, port: int, *args: str):
        self.port = port
        self.args = args
        self.proc: subprocess.Popen[str] | None = None
        self.url = f"rtsp://127.0.0.1:{port}/cam"

    def start(self, timeout: float = 15.0) -> RtspServer:
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(SERVER), "--port", str(self.port), *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("READY"):
                return self
            if not line and self.proc.poll() is not None:
                raise RuntimeError(f"RTSP server failed: {self.proc.stderr.read() if self.proc.stderr else ''}")
        raise RuntimeError("RTSP server did not come up")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            if self._stopped:
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(5)
        self._stopped = False

    _stopped = False

    def freeze(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self._stopped = True

    def thaw(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)
        self._stopped = False


def read_barcode(image_bgr: np.ndarray) -> float:
    """The wall-clock time (Unix seconds) painted by `rtsp_server.py --clock` into a decoded frame."""
    h, w = image_bgr.shape[:2]
    band = image_bgr[h // 8: 3 * h // 8].mean(axis=(0, 2))  # one grey value per column of the top half
    step = w / BITS
    value = 0
    for bit in range(BITS):
        value = (value << 1) | int(band[int((bit + 0.5) * step)] > 128)
    now_ms = int(time.time() * 1000)
    span = 1 << BITS
    full = (now_ms - (now_ms % span)) + value  # the barcode holds the low 40 bits of Unix milliseconds
    if full > now_ms + span // 2:
        full -= span
    return full / 1000.0
