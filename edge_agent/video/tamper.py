"""Camera tamper and fault watch: covered, blurred, moved, frozen picture, frozen or lost stream.

Sites cover or turn cameras that film them. Each check compares the camera with itself, and
none of them may fire on what a site camera sees every day: trucks and people, smoke, dust
nets pulled off, rain, dusk, the day/night (IR) switch.

* covered / black: the view is flat (grey-level spread below `covered_std`) or dark (mean below
  `black_level`); a lens cap, bag, paint or hand all look like that. Needs nothing learned.
* blurred: fine detail against coarse structure (Laplacian energy over gradient energy, per cell
  of a 4x6 grid: contrast cancels, so dusk, haze and IR do not count) below `blur_ratio` of the
  camera's own baseline in three quarters of the cells that carry detail (a plume or a truck
  takes detail from some cells; a defocused or smeared lens from all).
* moved: judged on the static structure only. While learning, the orientation field of the
  edges (doubled angle: edge polarity, light and contrast do not matter) is averaged: what
  stays put (buildings, hoarding, crane parts) adds up, what passes (vehicles, people, smoke)
  averages out. Each frame is matched against it cell by cell (normalised correlation); when
  most cells no longer match in place, the structure is searched for (template matching over
  +-15 % of the size). Moved when it is found shifted by more than `moved_shift` of the width
  with the same shift frame after frame, or when fewer than `moved_match` of the structured
  cells match anywhere (turned further, rotated, zoomed). A plume, a truck or a removed net
  hides some cells, never most of them; sway below `moved_shift` is tolerated, not reported.
* frozen picture: consecutive frames identical for `frozen_image_s` while packets still flow.
* frozen / lost stream: reported by the capture watchdog (`stream_event`).

The reference follows slow change (light, site progress) only from frames judged normal.
Colour and IR (night) views get a reference each: the mode is told by the colour saturation
the caller passes (`colour_saturation`), and a new mode's view is learned, not reported; without
it one reference serves both, which the contrast-free matching mostly allows. With a
`state_dir` the references and baselines survive a restart (one file per camera, written
atomically), so checks resume at the first frame and a camera turned while the box was off
is still caught.

Covered, blurred and moved are `camera_tamper`; frozen and lost are `device_fault`. A condition
is reported once it has lasted `confirm_s` (started) and closed once gone for `clear_s` (ended).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

from edge_agent.config.cameras import TamperConfig
from edge_agent.types import Violation

log = logging.getLogger(__name__)

MATCH_WIDTH = 160  # structure is judged on a 160-px copy: a few-pixel shift resolved, ~1 ms a frame
GRID = (4, 6)  # rows, columns of cells: a plume or truck hides some cells, a turned camera all
CELL_MATCH = 0.4  # a cell matches when its orientation fields correlate at least this much
STRUCTURED = 0.2  # a cell carries structure when its reference energy is >= this share of the median cell
STRUCTURE_FLOOR = 16.0  # ... and its mean squared gradient (Sobel units) at least this: not sky, not noise
MIN_CELLS = 4  # fewer structured cells (a wall, the sky, fog at learning): too little to judge a move on
SEARCH = 0.15  # the structure is searched for within +-15 % of the size (beyond that nothing matches anyway)
SETTLED = 0.75  # this share of cells matching in place: the view has not moved, no search needed
SHIFT_GAIN = 0.2  # a shift is believed only if it makes this many more cells match than no shift
SHIFT_JITTER_PX = 2.0  # a moved view's shift must stay within this (match pixels) from frame to frame
STILL_DIFF = 0.25  # mean abs grey change: a re-encoded still ~0-0.2, sensor noise alone ~0.6
SHARP_FOLLOW_S = 480.0  # time constant of the sharpness baseline while the view is normal
UNMATCHED_SLOWER = 2.0  # cells that do not match follow this many times slower than reference_refresh_s
FOLLOW_EVERY_S = 5.0  # the references follow a normal view from one frame in this many seconds (CPU)
MODE_FRAMES = 3  # frames in a row at the other saturation before colour/IR mode switches
STATE_VERSION = 1

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
    sharpness: float  # variance of the Laplacian of the analysis-size grey frame (a figure for people)
    sharpness_ratio: float | None  # fine/coarse detail against the baseline, upper quartile of cells
    shift: float | None  # of the static structure against the reference, share of the width
    match: float | None  # share of the structured cells that match the reference (best alignment)
    change: float | None  # mean absolute grey difference to the previous frame


def colour_saturation(image_bgr: np.ndarray) -> float:
    """Mean HSV saturation (0..1) of a sparse sample: near 0 for an IR (night) picture, cheap to compute."""
    if image_bgr.ndim != 3:
        return 0.0
    step = max(1, image_bgr.shape[1] // 80)
    sample = np.ascontiguousarray(image_bgr[::step, ::step])
    return float(cv2.cvtColor(sample, cv2.COLOR_BGR2HSV)[..., 1].mean()) / 255.0


@functools.lru_cache(maxsize=8)
def _cells(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row and column starts of the grid cells for an image shape, and each cell's pixel count."""
    rows = (np.arange(GRID[0]) * shape[0]) // GRID[0]
    cols = (np.arange(GRID[1]) * shape[1]) // GRID[1]
    heights = np.diff(np.append(rows, shape[0]))
    widths = np.diff(np.append(cols, shape[1]))
    return rows, cols, np.outer(heights, widths).astype(np.float32)


def _cell_sums(x: np.ndarray) -> np.ndarray:
    """Sum of `x` over each grid cell (cells differ by a pixel at most where sizes do not divide)."""
    rows, cols, _ = _cells(x.shape[:2])
    return np.add.reduceat(np.add.reduceat(x, rows, axis=0), cols, axis=1)


def _cell_means(x: np.ndarray) -> np.ndarray:
    return _cell_sums(x) / _cells(x.shape[:2])[2]


def _per_pixel(cells: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A per-cell value spread over the pixels of its cell."""
    rows, cols, _ = _cells(shape)
    heights = np.diff(np.append(rows, shape[0]))
    widths = np.diff(np.append(cols, shape[1]))
    return np.repeat(np.repeat(cells, heights, axis=0), widths, axis=1)


@dataclass
class _Structure:
    """What one frame offers the checks: its edge orientation field and per-cell detail."""

    re: np.ndarray  # doubled-angle gradient field at MATCH_WIDTH (polarity-free orientation)
    im: np.ndarray
    field: np.ndarray  # re and im as one 2-channel image, for template matching
    energy: np.ndarray  # per cell: sum of squared gradients (coarse structure)
    sharp: np.ndarray  # per cell: fine detail over coarse structure, contrast-free
    laplacian_var: float


def structure(grey: np.ndarray) -> _Structure:
    """One pass over the small grey frame: fine detail at its size, orientation field at MATCH_WIDTH."""
    h, w = grey.shape[:2]
    lap = cv2.Laplacian(grey, cv2.CV_32F)
    fine = _cell_means(lap * lap)
    small = cv2.resize(grey, (MATCH_WIDTH, max(GRID[0], round(h * MATCH_WIDTH / w))), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (3, 3), 0).astype(np.float32)
    gx = cv2.Sobel(small, cv2.CV_32F, 1, 0)
    gy = cv2.Sobel(small, cv2.CV_32F, 0, 1)
    sq = gx * gx + gy * gy
    inv = 1.0 / (np.sqrt(sq) + 1e-3)
    coarse = _cell_means(sq)
    re, im = (gx * gx - gy * gy) * inv, 2.0 * gx * gy * inv
    return _Structure(
        re=re, im=im, field=cv2.merge([re, im]),
        energy=_cell_sums(sq), sharp=fine / (coarse + 1.0),
        laplacian_var=float(cv2.meanStdDev(lap)[1][0, 0]) ** 2,
    )


class _Reference:
    """A learned view: its static structure and detail baselines, for one mode (colour or IR)."""

    def __init__(self, re: np.ndarray, im: np.ndarray, sharp: np.ndarray, energy: np.ndarray, sharpness: float,
                 frame_shape: tuple[int, int]):
        self.re, self.im = re.astype(np.float32), im.astype(np.float32)
        self.sharp = sharp.astype(np.float32)  # per-cell fine/coarse baseline
        self.energy = energy.astype(np.float32)  # per-cell coarse energy at learning: which cells to judge blur on
        self.sharpness = float(sharpness)  # global Laplacian variance baseline (a figure only)
        self.frame_shape = frame_shape
        self.refresh()

    def refresh(self) -> None:
        """Derived arrays, after learning or a slow update."""
        self.field = cv2.merge([self.re, self.im])
        self.cell_energy = _cell_sums(self.re * self.re + self.im * self.im)
        per_pixel = self.cell_energy / _cells(self.re.shape)[2]
        self.structured = (self.cell_energy >= STRUCTURED * float(np.median(self.cell_energy))) & (
            per_pixel >= STRUCTURE_FLOOR)
        self.judgeable = int(self.structured.sum()) >= MIN_CELLS
        self.detailed = self.energy >= 0.5 * float(np.median(self.energy))

    def locate(self, s: _Structure) -> tuple[int, int]:
        """The shift (dx, dy) in match pixels at which the frame's orientation field best fits the reference.

        Template matching of the reference's central part (its stable structure: passing things
        averaged out) over the frame, on both field components at once: the real part of the
        complex correlation, normalised. Cheap at this size, and unlike phase correlation not
        led astray by a truck or a plume, which whitening would weigh as much as a building.
        """
        h, w = self.re.shape
        mx, my = max(1, round(SEARCH * w)), max(1, round(SEARCH * h))
        score = cv2.matchTemplate(s.field, self.field[my:h - my, mx:w - mx], cv2.TM_CCORR_NORMED)
        _, _, _, (x, y) = cv2.minMaxLoc(score)
        return x - mx, y - my

    def correlation(self, s: _Structure, dx: int = 0, dy: int = 0) -> np.ndarray:
        """Per cell: normalised correlation of the orientation fields, the frame moved back by (dx, dy)."""
        re, im = (s.re, s.im) if dx == dy == 0 else (np.roll(s.re, (-dy, -dx), (0, 1)),
                                                     np.roll(s.im, (-dy, -dx), (0, 1)))
        num = _cell_sums(self.re * re + self.im * im)
        own = _cell_sums(re * re + im * im)
        return num / np.sqrt(self.cell_energy * own + 1e-6)

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}_re": self.re, f"{prefix}_im": self.im, f"{prefix}_sharp": self.sharp,
                f"{prefix}_energy": self.energy}


@dataclass(frozen=True)
class _Placement:
    """Where the static structure is against the reference, for one frame."""

    at: tuple[int, int]  # the alignment judged (match pixels): (0, 0), or a shift that explains the view
    shift: float | None  # share of the width; None when the structure is not found at all
    match: float | None  # share of structured cells that match at `at`; None when nothing to judge on
    cells: np.ndarray | None  # which cells match at `at`
    moved: bool


class _Learner:
    """Accumulates a reference over `learn_s` of frames: averaging keeps what stays put."""

    def __init__(self, t: datetime):
        self.start = t
        self.n = 0
        self.re: np.ndarray | None = None
        self.im: np.ndarray | None = None
        self.sharp: list[np.ndarray] = []
        self.energy: list[np.ndarray] = []
        self.laplacian: list[float] = []

    def add(self, s: _Structure) -> None:
        if self.re is None or self.im is None or self.re.shape != s.re.shape:
            self.re, self.im, self.n = s.re.copy(), s.im.copy(), 1
            self.sharp, self.energy, self.laplacian = [], [], []
        else:
            self.re += s.re
            self.im += s.im
            self.n += 1
        self.sharp.append(s.sharp)
        self.energy.append(s.energy)
        self.laplacian.append(s.laplacian_var)

    def done(self, t: datetime, learn_s: float) -> bool:
        return self.n >= 3 and (t - self.start).total_seconds() >= learn_s

    def reference(self, frame_shape: tuple[int, int]) -> _Reference:
        assert self.re is not None and self.im is not None
        return _Reference(self.re / self.n, self.im / self.n, np.median(np.stack(self.sharp), axis=0),
                          np.median(np.stack(self.energy), axis=0), float(np.median(self.laplacian)), frame_shape)


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
    """Per camera; `observe` on each analysis frame, `stream_event` on capture events. Thread-safe.

    With `state_dir`, the learned references live in `state_dir/<camera id>.npz` across restarts.
    """

    def __init__(self, camera_id: str, config: TamperConfig, *, state_dir: Path | None = None):
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
        self._references: dict[str, _Reference] = {}  # by mode: "colour", "ir"
        self._learner: _Learner | None = None
        self.mode = "colour"
        self._mode_votes = 0
        self._last_shift: tuple[int, int] | None = None
        self._prev: np.ndarray | None = None
        self._last_t: datetime | None = None
        self._normal_s = 0.0  # seconds of normal view since the references last followed it
        self._saved_at: datetime | None = None
        self._relearning = False
        self.last: ViewMeasures | None = None
        self.state_path = None if state_dir is None else Path(state_dir) / f"{camera_id}.npz"
        if self.state_path is not None:
            self._load()

    # --- what the cameras component reads --------------------------------------------------

    @property
    def learned(self) -> bool:
        """The current mode's reference is known (learned here or loaded from the state dir)."""
        return self.mode in self._references

    @property
    def baseline(self) -> float | None:
        """The current mode's sharpness baseline (Laplacian variance), None while learning."""
        ref = self._references.get(self.mode)
        return None if ref is None else ref.sharpness

    def active(self) -> list[str]:
        """Reasons currently reported (started and not yet ended)."""
        with self._lock:
            return [name for name, cond in self._conditions.items() if cond.active]

    @property
    def view_tampered(self) -> bool:
        """True while the view is covered, blurred or moved: detector results are not to be trusted."""
        return any(self._conditions[n].active for n in ("covered", "blurred", "moved"))

    # --- per frame -------------------------------------------------------------------------

    def observe(self, grey: np.ndarray, t: datetime, *, saturation: float | None = None) -> list[Violation]:
        """Judge one analysis frame (small grey image, see prep.small_grey) taken at `t` (UTC).

        `saturation` (see `colour_saturation`, on the colour frame) tells day from IR night
        view; without it one reference serves both, which contrast-free matching mostly allows.
        """
        if not self.config.enabled:
            return []
        with self._lock:
            c = self.config
            dt = 1.0 if self._last_t is None else min(max((t - self._last_t).total_seconds(), 0.0), 5.0)
            self._last_t = t
            self._switch_mode(saturation)
            mean, std = cv2.meanStdDev(grey)
            m_mean, m_std = float(mean[0, 0]), float(std[0, 0])
            change = None
            if self._prev is not None and self._prev.shape == grey.shape:
                change = float(cv2.absdiff(grey, self._prev).mean())
            self._prev = grey
            covered = m_std < c.covered_std or m_mean < c.black_level
            s = structure(grey)
            ref = self._references.get(self.mode)
            if ref is not None and ref.frame_shape != grey.shape[:2]:
                log.warning("camera %s: frame size changed %s -> %s; learning the view again", self.camera_id,
                            ref.frame_shape, grey.shape[:2])
                self._references.clear()
                self._relearning = True  # a reconfigured camera: its new view is learned whatever is reported
                ref = None
            ratio: float | None = None
            place = _Placement((0, 0), None, None, None, False)
            blurred = moved = False
            if ref is None:
                if self._tamper_reported() and not self._relearning:
                    # A new mode while tampered: nothing is learned from such a view, the report stays.
                    blurred, moved = self._conditions["blurred"].active, self._conditions["moved"].active
                elif not covered:
                    self._learn(s, t, grey.shape[:2])
            else:
                ratio = self._sharpness_ratio(ref, s)
                place = self._placement(ref, s)
                blurred = not covered and ratio < c.blur_ratio
                moved = not covered and not blurred and place.moved
            self.last = ViewMeasures(m_mean, m_std, s.laplacian_var, ratio, place.shift, place.match, change)
            still = change is not None and change < STILL_DIFF and not covered
            figures: dict[str, float | str | None] = {
                "mean": round(m_mean, 1), "std": round(m_std, 2), "sharpness": round(s.laplacian_var, 1),
                "sharpness_baseline": None if ref is None else round(ref.sharpness, 1),
                "sharpness_ratio": None if ratio is None else round(ratio, 3),
                "shift": None if place.shift is None else round(place.shift, 4),
                "match": None if place.match is None else round(place.match, 3),
                "mode": self.mode,
            }
            out = [v for v in (
                self._conditions["covered"].update(covered, t, {"reason": "covered", **figures}),
                self._conditions["blurred"].update(blurred, t, {"reason": "blurred", **figures}),
                self._conditions["moved"].update(moved, t, {"reason": "moved", **figures}),
                self._conditions["frozen_image"].update(still, t, {"reason": "frozen_image", **figures}),
            ) if v is not None]
            if ref is not None and not (covered or blurred or moved or self.view_tampered):
                self._normal_s += dt
                if self._normal_s >= FOLLOW_EVERY_S:
                    self._follow(ref, s, place, self._normal_s)
                    self._normal_s = 0.0
                if self._saved_at is None or (t - self._saved_at).total_seconds() >= c.state_save_s:
                    self._save(t)
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

    def save(self) -> bool:
        """Write the learned references now (e.g. at an orderly stop); False when there is nothing or no dir."""
        with self._lock:
            return self._save(self._last_t)

    def relearn(self) -> None:
        """Forget the learned views (and their file): after the camera was re-aimed on purpose.

        Without this a reference kept across restarts reports the new aim as moved for good.
        """
        with self._lock:
            self._references.clear()
            self._learner = None
            self._last_shift = None
            self._relearning = True  # learned even while moved or blurred is reported: that view is the new one
            if self.state_path is not None:
                try:
                    self.state_path.unlink(missing_ok=True)
                except OSError as exc:  # the next save replaces it anyway
                    log.warning("camera %s: %s not removed: %s", self.camera_id, self.state_path, exc)
            log.info("camera %s: tamper references dropped; learning the view again", self.camera_id)

    # --- the checks ------------------------------------------------------------------------

    def _sharpness_ratio(self, ref: _Reference, s: _Structure) -> float:
        """Upper quartile over detailed cells of fine/coarse detail against the baseline.

        Blur takes detail from every cell; a plume, a truck or a net hides some: the quartile
        that kept most of its detail still speaks for the lens.
        """
        cells = np.sort((s.sharp / np.maximum(ref.sharp, 1e-6))[ref.detailed])
        return float(cells[(3 * (cells.size - 1)) // 4]) if cells.size else 1.0

    def _placement(self, ref: _Reference, s: _Structure) -> _Placement:
        """Judge the frame's static structure against the reference: in place, shifted, or gone."""
        c = self.config
        if not ref.judgeable:
            return _Placement((0, 0), None, None, None, False)
        structured = ref.structured
        n = int(structured.sum())
        at_zero = ref.correlation(s) >= CELL_MATCH
        match_zero = float((at_zero & structured).sum()) / n
        if match_zero >= SETTLED:  # the usual case: in place, nothing to search for
            self._last_shift = None
            return _Placement((0, 0), 0.0, match_zero, at_zero, False)
        dx, dy = ref.locate(s)
        match_shift, at_shift = match_zero, at_zero
        if dx or dy:
            at_shift = ref.correlation(s, dx, dy) >= CELL_MATCH
            match_shift = float((at_shift & structured).sum()) / n
        shift = float(math.hypot(dx, dy)) / ref.re.shape[1]
        if shift > c.moved_shift and match_shift >= max(c.moved_match, 0.5) and match_shift >= match_zero + SHIFT_GAIN:
            # The structure is all there, somewhere else: moved, if the shift holds from frame to frame.
            last, self._last_shift = self._last_shift, (dx, dy)
            steady = last is None or math.hypot(dx - last[0], dy - last[1]) <= SHIFT_JITTER_PX
            return _Placement((dx, dy), shift, match_shift, at_shift, steady)
        self._last_shift = None
        lost = max(match_zero, match_shift) < c.moved_match  # turned, rotated, zoomed: the structure is gone
        if shift <= c.moved_shift and match_shift > match_zero:  # wind, a nudge: judged where the view now is
            return _Placement((dx, dy), None if lost else shift, match_shift, at_shift, lost)
        return _Placement((0, 0), None if lost else 0.0, match_zero, at_zero, lost)

    def _follow(self, ref: _Reference, s: _Structure, place: _Placement, dt: float) -> None:
        """Track slow change (light, site progress) from a frame judged normal, `dt` seconds after the last.

        Cells that match follow with `reference_refresh_s`; cells that do not (a new building,
        hoarding taken down, or just a plume or a parked truck) twice as slowly: a lasting change
        is taken over within tens of minutes, while a passing one leaves little trace, since the
        cell correlation does not care how strong the reference's edges are, only where they
        run. A reference with too little structure to judge on follows everything until it has some.
        """
        c = self.config
        a = 1.0 - math.exp(-dt / SHARP_FOLLOW_S)
        cells = s.sharp / np.maximum(ref.sharp, 1e-6)
        keep = (cells > 0.5) & (cells < 2.0)
        ref.sharp = np.where(keep, ref.sharp + a * (s.sharp - ref.sharp), ref.sharp).astype(np.float32)
        if 0.5 < s.laplacian_var / max(ref.sharpness, 1e-6) < 2.0:
            ref.sharpness += a * (s.laplacian_var - ref.sharpness)
        if place.at != (0, 0):
            return
        fast = 1.0 - math.exp(-dt / c.reference_refresh_s)
        if place.cells is None or place.match is None:
            rate = np.full(GRID, fast, np.float32)
        else:
            slow = 1.0 - math.exp(-dt / (UNMATCHED_SLOWER * c.reference_refresh_s))
            rate = np.where(place.cells, fast, slow).astype(np.float32)
        alpha = _per_pixel(rate, ref.re.shape)
        ref.re += alpha * (s.re - ref.re)
        ref.im += alpha * (s.im - ref.im)
        ref.refresh()

    def _learn(self, s: _Structure, t: datetime, shape: tuple[int, int]) -> None:
        if self._learner is None:
            self._learner = _Learner(t)
        self._learner.add(s)
        if self._learner.done(t, self.config.learn_s):
            self._references[self.mode] = self._learner.reference(shape)
            self._learner = None
            self._relearning = False
            log.info("camera %s: %s view learned", self.camera_id, self.mode)
            self._save(t)

    def _tamper_reported(self) -> bool:
        """Blurred or moved is reported: a new mode's view must not be learned from such a view."""
        return self._conditions["blurred"].active or self._conditions["moved"].active

    def _switch_mode(self, saturation: float | None) -> None:
        """Colour <-> IR after MODE_FRAMES frames in a row on the other side of `ir_saturation`."""
        if saturation is None:
            return
        limit = self.config.ir_saturation
        other = saturation < limit if self.mode == "colour" else saturation > 2.0 * limit
        self._mode_votes = self._mode_votes + 1 if other else 0
        if self._mode_votes >= MODE_FRAMES:
            self.mode = "ir" if self.mode == "colour" else "colour"
            self._mode_votes = 0
            self._learner = None
            self._last_shift = None
            log.info("camera %s: %s view (saturation %.3f)%s", self.camera_id, self.mode, saturation,
                     "" if self.mode in self._references else "; learning it")

    # --- state across restarts -------------------------------------------------------------

    def _save(self, t: datetime | None) -> bool:
        if self.state_path is None or not self._references:
            return False
        meta = {
            "version": STATE_VERSION, "camera": self.camera_id, "match_width": MATCH_WIDTH, "grid": list(GRID),
            "modes": {mode: {"sharpness": ref.sharpness, "frame_shape": list(ref.frame_shape)}
                      for mode, ref in self._references.items()},
            "saved": None if t is None else t.isoformat(),
        }
        arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta))}
        for mode, ref in self._references.items():
            arrays.update(ref.arrays(mode))
        path = self.state_path
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)  # type: ignore[arg-type]
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)  # a crash leaves the old file or the new one, never half of one
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)  # the rename itself survives a power cut
            finally:
                os.close(folder)
        except OSError as exc:
            log.warning("camera %s: tamper state not saved to %s: %s", self.camera_id, path, exc)
            tmp.unlink(missing_ok=True)
            self._saved_at = t  # tried again after state_save_s, not at every frame
            return False
        self._saved_at = t
        log.debug("camera %s: tamper state saved (%s)", self.camera_id, ", ".join(sorted(self._references)))
        return True

    def _load(self) -> None:
        path = self.state_path
        if path is None or not path.exists():
            return
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if (meta.get("version") != STATE_VERSION or meta.get("match_width") != MATCH_WIDTH
                        or list(meta.get("grid", [])) != list(GRID)):
                    raise ValueError(f"made by another version ({meta.get('version')}, {meta.get('match_width')}, "
                                     f"{meta.get('grid')})")
                if meta.get("camera") != self.camera_id:
                    raise ValueError(f"belongs to camera {meta.get('camera')!r}")
                refs: dict[str, _Reference] = {}
                for mode, info in dict(meta["modes"]).items():
                    if mode not in ("colour", "ir"):
                        raise ValueError(f"unknown mode {mode!r}")
                    shape = (int(info["frame_shape"][0]), int(info["frame_shape"][1]))
                    re, im = data[f"{mode}_re"], data[f"{mode}_im"]
                    sharp, energy = data[f"{mode}_sharp"], data[f"{mode}_energy"]
                    field_shape = (max(GRID[0], round(shape[0] * MATCH_WIDTH / shape[1])), MATCH_WIDTH)
                    if re.shape != field_shape or im.shape != field_shape or sharp.shape != GRID \
                            or energy.shape != GRID:
                        raise ValueError(f"{mode} arrays do not fit a {shape[1]}x{shape[0]} frame")
                    if not all(np.isfinite(a).all() for a in (re, im, sharp, energy)):
                        raise ValueError(f"{mode} arrays hold non-finite values")
                    refs[mode] = _Reference(re, im, sharp, energy, float(info["sharpness"]), shape)
        except Exception as exc:  # a corrupt or foreign file is ignored: the view is learned again
            log.warning("camera %s: tamper state %s ignored (%s); learning the view again", self.camera_id, path, exc)
            return
        self._references = refs
        log.info("camera %s: tamper state loaded from %s (%s)", self.camera_id, path, ", ".join(sorted(refs)))
