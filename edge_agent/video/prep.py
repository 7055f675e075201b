"""One cheap downscale per analysis frame, shared by the motion gate and the tamper checks."""

from __future__ import annotations

import cv2
import numpy as np

ANALYSIS_WIDTH = 320


def small_grey(image_bgr: np.ndarray, width: int = ANALYSIS_WIDTH) -> np.ndarray:
    """A grey copy `width` pixels wide (aspect kept); INTER_AREA averages, so sensor noise shrinks too."""
    grey = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY) if image_bgr.ndim == 3 else image_bgr
    h, w = grey.shape[:2]
    if w == width:
        return grey
    return cv2.resize(grey, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
