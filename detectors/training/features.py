"""Backbone feature maps of training images and their augmented views, cached on disk.

The backbone is frozen, so each (image, view) is run once; heads are then fitted on the
cached maps in seconds. Views are deterministic (seeded by the image's key and the view
name): the whole image, its mirror, crops around the labelled smoke boxes (what the
detector's candidates look like), random crops, the lower half (the ground of a
ground-level photo) and oblique warps (the ground as a crane or mast camera sees it). The
cache lives outside the repository (default ~/.cache/edge-agent).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from detectors.backbone import FeatureExtractor, StackedBackbone

Box = tuple[int, int, int, int]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge-agent" / "features"


def _rng(key: str, view: str) -> np.random.Generator:
    seed = int.from_bytes(hashlib.sha256(f"{key}|{view}".encode()).digest()[:8], "little")
    return np.random.default_rng(seed)


def _clip(box: Box, w: int, h: int) -> Box:
    x0, y0, x1, y1 = box
    x0, y0 = max(0, min(x0, w - 2)), max(0, min(y0, h - 2))
    return x0, y0, max(x0 + 2, min(x1, w)), max(y0 + 2, min(y1, h))


def random_box(w: int, h: int, rng: np.random.Generator, lo: float, hi: float) -> Box:
    """A box of lo..hi of the image's area, aspect jittered, anywhere in the image."""
    area = rng.uniform(lo, hi)
    aspect = float(np.exp(rng.uniform(-0.3, 0.3)))
    bw = int(min(w, max(8, w * np.sqrt(area) * aspect)))
    bh = int(min(h, max(8, h * np.sqrt(area) / aspect)))
    x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
    return x0, y0, x0 + bw, y0 + bh


def around(box: Box, w: int, h: int, rng: np.random.Generator) -> Box:
    """A crop around a labelled box with 5-60 % context on each side (as the detector's margin)."""
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    m = rng.uniform(0.05, 0.6, 4)
    return _clip((int(x0 - m[0] * bw), int(y0 - m[1] * bh), int(x1 + m[2] * bw), int(y1 + m[3] * bh)), w, h)


# Fixed tiles of 60 % of each side (corners and centre): the views a still photo is read through when
# a head is tried on tiles as well as the whole image (compare_smoke.py).
TILES = {"tile0": (0.0, 0.0), "tile1": (1.0, 0.0), "tile2": (0.0, 1.0), "tile3": (1.0, 1.0), "tilec": (0.5, 0.5)}
TILE_SIDE = 0.6


def view_image(img: np.ndarray, key: str, view: str, boxes: Sequence[Box] = ()) -> np.ndarray:
    """One named view of an image: full, flip, bottom, crop<i>, box<i>, tilt<i>, tile0..3 / tilec."""
    h, w = img.shape[:2]
    if view == "full":
        return img
    if view == "flip":
        return img[:, ::-1]
    if view == "bottom":
        return img[h // 2:]
    if view in TILES:
        fx, fy = TILES[view]
        tw, th = max(2, int(w * TILE_SIDE)), max(2, int(h * TILE_SIDE))
        x0, y0 = int(fx * (w - tw)), int(fy * (h - th))
        return img[y0:y0 + th, x0:x0 + tw]
    rng = _rng(key, view)
    if view.startswith("tilt"):  # an oblique view of the same ground (a crane or mast camera): the far side recedes
        a, b = rng.uniform(0.3, 0.8) * w, rng.uniform(0.2, 0.6) * h
        src = np.array([[-a, -b], [w + a, -b], [w, h], [0, h]], np.float32)
        dst = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
        out = cv2.warpPerspective(img, cv2.getPerspectiveTransform(src, dst), (w, h), flags=cv2.INTER_AREA,
                                  borderMode=cv2.BORDER_REFLECT)
        return out[:, ::-1] if rng.random() < 0.5 else out
    if view.startswith("box") and boxes:
        box = around(boxes[int(rng.integers(0, len(boxes)))], w, h, rng)
    elif view.startswith(("crop", "box")):
        box = random_box(w, h, rng, 0.35, 0.85)
    else:
        raise ValueError(f"unknown view {view!r}")
    out = img[box[1]:box[3], box[0]:box[2]]
    if rng.random() < 0.5:
        out = out[:, ::-1]
    gain = rng.uniform(0.8, 1.2)  # exposure varies between cameras
    return np.clip(out.astype(np.float32) * gain, 0, 255).astype(np.uint8)


class FeatureCache:
    """Feature maps (float16 on disk) of (image key, view) for one backbone; a stack of backbones keeps
    one cache per part (a part's maps serve every head that reads it) and joins them on the channel axis."""

    def __init__(self, backbone: FeatureExtractor, cache_dir: Path | None = None) -> None:
        self.backbone = backbone
        self.parts = [FeatureCache(bb, cache_dir) for bb in backbone.parts] if isinstance(
            backbone, StackedBackbone) else []
        self.dir = (cache_dir or default_cache_dir()) / backbone.key
        if not self.parts:
            self.dir.mkdir(parents=True, exist_ok=True)
        self.computed = 0

    def _file(self, key: str, view: str) -> Path:
        digest = hashlib.sha256(f"{key}|{view}".encode()).hexdigest()[:24]
        return self.dir / digest[:2] / f"{digest}.npy"

    def maps(self, key: str, load: Callable[[], np.ndarray | None], views: Sequence[str],
             boxes: Sequence[Box] = ()) -> dict[str, np.ndarray]:
        """The maps of the views of one image (decoded only when a view is not cached)."""
        if self.parts:
            maps = [part.maps(key, load, views, boxes) for part in self.parts]
            self.computed = sum(part.computed for part in self.parts)
            if not all(maps):
                return {}
            return {v: np.concatenate([m[v] for m in maps], axis=-1) for v in maps[0]}
        out: dict[str, np.ndarray] = {}
        img: np.ndarray | None = None
        for view in views:
            path = self._file(key, view)
            if path.is_file():
                out[view] = np.load(path).astype(np.float32)
                continue
            if img is None:
                img = load()
                if img is None:
                    return {}
            fmap = self.backbone.feature_map(np.ascontiguousarray(view_image(img, key, view, boxes)))
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, fmap.astype(np.float16))
            tmp.replace(path)
            self.computed += 1
            out[view] = fmap
        return out


def read_image(path: Path) -> np.ndarray | None:
    return cv2.imread(str(path), cv2.IMREAD_COLOR)
