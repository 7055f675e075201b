"""Site activity: people and machines counted, and their movement, on rendered yards the SSD really sees."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from detectors.activity import ActivityDetector, ActivityParams
from detectors.objects import ObjectDetector, load_objects
from detectors.pool import ModelPool
from detectors.registry import CameraView, build
from detectors.training.exit_scene import yard

T0 = datetime(2025, 6, 1, 15, 30, tzinfo=timezone.utc)  # 23:30 in Shenzhen: restricted hours
LEFT = ((0.0, 0.4), (0.55, 0.4), (0.55, 1.0), (0.0, 1.0))


@pytest.fixture(scope="module")
def ssd() -> ObjectDetector:
    return load_objects()


def _frames(n: int, walk: float = 0.03) -> list[np.ndarray]:
    """Two workers walking towards each other past a parked car: one frame per second."""
    return [yard(people=[(0.15 + walk * k, 0.92), (0.85 - walk * k, 0.95)], cars=[(0.45, 0.85)], seed=2)
            for k in range(n)]


def test_people_and_vehicles_counted_and_moving(ssd: ObjectDetector) -> None:
    det = ActivityDetector(params=ActivityParams(), camera="yard", objects=ssd)
    outs = [det.analyse(f, T0 + timedelta(seconds=k)) for k, f in enumerate(_frames(6))]
    assert all(len(o) == 1 for o in outs)  # one detection per analysed frame
    last = outs[-1][0]
    assert last.kind == "site_activity" and last.key == "site_activity:yard" and not last.confirmed
    assert last.metrics["people"] == 2 and last.metrics["vehicles"] == 1
    assert last.metrics["people_moving"] == 2 and last.metrics["vehicles_moving"] == 0  # the car is parked
    assert last.metrics["moving"] == 2 and last.metrics["active"] == 1.0
    assert len(last.regions) == 3 and last.metrics["zones"] == "frame"
    assert str(last.metrics["objects"]).count("person#") == 2
    assert outs[0][0].metrics["moving"] == 0  # nothing has moved yet on the first frame


def test_standing_people_are_present_not_moving(ssd: ObjectDetector) -> None:
    det = ActivityDetector(params=ActivityParams(), camera="yard", objects=ssd)
    for k, f in enumerate(_frames(5, walk=0.0)):
        (d,) = det.analyse(f, T0 + timedelta(seconds=k))
    assert d.metrics["people"] == 2 and d.metrics["moving"] == 0 and d.metrics["active"] == 0.0


def test_only_the_zones_count(ssd: ObjectDetector) -> None:
    det = ActivityDetector({"pit": LEFT}, ActivityParams(zones=("pit",)), camera="yard", objects=ssd)
    for k, f in enumerate(_frames(4)):
        (d,) = det.analyse(f, T0 + timedelta(seconds=k))
    assert d.metrics["people"] == 1 and d.metrics["vehicles"] == 1 and d.metrics["zones"] == "pit"
    for poly in d.regions:
        foot = ((poly[0][0] + poly[1][0]) / 2, poly[2][1])
        assert foot[0] <= 0.56


def test_empty_frames(ssd: ObjectDetector) -> None:
    empty = yard(seed=3)
    (d,) = ActivityDetector(camera="yard", objects=ssd).analyse(empty, T0)
    assert d.metrics["people"] == 0 and d.metrics["vehicles"] == 0 and d.regions == () and d.score == 0.0
    quiet = ActivityDetector(params=ActivityParams(emit_empty=False), camera="yard", objects=ssd)
    assert quiet.analyse(empty, T0) == []
    assert quiet.analyse(np.zeros((4, 4, 3), np.uint8), T0) == []


def test_registry_build_checks_zones() -> None:
    pool = ModelPool()
    det = build(ActivityParams(zones=("pit",)), CameraView("yard", {"pit": LEFT}), pool)
    assert isinstance(det, ActivityDetector) and det.objects is pool.objects()
    with pytest.raises(ValueError, match="pit"):
        build(ActivityParams(zones=("pit",)), CameraView("yard"), pool)
