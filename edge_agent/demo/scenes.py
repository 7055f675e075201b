"""The demo's cameras: synthetic site videos in which each video detector has something to find.

- `cam-smoke`: a site with a machine that starts to pour black smoke after 25 s;
- `cam-yard`: a stockpile covered by a dust net for 20 s, then left uncovered;
- `cam-exit`: a car that stops 20 s in the wash bay, then one that drives straight out (the
  cars are drawn well enough for the COCO detector to find them); they are also the site
  activity that backs up the noise-based night work.

Each is encoded once (H.264, 5 fps, a keyframe a second, as a technician should set a real
camera) and cached, then served over RTSP on 127.0.0.1 by GStreamer, so the agent reads
the demo cameras exactly as it reads real ones.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FPS = 5
SECONDS = 180
SYSTEM_PYTHON = "/usr/bin/python3"  # GStreamer's Python bindings live in the system Python
SERVER = Path(__file__).with_name("rtsp_server.py")
VERSION = "3"  # bump when a scene changes, to re-encode cached videos


@dataclass(frozen=True)
class DemoCamera:
    id: str
    detectors: tuple[str, ...]
    zones: dict[str, list[list[float]]]
    frames: Callable[[], Iterator[np.ndarray]]
    tamper: dict[str, float] | None = None  # overrides of the tamper defaults (none needed now)
    pose: str = ""  # where it "hangs", for the status and the manifests (the bureau's map)


def cameras() -> list[DemoCamera]:
    from detectors.training.exit_scene import Car, ExitScene
    from detectors.training.synth import SmokeScene, SoilScene

    smoke = SmokeScene(opacity=0.8, kind="site", start=25, seed=3)
    yard = SoilScene(seed=0)
    exit_ = ExitScene(seed=1, cars=[Car(start=2, stop_x=0.46, dwell=20, body=(40, 40, 200)),  # washed
                                    Car(start=70, body=(160, 60, 30))])  # straight out: not washed

    def smoke_frames() -> Iterator[np.ndarray]:
        for second in range(SECONDS):  # the scene changes once a second: render once, show FPS times
            image = smoke.frame(second)
            for _ in range(FPS):
                yield image

    def yard_frames() -> Iterator[np.ndarray]:
        for second in range(SECONDS):
            image = yard.frame(second, covered=second < 20, walkers=1)
            for _ in range(FPS):
                yield image

    def exit_frames() -> Iterator[np.ndarray]:
        for i in range(SECONDS * FPS):
            t = i / FPS
            yield exit_.frame(t, spray=22 < t < 40, i=i)

    return [
        DemoCamera("cam-smoke", ("black_smoke",), {}, smoke_frames, pose="crane 1 jib, facing the machine yard"),
        DemoCamera("cam-yard", ("bare_soil",), {"stockpile": [list(p) for p in yard.zone]}, yard_frames,
                   pose="crane 1 jib, looking down on the stockpile"),
        DemoCamera("cam-exit", ("washing", "site_activity"), {"wash_bay": [list(p) for p in exit_.wash_bay]},
                   exit_frames, pose="east hoarding, facing the exit road from the side"),
    ]


def encode(path: Path, frames: Iterator[np.ndarray]) -> Path:
    import av

    tmp = path.with_suffix(f".part{os.getpid()}.mp4")  # two demos starting at once each write their own
    with av.open(str(tmp), "w") as out:
        stream: Any = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        stream.options = {"preset": "veryfast", "g": str(FPS), "keyint_min": str(FPS), "bf": "0", "crf": "28"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    tmp.replace(path)
    return path


def rtsp_available() -> str | None:
    """Why the demo cannot serve RTSP here, or None if it can."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
                            "from gi.repository import GstRtspServer"], capture_output=True, text=True)
    if probe.returncode != 0:
        return "GStreamer's RTSP server is not installed (apt-get install gir1.2-gst-rtsp-server-1.0 python3-gi)"
    return None


class RtspFeed:
    """One camera's video served at rtsp://127.0.0.1:PORT/cam by a child process."""

    def __init__(self, video: Path, port: int):
        self.video = video
        self.port = port
        self.url = f"rtsp://127.0.0.1:{port}/cam"
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 15.0) -> RtspFeed:
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(SERVER), "--port", str(self.port), "--file", str(self.video)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("READY"):
                return self
            if not line and self.proc.poll() is not None:
                break
        raise RuntimeError(f"the RTSP server for {self.video.name} did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def prepare(folder: Path) -> list[tuple[DemoCamera, Path]]:
    """Encode (once) each demo camera's video; returns the cameras with their files."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for cam in cameras():
        path = folder / f"{cam.id}-v{VERSION}.mp4"
        if not path.exists():
            t0 = time.monotonic()
            encode(path, cam.frames())
            log.info("demo video %s encoded in %.1f s", path.name, time.monotonic() - t0)
        out.append((cam, path))
    return out
