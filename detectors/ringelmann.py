"""Ringelmann grade from plume vs background luminance (DOMAIN.md §3).

Transmittance τ = plume luminance / luminance of the same scene without the plume, both in
linear light (camera values are gamma-encoded sRGB); blackness = 1 − τ; grade = blackness in
20 % steps (0–5, half grades). The background comes from the detector's background model
at the same pixels (a fixed camera sees the scene behind the plume before it arrived), or
from the ring of pixels next to the plume when no model exists. A plain mean grey of the
crop would read a dark or overcast scene as smoke: the ratio does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_LUT = np.array([(v / 255 / 12.92) if v / 255 <= 0.04045 else ((v / 255 + 0.055) / 1.055) ** 2.4
                 for v in range(256)], np.float32)


_LUT_CV = _LUT.reshape(256, 1)  # cv2.LUT's form: a float32 table gives float32 out, ~7x numpy's gather
_REC709_BGR = np.array([[0.0722, 0.7152, 0.2126]], np.float32)


def srgb_to_linear(values: np.ndarray) -> np.ndarray:
    """sRGB uint8 (or 0..255 floats) to linear light 0..1."""
    if values.dtype == np.uint8:
        if values.size and (values.ndim == 2 or (values.ndim == 3 and values.shape[2] == 3)):
            out: np.ndarray = cv2.LUT(np.ascontiguousarray(values), _LUT_CV)
            return out
        return _LUT[values]
    x = np.clip(values.astype(np.float32) / 255.0, 0, 1)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(values: np.ndarray) -> np.ndarray:
    """Linear light 0..1 to sRGB uint8."""
    x = np.clip(values, 0, 1)
    y = np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return np.clip(np.round(y * 255), 0, 255).astype(np.uint8)


def luminance(image_bgr: np.ndarray) -> np.ndarray:
    """Linear-light luminance (Rec. 709 weights) of a BGR uint8 image, or of a grey one."""
    if image_bgr.ndim == 2:
        return srgb_to_linear(image_bgr)
    lin = srgb_to_linear(image_bgr)
    if lin.ndim == 3 and lin.shape[2] == 3:
        out: np.ndarray = cv2.transform(lin, _REC709_BGR)  # one pass instead of three multiplies and two adds
        return out
    return (0.0722 * lin[..., 0] + 0.7152 * lin[..., 1] + 0.2126 * lin[..., 2]).astype(np.float32)


@dataclass(frozen=True)
class RingelmannEstimate:
    transmittance: float  # 0..1
    blackness: float  # 1 - transmittance
    grade: float  # 0..5 in half grades
    plume_luminance: float  # linear 0..1
    background_luminance: float  # linear 0..1


def grade_of(blackness: float) -> float:
    """Blackness to grade: 20 % per grade, rounded to the nearest half grade, 0..5."""
    return float(np.clip(np.round(blackness * 10.0) / 2.0, 0.0, 5.0))


def estimate(
    plume_lum: np.ndarray, background_lum: np.ndarray, mask: np.ndarray | None = None, percentile: float = 90.0
) -> RingelmannEstimate:
    """Grade of the densest part of a plume.

    `plume_lum` and `background_lum` are linear luminance of the same pixels with and
    without the plume; `mask` selects the plume pixels. The per-pixel blackness is smoothed
    (camera noise) and its `percentile` over the mask taken: Ringelmann readings are made
    at the plume's densest part, and a soft plume edge must not dilute them.
    """
    eps = 1e-4
    ratio = (plume_lum + eps) / (background_lum + eps)
    black: np.ndarray = np.clip(1.0 - ratio, 0.0, 1.0).astype(np.float32)
    k = max(3, (min(black.shape[:2]) // 12) | 1)
    black = cv2.blur(black, (k, k))
    sel = mask.astype(bool) if mask is not None else np.ones(black.shape, bool)
    if not sel.any():
        return RingelmannEstimate(1.0, 0.0, 0.0, float(plume_lum.mean()), float(background_lum.mean()))
    b = float(np.percentile(black[sel], percentile))
    dense = sel & (black >= b - 0.05)
    p = float(plume_lum[dense].mean()) if dense.any() else float(plume_lum[sel].mean())
    g = float(background_lum[dense].mean()) if dense.any() else float(background_lum[sel].mean())
    return RingelmannEstimate(1.0 - b, b, grade_of(b), p, g)


def estimate_from_ring(plume_lum: np.ndarray, mask: np.ndarray, ring: int = 8) -> RingelmannEstimate:
    """Fallback without a background model: compare the plume with the ring of pixels next to it."""
    sel = mask.astype(np.uint8)
    grown = cv2.dilate(sel, np.ones((2 * ring + 1, 2 * ring + 1), np.uint8))
    ring_sel = (grown > 0) & (sel == 0)
    if not ring_sel.any() or not sel.any():
        return RingelmannEstimate(1.0, 0.0, 0.0, 0.0, 0.0)
    bg = float(np.median(plume_lum[ring_sel]))
    return estimate(plume_lum, np.full_like(plume_lum, bg), mask)
