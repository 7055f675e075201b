"""Synthetic site-exit video with vehicles the shipped COCO detector really finds (tests, demo, bench).

The older `WashScene` draws a vehicle as a green rectangle seen from above: background
subtraction found it, an object detector rightly does not. Here a side-mounted exit camera
sees cars drive left to right through a wash bay and across an exit line; each car is drawn
with a cabin, windows, wheels with rims, lights, shading and a shadow, enough for the SSD to
score it 0.6-0.8 at 640x360 (tests check that rather than assume it).

`real_truck_frames` composites a real gantry photo from ../shared/datasets/site_vehicles
(never copied into the repository) moving down across an exit line, for the load tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

Rng = np.random.Generator
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "datasets"  # beside the checkout


def _shade(img: np.ndarray, mask: np.ndarray, top: float, bottom: float) -> np.ndarray:
    g = np.linspace(top, bottom, img.shape[0], dtype=np.float32)[:, None, None]
    out = np.clip(img.astype(np.float32) * g, 0, 255).astype(np.uint8)
    return np.where(mask[..., None] > 0, out, img)


def car_side(width: int, body: tuple[int, int, int] = (40, 40, 200)) -> tuple[np.ndarray, np.ndarray]:
    """A saloon car seen from the side, facing right: (BGR image, mask)."""
    w, h = width, int(width * 0.42)
    img = np.zeros((h, w, 3), np.uint8)
    m = np.zeros((h, w), np.uint8)
    lower = np.array([[0.02, 0.45], [0.25, 0.40], [0.98, 0.42], [1.0, 0.62], [0.98, 0.82], [0.02, 0.82], [0.0, 0.6]])
    cabin = np.array([[0.22, 0.42], [0.35, 0.12], [0.68, 0.10], [0.82, 0.42]])
    for poly in (lower, cabin):
        p = (poly * [w - 1, h - 1]).astype(np.int32)
        cv2.fillPoly(img, [p], body)
        cv2.fillPoly(m, [p], 255)
    img = _shade(img, m, 1.25, 0.7)
    for poly in (np.array([[0.27, 0.40], [0.37, 0.16], [0.50, 0.15], [0.50, 0.40]]),
                 np.array([[0.53, 0.40], [0.53, 0.15], [0.66, 0.15], [0.77, 0.40]])):
        cv2.fillPoly(img, [(poly * [w - 1, h - 1]).astype(np.int32)], (80, 70, 60))
    t = max(1, w // 150)
    cv2.line(img, (int(0.52 * w), int(0.42 * h)), (int(0.52 * w), int(0.8 * h)), (20, 20, 20), t)
    cv2.line(img, (int(0.02 * w), int(0.62 * h)), (int(0.98 * w), int(0.62 * h)),
             tuple(int(c * 0.6) for c in body), t)
    cv2.rectangle(img, (int(0.955 * w), int(0.47 * h)), (int(0.995 * w), int(0.56 * h)), (230, 240, 250), -1)
    cv2.rectangle(img, (int(0.005 * w), int(0.48 * h)), (int(0.03 * w), int(0.57 * h)), (30, 30, 200), -1)
    r = int(0.17 * h)
    for x in (0.2, 0.8):
        c = (int(x * w), int(0.82 * h))
        cv2.circle(img, c, int(r * 1.15), (10, 10, 10), -1)
        cv2.circle(m, c, int(r * 1.15), 255, -1)
        cv2.circle(img, c, r, (25, 25, 25), -1)
        cv2.circle(img, c, int(r * 0.55), (170, 170, 175), -1)
        cv2.circle(img, c, int(r * 0.2), (90, 90, 90), -1)
    return img, m


def _cylinder(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Shade left to right as a rounded body would be lit."""
    g = 0.65 + 0.5 * np.sin(np.linspace(0.15, np.pi - 0.15, img.shape[1]))[None, :, None]
    out = np.clip(img.astype(np.float32) * g, 0, 255).astype(np.uint8)
    return np.where(mask[..., None] > 0, out, img)


def walker(height: int, shirt: tuple[int, int, int] = (30, 120, 230), stride: float = 0.12,
           swing: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """A worker walking towards the camera (legs apart, arms swinging): (BGR image, mask).

    A standing figure with legs together scores under 0.4 with the SSD; this pose 0.5-0.7
    when the figure is a third to a half of a 640x360 frame's height.
    """
    h = height
    w = max(8, int(h * 0.5))
    img = np.zeros((h, w, 3), np.uint8)
    m = np.zeros((h, w), np.uint8)
    cx = w / 2
    skin, trousers, hair = (120, 150, 200), (60, 45, 35), (30, 30, 40)

    def poly(pts: list[tuple[float, float]], col: tuple[int, int, int]) -> None:
        p = np.array([[cx + x * h, y * h] for x, y in pts], np.int32)
        cv2.fillPoly(img, [p], col)
        cv2.fillPoly(m, [p], 255)

    def ell(x: float, y: float, ax: float, ay: float, col: tuple[int, int, int]) -> None:
        centre, axes = (int(cx + x * h), int(y * h)), (max(1, int(ax * h)), max(1, int(ay * h)))
        cv2.ellipse(img, centre, axes, 0, 0, 360, col, -1)
        cv2.ellipse(m, centre, axes, 0, 0, 360, 255, -1)

    s, a = stride, swing
    poly([(-0.075, 0.50), (0.0, 0.50), (-0.03 - s, 0.95), (-0.08 - s, 0.95)], trousers)
    poly([(0.0, 0.50), (0.075, 0.50), (0.08 + s, 0.95), (0.03 + s, 0.95)], (48, 36, 28))
    ell(-0.06 - s, 0.962, 0.05, 0.022, (25, 25, 25))
    ell(0.06 + s, 0.962, 0.05, 0.022, (25, 25, 25))
    poly([(-0.115, 0.18), (0.115, 0.18), (0.085, 0.52), (-0.085, 0.52)], shirt)
    ell(0, 0.19, 0.115, 0.04, shirt)
    poly([(-0.13, 0.19), (-0.09, 0.20), (-0.10 + a, 0.46), (-0.14 + a, 0.45)], shirt)
    poly([(0.13, 0.19), (0.09, 0.20), (0.10 - a, 0.46), (0.14 - a, 0.45)], shirt)
    ell(-0.12 + a, 0.475, 0.022, 0.028, skin)
    ell(0.12 - a, 0.475, 0.022, 0.028, skin)
    poly([(-0.025, 0.12), (0.025, 0.12), (0.025, 0.17), (-0.025, 0.17)], skin)
    ell(0, 0.085, 0.052, 0.065, skin)
    ell(0.0, 0.05, 0.056, 0.04, hair)
    return _cylinder(img, m), m


def roof_load(kind: str, width: int, height: int, rng: Rng) -> tuple[np.ndarray, np.ndarray]:
    """A load seen from the side: "uncovered" is a textured soil heap, "covered" a flat green tarp with straps."""
    w, h = width, height
    img = np.zeros((h, w, 3), np.uint8)
    m = np.zeros((h, w), np.uint8)
    if kind == "uncovered":
        pts = np.array([[0, h - 1], [int(0.2 * w), int(0.25 * h)], [int(0.5 * w), 0], [int(0.8 * w), int(0.2 * h)],
                        [w - 1, h - 1]], np.int32)
        cv2.fillPoly(m, [pts], 255)
        low = cv2.resize(rng.normal(0, 20, (h // 4 + 1, w // 4 + 1)).astype(np.float32), (w, h))
        tex = np.array([60, 90, 120], np.float32) + rng.normal(0, 25, (h, w, 1)) + low[..., None]
        img[:] = np.clip(tex, 0, 255).astype(np.uint8)
    elif kind == "covered":
        cv2.rectangle(m, (0, int(0.3 * h)), (w - 1, h - 1), 255, -1)
        img[:] = (70, 140, 60)
        for k in range(1, 4):
            cv2.line(img, (int(k * w / 4), int(0.3 * h)), (int(k * w / 4), h - 1), (40, 100, 40), 2)
    else:
        raise ValueError(kind)
    return img, m


def paste(canvas: np.ndarray, obj: np.ndarray, mask: np.ndarray, x: int, y: int, shadow: bool = True) -> None:
    """Draw `obj` with its top-left at (x, y), clipped to the canvas, with a soft ground shadow."""
    h, w = obj.shape[:2]
    ch, cw = canvas.shape[:2]
    if shadow:
        sm = np.zeros((ch, cw), np.float32)
        cv2.rectangle(sm, (x + w // 20, y + int(h * 0.6)), (x + w + w // 12, y + h + h // 12), 1.0, -1)
        sm = np.asarray(cv2.GaussianBlur(sm, (0, 0), max(1.0, w / 40)), np.float32)
        canvas[:] = (canvas * (1 - 0.45 * sm[..., None])).astype(np.uint8)
    x0, y0, x1, y1 = max(0, x), max(0, y), min(cw, x + w), min(ch, y + h)
    if x1 <= x0 or y1 <= y0:
        return
    o = obj[y0 - y:y1 - y, x0 - x:x1 - x]
    mm = (mask[y0 - y:y1 - y, x0 - x:x1 - x] > 0)[..., None]
    canvas[y0:y1, x0:x1] = np.where(mm, o, canvas[y0:y1, x0:x1])


@dataclass
class Car:
    """A car's drive: enters at `start` s, drives at `speed` (image widths/s), may stop at `stop_x` for `dwell` s.

    `follow` makes it queue behind another car, bumper to bumper (`gap` widths between them).
    """

    start: float
    body: tuple[int, int, int] = (40, 40, 200)
    speed: float = 0.12
    stop_x: float | None = None  # centre x where it stops
    dwell: float = 0.0
    follow: Car | None = None
    gap: float = 0.0
    width: float = 0.33  # share of the image width
    enter_x: float = -0.2
    roof: str | None = None  # a load on the roof: "covered" (taut green tarp) or "uncovered" (soil heap)

    def free_x(self, t: float) -> float:
        """Centre x at time t ignoring the car ahead."""
        if t < self.start:
            return -10.0
        x = self.enter_x + self.speed * (t - self.start)
        if self.stop_x is None or x < self.stop_x:
            return x
        t_stop = self.start + (self.stop_x - self.enter_x) / self.speed
        if t < t_stop + self.dwell:
            return self.stop_x
        return self.stop_x + self.speed * (t - t_stop - self.dwell)

    def x(self, t: float) -> float:
        x = self.free_x(t)
        if self.follow is not None and t >= self.start:
            x = min(x, self.follow.x(t) - (self.follow.width + self.width) / 2 - self.gap)
        return x


@dataclass
class ExitScene:
    """A side-mounted exit camera: road along the bottom half, wash bay, exit line (vertical, x = `line_x`)."""

    width: int = 640
    height: int = 360
    seed: int = 0
    cars: Sequence[Car] = ()
    bay_x: tuple[float, float] = (0.3, 0.62)
    line_x: float = 0.8
    ground_y: float = 0.86  # where wheels touch the road (share of height)
    _bg: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        h, w = self.height, self.width
        bg = np.zeros((h, w, 3), np.float32)
        bg[: int(0.45 * h)] = (170, 160, 150)  # hoarding wall
        for x in range(0, w, max(8, w // 16)):
            cv2.line(bg, (x, 0), (x, int(0.45 * h)), (150, 140, 130), max(1, w // 320))
        bg[int(0.45 * h):] = (105, 105, 105)  # concrete road
        bg += rng.normal(0, 5, (h, w, 1))
        low = cv2.resize(rng.normal(0, 9, (h // 30 + 1, w // 30 + 1)).astype(np.float32), (w, h),
                         interpolation=cv2.INTER_CUBIC)
        bg += low[..., None]
        x0, x1 = int(self.bay_x[0] * w), int(self.bay_x[1] * w)
        bg[int(0.5 * h):int(0.95 * h), x0:x1] *= 0.85  # wet bay floor
        cv2.rectangle(bg, (x0, int(0.5 * h)), (x1, int(0.95 * h)), (0, 200, 230), 2)
        cv2.line(bg, (int(self.line_x * w), int(0.45 * h)), (int(self.line_x * w), h), (235, 235, 235), 2)
        self._bg = np.clip(bg, 0, 255).astype(np.uint8)

    @property
    def wash_bay(self) -> tuple[tuple[float, float], ...]:
        (x0, x1), (y0, y1) = self.bay_x, (0.5, 0.95)
        return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))

    @property
    def exit_line(self) -> tuple[tuple[float, float], tuple[float, float]]:
        return ((self.line_x, 0.0), (self.line_x, 1.0))

    def frame(self, t: float, spray: bool = False, i: int = 0) -> np.ndarray:
        h, w = self.height, self.width
        img = self._bg.copy()
        for car in self.cars:
            cx = car.x(t)
            cw = int(car.width * w)
            obj, mask = car_side(cw, car.body)
            x = int(cx * w - cw / 2)
            y = int(self.ground_y * h) - obj.shape[0]
            if x + cw > 0 and x < w:
                paste(img, obj, mask, x, y)
                if car.roof is not None:
                    lw, lh = int(0.6 * cw), max(8, int(0.16 * cw))
                    load, lmask = roof_load(car.roof, lw, lh, np.random.default_rng(self.seed + 7))
                    paste(img, load, lmask, int(cx * w - lw / 2), y + int(0.12 * obj.shape[0]) - lh + 4,
                          shadow=False)
        if spray:
            rng = np.random.default_rng(self.seed * 1000 + i)
            drops = np.zeros((h, w), np.float32)
            n = w * h // 80
            ys = rng.integers(int(0.55 * h), int(0.95 * h), n)
            xs = rng.integers(int(self.bay_x[0] * w), int(self.bay_x[1] * w), n)
            drops[ys, xs] = 1.0
            drops = np.asarray(cv2.GaussianBlur(drops, (5, 5), 0), np.float32) * 6
            img = np.clip(img.astype(np.float32) + np.clip(drops, 0, 1)[..., None] * 180, 0, 255).astype(np.uint8)
        noise = np.random.default_rng(self.seed * 1000 + i + 1).normal(0, 1.5, img.shape)
        return np.clip(img + noise, 0, 255).astype(np.uint8)


def yard(width: int = 640, height: int = 360, seed: int = 0,
         people: Sequence[tuple[float, float]] = (), cars: Sequence[tuple[float, float]] = (),
         person_h: float = 0.4) -> np.ndarray:
    """A site yard with workers standing at (x, foot y) and cars parked at (centre x, ground y), normalised."""
    rng = np.random.default_rng(seed)
    h, w = height, width
    bg = np.zeros((h, w, 3), np.float32)
    bg[: int(0.3 * h)] = (200, 185, 170)
    bg[int(0.3 * h):] = (95, 110, 125)  # dirt
    bg += rng.normal(0, 6, (h, w, 1))
    img = np.clip(bg, 0, 255).astype(np.uint8)
    for cx, gy in cars:
        obj, mask = car_side(int(0.33 * w), (60, 60, 60))
        paste(img, obj, mask, int(cx * w - obj.shape[1] / 2), int(gy * h) - obj.shape[0])
    for k, (px, fy) in enumerate(people):
        obj, mask = walker(int(person_h * h), ((30, 120, 230), (40, 200, 60), (200, 90, 30))[k % 3])
        paste(img, obj, mask, int(px * w - obj.shape[1] / 2), int(fy * h) - obj.shape[0], shadow=False)
    return img


def shared_images(label: str) -> list[Path]:
    """Real photos of one site_vehicles label, or [] when ../shared is absent (a user's clone)."""
    folder = SHARED_DATA / "site_vehicles" / label
    return sorted(folder.glob("*.jpg")) if folder.is_dir() else []


def real_truck_frames(photo: Path, n: int = 12, height: int = 600, line_y: float = 0.78) -> list[np.ndarray]:
    """A real gantry photo driving down a taller canvas, so the truck crosses a horizontal exit line."""
    img = cv2.imread(str(photo))
    if img is None:
        raise FileNotFoundError(photo)
    ih, iw = img.shape[:2]
    frames = []
    for k in range(n):
        canvas = np.full((height, iw, 3), 40, np.uint8)
        y = int(-0.45 * ih + k * (height - 0.1 * ih) / max(1, n - 1))
        y0, y1 = max(0, y), min(height, y + ih)
        if y1 > y0:
            canvas[y0:y1] = img[y0 - y:y1 - y]
        frames.append(canvas)
    return frames
