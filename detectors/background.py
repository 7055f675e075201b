"""A running background for a fixed camera, and the image checks every detector shares.

Foreground pixels are learned slowly, so a plume or a parked truck is not absorbed at
once, while daylight changes are followed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import cv2
import numpy as np

log = logging.getLogger(__name__)


def valid_image(image: object) -> bool:
    """A BGR uint8 image of a usable size; anything else is logged and skipped, never raised."""
    ok = (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
          and image.shape[2] == 3 and image.shape[0] >= 16 and image.shape[1] >= 16)
    if not ok:
        log.warning("detector skipped an unusable image: %s", getattr(image, "shape", type(image).__name__))
    return ok


def half(image: np.ndarray) -> np.ndarray:
    """The image at exactly half its size, each pixel the mean of a 2x2 block."""
    h, w = image.shape[:2]
    return cv2.resize(image, (w // 2, h // 2), interpolation=cv2.INTER_AREA)


def downscale(image: np.ndarray, width: int, halved: Callable[[int], np.ndarray] | None = None) -> np.ndarray:
    """Analysis copy at `width` pixels wide (aspect kept), every source pixel counted.

    OpenCV's INTER_AREA has a fast path for exactly half size only: 1080p to 480 wide in one
    resize took 6.2 ms on one core, halved twice 1.8 ms (the same 4x4 means, up to rounding).
    So the image is halved while it stays at least twice `width`, then resized once more if
    needed. `halved(k)`, when given, returns the image halved k times, so that a camera's
    detectors share the halvings of one frame (SharedFeatures). That last step is under 2x
    (960 to 640 wide from 1080p): INTER_AREA there took 4.4 ms, bilinear 1.0 ms, and on an
    image already box-filtered by the halvings the two differ by 0.5-0.9 grey levels on average."""
    w = image.shape[1]
    if w <= width:
        return image
    src, k = image, 0
    while src.shape[1] >= 2 * width and src.shape[1] % 2 == 0 and src.shape[0] % 2 == 0:
        k += 1
        src = halved(k) if halved is not None else half(src)
    sh, sw = src.shape[:2]
    if sw == width:
        return src
    method = cv2.INTER_LINEAR if sw < 2 * width else cv2.INTER_AREA  # odd sizes stop the halving early
    return cv2.resize(src, (width, max(1, round(sh * width / sw))), interpolation=method)


class RunningBackground:
    """Exponential running mean of a float image with a slower rate under the foreground."""

    def __init__(self, rate: float = 0.05, foreground_rate: float = 0.002) -> None:
        self.rate = rate
        self.foreground_rate = foreground_rate
        self.mean: np.ndarray | None = None

    def ready(self, shape: tuple[int, ...]) -> bool:
        return self.mean is not None and self.mean.shape == shape

    def reset(self, frame: np.ndarray) -> None:
        self.mean = frame.astype(np.float32).copy()

    def update(self, frame: np.ndarray, foreground: np.ndarray | None = None) -> None:
        if self.mean is None or self.mean.shape != frame.shape:
            self.reset(frame)
            return
        if foreground is None:
            cv2.accumulateWeighted(frame.astype(np.float32), self.mean, self.rate)
            return
        rate = np.where(foreground > 0, self.foreground_rate, self.rate).astype(np.float32)
        self.mean += rate * (frame.astype(np.float32) - self.mean)


def components(mask: np.ndarray, min_area: int) -> list[tuple[tuple[int, int, int, int], np.ndarray]]:
    """Connected blobs of a binary mask: (box x0,y0,x1,y1, blob mask inside the box)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    out = []
    for i in range(1, n):
        x, y, w, h, area = stats[i]
        if area >= min_area:
            out.append(((int(x), int(y), int(x + w), int(y + h)), (labels[y:y + h, x:x + w] == i)))
    return out
