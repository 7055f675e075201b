"""Camera tamper and fault watch: covered, blurred, moved, frozen picture, frozen or lost stream.

Sites cover or turn cameras that film them. Each check compares the camera with itself:

* covered / black: the view is flat (grey-level spread below `covered_std`) or dark (mean below
  `black_level`); a lens cap, bag, paint or hand all look like that.
* blurred: sharpness (variance of the Laplacian) below `blur_ratio` of the camera's own baseline,
  learned in its first `learn_s` of normal view and followed slowly afterwards.
* moved: the edge map (light-independent) no longer lines up with the reference view: phase
  correlation finds a shift above `moved_shift` of the width, or no good match at all.
* frozen picture: consecutive frames identical for `frozen_image_s` while packets still flow.
* frozen / lost stream: reported by the capture watchdog (`stream_event`).

Covered, blurred and moved are `camera_tamper`; frozen and lost are `device_fault`. A condition
is reported once it has lasted `confirm_s` (started) and closed once gone for `clear_s` (ended).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

import cv2
import numpy as np

from edge_agent.config.cameras import TamperConfig
from edge_agent.types import Violation

MATCH_WIDTH = 160  # phase correlation on a 160-px edge map: ~0.3 ms, shifts of a few pixels resolved
STILL_DIFF = 0.25  # mean abs grey change: a re-encoded still ~0-0.2, sensor noise alone ~0.6

TAMPER = "camera_tamper"
FAULT = "device_fault"

MESSAGES = {
    "covered": ("摄像头被遮挡", "摄像头遮挡已解除"),
    "blurred": ("摄像头画面模糊（失焦或镜头脏污）", "摄像头画面已恢复清晰"),
    "moved": ("摄像头被移动（画面与参考不符）", "摄像头画面已回到原位"),
    "frozen_image": ("摄像头画面冻结", "摄像头画面已恢复"),
    "stream": ("摄像头视频中断", "摄像头视频已恢复"),
}


@dataclass(frozen=True)
class ViewMeasures:
    mean: float
    std: float
    sharpness: float  # variance of the Laplacian of the analysis-size grey frame
    shift: float | None  # against the reference, share of the image width (None while learning)
    match: float | None  # phase-correlation peak against the reference, 0..1
    change: float | None  # mean absolute grey difference to the previous frame


def edge_map(grey: np.ndarray) -> np.ndarray:
    """Gradient magnitude at MATCH_WIDTH: survives daylight changes that fool a plain image match."""
    h, w = grey.shape[:2]
    small = cv2.resize(grey, (MATCH_WIDTH, max(1, round(h * MATCH_WIDTH / w))), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (3, 3), 0).astype(np.float32)
    return cv2.magnitude(cv2.Sobel(small, cv2.CV_32F, 1, 0), cv2.Sobel(small, cv2.CV_32F, 0, 1))


class _Condition:
    """One tamper or fault condition with its confirm/clear timing and its occurrence key."""

    def __init__(self, camera_id: str, reason: str, kind: str, confirm_s: float, clear_s: float):
        self.camera_id, self.reason, self.kind = camera_id, reason, kind
        self.confirm = timedelta(seconds=confirm_s)
        self.clear = timedelta(seconds=clear_s)
        self.seen_since: datetime | None = None
        self.gone_since: datetime | None = None
        self.started: datetime | None = None
        self.figures: dict[str, float | str | None] = {}

    @property
    def active(self) -> bool:
        return self.started is not None

    def update(self, present: bool, t: datetime, figures: dict[str, float | str | None]) -> Violation | None:
        if present:
            self.gone_since = None
            if self.seen_since is None:
                self.seen_since = t
            if self.started is None and t - self.seen_since >= self.confirm:
                self.started = self.seen_since
                self.figures = dict(figures)
                return self._violation("started", t, figures)
            return None
        self.seen_since = None
        if self.started is None:
            return None
        if self.gone_since is None:
            self.gone_since = t
        if t - self.gone_since >= self.clear:
            violation = self._violation("ended", t, figures)
            self.started = None
            self.gone_since = None
            return violation
        return None

    def _violation(self, state: str, t: datetime, figures: dict[str, float | str | None]) -> Violation:
        assert self.started is not None
        started_text, ended_text = MESSAGES.get(self.reason, (self.reason, self.reason))
        reason = str(figures.get("reason", self.reason))
        return Violation(
            kind=self.kind, state=state, key=f"{self.camera_id}/{self.reason}/{self.started:%Y%m%dT%H%M%S.%fZ}",
            time=t, started=self.started, source=self.camera_id,
            figures={"reason": reason, **{k: v for k, v in figures.items() if k != "reason"}},
            message=f"{self.camera_id}: {started_text if state == 'started' else ended_text}",
        )


class TamperMonitor:
    """Per camera; `observe` on each analysis frame, `stream_event` on capture events. Thread-safe."""

    def __init__(self, camera_id: str, config: TamperConfig):
        self.camera_id = camera_id
        self.config = config
        c = config
        self._conditions = {
            "covered": _Condition(camera_id, "covered", TAMPER, c.confirm_s, c.clear_s),
            "blurred": _Condition(camera_id, "blurred", TAMPER, c.confirm_s, c.clear_s),
            "moved": _Condition(camera_id, "moved", TAMPER, c.confirm_s, c.clear_s),
            "frozen_image": _Condition(camera_id, "frozen_image", FAULT, c.frozen_image_s, c.clear_s),
            "stream": _Condition(camera_id, "stream", FAULT, 0.0, 0.0),
        }
        self._lock = threading.Lock()
        self._learn_start: datetime | None = None
        self._learn_sharp: list[float] = []
        self._learn_frames: list[np.ndarray] = []
        self.baseline: float | None = None
        self._reference: np.ndarray | None = None
        self._reference_at: datetime | None = None
        self._window: np.ndarray | None = None
        self._prev: np.ndarray | None = None
        self.last: ViewMeasures | None = None

    @property
    def learned(self) -> bool:
        return self.baseline is not None and self._reference is not None

    def active(self) -> list[str]:
        """Reasons currently reported (started and not yet ended)."""
        with self._lock:
            return [name for name, cond in self._conditions.items() if cond.active]

    @property
    def view_tampered(self) -> bool:
        """True while the view is covered, blurred or moved: detector results are not to be trusted."""
        return any(self._conditions[n].active for n in ("covered", "blurred", "moved"))

    def measure(self, grey: np.ndarray) -> tuple[ViewMeasures, np.ndarray]:
        mean, std = cv2.meanStdDev(grey)
        sharpness = float(cv2.Laplacian(grey, cv2.CV_64F).var())
        edges = edge_map(grey)
        shift = match = None
        if self._reference is not None and self._reference.shape == edges.shape:
            if self._window is None or self._window.shape != edges.shape:
                self._window = cv2.createHanningWindow((edges.shape[1], edges.shape[0]), cv2.CV_32F)
            (dx, dy), match = cv2.phaseCorrelate(self._reference, edges, self._window)
            shift = float(np.hypot(dx, dy)) / edges.shape[1]
        change = None
        if self._prev is not None and self._prev.shape == grey.shape:
            change = float(cv2.absdiff(grey, self._prev).mean())
        self._prev = grey
        return ViewMeasures(float(mean[0, 0]), float(std[0, 0]), sharpness, shift,
                            None if match is None else float(match), change), edges

    def observe(self, grey: np.ndarray, t: datetime) -> list[Violation]:
        """Judge one analysis frame (small grey image, see prep.small_grey) taken at `t` (UTC)."""
        if not self.config.enabled:
            return []
        with self._lock:
            m, edges = self.measure(grey)
            self.last = m
            c = self.config
            covered = m.std < c.covered_std or m.mean < c.black_level
            if not self.learned:
                if not covered:
                    self._learn(grey, m, t)
                blurred = moved = False
            else:
                assert self.baseline is not None
                blurred = not covered and m.sharpness < c.blur_ratio * self.baseline
                moved = (not covered and not blurred and m.shift is not None and m.match is not None
                         and (m.shift > c.moved_shift or m.match < c.moved_match))
            still = m.change is not None and m.change < STILL_DIFF and not covered
            figures: dict[str, float | str | None] = {
                "mean": round(m.mean, 1), "std": round(m.std, 2), "sharpness": round(m.sharpness, 1),
                "sharpness_baseline": None if self.baseline is None else round(self.baseline, 1),
                "shift": None if m.shift is None else round(m.shift, 4),
                "match": None if m.match is None else round(m.match, 3),
            }
            out = [v for v in (
                self._conditions["covered"].update(covered, t, {"reason": "covered", **figures}),
                self._conditions["blurred"].update(blurred, t, {"reason": "blurred", **figures}),
                self._conditions["moved"].update(moved, t, {"reason": "moved", **figures}),
                self._conditions["frozen_image"].update(still, t, {"reason": "frozen_image", **figures}),
            ) if v is not None]
            if self.learned and not (covered or blurred or moved) and not self.view_tampered:
                self._follow(m, edges, t)
            return out

    def stream_event(self, kind: str, t: datetime, detail: str = "") -> list[Violation]:
        """Capture events: `frozen` / `lost` start a device fault, `connected` ends it."""
        with self._lock:
            cond = self._conditions["stream"]
            if kind in ("frozen", "lost"):
                reason = "stream_frozen" if kind == "frozen" else "stream_lost"
                v = cond.update(True, t, {"reason": reason, "detail": detail})
            elif kind == "connected":
                v = cond.update(False, t, {"reason": "stream_restored", "detail": detail})
                self._prev = None  # a reconnect is not a frozen picture
            else:
                return []
            return [v] if v is not None else []

    def _learn(self, grey: np.ndarray, m: ViewMeasures, t: datetime) -> None:
        if self._learn_start is None:
            self._learn_start = t
        self._learn_sharp.append(m.sharpness)
        self._learn_frames.append(grey)
        del self._learn_frames[:-5]
        if (t - self._learn_start).total_seconds() >= self.config.learn_s and len(self._learn_sharp) >= 3:
            self.baseline = float(np.median(self._learn_sharp))
            # The median of the last frames drops passing vehicles and people from the reference.
            self._reference = edge_map(np.median(np.stack(self._learn_frames), axis=0).astype(np.uint8))
            self._reference_at = t
            self._learn_sharp.clear()
            self._learn_frames.clear()

    def _follow(self, m: ViewMeasures, edges: np.ndarray, t: datetime) -> None:
        """Track slow change (daylight, site progress) while the view is normal."""
        assert self.baseline is not None
        if 0.5 < m.sharpness / max(self.baseline, 1e-6) < 2.0:
            self.baseline += 0.002 * (m.sharpness - self.baseline)  # ~8 min time constant at 1 fps
        if (self._reference_at is not None and m.match is not None and m.shift is not None
                and (t - self._reference_at).total_seconds() >= self.config.reference_refresh_s
                and m.match >= 2 * self.config.moved_match and m.shift < self.config.moved_shift / 4):
            self._reference = edges
            self._reference_at = t
