"""Vehicle washing at the exit: vehicles found by the COCO detector, tracked through the wash bay
and across the exit line; too short a stay in the bay gives a confirmed `unwashed_vehicle`.

DOMAIN.md §4 ("6 × 100 %"): washing facilities at exits, every vehicle washed. The old
background-subtraction version merged two touching vehicles into one blob and judged them
as one; here each SSD vehicle box (car, bus, truck: one group) is its own track
(detectors/objects.py: IoU on a constant-velocity prediction, low-score boxes keep tracks
alive, a box swallowing two tracks is refused), so a truck tailgating a washed one through
the exit is judged on its own dwell.

A track's position is its box's bottom centre by default (where the wheels touch the ground
the bay and the line are drawn on). Dwell counts the time that point spends in the bay zone,
also while the vehicle is unseen (spray and mist hide it): first as a coasting track, then,
once the tracker gives it up, as a vehicle remembered where it was lost; a new track that
shows up there takes over its dwell (`reappeared` counts it), so a washed truck that was
hidden in spray is not judged as a new, unwashed one. Crossing is judged on observed
positions only, from the bay's side of the line to the other.

Spray (optional) is many small bright pixels in the bay that flicker between analyses, with
moving vehicles masked out: a heuristic, not a model: say so when a bureau asks.

Set `crop` to the driveway on an exit camera. Measured on rendered exit video at 1 fps (a car
tailgating a washed one, bumper to bumper, 36 variants): both judged right in 34 with the
road band as crop, in 19 on the whole 16:9 frame squashed into the SSD's 300x300 (the rest:
a car missed, or the washed car lost and found again as a new, unwashed track).
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

from detectors.background import RunningBackground, downscale, valid_image
from detectors.geometry import as_line, as_polygon, centroid, inside, iou, polygon_mask, side
from detectors.objects import (
    BoxTracker,
    ObjectDetector,
    ObjectParams,
    ObjectTrack,
    box_px,
    detect_objects,
    for_groups,
    load_objects,
)
from detectors.pool import ModelPool
from detectors.registry import CameraView, DetectorSpec, ViolationKind
from detectors.types import Detection, box_polygon

log = logging.getLogger(__name__)
NAME = "washing"

Point = tuple[float, float]
Box4 = tuple[float, float, float, float]


class WashParams(ObjectParams):
    """The exit camera's washing check (`detectors.washing` in the config)."""

    type: Literal["washing"] = "washing"
    wash_bay_zone: str = Field("wash_bay", description="Name of the camera zone that is the wash bay.")
    exit_line: tuple[Point, Point] | None = Field(
        None, description="The exit line [[x, y], [x, y]] in normalised coordinates; required where washing runs.",
    )
    min_dwell_s: float = Field(15.0, ge=0, le=600, description="Seconds a vehicle must stay in the wash bay.")
    spray_required: bool = Field(False, description="Also require visible spray while the vehicle is in the bay.")
    analysis_width: int = Field(
        320, ge=160, le=1920, description="Spray is judged, and evidence frames kept, on a copy this wide (pixels).",
    )
    foreground_level: float = Field(30.0, ge=1, le=255, description="Grey levels against the background (spray).")
    min_area: float = Field(0.01, gt=0, lt=1, description="Smallest vehicle box, share of the image.")
    spray_share: float = Field(
        0.01, gt=0, lt=1, description="Share of the bay's pixels flickering bright that counts as visible spray."
    )
    max_gap_s: float = Field(5.0, gt=0, le=60, description="Longest gap between analyses still counted as dwell.")
    history: int = Field(12, ge=1, le=100, description="Small frames kept for the evidence sequence.")
    anchor: Literal["bottom", "centre"] = Field(
        "bottom", description="Which point of a vehicle box is its position: 'bottom' centre (where the wheels "
        "touch the ground the zone is drawn on) or box 'centre'.",
    )
    max_coast_s: float = Field(
        8.0, gt=0, le=60, description="How long an unseen vehicle (hidden by spray, another vehicle) is still "
        "followed on its predicted position.",
    )

    hidden_in_bay_s: float = Field(
        180.0, ge=0, le=1800, description="A vehicle lost from sight inside the bay (spray, mist) is remembered "
        "this long: one that reappears where it was lost keeps its dwell, and the hidden time counts as dwell.",
    )

    @model_validator(mode="after")
    def _line(self) -> WashParams:
        if self.exit_line is not None:
            a, b = self.exit_line
            if a == b or not all(0.0 <= v <= 1.0 for v in (*a, *b)):
                raise ValueError("exit_line needs two different points with coordinates in 0..1")
        return self


def anchor_point(box: Box4, anchor: str) -> Point:
    """The point of a box that stands for the vehicle's position."""
    x = (box[0] + box[2]) / 2
    return (x, box[3]) if anchor == "bottom" else (x, (box[1] + box[3]) / 2)


def clip_box(box: Box4) -> Box4:
    x0, y0, x1, y1 = (min(1.0, max(0.0, v)) for v in box)
    return x0, y0, x1, y1


class WashingDetector:
    """One per exit camera. `wash_bay` is a polygon and `exit_line` two points, both normalised."""

    name = NAME

    def __init__(self, wash_bay: Sequence[Sequence[float]], exit_line: Sequence[Sequence[float]],
                 params: WashParams | None = None, camera: str = "", objects: ObjectDetector | None = None) -> None:
        self.bay = as_polygon(wash_bay)
        self.line = as_line(exit_line)
        self.params = params or WashParams()
        self.camera = camera
        side_of_bay = side(centroid(self.bay), self.line)
        if side_of_bay == 0:
            raise ValueError("the exit line passes through the wash bay's centre: which side is inside?")
        self._inside_sign = 1.0 if side_of_bay > 0 else -1.0
        p = self.params
        self.objects = objects if objects is not None else load_objects(p.objects_model, p.threads)
        self.tracker = BoxTracker(min_score=p.min_score, keep_score=p.keep_score, max_coast_s=p.max_coast_s,
                                  max_missed=max(3, int(p.max_coast_s)))
        self.background = RunningBackground(rate=0.05, foreground_rate=0.002)
        self._prev: np.ndarray | None = None
        self._bay_mask: np.ndarray | None = None
        self._last_time: datetime | None = None
        self._frames: deque[tuple[datetime, np.ndarray]] = deque(maxlen=p.history)
        self._known: dict[int, ObjectTrack] = {}  # live tracks at the last analysis
        self._hidden: list[tuple[Box4, dict[str, Any], datetime]] = []  # (box, state, lost at) lost in the bay

    def _spray(self, grey: np.ndarray, moving: Sequence[Box4]) -> float:
        """Share of bay pixels bright against the background and changed since the last analysis.

        Boxes of moving vehicles are left out: their edges flicker too.
        """
        h, w = grey.shape
        if self._bay_mask is None or self._bay_mask.shape != (h, w):
            self._bay_mask = polygon_mask(self.bay, w, h)
        if not self.background.ready(grey.shape) or self._prev is None or self._prev.shape != grey.shape:
            self.background.reset(grey)
            self._prev = grey
            return 0.0
        assert self.background.mean is not None
        level = self.params.foreground_level
        bright = grey > self.background.mean + level
        flicker = np.abs(grey - self._prev) > level
        sel = self._bay_mask > 0
        for box in moving:
            x0, y0, x1, y1 = box_px(box, w, h)
            sel[y0:y1, x0:x1] = False
        share = float((bright & flicker)[sel].mean()) if sel.any() else 0.0
        fg = (np.abs(grey - self.background.mean) > level).astype(np.uint8)
        self.background.update(grey, fg)
        self._prev = grey
        return share

    def analyse(self, image_bgr: np.ndarray, time: datetime, *, motion: float | None = None,
                shared: Any = None) -> list[Detection]:
        """Detections for vehicles that crossed the exit line in this analysis."""
        if not valid_image(image_bgr):
            return []
        p = self.params
        objects = detect_objects(self.objects, image_bgr, time, shared, p)
        tracks = self.tracker.update(for_groups(objects, ("vehicle",), p.min_area), time)
        if shared is not None and hasattr(shared, "downscaled"):  # one resize per frame for the camera
            small = shared.downscaled(p.analysis_width)
        else:
            small = downscale(image_bgr, p.analysis_width)
        if small is image_bgr:
            small = small.copy()  # kept for the evidence sequence: never the caller's buffer
        grey = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), (5, 5), 0).astype(np.float32)
        moving = [t.box for t in tracks if t.observed and t.speed() > 0.02]
        spray = self._spray(grey, moving)
        dt = (time - self._last_time).total_seconds() if self._last_time else 0.0
        dt = dt if 0 < dt <= p.max_gap_s else 0.0
        self._last_time = time
        self._frames.append((time, small))
        self._remember_hidden(tracks, dt, spray, time)
        out = []
        for tr in tracks:
            found = self._follow(tr, dt, spray, image_bgr, time)
            if found is not None:
                out.append(found)
        return out

    def _remember_hidden(self, tracks: Sequence[ObjectTrack], dt: float, spray: float, time: datetime) -> None:
        """Vehicles the tracker dropped inside the bay are kept aside; they still dwell while hidden.

        Heavy spray can hide a truck for longer than the tracker coasts. Without this, the washed
        truck reappearing would be a new track with no dwell: a false `unwashed_vehicle`.
        """
        p = self.params
        live = {t.id: t for t in tracks}
        for tid, tr in self._known.items():
            if tid not in live and "dwell" in tr.state and not tr.state["reported"] and \
                    inside(anchor_point(tr.box, p.anchor), self.bay):
                self._hidden.append((tr.box, tr.state, time))
        self._known = live
        kept = []
        for box, st, since in self._hidden:
            if (time - since).total_seconds() <= p.hidden_in_bay_s:
                st["dwell"] += dt
                if spray >= p.spray_share:
                    st["spray_s"] += dt
                kept.append((box, st, since))
        self._hidden = kept

    def _reappeared(self, tr: ObjectTrack) -> dict[str, Any] | None:
        """The remembered state of a hidden vehicle this new track is, taken out of the memory.

        A new track is that vehicle when it first shows up within one box diagonal of where the
        vehicle was lost (it may already be driving off when the spray stops): vehicles coming
        from upstream are tracked from where they enter, so they are never new tracks there.
        """
        best, best_dist = None, 1.0
        cx, cy = tr.centre
        for k, (box, _, _) in enumerate(self._hidden):
            diag = max(((box[2] - box[0]) ** 2 + (box[3] - box[1]) ** 2) ** 0.5, 1e-6)
            dist = ((cx - (box[0] + box[2]) / 2) ** 2 + (cy - (box[1] + box[3]) / 2) ** 2) ** 0.5 / diag
            if iou(box, tr.box) > 0.3:
                dist = 0.0
            if dist <= best_dist:
                best, best_dist = k, dist
        if best is None:
            return None
        return self._hidden.pop(best)[1]

    def _follow(self, tr: ObjectTrack, dt: float, spray: float, image: np.ndarray,
                time: datetime) -> Detection | None:
        p = self.params
        st = tr.state
        # while unseen, a vehicle is where it was last seen: one lost in the bay has most likely stopped
        # there under the spray (a guess, by at most max_coast_s; then the hidden-vehicle memory takes over)
        box = tr.box
        point = anchor_point(box, p.anchor)
        if "first_seen" not in st:
            before = self._reappeared(tr)
            if before is not None:  # the same vehicle, seen again where spray hid it
                st.update(before)
                st["reappeared"] += 1
            else:
                st.update(first_seen=time, dwell=0.0, spray_s=0.0, side=None, reported=False, reappeared=0)
        if inside(point, self.bay):
            st["dwell"] += dt
            if spray >= p.spray_share:
                st["spray_s"] += dt
        if not tr.observed:
            return None  # a line is crossed where the vehicle is seen, not where it is guessed
        now_side = side(point, self.line) * self._inside_sign  # > 0: the wash-bay side
        crossed = st["side"] is not None and st["side"] > 0 >= now_side
        st["side"] = now_side
        if not crossed or st["reported"] or not self.tracker.confirmed(tr):
            return None
        st["reported"] = True
        dwell = float(st["dwell"])
        spray_seen = float(st["spray_s"]) > 0
        washed = dwell >= p.min_dwell_s and (spray_seen or not p.spray_required)
        first_seen: datetime = st["first_seen"]
        region = clip_box(box)
        images: dict[str, object] = {}
        if not washed:
            h, w = image.shape[:2]
            x0, y0, x1, y1 = box_px(region, w, h)
            # The frame itself, not a 6-MB copy: frames are never written to, and the vision worker
            # makes its JPEG before this analysis returns (edge_agent/video/vision.py, _seen).
            images = {"snapshot": image, "crop": image[y0:y1, x0:x1].copy(),
                      "frames": tuple((t, f) for t, f in self._frames if t >= first_seen)}
        return Detection(
            detector=NAME, camera=self.camera, time=time, kind="vehicle_exit" if washed else "unwashed_vehicle",
            key=f"{NAME}:{self.camera}:{tr.id}", score=round(tr.mean_score, 3),
            regions=(box_polygon(*region),),
            metrics={"dwell_s": round(dwell, 1), "min_dwell_s": p.min_dwell_s, "spray_seen": float(spray_seen),
                     "spray_s": round(float(st["spray_s"]), 1), "spray_required": float(p.spray_required),
                     "first_seen": first_seen.isoformat(), "washed": float(washed), "track": float(tr.id),
                     "vehicle": tr.label, "vehicle_score": round(tr.mean_score, 3),
                     "reappeared": float(st["reappeared"])},
            confirmed=not washed, images=images,
        )


def _build(params: WashParams, camera: CameraView, pool: ModelPool) -> WashingDetector:
    if params.exit_line is None or params.wash_bay_zone not in camera.zones:
        raise ValueError(f"camera {camera.camera_id}: washing needs detectors.washing.exit_line and a "
                         f"'{params.wash_bay_zone}' zone")
    return WashingDetector(camera.zones[params.wash_bay_zone], params.exit_line, params, camera=camera.camera_id,
                           objects=pool.objects(params.objects_model, params.threads))


SPEC = DetectorSpec(
    name=NAME, params=WashParams, build=_build, kinds=("unwashed_vehicle", "vehicle_exit"),
    summary="vehicles (COCO detector) tracked through the wash bay and across the exit line; too short a stay "
    "is unwashed",
    needs_zones=lambda params: [params.wash_bay_zone],
    violations={"unwashed_vehicle": ViolationKind("vehicle left without washing (dwell {dwell_s} s)", moment=True)},
)
