"""One cheap downscale per analysis frame, shared by the motion gate and the tamper checks."""

from __future__ import annotations

import cv2
import numpy as np

ANALYSIS_WIDTH = 320


def small_grey(image_bgr: np.ndarray, width: int = ANALYSIS_WIDTH) -> np.ndarray:
    """A grey copy `width` pixels wide (aspect kept); INTER_AREA averages, so sensor noise shrinks too.

    Shrunk first, then made grey: a full-size grey copy (2 MB at 1080p, per frame) is never made."""
    h, w = image_bgr.shape[:2]
    small = image_bgr if w == width else cv2.resize(image_bgr, (width, max(1, round(h * width / w))),
                                                    interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
