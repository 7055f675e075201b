"""Bare soil end to end on synthetic video: an uncovered zone is confirmed after the duration, not before."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from detectors.bare_soil import BareSoilDetector, SoilParams
from detectors.runtime import load_shipped
from detectors.training.synth import SoilScene

T0 = datetime(2025, 6, 1, 2, 0, tzinfo=timezone.utc)
STEP_S = 10


@pytest.fixture(scope="module")
def classifier():
    return load_shipped("soil_cls")


def _run(classifier, covered, frames: int, walkers: int = 0, seed: int = 0, duration_s: float = 60.0):
    scene = SoilScene(seed=seed)
    det = BareSoilDetector(classifier, {"stockpile": scene.zone}, SoilParams(duration_s=duration_s), camera="crane")
    out = []
    for i in range(frames):
        cov = covered(i) if callable(covered) else covered
        out.append(det.analyse(scene.frame(i, cov, walkers), T0 + timedelta(seconds=STEP_S * i)))
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_uncovered_zone_confirmed_after_duration(classifier, seed: int) -> None:
    results = _run(classifier, False, 10, seed=seed)
    assert all(len(r) == 1 and r[0].metrics["zone"] == "stockpile" for r in results)
    assert results[0][0].metrics["uncovered_ratio"] > 0.5
    confirmed = [i for i, r in enumerate(results) if r[0].confirmed]
    assert confirmed and confirmed[0] * STEP_S >= 60, "not before the duration"
    assert confirmed[0] * STEP_S <= 60 + 2 * STEP_S
    last = results[-1][0]
    assert last.kind == "bare_soil" and last.key.endswith("stockpile") and "zone" in last.images


@pytest.mark.parametrize("walkers", [0, 2])
def test_covered_zone_never_confirmed_even_with_people_passing(classifier, walkers: int) -> None:
    results = _run(classifier, True, 10, walkers=walkers)
    assert all(r[0].metrics["uncovered_ratio"] <= 0.1 and not r[0].confirmed for r in results)


def test_covering_the_zone_ends_it(classifier) -> None:
    results = _run(classifier, lambda i: i >= 9, 16)
    assert results[8][0].confirmed
    assert not results[-1][0].confirmed and results[-1][0].metrics["uncovered_ratio"] <= 0.1


def test_bad_zone_and_black_frame(classifier) -> None:
    with pytest.raises(ValueError):
        BareSoilDetector(classifier, {"z": [[0, 0], [1, 1]]})
    with pytest.raises(ValueError):
        BareSoilDetector(classifier, {})
    det = BareSoilDetector(classifier, {"z": [[0, 0], [1, 0], [1, 1]]})
    assert det.analyse(np.zeros((360, 640, 3), np.uint8), T0) == []
    assert det.analyse(None, T0) == []  # type: ignore[arg-type]
