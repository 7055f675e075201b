"""A decoded frame kept as its YUV 4:2:0 planes (I420), and made BGR only when something looks at it.

Why: a camera's latest picture stays in memory for evidence snapshots between analyses. As BGR
a 1080p picture is 6.2 MB; its I420 planes are 3.1 MB, and OpenCV turns them into BGR in
~0.6 ms here (PyAV's bgr24 conversion took 1.7 ms). So the capture thread copies the planes
once, makes the analysis picture from them, and keeps only the planes: the BGR picture lives
while the camera's detectors read it, not until the next frame (bench/box.py: two cameras).

OpenCV's I420 conversion is BT.601 video range, as PyAV's default bgr24 conversion was; a
full-range (JPEG) stream's planes are squeezed into video range when they are copied, so both
kinds give the same colours.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from drivers.camera.luma import full_range

# 4:2:0 planar formats: three planes, chroma at half size both ways.
I420_FORMATS = {"yuv420p", "yuvj420p"}
# Full range (0..255) to video range: luma 16..235, chroma 16..240 around 128.
_LUMA_TO_VIDEO = np.round(16 + np.arange(256) * 219.0 / 255.0).astype(np.uint8)
_CHROMA_TO_VIDEO = np.round(128 + (np.arange(256) - 128) * 224.0 / 255.0).astype(np.uint8)


def i420_planes(frame: Any) -> np.ndarray | None:
    """An av.VideoFrame's picture as one (h * 3/2, w) uint8 I420 array in video range; None when
    the frame is not 4:2:0 planar or its sides are odd (then the caller converts it as before)."""
    fmt = frame.format.name
    h, w = frame.height, frame.width
    if fmt not in I420_FORMATS or h % 2 or w % 2:
        return None
    planes = frame.to_ndarray()  # PyAV copies the three planes without their line padding
    if full_range(frame):
        cv2.LUT(planes[:h], _LUMA_TO_VIDEO, dst=planes[:h])
        cv2.LUT(planes[h:], _CHROMA_TO_VIDEO, dst=planes[h:])
    return planes


def i420_to_bgr(planes: np.ndarray) -> np.ndarray:
    """A new BGR picture from I420 planes (the caller owns it and may draw on it)."""
    return cv2.cvtColor(planes, cv2.COLOR_YUV2BGR_I420)


def frame_bgr(frame: Any) -> np.ndarray:
    """A new BGR picture of a drivers.types.Frame (the caller owns it and may draw on it): made from
    its planes, else copied from its `image`. Raises ValueError when it holds neither."""
    if frame.yuv is not None:
        return i420_to_bgr(frame.yuv)
    if frame.image is None:
        raise ValueError(f"the frame of camera {frame.camera_id} holds no picture")
    return np.array(frame.image, dtype=np.uint8, copy=True)
