"""Data produced by drivers: one immutable record per sensor sample or video frame."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any


class Quality(str, Enum):
    """How far a sample can be trusted; only `ok` samples enter the legal figures."""

    OK = "ok"
    STALE = "stale"
    OUT_OF_RANGE = "out_of_range"
    COMM_ERROR = "comm_error"


@dataclass(frozen=True)
class Reading:
    """One sample of one quantity from one sensor, timestamped in UTC when it was read."""

    sensor_id: str
    quantity: str  # noise_la, tsp, pm10, pm2_5, wind_speed, ...
    value: float | None  # None when the meter gave no usable value
    unit: str
    time: datetime  # timezone-aware, UTC
    quality: Quality = Quality.OK

    @property
    def valid(self) -> bool:
        return self.quality is Quality.OK and self.value is not None


@dataclass(frozen=True)
class Frame:
    """One decoded video frame (arrays kept untyped to avoid importing numpy).

    `image` is the BGR picture analysis reads. A camera's latest frame, kept for evidence
    snapshots, holds the picture as I420 planes in `yuv` instead (half the memory) and no `image`:
    drivers/camera/picture.py makes BGR from either.
    """

    camera_id: str
    time: datetime
    image: Any = field(repr=False)
    keyframe: bool = False
    small: Any = field(default=None, repr=False, compare=False)  # grey, analysis-sized (drivers/camera/luma.py)
    yuv: Any = field(default=None, repr=False, compare=False)  # I420 planes, (h * 3/2, w) uint8
