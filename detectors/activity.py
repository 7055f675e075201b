"""Site activity: people and machines present, and moving, in a camera's zones (or the whole frame).

Not a violation on its own: the core uses it to corroborate `night_work` (a noise-based
finding) with video: people or machines moving in the site's zones during restricted hours.
Detectors know nothing of schedules, so this one reports every analysed frame; the core
decides what the hour makes of it.

Objects come from the shared COCO detector (one SSD pass per frame for all of a camera's
detectors). An object is in a zone when its box's bottom centre (where it stands) is inside.
It is moving when its track's centre moved at least `min_move` of its own box diagonal within
the last `moving_window_s` seconds: relative to its size, so a far worker and a near truck
are judged alike, and box jitter of a standing person is not motion.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

import numpy as np
from pydantic import Field

from detectors.background import valid_image
from detectors.geometry import as_polygon, inside
from detectors.objects import BoxTracker, ObjectDetector, ObjectParams, ObjectTrack, detect_objects, load_objects
from detectors.pool import ModelPool
from detectors.registry import CameraView, DetectorSpec
from detectors.types import Detection, Polygon, box_polygon

log = logging.getLogger(__name__)
NAME = "site_activity"
COUNT_NAMES = {"person": "people", "vehicle": "vehicles", "motorcycle": "motorcycles"}


class ActivityParams(ObjectParams):
    """What counts as activity (`detectors.site_activity` in the config)."""

    type: Literal["site_activity"] = "site_activity"
    zones: tuple[str, ...] = Field(
        (), description="Camera zones where activity counts (an object counts when the point it stands on is "
        "inside one); empty: the whole frame.",
    )
    groups: tuple[Literal["person", "vehicle", "motorcycle"], ...] = Field(
        ("person", "vehicle"), description="Object groups counted: person; vehicle (car, bus, truck: the "
        "detector's nearest to site machines); motorcycle.",
    )
    min_area: float = Field(
        0.0005, ge=0, lt=1, description="Smallest box counted, share of the image (drops far specks).",
    )
    min_move: float = Field(
        0.25, gt=0, le=5, description="Moving: the track's centre moved this share of its box diagonal ...",
    )
    moving_window_s: float = Field(10.0, gt=0, le=300, description="... within this many seconds.")
    hold_s: float = Field(
        3.0, ge=0, le=60, description="An object unseen for up to this long (hidden behind another) still counts.",
    )
    emit_empty: bool = Field(
        True, description="Report frames with nothing in the zones too (so 'the camera looked and saw nobody' "
        "is known), not only frames with activity.",
    )


class ActivityDetector:
    """One per camera: a tracker per object group, counts per analysed frame."""

    name = NAME

    def __init__(self, zones: Mapping[str, Sequence[Sequence[float]]] | None = None,
                 params: ActivityParams | None = None, camera: str = "",
                 objects: ObjectDetector | None = None) -> None:
        self.params = params or ActivityParams()
        self.camera = camera
        p = self.params
        self.zones: dict[str, Polygon] = {name: as_polygon(pts) for name, pts in (zones or {}).items()}
        self.objects = objects if objects is not None else load_objects(p.objects_model, p.threads)
        self.trackers = {g: BoxTracker(min_score=p.min_score, keep_score=p.keep_score,
                                       max_coast_s=max(3.0, p.hold_s), max_missed=max(3, int(p.hold_s) + 1))
                         for g in p.groups}
        self.key = f"{NAME}:{camera}"

    def _in_zones(self, tr: ObjectTrack) -> bool:
        if not self.zones:
            return True
        foot = ((tr.box[0] + tr.box[2]) / 2, tr.box[3])
        return any(inside(foot, zone) for zone in self.zones.values())

    def _moving(self, tr: ObjectTrack, time: datetime) -> bool:
        """Centre displacement over the window, relative to the box diagonal."""
        hist = tr.state.setdefault("centres", deque())
        assert isinstance(hist, deque)
        hist.append((time, tr.centre))
        while hist and (time - hist[0][0]).total_seconds() > self.params.moving_window_s:
            hist.popleft()
        diag = ((tr.box[2] - tr.box[0]) ** 2 + (tr.box[3] - tr.box[1]) ** 2) ** 0.5
        (cx, cy) = tr.centre
        moved = max((((x - cx) ** 2 + (y - cy) ** 2) ** 0.5 for _, (x, y) in hist), default=0.0)
        return diag > 0 and moved >= self.params.min_move * diag

    def analyse(self, image_bgr: np.ndarray, time: datetime, *, motion: float | None = None,
                shared: Any = None) -> list[Detection]:
        """One `site_activity` detection for this frame (none when empty and `emit_empty` is off)."""
        if not valid_image(image_bgr):
            return []
        p = self.params
        objects = detect_objects(self.objects, image_bgr, time, shared, p)
        counts: dict[str, int] = {}
        moving: dict[str, int] = {}
        regions: list[Polygon] = []
        labels: list[str] = []
        best = 0.0
        for group, tracker in self.trackers.items():
            seen = [o for o in objects if o.group == group and o.area >= p.min_area]
            counts[group] = moving[group] = 0
            for tr in tracker.update(seen, time):
                # present: seen now, or a confirmed track unseen for at most `hold_s` (a worker walking in front
                # of a parked machine hides it for a moment); moving is judged on sightings only
                if tr.observed:
                    is_moving = self._moving(tr, time)
                elif tracker.confirmed(tr) and (time - tr.seen_time).total_seconds() <= p.hold_s:
                    is_moving = bool(tr.state.get("moving", False))
                else:
                    continue
                tr.state["moving"] = is_moving
                if not self._in_zones(tr):
                    continue
                counts[group] += 1
                moving[group] += int(is_moving)
                x0, y0, x1, y1 = (min(1.0, max(0.0, v)) for v in tr.box)
                regions.append(box_polygon(x0, y0, x1, y1))
                labels.append(f"{tr.label}#{tr.id}{'*' if is_moving else ''}")
                best = max(best, tr.score)
        total = sum(counts.values())
        if total == 0 and not p.emit_empty:
            return []
        metrics: dict[str, float | str] = {}
        for group in p.groups:
            name = COUNT_NAMES[group]
            metrics[name] = float(counts[group])
            metrics[f"{name}_moving"] = float(moving[group])
        metrics["moving"] = float(sum(moving.values()))
        metrics["active"] = float(sum(moving.values()) > 0)
        metrics["objects"] = ",".join(labels)
        metrics["zones"] = ",".join(self.zones) if self.zones else "frame"
        return [Detection(detector=NAME, camera=self.camera, time=time, kind=NAME, key=self.key,
                          score=round(best, 3), regions=tuple(regions), metrics=metrics, confirmed=False)]


def _build(params: ActivityParams, camera: CameraView, pool: ModelPool) -> ActivityDetector:
    missing = [z for z in params.zones if z not in camera.zones]
    if missing:
        raise ValueError(f"camera {camera.camera_id}: site_activity zones {missing} are not defined")
    return ActivityDetector({z: camera.zones[z] for z in params.zones}, params, camera=camera.camera_id,
                            objects=pool.objects(params.objects_model, params.threads))


SPEC = DetectorSpec(
    name=NAME, params=ActivityParams, build=_build, kinds=(NAME,),
    summary="people and machines (COCO detector) present and moving in the camera's zones, per analysed frame; "
    "corroborates night work, not a violation itself",
    needs_zones=lambda params: list(params.zones),
)
