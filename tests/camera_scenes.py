"""Synthetic but realistic camera scenes for the video tests, encoded and decoded for real.

A construction-site view (sky, buildings with windows, a crane, scaffolding, textured ground)
is drawn once, larger than the frame, so a "panned" camera can look at another part of it.
Frames carry sensor noise and a moving truck, then go through H.264 (libx264 via PyAV) and
back through the decoder: the tamper checks see real compressed frames, not clean arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import av
import cv2
import numpy as np

W, H = 640, 360


def site_canvas(seed: int = 7, width: int = 2 * W, height: int = H + 80) -> np.ndarray:
    """A BGR panorama of a building site, wider than one view."""
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.uint8)
    for y in range(height // 2):  # sky gradient
        img[y] = (235 - y // 3, 200 - y // 4, 160 - y // 5)
    ground = cv2.GaussianBlur(rng.integers(70, 130, (height - height // 2, width), dtype=np.uint8), (3, 3), 0)
    img[height // 2:] = np.stack([ground * 0.8, ground * 0.9, ground], axis=-1).astype(np.uint8)
    x = 10
    while x < width - 60:  # buildings with windows
        bw, bh = int(rng.integers(60, 140)), int(rng.integers(90, height // 2 + 60))
        top = height // 2 + 40 - bh
        colour = tuple(int(c) for c in rng.integers(90, 200, 3))
        cv2.rectangle(img, (x, top), (x + bw, height // 2 + 40), colour, -1)
        for wy in range(top + 8, height // 2 + 30, 16):
            for wx in range(x + 6, x + bw - 10, 14):
                if rng.random() < 0.8:
                    cv2.rectangle(img, (wx, wy), (wx + 7, wy + 9), (40, 50, 60), -1)
        x += bw + int(rng.integers(15, 50))
    for cx in range(150, width, 420):  # tower cranes and scaffolding
        cv2.line(img, (cx, height // 2 + 60), (cx, 20), (0, 160, 230), 6)
        cv2.line(img, (cx - 120, 30), (cx + 200, 30), (0, 160, 230), 5)
        for k in range(cx - 110, cx + 200, 20):
            cv2.line(img, (k, 30), (k + 10, 42), (0, 140, 210), 2)
    for k in range(0, width, 9):
        cv2.line(img, (k, height - 60), (k + 30, height - 20), (60, 60, 70), 1)
    return img


def view(canvas: np.ndarray, t: float, *, dx: int = 0, noise: np.random.Generator | None = None) -> np.ndarray:
    """The camera's view at time `t`: a crop of the canvas shifted by `dx`, with a moving truck and noise."""
    frame = canvas[40:40 + H, 100 + dx:100 + dx + W].copy()
    tx = int(40 + 60 * t) % (W - 120)
    cv2.rectangle(frame, (tx, H - 110), (tx + 90, H - 60), (30, 120, 200), -1)
    cv2.circle(frame, (tx + 20, H - 55), 10, (20, 20, 20), -1)
    cv2.circle(frame, (tx + 70, H - 55), 10, (20, 20, 20), -1)
    if noise is not None:
        frame = cv2.add(frame, noise.integers(0, 6, frame.shape, dtype=np.uint8))
    return frame


def covered(frame: np.ndarray, noise: np.random.Generator) -> np.ndarray:
    """A hand or bag over the lens: nearly black, a faint uneven glow, sensor noise."""
    glow = np.linspace(6, 16, frame.shape[1], dtype=np.float32)[None, :, None]
    out = np.broadcast_to(glow, frame.shape).astype(np.float32) + noise.normal(0, 1.5, frame.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def defocused(frame: np.ndarray) -> np.ndarray:
    """A lens turned out of focus (or smeared with grease)."""
    return cv2.GaussianBlur(frame, (0, 0), 4.0)


def encode(path: Path, frames: Iterator[np.ndarray], fps: int = 5, gop: int = 5) -> Path:
    """Encode BGR frames to an H.264 MP4 (libx264, baseline, keyframe every `gop`)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"preset": "veryfast", "g": str(gop), "keyint_min": str(gop), "bf": "0", "crf": "26"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def decode(path: Path) -> Iterator[np.ndarray]:
    """Decoded BGR frames of a file."""
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="bgr24")


def script(seconds: float, fps: int, pick: Callable[[float], np.ndarray]) -> Iterator[np.ndarray]:
    for i in range(int(seconds * fps)):
        yield pick(i / fps)
