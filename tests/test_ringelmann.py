"""Ringelmann estimate within ±1 grade on synthetic plumes of known opacity over varied backgrounds."""

from __future__ import annotations

import numpy as np
import pytest

from detectors import ringelmann
from detectors.training import synth


@pytest.mark.parametrize("kind", synth.BACKGROUNDS)
def test_grade_within_one_of_known_opacity(kind: str) -> None:
    rng = np.random.default_rng(hash(kind) % 1000)
    for opacity in np.linspace(0.0, 1.0, 11):
        bg = synth.background(180, 320, rng, kind)
        density = synth.plume_density(180, 320, rng, core_gain=1.4)
        with_plume = synth.add_camera_noise(synth.composite_plume(bg, density, float(opacity)), rng, 2.0)
        without = synth.add_camera_noise(bg, rng, 2.0)
        est = ringelmann.estimate(ringelmann.luminance(with_plume), ringelmann.luminance(without), density > 0.2)
        assert abs(est.grade - 5 * opacity) <= 1.0, (kind, opacity, est)


def test_dark_scene_without_plume_is_grade_zero() -> None:
    """A plain mean grey would call a dusk scene black smoke; the ratio to the background does not."""
    rng = np.random.default_rng(3)
    dusk = synth.background(120, 160, rng, "dusk")
    lum = ringelmann.luminance(synth.add_camera_noise(dusk, rng, 1.0))
    est = ringelmann.estimate(lum, ringelmann.luminance(dusk), np.ones(lum.shape, bool))
    assert est.grade <= 0.5


def test_ring_fallback_on_uniform_background() -> None:
    rng = np.random.default_rng(4)
    bg = synth.background(160, 160, rng, "overcast")
    density = np.zeros((160, 160), np.float32)
    density[50:110, 50:110] = 1.0
    img = synth.composite_plume(bg, density, 0.6)
    est = ringelmann.estimate_from_ring(ringelmann.luminance(img), density > 0.5)
    assert abs(est.grade - 3.0) <= 1.0


def test_grade_steps() -> None:
    assert ringelmann.grade_of(0.0) == 0.0
    assert ringelmann.grade_of(0.2) == 1.0
    assert ringelmann.grade_of(0.5) == 2.5
    assert ringelmann.grade_of(1.2) == 5.0


def test_linear_round_trip() -> None:
    values = np.arange(256, dtype=np.uint8)
    assert np.array_equal(ringelmann.linear_to_srgb(ringelmann.srgb_to_linear(values)), values)


def test_luminance_is_the_rec709_mix_of_linear_light_whatever_the_layout() -> None:
    rng = np.random.default_rng(0)
    for shape in ((270, 480, 3), (7, 5, 3), (1, 1, 3), (9, 4)):
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        lin = ringelmann._LUT[img]  # the table itself, read by numpy
        assert np.array_equal(ringelmann.srgb_to_linear(img), lin)
        want = lin if img.ndim == 2 else 0.0722 * lin[..., 0] + 0.7152 * lin[..., 1] + 0.2126 * lin[..., 2]
        got = ringelmann.luminance(img)
        assert got.shape == img.shape[:2] and got.dtype == np.float32
        assert float(np.abs(got - want).max()) < 1e-6
    strided = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)[:, ::2]  # a view, not contiguous
    lin = ringelmann._LUT[strided]
    assert float(np.abs(ringelmann.luminance(strided) - (0.0722 * lin[..., 0] + 0.7152 * lin[..., 1]
                                                          + 0.2126 * lin[..., 2])).max()) < 1e-6
    assert ringelmann.srgb_to_linear(np.array([0, 255], np.uint8)).tolist() == [0.0, 1.0]
