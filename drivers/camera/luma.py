"""The small grey picture that motion and tamper checks read, made from a decoded frame's luma plane.

Shrinking the Y plane (one byte a pixel, already grey) costs a fraction of shrinking the BGR
picture and greying it (measured on 1080p keyframes: ~1 ms against ~2.5 ms), and it is done
once per analysed frame on every camera.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

# Planar formats whose first plane is the luma at full resolution.
LUMA_FORMATS = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21"}
FULL_RANGE = 2  # AVCOL_RANGE_JPEG
# Video-range luma (16..235) to the 0..255 grey that BGR -> GRAY gives for the same picture.
_EXPAND = np.clip(np.round((np.arange(256) - 16) * 255.0 / 219.0), 0, 255).astype(np.uint8)


def small_luma(frame: Any, width: int) -> np.ndarray | None:
    """A grey copy `width` pixels wide (aspect kept, INTER_AREA) of an av.VideoFrame; None for other formats."""
    fmt = frame.format.name
    if fmt not in LUMA_FORMATS or width <= 0:
        return None
    h, w = frame.height, frame.width
    plane = frame.planes[0]
    y = np.frombuffer(plane, dtype=np.uint8).reshape(-1, plane.line_size)[:h, :w]  # a view, no copy
    small = cv2.resize(y, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    return small if full_range(frame) else cv2.LUT(small, _EXPAND)


def full_range(frame: Any) -> bool:
    """Whether an av.VideoFrame's YUV is full range (JPEG, 0..255) rather than video range (16..235)."""
    return bool(frame.format.name.startswith("yuvj") or getattr(frame, "color_range", 0) == FULL_RANGE)
