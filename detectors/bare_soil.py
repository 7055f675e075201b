"""Bare soil: each zone's cells classified bare / covered / hard from one backbone pass → uncovered ratio.

A zone's bounding box (at the analysis width) goes through the backbone once; its feature
map is a grid of cells over the box (7×7 for a 224 input), and the head classifies every
cell from it: one inference per zone, not one per patch (with `feature_input: frame`, one
for the whole frame, shared with the camera's other detectors). The cells whose centre lies
in the zone make up the zone. Cells where something is passing (people, vehicles: pixels
that changed since the last analysis) keep their last class, and the zone's ratio is the
median of the last few analyses, so passers-by neither raise nor clear a violation. A zone
is confirmed once its ratio has stayed above `ratio_threshold` for `duration_s`.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field

from detectors.background import valid_image
from detectors.geometry import as_polygon, inside, polygon_mask
from detectors.pool import ModelPool
from detectors.registry import CameraView, DetectorSpec, ModelParams, ViolationKind
from detectors.runtime import Classifier, HeadClassifier
from detectors.shared import FRAME_KEY, SharedFeatures, downscaled, region_key
from detectors.types import Detection, Polygon, box_polygon

log = logging.getLogger(__name__)
NAME = "bare_soil"


class SoilParams(ModelParams):
    """Thresholds of the bare-soil detector (`detectors.bare_soil` in the config)."""

    type: Literal["bare_soil"] = "bare_soil"
    zones: list[str] = Field(
        default_factory=list,
        description="Names of the camera's zones to watch; empty: every zone of the camera but the wash bay.",
    )
    ratio_threshold: float = Field(0.1, ge=0, lt=1, description="Uncovered share of a zone above which it counts.")
    duration_s: float = Field(
        1800.0, ge=0, le=86400, description="A zone must stay above the threshold this long (default 30 min)."
    )
    score_threshold: float = Field(0.5, gt=0, lt=1, description="Classifier probability for a patch to be bare soil.")
    grid: int = Field(
        7, ge=4, le=64,
        description="Cells across a zone for a site's own .tflite patch classifier; with the shipped backbone "
        "head the cells are the backbone's feature-map cells (7×7 over each zone's box) and this is not used.",
    )
    feature_input: Literal["zone", "frame"] = Field(
        "zone", description="One backbone pass per zone's bounding box (finer cells), or one per frame "
        "(shared with the camera's other detectors; cheaper with many zones).",
    )
    analysis_width: int = Field(640, ge=160, le=1920, description="Zones are cut from a copy this wide (pixels).")
    classify_every_s: float = Field(
        10.0, ge=0, le=3600, description="Classify the zones at most this often (soil changes slowly); 0: every frame."
    )
    smooth: int = Field(5, ge=1, le=60, description="The zone's ratio is the median over this many analyses.")
    foreground_level: float = Field(
        25.0, ge=1, le=255, description="Grey-level change since the last analysis that marks something passing."
    )
    foreground_share: float = Field(
        0.15, ge=0, le=1, description="A patch with more passing pixels than this keeps its last class."
    )
    skip_objects: bool = Field(
        True, description="On a camera whose COCO detector ran on the frame (site_activity, washing or "
        "uncovered_load on the same stream), a patch under a vehicle's or person's box keeps its last class: the "
        "ground there is hidden (the head reads a parked truck or excavator as bare soil about 40 % of the time).",
    )
    object_min_score: float = Field(0.4, gt=0, lt=1, description="Objects at least this sure hide a patch.")
    wash_bay_zone: str = Field(
        "wash_bay", description="A zone of this name is never watched for bare soil (it is the washing detector's)."
    )


Box = tuple[int, int, int, int]  # analysis pixels x0, y0, x1, y1


@dataclass
class _Zone:
    name: str
    polygon: Polygon
    box: Box = (0, 0, 0, 0)  # what goes through the backbone (analysis pixels)
    cells: list[Box] = field(default_factory=list)  # analysis pixels
    grid_index: list[tuple[int, int]] = field(default_factory=list)  # (row, col) of each cell in the map
    labels: dict[int, bool] = field(default_factory=dict)  # cell index -> bare
    ratios: deque[float] = field(default_factory=lambda: deque(maxlen=5))
    above_since: datetime | None = None


def _grid_cells(box: Box, rows: int, cols: int) -> list[tuple[int, int, Box]]:
    x0, y0, x1, y1 = box
    xs = np.linspace(x0, x1, cols + 1).round().astype(int)
    ys = np.linspace(y0, y1, rows + 1).round().astype(int)
    return [(r, c, (int(xs[c]), int(ys[r]), int(max(xs[c + 1], xs[c] + 1)), int(max(ys[r + 1], ys[r] + 1))))
            for r in range(rows) for c in range(cols)]


class BareSoilDetector:
    """One per camera; zones are {name: [[x, y], ...]} in normalised coordinates."""

    name = NAME

    def __init__(self, classifier: Classifier, zones: Mapping[str, Sequence[Sequence[float]]],
                 params: SoilParams | None = None, camera: str = "") -> None:
        if not zones:
            raise ValueError("bare_soil needs at least one zone")
        self.classifier = classifier
        self.params = params or SoilParams()
        self.camera = camera
        self.zones = [_Zone(n, as_polygon(pts), ratios=deque(maxlen=max(1, self.params.smooth)))
                      for n, pts in zones.items()]
        self._prev: np.ndarray | None = None
        self._shape: tuple[int, int] | None = None
        self._last_classified: datetime | None = None

    @property
    def _grid(self) -> tuple[int, int]:
        if isinstance(self.classifier, HeadClassifier):
            return self.classifier.backbone.grid_h, self.classifier.backbone.grid_w
        return self.params.grid, self.params.grid

    def _layout(self, width: int, height: int) -> None:
        """Each zone's box and its cells whose centre lies inside the zone (recomputed if the size changes)."""
        rows, cols = self._grid
        for zone in self.zones:
            mask = polygon_mask(zone.polygon, width, height)
            ys, xs = np.nonzero(mask)
            if not len(xs):
                xs, ys = np.array([0, width - 1]), np.array([0, height - 1])
            x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
            if x1 - x0 < 8:
                x0, x1 = max(0, (x0 + x1) // 2 - 4), min(width, (x0 + x1) // 2 + 4)
            if y1 - y0 < 8:
                y0, y1 = max(0, (y0 + y1) // 2 - 4), min(height, (y0 + y1) // 2 + 4)
            frame = self.params.feature_input == "frame"
            zone.box = (0, 0, width, height) if frame else (x0, y0, x1, y1)
            zone.cells, zone.grid_index, zone.labels = [], [], {}
            grid = _grid_cells(zone.box, rows, cols)
            for r, c, cell in grid:
                cx, cy = (cell[0] + cell[2]) / 2 / width, (cell[1] + cell[3]) / 2 / height
                if inside((cx, cy), zone.polygon):
                    zone.cells.append(cell)
                    zone.grid_index.append((r, c))
            if not zone.cells:  # a zone smaller than a cell: the cell under its centre
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                r, c, cell = min(grid, key=lambda g: abs((g[2][0] + g[2][2]) / 2 - cx)
                                 + abs((g[2][1] + g[2][3]) / 2 - cy))
                zone.cells.append(cell)
                zone.grid_index.append((r, c))
        self._shape = (height, width)

    def analyse(self, image_bgr: np.ndarray, time: datetime, *, motion: float | None = None,
                shared: Any = None) -> list[Detection]:
        """One Detection per zone each time the zone is classified (confirmed when overdue)."""
        if not valid_image(image_bgr):
            return []
        p = self.params
        small = downscaled(shared, image_bgr, p.analysis_width)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.float32)
        h, w = grey.shape
        if self._shape != (h, w) or self._prev is None:
            self._layout(w, h)
            self._prev = grey
        changed = (np.abs(grey - self._prev) > p.foreground_level).astype(np.uint8)
        moving = cv2.dilate(changed, np.ones((5, 5), np.uint8))
        self._prev = grey
        if float(grey.mean()) < 8.0:  # black frame: no judgement, keep the state
            return []
        due = (self._last_classified is None or p.classify_every_s <= 0
               or (time - self._last_classified).total_seconds() >= p.classify_every_s)
        if not due:
            return []
        self._last_classified = time
        if shared is None:  # zones with the same backbone input (feature_input: frame) still share it
            shared = SharedFeatures(image_bgr)
        return [self._zone_detection(zone, image_bgr, small, moving, time, shared) for zone in self.zones]

    def _cell_probs(self, zone: _Zone, image: np.ndarray, small: np.ndarray, todo: list[int],
                    shared: Any) -> np.ndarray:
        """Class probabilities of the cells to (re)classify: one backbone pass for the zone's box."""
        x0, y0, x1, y1 = zone.box
        if isinstance(self.classifier, HeadClassifier):
            if self.params.feature_input == "frame":
                fmap = self.classifier.feature_map(image, shared, FRAME_KEY)
            else:
                key = region_key(small, zone.box)
                fmap = self.classifier.feature_map(small[y0:y1, x0:x1], shared, key)
            grid = self.classifier.cell_probs(fmap)
            return np.stack([grid[zone.grid_index[i]] for i in todo])
        crops = [small[zone.cells[i][1]:zone.cells[i][3], zone.cells[i][0]:zone.cells[i][2]] for i in todo]
        return self.classifier.classify(crops)

    def _hidden(self, zone: _Zone, width: int, height: int, shared: Any) -> set[int]:
        """The zone's cells whose centre lies under a vehicle's or person's box found on this frame
        by the camera's COCO detector (SharedFeatures.objects): they keep their last class, as a
        passing truck's do; a cell never classified yet is still classified."""
        if not self.params.skip_objects:
            return set()
        boxes = [o.box for o in shared.objects()
                 if o.score >= self.params.object_min_score and o.group in ("vehicle", "person")]
        out = set()
        for i, (x0, y0, x1, y1) in enumerate(zone.cells):
            cx, cy = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height
            if any(b[0] <= cx <= b[2] and b[1] <= cy <= b[3] for b in boxes):
                out.add(i)
        return out

    def _zone_detection(self, zone: _Zone, image: np.ndarray, small: np.ndarray, moving: np.ndarray,
                        time: datetime, shared: Any) -> Detection:
        p = self.params
        hidden = self._hidden(zone, small.shape[1], small.shape[0], shared)
        todo = [i for i, (x0, y0, x1, y1) in enumerate(zone.cells)
                if (float(moving[y0:y1, x0:x1].mean()) <= p.foreground_share and i not in hidden)
                or i not in zone.labels]
        if todo:
            probs = self._cell_probs(zone, image, small, todo, shared)
            bare = self.classifier.labels.index("bare_soil") if "bare_soil" in self.classifier.labels else 0
            for i, row in zip(todo, probs, strict=True):
                zone.labels[i] = bool(row[bare] >= p.score_threshold and int(np.argmax(row)) == bare)
        n = len(zone.cells)
        bare_cells = [i for i, b in zone.labels.items() if b]
        now_ratio = len(bare_cells) / n if n else 0.0
        zone.ratios.append(now_ratio)
        ratio = float(np.median(zone.ratios))
        if ratio > p.ratio_threshold:
            zone.above_since = zone.above_since or time
        else:
            zone.above_since = None
        above_s = (time - zone.above_since).total_seconds() if zone.above_since else 0.0
        confirmed = zone.above_since is not None and above_s >= p.duration_s
        sh, sw = small.shape[:2]
        regions = [zone.polygon] + [
            box_polygon(c[0] / sw, c[1] / sh, c[2] / sw, c[3] / sh) for c in (zone.cells[i] for i in sorted(bare_cells))
        ]
        images: dict[str, np.ndarray] = {}
        if confirmed:
            xs = [c[0] for c in zone.cells] + [c[2] for c in zone.cells]
            ys = [c[1] for c in zone.cells] + [c[3] for c in zone.cells]
            images["zone"] = small[min(ys):max(ys), min(xs):max(xs)].copy()
        return Detection(
            detector=NAME, camera=self.camera, time=time, kind="bare_soil", key=f"{NAME}:{self.camera}:{zone.name}",
            score=ratio, regions=tuple(regions),
            metrics={"zone": zone.name, "uncovered_ratio": round(ratio, 3), "uncovered_ratio_now": round(now_ratio, 3),
                     "above_s": round(above_s, 1), "cells": float(n), "bare_cells": float(len(bare_cells)),
                     "passing_cells": float(n - len(todo)), "hidden_cells": float(len(hidden))},
            confirmed=confirmed, images=images,
        )


def _zones(params: SoilParams, camera: CameraView) -> dict[str, Any]:
    if params.zones:
        return {z: pts for z, pts in camera.zones.items() if z in params.zones}
    return {z: pts for z, pts in camera.zones.items() if z != params.wash_bay_zone}


def _build(params: SoilParams, camera: CameraView, pool: ModelPool) -> BareSoilDetector:
    return BareSoilDetector(_classifier(params, pool), _zones(params, camera), params, camera=camera.camera_id)


def _classifier(params: SoilParams, pool: ModelPool) -> Any:
    return pool.classifier("soil_cls", params.model, params.threads)


SPEC = DetectorSpec(
    name=NAME, params=SoilParams, build=_build, kinds=("bare_soil",), classifier=_classifier,
    summary="grid cells of each zone classified bare / covered / hard; a zone uncovered too long is confirmed",
    needs_zones=lambda params: list(params.zones) or ["(any zone)"],
    min_fps=0.5,  # ground cover changes over minutes (a zone is judged over duration_s): keyframes suffice
    violations={"bare_soil": ViolationKind("zone {zone}: {uncovered_ratio} of the surface uncovered", clear_s=60,
                                           cooldown_s=600, ongoing_every_s=1800)},
)
