"""Vehicle washing at the exit: blobs against the background, tracked; dwell in the wash bay
and visible spray are accumulated per track; crossing the exit line without enough of
either gives a confirmed `unwashed_vehicle` detection with a snapshot.

Spray is seen as many small bright pixels in the bay that flicker between analyses
(water drops and mist); a heuristic, not a model: say so when a bureau asks.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field, model_validator

from detectors.background import RunningBackground, components, downscale, valid_image
from detectors.geometry import as_line, as_polygon, centroid, inside, normalise_box, polygon_mask, side
from detectors.pool import ModelPool
from detectors.registry import CameraView, DetectorParams, DetectorSpec
from detectors.tracking import Track, Tracker
from detectors.types import Detection, box_polygon

log = logging.getLogger(__name__)
NAME = "washing"


Point = tuple[float, float]


class WashParams(DetectorParams):
    """The exit camera's washing check (`detectors.washing` in the config)."""

    type: Literal["washing"] = "washing"
    wash_bay_zone: str = Field("wash_bay", description="Name of the camera zone that is the wash bay.")
    exit_line: tuple[Point, Point] | None = Field(
        None, description="The exit line [[x, y], [x, y]] in normalised coordinates; required where washing runs.",
    )
    min_dwell_s: float = Field(15.0, ge=0, le=600, description="Seconds a vehicle must stay in the wash bay.")
    spray_required: bool = Field(False, description="Also require visible spray while the vehicle is in the bay.")
    analysis_width: int = Field(320, ge=160, le=1920, description="Vehicles are found on a copy this wide (pixels).")
    foreground_level: float = Field(30.0, ge=1, le=255, description="Grey levels against the background.")
    min_area: float = Field(0.01, gt=0, lt=1, description="Smallest vehicle, share of the image.")
    spray_share: float = Field(
        0.01, gt=0, lt=1, description="Share of the bay's pixels flickering bright that counts as visible spray."
    )
    max_gap_s: float = Field(5.0, gt=0, le=60, description="Longest gap between analyses still counted as dwell.")
    history: int = Field(12, ge=1, le=100, description="Small frames kept per track for the evidence sequence.")

    @model_validator(mode="after")
    def _line(self) -> WashParams:
        if self.exit_line is not None:
            a, b = self.exit_line
            if a == b or not all(0.0 <= v <= 1.0 for v in (*a, *b)):
                raise ValueError("exit_line needs two different points with coordinates in 0..1")
        return self


class WashingDetector:
    """One per exit camera. `wash_bay` is a polygon and `exit_line` two points, both normalised."""

    name = NAME

    def __init__(self, wash_bay: Sequence[Sequence[float]], exit_line: Sequence[Sequence[float]],
                 params: WashParams | None = None, camera: str = "") -> None:
        self.bay = as_polygon(wash_bay)
        self.line = as_line(exit_line)
        self.params = params or WashParams()
        self.camera = camera
        side_of_bay = side(centroid(self.bay), self.line)
        if side_of_bay == 0:
            raise ValueError("the exit line passes through the wash bay's centre: which side is inside?")
        self._inside_sign = 1.0 if side_of_bay > 0 else -1.0
        self.background = RunningBackground(rate=0.05, foreground_rate=0.002)
        self.tracker = Tracker(max_distance=0.25, max_missed=3, min_iou=0.05)
        self._prev: np.ndarray | None = None
        self._bay_mask: np.ndarray | None = None
        self._last_time: datetime | None = None

    def _spray(self, grey: np.ndarray) -> float:
        """Share of bay pixels that are bright against the background and changed since the last analysis."""
        assert self.background.mean is not None and self._prev is not None and self._bay_mask is not None
        bright = grey > self.background.mean + self.params.foreground_level
        flicker = np.abs(grey - self._prev) > self.params.foreground_level
        sel = self._bay_mask > 0
        return float((bright & flicker)[sel].mean()) if sel.any() else 0.0

    def analyse(self, image_bgr: np.ndarray, time: datetime, *, motion: float | None = None,
                shared: Any = None) -> list[Detection]:
        """Detections for vehicles that crossed the exit line in this analysis."""
        if not valid_image(image_bgr):
            return []
        p = self.params
        small = downscale(image_bgr, p.analysis_width)
        grey = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), (5, 5), 0).astype(np.float32)
        h, w = grey.shape
        if not self.background.ready(grey.shape) or self._prev is None or self._prev.shape != grey.shape:
            self.background.reset(grey)
            self._prev = grey
            self._bay_mask = polygon_mask(self.bay, w, h)
            self._last_time = time
            return []
        dt = (time - self._last_time).total_seconds() if self._last_time else 0.0
        dt = dt if 0 < dt <= p.max_gap_s else 0.0
        self._last_time = time
        assert self.background.mean is not None
        fg = (np.abs(grey - self.background.mean) > p.foreground_level).astype(np.uint8)
        fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, np.ones((9, 9), np.uint8))
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
        spray = self._spray(grey)
        blobs = components(fg, int(p.min_area * h * w))
        boxes = [normalise_box(b, w, h) for b, _ in blobs]
        tracks, _ = self.tracker.update(boxes)
        out = []
        for tr in tracks:
            out.extend(self._follow(tr, dt, spray, small, image_bgr, time))
        self.background.update(grey, fg)
        self._prev = grey
        return out

    def _follow(self, tr: Track, dt: float, spray: float, small: np.ndarray, image: np.ndarray,
                time: datetime) -> list[Detection]:
        p = self.params
        st = tr.state
        centre = tr.centre
        now_side = side(centre, self.line) * self._inside_sign  # > 0: the wash-bay side
        if "first_seen" not in st:
            st.update(first_seen=time, dwell=0.0, spray_seen=False, side=now_side, reported=False,
                      frames=deque(maxlen=p.history))
        frames = st["frames"]
        assert isinstance(frames, deque)
        frames.append((time, small.copy()))
        if inside(centre, self.bay):
            st["dwell"] = float(st["dwell"]) + dt  # type: ignore[arg-type]
            if spray >= p.spray_share:
                st["spray_seen"] = True
        crossed = float(st["side"]) > 0 >= now_side  # type: ignore[arg-type]
        st["side"] = now_side
        if not crossed or st["reported"]:
            return []
        st["reported"] = True
        dwell = float(st["dwell"])  # type: ignore[arg-type]
        spray_seen = bool(st["spray_seen"])
        washed = dwell >= p.min_dwell_s and (spray_seen or not p.spray_required)
        first_seen = st["first_seen"]
        assert isinstance(first_seen, datetime)
        images: dict[str, object] = {}
        if not washed:
            images = {"snapshot": image.copy(), "frames": tuple(frames)}
        return [Detection(
            detector=NAME, camera=self.camera, time=time, kind="vehicle_exit" if washed else "unwashed_vehicle",
            key=f"{NAME}:{self.camera}:{tr.id}", score=1.0 if not washed else 0.0,
            regions=(box_polygon(*tr.box),),
            metrics={"dwell_s": round(dwell, 1), "min_dwell_s": p.min_dwell_s, "spray_seen": float(spray_seen),
                     "spray_required": float(p.spray_required), "first_seen": first_seen.isoformat(),
                     "washed": float(washed)},
            confirmed=not washed, images=images,
        )]


def _build(params: WashParams, camera: CameraView, pool: ModelPool) -> WashingDetector:
    if params.exit_line is None or params.wash_bay_zone not in camera.zones:
        raise ValueError(f"camera {camera.camera_id}: washing needs detectors.washing.exit_line and a "
                         f"'{params.wash_bay_zone}' zone")
    return WashingDetector(camera.zones[params.wash_bay_zone], params.exit_line, params, camera=camera.camera_id)


SPEC = DetectorSpec(
    name=NAME, params=WashParams, build=_build, kinds=("unwashed_vehicle", "vehicle_exit"),
    summary="vehicles tracked through the wash bay and across the exit line; too short a stay is unwashed",
    needs_zones=lambda params: [params.wash_bay_zone],
)
