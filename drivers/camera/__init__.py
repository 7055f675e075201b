"""RTSP cameras: capture threads, the encoded-packet ring for clips, and the snapshot watermark.

Imports neither `edge_agent` nor `detectors`: frames go out through a callback.
"""

from drivers.camera.capture import CameraCapture, CaptureHealth, CaptureSettings, StreamEvent, redact
from drivers.camera.plan import DecodePlan
from drivers.camera.ring import ClipError, ClipInfo, PacketRing

__all__ = [
    "CameraCapture",
    "CaptureHealth",
    "CaptureSettings",
    "ClipError",
    "ClipInfo",
    "DecodePlan",
    "PacketRing",
    "StreamEvent",
    "redact",
]
