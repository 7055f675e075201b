"""Bare soil end to end on synthetic video: an uncovered zone is confirmed after the duration, not before."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from detectors.bare_soil import BareSoilDetector, SoilParams
from detectors.objects import ObjectBox
from detectors.pool import ModelPool
from detectors.runtime import load_shipped
from detectors.shared import SharedFeatures
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


# --- ground hidden by vehicles and people (SharedFeatures.objects) ----------------------------------------


def _hiding(image: np.ndarray, *objects: ObjectBox) -> SharedFeatures:
    """A frame's shared work in which the camera's COCO detector found `objects` (as detect_objects caches it)."""
    shared = SharedFeatures(image)
    shared.get(("objects", "coco", None, (1, 1)), lambda: tuple(objects))
    return shared


@pytest.mark.parametrize(("objects", "hides"), [
    ((ObjectBox("vehicle", "truck", 0.9, (0.0, 0.0, 1.0, 1.0)),), True),  # a truck parked over the zone
    ((ObjectBox("person", "person", 0.8, (0.0, 0.0, 1.0, 1.0)),), True),
    ((ObjectBox("vehicle", "truck", 0.2, (0.0, 0.0, 1.0, 1.0)),), False),  # not sure enough
    ((ObjectBox("motorcycle", "motorcycle", 0.9, (0.0, 0.0, 1.0, 1.0)),), False),
    ((), False),
])
def test_ground_under_a_vehicle_or_person_keeps_its_last_reading(classifier, objects, hides: bool) -> None:
    """The zone was read covered; then the net is gone but a truck stands over it: its cells keep 'covered'.

    (The net's removal is a still picture here, so nothing counts as passing by motion.)"""
    scene = SoilScene(seed=0)
    det = BareSoilDetector(classifier, {"stockpile": scene.zone}, SoilParams(classify_every_s=0), camera="crane")
    covered = scene.frame(0, True)
    det.analyse(covered, T0, shared=_hiding(covered))
    det.analyse(covered, T0 + timedelta(seconds=10), shared=_hiding(covered))
    bare = scene.frame(1, False)
    det.analyse(bare, T0 + timedelta(seconds=20), shared=_hiding(bare))  # the change itself is motion
    [d] = det.analyse(bare, T0 + timedelta(seconds=30), shared=_hiding(bare, *objects))
    if hides:
        assert d.metrics["hidden_cells"] == d.metrics["cells"] > 0
        assert d.metrics["uncovered_ratio_now"] <= 0.1, d.metrics
    else:
        assert d.metrics["hidden_cells"] == 0
        assert d.metrics["uncovered_ratio_now"] > 0.5, d.metrics


def test_a_hidden_cell_never_read_is_still_read(classifier) -> None:
    """At the first analysis there is no last reading to keep: a truck over the zone does not leave it blank."""
    scene = SoilScene(seed=0)
    det = BareSoilDetector(classifier, {"stockpile": scene.zone}, camera="crane")
    bare = scene.frame(0, False)
    [d] = det.analyse(bare, T0, shared=_hiding(bare, ObjectBox("vehicle", "truck", 0.9, (0.0, 0.0, 1.0, 1.0))))
    assert d.metrics["hidden_cells"] == d.metrics["cells"] and d.metrics["uncovered_ratio_now"] > 0.5


def test_a_camera_runs_its_coco_detectors_before_bare_soil() -> None:
    """So that the frame's vehicles and people are known when bare soil reads the zone."""
    from edge_agent.config.cameras import CameraConfig
    from edge_agent.config.detectors import DetectorsConfig
    from edge_agent.video.vision import build_detectors

    zone = [[0.1, 0.5], [0.6, 0.5], [0.6, 0.9], [0.1, 0.9]]
    cam = CameraConfig.model_validate({"id": "cam1", "url": "rtsp://192.168.1.64/101", "zones": {"stockpile": zone},
                                       "detectors": ["bare_soil", "black_smoke", "site_activity"]})
    built = build_detectors(cam, DetectorsConfig({}), ModelPool())
    assert [d.name for d in built] == ["site_activity", "bare_soil", "black_smoke"]
