"""Synthetic images and scenes, deterministic from a seed (numpy + OpenCV only, no TensorFlow).

Used for training where real data is missing (black plumes of known opacity, dust nets,
tarps, site textures) and by the tests and the bench as synthetic video. Plumes are
composited in linear light, as a plume attenuates the light behind it: a pixel becomes
(1 − a)·background + a·smoke, with a = opacity × the plume's density map.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from detectors.ringelmann import linear_to_srgb, srgb_to_linear

Rng = np.random.Generator


def noise(h: int, w: int, rng: Rng, scale: int = 8, octaves: int = 4) -> np.ndarray:
    """Smooth fractal noise in 0..1 (sum of up-sampled random grids)."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = max(2, scale * (2**o))
        grid = rng.random((max(2, cells * h // max(h, w)), cells)).astype(np.float32)
        out += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
    out /= total
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / (hi - lo + 1e-6)


def _colour_field(
    h: int, w: int, rng: Rng, base: tuple[float, ...], spread: float, scale: int = 6
) -> np.ndarray:
    n = noise(h, w, rng, scale)[..., None]
    fine = rng.normal(0, spread * 0.35, (h, w, 1)).astype(np.float32)
    img = np.asarray(base, np.float32)[None, None] * (1.0 + spread * (n - 0.5) * 2) + fine * 255 * 0.1
    return np.clip(img, 0, 255).astype(np.uint8)


# --- backgrounds ---------------------------------------------------------------------------

BACKGROUNDS = ("sky", "overcast", "road", "site", "dusk", "wall")


def background(h: int, w: int, rng: Rng, kind: str | None = None) -> np.ndarray:
    """A plausible outdoor background (BGR uint8) of the given kind (random when None)."""
    kind = kind or str(rng.choice(BACKGROUNDS))
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    if kind == "sky":
        top = np.array([200, 150, 90], np.float32) * rng.uniform(0.8, 1.15)
        bottom = np.array([235, 215, 190], np.float32) * rng.uniform(0.85, 1.05)
        img: np.ndarray = top * (1 - yy) + bottom * yy + (noise(h, w, rng, 3)[..., None] - 0.5) * 30
    elif kind == "overcast":
        level = rng.uniform(110, 200)
        img = np.full((h, w, 3), level, np.float32) + (noise(h, w, rng, 4)[..., None] - 0.5) * 40 - yy * 20
    elif kind == "dusk":
        level = rng.uniform(25, 60)
        img = np.array([level * 1.2, level, level * 0.9], np.float32) * (1.2 - 0.4 * yy) + (
            noise(h, w, rng, 5)[..., None] - 0.5) * 12
    elif kind == "road":
        img = _colour_field(h, w, rng, (95, 95, 100), 0.25).astype(np.float32) * rng.uniform(0.7, 1.4)
        for _ in range(rng.integers(1, 4)):
            x = int(rng.integers(0, w))
            cv2.line(img, (x, 0), (x + int(rng.integers(-w // 3, w // 3)), h), (220, 220, 220), max(1, w // 80))
    elif kind == "wall":
        img = _colour_field(h, w, rng, tuple(float(v) for v in rng.uniform(90, 210, 3)), 0.15).astype(np.float32)
        step = max(6, h // int(rng.integers(6, 14)))
        for y in range(0, h, step):
            cv2.line(img, (0, y), (w, y), tuple(float(v) * 0.7 for v in img[min(y, h - 1), 0]), 1)
    else:  # site, seen from a mast or crane: hazy sky above the horizon, bare ground below, a few structures
        horizon = int(h * rng.uniform(0.76, 0.84))
        sky = np.array([215, 190, 160], np.float32) * rng.uniform(0.85, 1.1)
        img = np.empty((h, w, 3), np.float32)
        img[:horizon] = sky * (0.9 + 0.1 * yy[:horizon] / max(yy[horizon - 1, 0, 0], 1e-3)) + (
            noise(horizon, w, rng, 3)[..., None] - 0.5) * 20
        ground = soil_texture(h - horizon, w, rng)
        gh = h - horizon  # perspective: the ground recedes, its texture finer towards the horizon
        src = np.array([[0, 0], [w, 0], [w, gh], [0, gh]], np.float32)
        dst = np.array([[-w, 0], [2 * w, 0], [w, gh], [0, gh]], np.float32)
        ground = cv2.warpPerspective(ground, cv2.getPerspectiveTransform(src, dst), (w, gh),
                                     flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
        img[horizon:] = ground.astype(np.float32)
        for _ in range(rng.integers(1, 4)):  # buildings, sheds, hoardings on the horizon, off to the right
            x0 = int(rng.integers(13 * w // 20, w))
            x1, y0 = x0 + int(rng.integers(w // 12, w // 4)), horizon - int(rng.integers(h // 20, h // 4))
            cv2.rectangle(img, (x0, y0), (x1, horizon + h // 40), tuple(float(v) for v in rng.uniform(90, 200, 3)), -1)
    return np.clip(img, 0, 255).astype(np.uint8)


# --- plumes ----------------------------------------------------------------------------------


def plume_density(h: int, w: int, rng: Rng, source: tuple[float, float] | None = None,
                  length: float | None = None, angle: float | None = None, core_gain: float = 1.0) -> np.ndarray:
    """A plume's density map in 0..1, densest near the source, growing and thinning downwind.

    With `core_gain` > 1 the densest part is flat at 1.0, so the plume's opacity is known
    there (the Ringelmann tests use 1.4); training used the default.
    """
    sx, sy = source if source is not None else (rng.uniform(0.2, 0.8), rng.uniform(0.5, 0.9))
    length = length if length is not None else rng.uniform(0.3, 0.7)
    angle = angle if angle is not None else rng.uniform(-2.6, -0.5)  # mostly upwards
    dens = np.zeros((h, w), np.float32)
    size = min(h, w)
    steps = 14
    for i in range(steps):
        t = i / (steps - 1)
        wobble = rng.normal(0, 0.04)
        cx = (sx + np.cos(angle + wobble) * length * t) * w
        cy = (sy + np.sin(angle + wobble) * length * t) * h
        r = size * (0.04 + 0.12 * t)
        blob = np.zeros((h, w), np.float32)
        cv2.circle(blob, (int(cx), int(cy)), max(1, int(r)), 1.0 - 0.55 * t, -1)
        dens = np.maximum(dens, blob)
    k = max(3, int(size * 0.05) | 1)
    smooth: np.ndarray = cv2.GaussianBlur(dens, (k, k), 0)
    dens = (smooth * (0.75 + 0.25 * noise(h, w, rng, 10))).astype(np.float32)
    return np.clip(core_gain * dens / max(float(dens.max()), 1e-6), 0, 1)


def composite_plume(bg_bgr: np.ndarray, density: np.ndarray, opacity: float,
                    smoke_albedo: float | np.ndarray = 0.05,
                    colour: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Lay a plume of peak `opacity` over a background, in linear light.

    The smoke's own radiance is `smoke_albedo` × the scene's mean luminance (black smoke
    scatters little; white steam would have an albedo near 1 or above); a per-pixel albedo
    map gives the plume its billows, lit and shadowed.
    """
    lin = srgb_to_linear(bg_bgr)
    ambient = float(lin.mean())
    a = (np.clip(density, 0, 1) * float(np.clip(opacity, 0, 1)))[..., None]
    albedo = np.asarray(smoke_albedo, np.float32)
    albedo = albedo[..., None] if albedo.ndim == 2 else albedo
    smoke = np.asarray(colour, np.float32)[None, None] * albedo * ambient
    return linear_to_srgb(lin * (1 - a) + smoke * a)


def warped_noise(h: int, w: int, rng: Rng, scale: int, amount: float = 0.1) -> np.ndarray:
    """Fractal noise pushed around by a second noise field: turbulent, curly structure."""
    base = noise(h, w, rng, scale, 5)
    dx = (noise(h, w, rng, max(2, scale // 2), 3) - 0.5) * w * amount
    dy = (noise(h, w, rng, max(2, scale // 2), 3) - 0.5) * h * amount
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(base, xx + dx.astype(np.float32), yy + dy.astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT)


def billowy_plume(h: int, w: int, rng: Rng, source: tuple[float, float], length: float = 0.45,
                  angle: float = -1.9, core_gain: float = 1.4, rough: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """A plume as real smoke looks: ragged, billowing edges and lit / shadowed puffs inside.

    Returns (density 0..1, flat at 1 in the core as `plume_density`; albedo 0..0.15 per pixel).
    Rendered at most 640 px wide and scaled up: the texture needs no more, and 1080p stays fast.
    """
    scale = min(1.0, 640 / max(w, 1))
    sh, sw = max(8, round(h * scale)), max(8, round(w * scale))
    base = plume_density(sh, sw, rng, source=source, length=length, angle=angle, core_gain=1.0)
    turb = warped_noise(sh, sw, rng, 16)
    dens: np.ndarray = np.clip((base - 0.3 + rough * (turb - 0.5)) / 0.45, 0, 1) * (base > 0.03)
    dens = cv2.GaussianBlur(dens.astype(np.float32), (0, 0), 1.0)
    dens = np.clip(core_gain * dens / max(float(dens.max()), 1e-6), 0, 1)
    albedo: np.ndarray = 0.15 * warped_noise(sh, sw, rng, 10) ** 1.5
    if (sh, sw) != (h, w):
        dens = cv2.resize(dens, (w, h), interpolation=cv2.INTER_LINEAR)
        albedo = cv2.resize(albedo, (w, h), interpolation=cv2.INTER_LINEAR)
    return dens.astype(np.float32), albedo.astype(np.float32)


def add_camera_noise(img: np.ndarray, rng: Rng, sigma: float = 2.0) -> np.ndarray:
    return np.clip(img.astype(np.float32) + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


# --- textures for covering -------------------------------------------------------------------


# Bare earth on Chinese sites, RGB: loess yellow-brown, brown, grey-brown, red-brown (south), dark, pale.
SOIL_RGB = ((182, 152, 112), (150, 118, 84), (128, 116, 100), (160, 104, 72), (120, 96, 70), (196, 170, 128))


def soil_texture(h: int, w: int, rng: Rng) -> np.ndarray:
    """Bare earth as a camera sees it: a relief (undulation, clods, pebbles, tyre ruts) lit from one
    side, with grain, colour drift and damp patches. The relief's shading is what makes it read as
    soil rather than a flat brown; the real-photo soil head scores these 0.7-0.9 bare."""
    base = np.asarray(SOIL_RGB[int(rng.integers(0, len(SOIL_RGB)))], np.float32)[::-1] * rng.uniform(0.85, 1.15)
    height = 0.6 * noise(h, w, rng, 6) + 0.4 * noise(h, w, rng, 24)
    height += 0.6 * np.clip(noise(h, w, rng, max(8, w // 10), 2) - 0.6, 0, 1)  # clods
    grain = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 0.8)
    height += 0.05 * grain
    bumps = np.zeros((h, w), np.float32)  # pebbles and small clods: rounded, not flat discs
    unit = min(h, w) / 224
    for _ in range(int(rng.integers(15, 50)) * h * w // (224 * 224)):
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(bumps, c, max(1, int(rng.integers(1, 4) * unit)), float(rng.uniform(0.2, 0.5)), -1, cv2.LINE_AA)
    height += cv2.GaussianBlur(bumps, (0, 0), 1.2 * unit)
    if rng.random() < 0.5:  # tyre tracks: two parallel ruts with a fine tread
        angle, offset, gap = rng.uniform(0, np.pi), rng.uniform(-0.3, 0.3) * w, rng.uniform(0.15, 0.3) * w
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        across = (xx - w / 2) * np.cos(angle) + (yy - h / 2) * np.sin(angle) - offset
        along = -(xx - w / 2) * np.sin(angle) + (yy - h / 2) * np.cos(angle)
        width = rng.uniform(0.04, 0.08) * w
        for centre in (0.0, gap):
            rut = np.exp(-(((across - centre) / width) ** 2))
            height -= 0.35 * rut * (0.9 + 0.1 * np.sin(along / max(1.0, 3 * min(h, w) / 224)))
    gy, gx = np.gradient(cv2.GaussianBlur(height.astype(np.float32), (0, 0), 1.0))
    light = rng.uniform(0, 2 * np.pi)
    shade = np.clip(1.0 + 24.0 * (gx * np.cos(light) + gy * np.sin(light)) * min(h, w) / 224, 0.4, 1.6)
    albedo = 0.85 + 0.3 * noise(h, w, rng, 5) + 0.08 * grain
    damp = np.clip(noise(h, w, rng, 3) - 0.7, 0, 1) * rng.uniform(0, 2)
    img = base[None, None] * (albedo * shade * (1 - 0.4 * damp))[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def net_texture(h: int, w: int, rng: Rng) -> np.ndarray:
    """Green (sometimes black or blue) dust-suppression net: a fine mesh over the soil below."""
    under = soil_texture(h, w, rng).astype(np.float32)
    colours = [(60, 140, 40), (50, 120, 30), (70, 150, 60), (40, 40, 40), (140, 100, 40)]
    colour = np.array(rng.choice(colours), np.float32)
    colour *= rng.uniform(0.7, 1.2)
    pitch = float(rng.uniform(2.0, 5.0))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rot = rng.uniform(0, np.pi)
    u = xx * np.cos(rot) + yy * np.sin(rot)
    v = -xx * np.sin(rot) + yy * np.cos(rot)
    mesh = np.maximum(np.abs(np.sin(u * np.pi / pitch)), np.abs(np.sin(v * np.pi / pitch)))
    cover = np.clip(rng.uniform(0.75, 0.95) + 0.2 * mesh, 0, 1)[..., None]
    folds = (0.8 + 0.4 * noise(h, w, rng, 3))[..., None]
    img = colour * folds * cover + under * (1 - cover)
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


def tarp_texture(h: int, w: int, rng: Rng) -> np.ndarray:
    """Plastic tarpaulin: a flat colour with folds and highlights."""
    colours = [(200, 120, 40), (60, 140, 50), (230, 230, 230), (40, 120, 220), (150, 150, 150)]
    colour = np.array(rng.choice(colours), np.float32)
    shade = 0.65 + 0.5 * noise(h, w, rng, 2)
    img = colour[None, None] * shade[..., None]
    for _ in range(rng.integers(1, 5)):  # creases
        p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(img, p0, p1, tuple(float(v) * 0.7 for v in colour), max(1, h // 40))
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)


def vegetation_texture(h: int, w: int, rng: Rng) -> np.ndarray:
    base = rng.choice([(40, 120, 60), (50, 140, 90), (30, 100, 70), (60, 130, 110)])
    return _colour_field(h, w, rng, tuple(float(v) * rng.uniform(0.7, 1.2) for v in base), 0.5, scale=16)


def hard_texture(h: int, w: int, rng: Rng) -> np.ndarray:
    """Concrete, asphalt or paving: grey, low saturation, with joints."""
    level = float(rng.uniform(70, 200))
    img = _colour_field(h, w, rng, (level, level * rng.uniform(0.97, 1.03), level * rng.uniform(0.95, 1.05)), 0.15, 10)
    img = img.astype(np.float32)
    if rng.random() < 0.7:
        step = int(rng.integers(max(4, h // 6), max(5, h // 2)))
        for x in range(int(rng.integers(0, step)), w, step):
            cv2.line(img, (x, 0), (x, h), (level * 0.6,) * 3, 1)
        for y in range(int(rng.integers(0, step)), h, step):
            cv2.line(img, (0, y), (w, y), (level * 0.6,) * 3, 1)
    return np.clip(img, 0, 255).astype(np.uint8)


SOIL_CLASSES = ("bare_soil", "covered", "hard")


def soil_class_patch(label: str, h: int, w: int, rng: Rng) -> np.ndarray:
    """A patch of one bare-soil class, with random light (sun, shade, overcast)."""
    if label == "bare_soil":
        img = soil_texture(h, w, rng)
    elif label == "covered":
        pick = rng.random()
        maker = net_texture if pick < 0.55 else tarp_texture if pick < 0.8 else vegetation_texture
        img = maker(h, w, rng)
    else:
        img = hard_texture(h, w, rng)
    gain = rng.uniform(0.55, 1.35)
    return np.clip(img.astype(np.float32) * gain, 0, 255).astype(np.uint8)


# --- synthetic video scenes ------------------------------------------------------------------


@dataclass
class SmokeScene:
    """A fixed camera; from `start` onwards a plume of `opacity` drifts from a source (a machine).

    The plume billows (billowy_plume), as real smoke does: the shipped smoke head was trained
    on real photos only and does not take a smooth grey blob for smoke.
    """

    width: int = 640
    height: int = 360
    opacity: float = 0.8
    start: int = 5  # analysis index at which the plume appears
    kind: str = "sky"
    seed: int = 0
    source: tuple[float, float] = (0.45, 0.75)
    _bg: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self._bg = background(self.height, self.width, rng, self.kind)
        # a dark machine at the source, present from the start (not smoke, never moves)
        x, y = int(self.source[0] * self.width), int(self.source[1] * self.height)
        dx, dy = self.width // 14, self.height // 8
        cv2.rectangle(self._bg, (x - dx, y), (x + dx, y + dy), (40, 45, 50), -1)

    def frame(self, i: int) -> np.ndarray:
        rng = np.random.default_rng(self.seed * 1000 + i)
        img = self._bg
        if i >= self.start and self.opacity > 0:
            dens, albedo = billowy_plume(self.height, self.width, np.random.default_rng(self.seed * 7 + i),
                                         source=self.source, length=0.45, angle=-1.9 + 0.05 * np.sin(i))
            img = composite_plume(img, dens, self.opacity, albedo)
        return add_camera_noise(img, rng, 1.5)


@dataclass
class SoilScene:
    """A yard seen from the crane: zone 'stockpile' holds soil that is covered by a net, or not."""

    width: int = 640
    height: int = 360
    seed: int = 0
    zone: tuple[tuple[float, float], ...] = ((0.1, 0.3), (0.6, 0.3), (0.6, 0.9), (0.1, 0.9))
    _soil: np.ndarray = field(init=False, repr=False)
    _net: np.ndarray = field(init=False, repr=False)
    _mask: np.ndarray = field(init=False, repr=False)
    _bg: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        h, w = self.height, self.width
        self._bg = hard_texture(h, w, rng)
        self._soil = soil_texture(h, w, rng)
        self._net = drape_net(self._soil, rng, 1.0, perspective=False)
        pts = (np.asarray(self.zone) * [w, h]).astype(np.int32)
        self._mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(self._mask, [pts], 1)

    def frame(self, i: int, covered: bool, walkers: int = 0) -> np.ndarray:
        """The yard; `walkers` people/vehicles cross the view (dark moving blobs)."""
        h, w = self.height, self.width
        inside = (self._net if covered else self._soil)
        img = np.where(self._mask[..., None] > 0, inside, self._bg).copy()
        for k in range(walkers):
            x = int((0.05 + 0.09 * i + 0.3 * k) % 1.0 * w)
            y = int((0.4 + 0.2 * k) % 1.0 * h)
            cv2.rectangle(img, (x, y), (x + w // 30, y + h // 10), (30 + 40 * k, 30, 160), -1)
        return add_camera_noise(img, np.random.default_rng(self.seed * 1000 + i), 1.5)


@dataclass
class WashScene:
    """An exit seen from above: vehicles drive down the frame through the wash bay and out.

    Wash bay: y 0.35..0.6 (full width centre lane); exit line at y = 0.85. A vehicle drives
    at `speed` (share of image height per second), stops `dwell_s` seconds in the bay
    (with spray when `spray`), then leaves.
    """

    width: int = 640
    height: int = 360
    seed: int = 0
    wash_bay: tuple[tuple[float, float], ...] = ((0.25, 0.35), (0.75, 0.35), (0.75, 0.6), (0.25, 0.6))
    exit_line: tuple[tuple[float, float], tuple[float, float]] = ((0.0, 0.85), (1.0, 0.85))
    _bg: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        h, w = self.height, self.width
        self._bg = hard_texture(h, w, rng)
        pts = (np.asarray(self.wash_bay) * [w, h]).astype(np.int32)
        cv2.polylines(self._bg, [pts], True, (0, 200, 230), 2)
        y = int(self.exit_line[0][1] * h)
        cv2.line(self._bg, (0, y), (w, y), (240, 240, 240), 2)

    def vehicle_y(self, t: float, dwell_s: float, speed: float = 0.1, start_y: float = -0.25) -> float:
        """Top edge of the vehicle (normalised) at time t: drive, stop in the bay for dwell_s, drive on."""
        stop_y = 0.36
        t_stop = (stop_y - start_y) / speed
        if t < t_stop:
            return start_y + speed * t
        if t < t_stop + dwell_s:
            return stop_y
        return stop_y + speed * (t - t_stop - dwell_s)

    def frame(self, t: float, dwell_s: float, spray: bool = False, speed: float = 0.1, i: int = 0) -> np.ndarray:
        h, w = self.height, self.width
        img = self._bg.copy()
        y0 = self.vehicle_y(t, dwell_s, speed)
        vh = 0.22
        top, bottom = int(y0 * h), int((y0 + vh) * h)
        if bottom > 0 and top < h:
            x0, x1 = int(0.38 * w), int(0.62 * w)
            cv2.rectangle(img, (x0, top), (x1, bottom), (30, 110, 40), -1)  # green muck truck
            cv2.rectangle(img, (x0, bottom - int(0.05 * h)), (x1, bottom), (40, 40, 40), -1)  # cab roof
        in_bay = abs(y0 - 0.36) < 1e-6
        if spray and in_bay:
            rng = np.random.default_rng(self.seed * 1000 + i)
            drops = np.zeros((h, w), np.float32)
            n = w * h // 60
            ys = rng.integers(int(0.35 * h), int(0.6 * h), n)
            xs = rng.integers(int(0.25 * w), int(0.75 * w), n)
            drops[ys, xs] = 1.0
            drops = (cv2.GaussianBlur(drops, (5, 5), 0) * 6).astype(np.float32)
            img = np.clip(img.astype(np.float32) + np.clip(drops, 0, 1)[..., None] * 200, 0, 255).astype(np.uint8)
        return add_camera_noise(img, np.random.default_rng(self.seed * 1000 + i + 1), 1.5)


# --- green dust nets over real soil photos ------------------------------------------------------

# HDPE dust-suppression nets (防尘网) seen on Chinese sites: mostly mid or dark green, some
# bright, some faded or dusty; BGR.
NET_GREENS = ((45, 105, 35), (55, 125, 45), (40, 90, 30), (70, 150, 60), (60, 140, 80), (85, 130, 95), (50, 110, 70))


def _mesh(h: int, w: int, rng: Rng, pitch: float, perspective: bool) -> np.ndarray:
    """Openness of a knitted mesh in 0..1 (1 = hole), rendered at 2× and averaged down (no aliasing)."""
    H, W = 2 * h, 2 * w
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    if perspective:  # a ground-level view: the mesh recedes, finer towards the top
        depth = 0.25 + 0.75 * (yy / H) ** rng.uniform(0.8, 1.6)
        xx = (xx - W / 2) / depth
        yy = np.cumsum(1.0 / depth, axis=0)
    rot = rng.uniform(0, np.pi)
    u = xx * np.cos(rot) + yy * np.sin(rot)
    v = -xx * np.sin(rot) + yy * np.cos(rot)
    p = 2 * pitch
    hole = (np.abs(np.sin(u * np.pi / p)) * np.abs(np.sin(v * np.pi / p))) ** rng.uniform(1.0, 3.0)
    return cv2.resize(hole.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)


def _wrinkles(h: int, w: int, rng: Rng) -> np.ndarray:
    """Long, soft folds of a sheet: noise stretched along a random direction, then rotated."""
    n = max(h, w)
    size = int(n * 1.5)
    small = rng.random((max(2, size // 40), max(2, size // 6))).astype(np.float32)
    sheet = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    rot = cv2.getRotationMatrix2D((size / 2, size / 2), float(rng.uniform(0, 180)), 1.0)
    sheet = cv2.warpAffine(sheet, rot, (size, size), borderMode=cv2.BORDER_REFLECT)
    y0, x0 = (size - h) // 2, (size - w) // 2
    out = sheet[y0:y0 + h, x0:x0 + w]
    return (out - out.mean()) / (out.std() + 1e-6)


def _sheets(h: int, w: int, rng: Rng, coverage: float) -> np.ndarray:
    """Where the net lies: whole, or straight-edged sheets leaving a strip or corner of soil bare."""
    if coverage >= 0.999:
        return np.ones((h, w), np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    d = (xx - w / 2) * np.cos(angle) + (yy - h / 2) * np.sin(angle)
    d += cv2.GaussianBlur(_wrinkles(h, w, rng), (0, 0), 3) * min(h, w) * 0.01  # straight, but not ruled
    level = float(np.quantile(d, 1.0 - coverage))
    mask = (d >= level).astype(np.float32)
    k = max(3, (min(h, w) // 150) | 1)
    return cv2.GaussianBlur(mask, (k, k), 0)


def drape_net(base_bgr: np.ndarray, rng: Rng, coverage: float = 1.0, perspective: bool = True) -> np.ndarray:
    """A green dust net laid over a real photo of soil.

    The net follows the ground under it: its shading is the soil's own blurred luminance
    (heaps, ruts and the light on them show through the sheet), with folds and creases of its
    own, seams where sheets overlap, the mesh's holes showing the shadowed soil beneath, dust
    on its surface, and stones or sandbags holding it down. Outside `coverage` the soil shows.
    """
    h, w = base_bgr.shape[:2]
    base = base_bgr.astype(np.float32)
    lum = cv2.cvtColor(base_bgr, cv2.COLOR_BGR2GRAY).astype(np.float32)
    k = max(3, (min(h, w) // 12) | 1)
    relief = cv2.GaussianBlur(lum, (k, k), 0)
    relief = np.clip(relief / max(float(relief.mean()), 1.0), 0.6, 1.35) ** rng.uniform(0.4, 0.9)
    folds = 1.0 + rng.uniform(0.04, 0.12) * _wrinkles(h, w, rng)
    shade = np.clip(relief * folds, 0.4, 1.5)[..., None]
    colour = np.asarray(NET_GREENS[int(rng.integers(0, len(NET_GREENS)))], np.float32) * rng.uniform(0.8, 1.2)
    net = colour[None, None] * shade * rng.uniform(0.85, 1.25)
    dust = noise(h, w, rng, 4)[..., None] * rng.uniform(0.0, 0.45)  # soil dust settled on the sheet
    net = net * (1 - dust) + base.mean(axis=(0, 1))[None, None] * shade * dust
    pitch = float(rng.uniform(1.5, 4.0)) * max(1.0, min(h, w) / 224)
    openness = rng.uniform(0.2, 0.6) * _mesh(h, w, rng, pitch, perspective)[..., None]
    net = net * (1 - openness) + base * 0.55 * openness  # holes show the soil, shadowed by the sheet
    for _ in range(int(rng.integers(0, 4))):  # seams where two sheets overlap
        p0 = (int(rng.integers(0, w)), int(rng.integers(-h // 4, h)))
        p1 = (p0[0] + int(rng.integers(-w, w)), p0[1] + int(rng.integers(h // 2, 2 * h)))
        seam = tuple(float(c) * rng.uniform(0.8, 1.1) for c in colour)
        cv2.line(net, p0, p1, seam, max(1, min(h, w) // 60), cv2.LINE_AA)
    for _ in range(int(rng.integers(0, 8))):  # stones, bricks, sandbags weighing it down
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        r = max(1, int(min(h, w) * rng.uniform(0.01, 0.04)))
        grey = float(rng.uniform(90, 200))
        cv2.ellipse(net, c, (r, int(r * rng.uniform(0.5, 1))), float(rng.uniform(0, 180)), 0, 360,
                    (grey, grey * 0.97, grey * 0.93), -1, cv2.LINE_AA)
    mask = _sheets(h, w, rng, coverage)[..., None]
    out = net * mask + base * (1 - mask)
    out = out + rng.normal(0, rng.uniform(1, 4), out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def net_scene(ground_bgr: np.ndarray, top_bgr: np.ndarray, rng: Rng, coverage: float = 1.0) -> np.ndarray:
    """A ground-level whole-site view of a netted area: a real photo's upper part (sky, trees,
    buildings) over a real soil photo under a green net, horizon at 30-50 % of the height."""
    h, w = top_bgr.shape[:2]
    horizon = int(h * rng.uniform(0.3, 0.5))
    ground = cv2.resize(ground_bgr, (w, h - horizon), interpolation=cv2.INTER_AREA)
    netted = drape_net(ground, rng, coverage, perspective=True)
    out = top_bgr.copy()
    out[horizon:] = netted
    band = max(1, h // 60)
    lo, hi = max(0, horizon - band), min(h, horizon + band)
    out[lo:hi] = cv2.GaussianBlur(out[lo:hi], (1, 2 * band + 1), 0)
    return out
