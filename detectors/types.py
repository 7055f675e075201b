"""What a detector produces: one immutable `Detection` per finding in one analysed image."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

Point = tuple[float, float]
Polygon = tuple[Point, ...]  # normalised image coordinates: 0..1, x to the right, y down


def box_polygon(x0: float, y0: float, x1: float, y1: float) -> Polygon:
    """A box as a four-point polygon, so every region has one shape."""
    return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))


@dataclass(frozen=True)
class Detection:
    """One finding of one detector in one analysed image.

    `confirmed` is set by the detector when its own persistence rule holds (for example a
    plume seen in >= 3 of the last N analyses of one track, or a zone uncovered for the
    configured duration): the core maps confirmed detections to a Violation life cycle.
    `key` stays the same across analyses of one track or zone so the core can join them.
    `images` holds evidence crops (BGR ndarrays or encoded bytes), kept out of repr/eq.
    """

    detector: str  # black_smoke, bare_soil, washing
    camera: str
    time: datetime
    kind: str  # black_smoke, bare_soil, unwashed_vehicle, ...
    key: str
    score: float  # classifier score or ratio, 0..1
    regions: tuple[Polygon, ...] = ()
    metrics: Mapping[str, float | str] = field(default_factory=dict)
    confirmed: bool = False
    images: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
