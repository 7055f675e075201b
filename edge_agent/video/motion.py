"""A motion gate: the share of pixels that changed since the last analysis frame.

Detectors that look for activity (vehicles, dust plumes, smoke) can skip a still frame; this
costs one subtraction on a 160-pixel-wide grey image (~0.1 ms), far less than any model.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

GATE_WIDTH = 160


@dataclass(frozen=True)
class MotionSample:
    ratio: float  # share of pixels whose grey level changed by more than the pixel threshold
    moving: bool  # ratio above the camera's motion_min_ratio (the first frame counts as moving)


class MotionGate:
    def __init__(self, min_ratio: float = 0.002, pixel_threshold: int = 15):
        self.min_ratio = min_ratio
        self.pixel_threshold = pixel_threshold
        self._prev: np.ndarray | None = None

    def update(self, grey: np.ndarray) -> MotionSample:
        """Compare with the previous frame; `grey` is a small grey image of any width."""
        h, w = grey.shape[:2]
        small = cv2.resize(grey, (GATE_WIDTH, max(1, round(h * GATE_WIDTH / w))), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (3, 3), 0)  # compression noise is not motion
        prev, self._prev = self._prev, small
        if prev is None or prev.shape != small.shape:
            return MotionSample(1.0, True)
        changed = cv2.absdiff(small, prev) > self.pixel_threshold
        ratio = float(np.count_nonzero(changed)) / changed.size
        return MotionSample(ratio, ratio > self.min_ratio)

    def reset(self) -> None:
        self._prev = None
