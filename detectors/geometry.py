"""Zones and lines in normalised coordinates (0..1, origin top left) mapped onto an image."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from detectors.types import Point, Polygon

Box = tuple[int, int, int, int]  # pixels: x0, y0, x1, y1 (exclusive)


def as_polygon(points: Sequence[Sequence[float]]) -> Polygon:
    """Validate a zone: at least 3 points, each within 0..1."""
    poly = tuple((float(p[0]), float(p[1])) for p in points)
    if len(poly) < 3:
        raise ValueError("a zone needs at least 3 points")
    if any(not (0.0 <= v <= 1.0) for p in poly for v in p):
        raise ValueError("zone points must be normalised (0..1)")
    return poly


def as_line(points: Sequence[Sequence[float]]) -> tuple[Point, Point]:
    if len(points) != 2:
        raise ValueError("a line needs exactly 2 points")
    a, b = ((float(p[0]), float(p[1])) for p in points)
    if a == b:
        raise ValueError("a line needs two different points")
    return a, b


def polygon_mask(poly: Polygon, width: int, height: int) -> np.ndarray:
    """uint8 mask (1 inside) of a normalised polygon on a width × height image."""
    mask = np.zeros((height, width), np.uint8)
    pts = np.round(np.asarray(poly, np.float64) * [width - 1, height - 1]).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1)
    return mask


def inside(point: Point, poly: Polygon) -> bool:
    contour = np.asarray(poly, np.float32).reshape(-1, 1, 2)
    return cv2.pointPolygonTest(contour, (float(point[0]), float(point[1])), False) >= 0


def side(point: Point, line: tuple[Point, Point]) -> float:
    """Signed side of a point relative to a line (cross product): >0 one side, <0 the other."""
    (x0, y0), (x1, y1) = line
    return (x1 - x0) * (point[1] - y0) - (y1 - y0) * (point[0] - x0)


def centroid(poly: Polygon) -> Point:
    arr = np.asarray(poly, np.float64)
    return float(arr[:, 0].mean()), float(arr[:, 1].mean())


def normalise_box(box: Box, width: int, height: int) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    return x0 / width, y0 / height, x1 / width, y1 / height


def expand(box: Box, margin: float, width: int, height: int) -> Box:
    x0, y0, x1, y1 = box
    mx, my = int((x1 - x0) * margin), int((y1 - y0) * margin)
    return max(0, x0 - mx), max(0, y0 - my), min(width, x1 + mx), min(height, y1 + my)


def iou(a: Box | tuple[float, ...], b: Box | tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
