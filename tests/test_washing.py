"""Washing end to end on rendered exit video the shipped SSD really sees: each vehicle is its own track.

The camera looks at the exit from the side: cars drive left to right through the wash bay
and across the exit line. The detector runs the real COCO detector on every frame (the road
band as its crop, as a site would set it); nothing about the boxes is faked.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from detectors.objects import ObjectDetector, load_objects
from detectors.pool import ModelPool
from detectors.registry import CameraView, build
from detectors.training.exit_scene import Car, ExitScene
from detectors.types import Detection
from detectors.washing import WashingDetector, WashParams

T0 = datetime(2025, 6, 1, 2, 0, tzinfo=timezone.utc)
ROAD = (0.0, 0.35, 1.0, 1.0)  # the part of the frame where vehicles drive


@pytest.fixture(scope="module")
def ssd() -> ObjectDetector:
    return load_objects()


def _run(scene: ExitScene, ssd: ObjectDetector, seconds: int = 45, spray: bool = False, reverse: bool = False,
         **params: object) -> list[Detection]:
    det = WashingDetector(scene.wash_bay, scene.exit_line,
                          WashParams(min_dwell_s=10, crop=ROAD, **params), camera="exit", objects=ssd)
    times = range(seconds - 1, -1, -1) if reverse else range(seconds)
    out: list[Detection] = []
    for k, t in enumerate(times):
        frame = scene.frame(float(t), spray=spray, i=t)
        out.extend(det.analyse(frame, T0 + timedelta(seconds=k)))
    return out


def test_tailgater_touching_a_washed_vehicle_is_judged_on_its_own(ssd: ObjectDetector) -> None:
    washed = Car(start=0, body=(40, 40, 200), stop_x=0.46, dwell=15)
    tailgater = Car(start=12, body=(160, 60, 30), follow=washed, gap=0.0)  # bumper to bumper behind it
    scene = ExitScene(cars=[washed, tailgater], seed=1)
    # the two really touch for seconds: one blob for background subtraction
    touching = [t for t in range(45) if abs(tailgater.x(t) - washed.x(t)) <= washed.width + 1e-6]
    assert len(touching) >= 8
    out = _run(scene, ssd)
    assert len(out) == 2, [(d.kind, d.metrics) for d in out]
    assert len({d.key for d in out}) == 2
    first, second = sorted(out, key=lambda d: str(d.metrics["first_seen"]))
    assert first.kind == "vehicle_exit" and not first.confirmed and float(first.metrics["dwell_s"]) >= 10
    assert second.kind == "unwashed_vehicle" and second.confirmed and float(second.metrics["dwell_s"]) < 10
    assert second.time > first.time or second.time == first.time
    (region,) = second.regions
    xs = [p[0] for p in region]
    assert max(xs) - min(xs) < 0.5  # one car's box, not both
    assert second.images["snapshot"].shape == (360, 640, 3)
    assert second.images["crop"].size and len(second.images["frames"]) > 3
    assert second.metrics["vehicle"] in ("car", "truck", "bus")


@pytest.mark.parametrize(("dwell", "violation"), [(0.0, True), (20.0, False)])
def test_washed_and_unwashed_vehicle(ssd: ObjectDetector, dwell: float, violation: bool) -> None:
    scene = ExitScene(cars=[Car(start=0, body=(30, 30, 30), stop_x=0.46, dwell=dwell)], seed=4)
    out = _run(scene, ssd)
    assert len(out) == 1
    (d,) = out
    assert d.confirmed is violation
    assert d.kind == ("unwashed_vehicle" if violation else "vehicle_exit")
    assert (float(d.metrics["dwell_s"]) < 10) is violation
    assert d.key.startswith("washing:exit:") and 0.5 <= d.score <= 1.0


@pytest.mark.parametrize(("spray", "violation"), [(True, False), (False, True)])
def test_spray_required(ssd: ObjectDetector, spray: bool, violation: bool) -> None:
    scene = ExitScene(cars=[Car(start=0, stop_x=0.46, dwell=20)], seed=5)
    out = _run(scene, ssd, spray=spray, spray_required=True)
    assert len(out) == 1 and out[0].confirmed is violation
    assert bool(out[0].metrics["spray_seen"]) is spray
    assert float(out[0].metrics["dwell_s"]) >= 10  # it did stop 20 s, seen or not


def test_vehicle_hidden_by_spray_keeps_its_dwell(ssd: ObjectDetector) -> None:
    scene = ExitScene(cars=[Car(start=0, stop_x=0.46, dwell=20)], seed=5)
    hidden = scene.frame(15.0, spray=True, i=15)
    assert not [o for o in ssd.detect(hidden, ROAD) if o.group == "vehicle" and o.score >= 0.35]  # really unseen
    (d,) = _run(scene, ssd, spray=True)
    assert d.kind == "vehicle_exit" and not d.confirmed
    assert float(d.metrics["reappeared"]) >= 1 and float(d.metrics["dwell_s"]) >= 15


def test_vehicle_driving_in_is_not_an_exit(ssd: ObjectDetector) -> None:
    scene = ExitScene(cars=[Car(start=0, stop_x=0.46, dwell=0)], seed=6)
    assert _run(scene, ssd, reverse=True) == []  # the same video backwards: it crosses the line inwards


def test_registry_build_uses_the_camera_pool() -> None:
    pool = ModelPool()
    view = CameraView("exit", {"wash_bay": ((0.3, 0.5), (0.62, 0.5), (0.62, 0.95), (0.3, 0.95))})
    det = build(WashParams(exit_line=((0.8, 0.0), (0.8, 1.0))), view, pool)
    assert isinstance(det, WashingDetector) and det.objects is pool.objects()
    with pytest.raises(ValueError, match="wash_bay"):
        build(WashParams(exit_line=((0.8, 0.0), (0.8, 1.0))), CameraView("exit"), pool)


def test_bad_geometry_and_frames(ssd: ObjectDetector) -> None:
    with pytest.raises(ValueError):
        WashingDetector([[0.2, 0.2], [0.4, 0.2], [0.4, 0.4]], [[0.1, 0.5], [0.1, 0.5]], objects=ssd)
    with pytest.raises(ValueError):
        WashParams(exit_line=((0.1, 0.5), (0.1, 0.5)))
    det = WashingDetector([[0.2, 0.2], [0.4, 0.2], [0.4, 0.4]], [[0, 0.8], [1, 0.8]], objects=ssd)
    assert det.analyse(np.zeros((5, 5, 3), np.uint8), T0) == []
    assert det.analyse(np.zeros((360, 640, 3), np.uint8), T0) == []
