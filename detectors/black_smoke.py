"""Black smoke: dark moving regions → classifier check → Ringelmann grade → persistence per track.

Candidates are regions darker than the learned background (in linear light, after removing
a global light change) that also changed since the previous analysis: a plume moves, a
parked dark truck does not. The largest `max_candidates` crops go through the smoke
classifier (a head on MobileNet V1 and V2 maps side by side, both shared by every camera; a
crop another detector of the camera already ran is not run again); the Ringelmann grade
compares the plume with the background model at the same pixels. A track is confirmed after
`persist_k` smoky analyses out of the last `persist_n` whose median grade is above
`grade_limit` (DOMAIN.md §3: ≥ 3 detections on one track).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field, model_validator

from detectors import ringelmann
from detectors.background import RunningBackground, components, valid_image
from detectors.geometry import Box, expand, normalise_box
from detectors.pool import ModelPool
from detectors.registry import CameraView, DetectorSpec, ModelParams, ViolationKind
from detectors.runtime import Classifier, HeadClassifier
from detectors.shared import downscaled, region_key
from detectors.tracking import Tracker
from detectors.types import Detection, box_polygon

log = logging.getLogger(__name__)
NAME = "black_smoke"


class SmokeParams(ModelParams):
    """Thresholds of the black-smoke detector (`detectors.black_smoke` in the config)."""

    type: Literal["black_smoke"] = "black_smoke"
    score_threshold: float = Field(
        0.5, gt=0, lt=1, description="Classifier probability for a region to count as smoke.")
    grade_limit: float = Field(
        1.0, ge=0, le=5,
        description="Confirmed only when the median Ringelmann grade is above this (GB 36886-2018: above grade 1 "
        "for non-road diesel machinery; UNCONFIRMED, check the local rule).",
    )
    persist_n: int = Field(5, ge=1, le=60, description="Window of analyses per plume track.")
    persist_k: int = Field(3, ge=1, le=60, description="Smoky analyses needed in the window (DOMAIN: at least 3).")
    analysis_width: int = Field(480, ge=160, le=1920, description="Candidates are found on a copy this wide (pixels).")
    min_blackness: float = Field(
        0.12, gt=0, lt=1, description="A candidate pixel is at least this much darker than its background (0..1)."
    )
    min_area: float = Field(0.002, gt=0, lt=1, description="Smallest candidate region, share of the image.")
    min_motion: float = Field(
        0.05, ge=0, le=1, description="Share of a candidate's pixels that changed since the last analysis."
    )
    crop_margin: float = Field(0.25, ge=0, le=2, description="Context around a candidate for the classifier.")
    max_candidates: int = Field(
        4, ge=1, le=32, description="At most this many candidates (the largest) are classified per analysis: "
        "bounds the cost of a frame full of dark movement.",
    )

    @model_validator(mode="after")
    def _window(self) -> SmokeParams:
        if self.persist_k > self.persist_n:
            raise ValueError("persist_k must not exceed persist_n")
        return self


@dataclass(frozen=True)
class Candidate:
    box: Box  # analysis pixels
    mask: np.ndarray  # bool, inside the box
    motion: float


class BlackSmokeDetector:
    """One per camera: holds the background model and the plume tracks of that camera."""

    name = NAME

    def __init__(self, classifier: Classifier, params: SmokeParams | None = None, camera: str = "") -> None:
        self.classifier = classifier
        self.params = params or SmokeParams()
        self.camera = camera
        self.background = RunningBackground(rate=0.05, foreground_rate=0.002)
        self.tracker = Tracker(max_distance=0.15, max_missed=self.params.persist_n)
        self._prev: np.ndarray | None = None

    def candidates(self, lum: np.ndarray) -> tuple[list[Candidate], np.ndarray]:
        """Dark, moving regions of a linear-luminance image against the background model, and the
        foreground mask the model must learn slowly: those dark pixels and as many brighter ones.

        A bright thing passing (a white truck, a hi-vis vest, headlights) is foreground too: learnt
        at the background's full rate it would leave a "ghost" behind it, road darker than a model
        that had brightened, which is a dark moving region like a plume's."""
        p = self.params
        assert self.background.mean is not None and self._prev is not None
        bg = self.background.mean
        ratio = (lum + 1e-3) / (bg + 1e-3)
        # A cloud over the sun is not smoke; every 9th pixel is plenty for the median (2.3 ms -> 0.3).
        ratio /= max(float(np.median(ratio[::3, ::3])), 1e-3)
        dark: np.ndarray = (ratio < 1.0 - p.min_blackness).astype(np.uint8)
        bright = ratio > 1.0 + p.min_blackness
        dark = cv2.morphologyEx(dark, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        dark = cv2.morphologyEx(dark, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
        changed = np.abs(lum - self._prev) > 0.08 * (bg + 0.02)
        h, w = lum.shape
        out = []
        for box, mask in components(dark, int(p.min_area * h * w)):
            x0, y0, x1, y1 = box
            motion = float(changed[y0:y1, x0:x1][mask].mean())
            if motion >= p.min_motion:
                out.append(Candidate(box, mask, motion))
        return out, dark | bright.astype(np.uint8)

    def analyse(self, image_bgr: np.ndarray, time: datetime, *, motion: float | None = None,
                shared: Any = None) -> list[Detection]:
        """Detections for the smoky tracks seen in this image (confirmed ones flagged)."""
        if not valid_image(image_bgr):
            return []
        p = self.params
        small = downscaled(shared, image_bgr, p.analysis_width)
        lum = ringelmann.luminance(small)
        if not self.background.ready(lum.shape) or self._prev is None or self._prev.shape != lum.shape:
            self.background.reset(lum)
            self._prev = lum
            return []
        if float(lum.mean()) < 2e-4:  # a black frame (night, lens covered): nothing to judge
            self._prev = lum
            return []
        cands, foreground = self.candidates(lum)
        cands = sorted(cands, key=lambda c: -int(c.mask.sum()))[:p.max_candidates]
        scores = self._scores(small, cands, shared)
        h, w = lum.shape
        smoky = [(c, float(s)) for c, s in zip(cands, scores, strict=True) if s >= p.score_threshold]
        tracks, _ = self.tracker.update([normalise_box(c.box, w, h) for c, _ in smoky])
        for tr in self.tracker.tracks.values():  # every track gets this analysis in its window
            hist = tr.state.setdefault("hits", deque(maxlen=p.persist_n))
            assert isinstance(hist, deque)
            if tr not in tracks:
                hist.append(None)
        detections = []
        bg = self.background.mean
        assert bg is not None
        for (cand, score), tr in zip(smoky, tracks, strict=True):
            x0, y0, x1, y1 = cand.box
            est = ringelmann.estimate(lum[y0:y1, x0:x1], bg[y0:y1, x0:x1], cand.mask)
            hist = tr.state["hits"]
            assert isinstance(hist, deque)
            hist.append(est.grade)
            grades = [g for g in hist if g is not None]
            median_grade = float(np.median(grades))
            confirmed = len(grades) >= p.persist_k and median_grade > p.grade_limit
            detections.append(self._detection(image_bgr, small, bg, cand, tr.id, score, est, median_grade,
                                              len(grades), confirmed, time))
        self.background.update(lum, foreground)
        self._prev = lum
        return detections

    def _scores(self, small: np.ndarray, cands: list[Candidate], shared: Any) -> np.ndarray:
        """Smoke probability of each candidate's crop (with context)."""
        if not cands:
            return np.zeros(0, np.float32)
        h, w = small.shape[:2]
        boxes = [expand(c.box, self.params.crop_margin, w, h) for c in cands]
        clf = self.classifier
        if isinstance(clf, HeadClassifier):
            maps = [clf.feature_map(small[b[1]:b[3], b[0]:b[2]], shared, region_key(small, b)) for b in boxes]
            return clf.classify_maps(maps)[:, clf.labels.index(clf.card.positive_label)]
        return clf.positive_scores([small[b[1]:b[3], b[0]:b[2]] for b in boxes])

    def _detection(self, image: np.ndarray, small: np.ndarray, bg: np.ndarray, cand: Candidate, track: int,
                   score: float, est: ringelmann.RingelmannEstimate, median_grade: float, hits: int,
                   confirmed: bool, time: datetime) -> Detection:
        sh, sw = small.shape[:2]
        nb = normalise_box(cand.box, sw, sh)
        ih, iw = image.shape[:2]
        fx0, fy0, fx1, fy1 = int(nb[0] * iw), int(nb[1] * ih), int(np.ceil(nb[2] * iw)), int(np.ceil(nb[3] * ih))
        x0, y0, x1, y1 = cand.box
        images: dict[str, np.ndarray] = {}
        if confirmed:  # evidence only when it will be used: a full-resolution crop and the background patch
            images["crop"] = image[fy0:fy1, fx0:fx1].copy()
            patch = cv2.cvtColor(ringelmann.linear_to_srgb(bg[y0:y1, x0:x1]), cv2.COLOR_GRAY2BGR)
            images["background"] = cv2.resize(patch, (fx1 - fx0, fy1 - fy0), interpolation=cv2.INTER_LINEAR)
        return Detection(
            detector=NAME, camera=self.camera, time=time, kind="black_smoke", key=f"{NAME}:{self.camera}:{track}",
            score=score, regions=(box_polygon(*nb),),
            metrics={"ringelmann": median_grade, "ringelmann_now": est.grade, "blackness": round(est.blackness, 3),
                     "transmittance": round(est.transmittance, 3), "hits": float(hits),
                     "window": float(self.params.persist_n), "motion": round(cand.motion, 3)},
            confirmed=confirmed, images=images,
        )


def _build(params: SmokeParams, camera: CameraView, pool: ModelPool) -> BlackSmokeDetector:
    return BlackSmokeDetector(_classifier(params, pool), params, camera=camera.camera_id)


def _classifier(params: SmokeParams, pool: ModelPool) -> Any:
    return pool.classifier("smoke_cls", params.model, params.threads)


SPEC = DetectorSpec(
    name=NAME, params=SmokeParams, build=_build, kinds=("black_smoke",), classifier=_classifier,
    summary="dark moving plumes checked by a classifier, graded on the Ringelmann scale, confirmed per track",
    min_fps=0.5,  # a plume lasts minutes; HJ/T 398 reads a stack every 15 s: a keyframe every 2 s is plenty
    violations={"black_smoke": ViolationKind("black smoke, Ringelmann grade {ringelmann}", clear_s=30, cooldown_s=60,
                                             ongoing_every_s=300)},
)
