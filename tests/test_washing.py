"""Washing end to end on synthetic exit video: skipping the wash bay → violation; washed → none."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from detectors.training.synth import WashScene
from detectors.washing import WashingDetector, WashParams

T0 = datetime(2025, 6, 1, 2, 0, tzinfo=timezone.utc)


def _run(dwell: float, spray: bool = False, spray_required: bool = False, frames: int = 45):
    scene = WashScene(seed=1)
    det = WashingDetector(scene.wash_bay, scene.exit_line,
                          WashParams(min_dwell_s=10, spray_required=spray_required), camera="exit")
    out = []
    for i in range(frames):
        out.extend(det.analyse(scene.frame(float(i), dwell, spray, i=i), T0 + timedelta(seconds=i)))
    return out


def test_vehicle_skipping_the_wash_bay_is_a_violation() -> None:
    out = _run(dwell=0)
    assert len(out) == 1
    d = out[0]
    assert d.kind == "unwashed_vehicle" and d.confirmed and d.camera == "exit"
    assert float(d.metrics["dwell_s"]) < 10
    assert d.images["snapshot"].shape == (360, 640, 3) and len(d.images["frames"]) > 3


def test_washed_vehicle_gives_no_violation() -> None:
    out = _run(dwell=20)
    assert [d.kind for d in out] == ["vehicle_exit"]
    assert not out[0].confirmed and float(out[0].metrics["dwell_s"]) >= 10


@pytest.mark.parametrize(("spray", "violation"), [(True, False), (False, True)])
def test_spray_required(spray: bool, violation: bool) -> None:
    out = _run(dwell=20, spray=spray, spray_required=True)
    assert len(out) == 1 and out[0].confirmed is violation
    assert bool(out[0].metrics["spray_seen"]) is spray


def test_bad_geometry_and_frames() -> None:
    with pytest.raises(ValueError):
        WashingDetector([[0.2, 0.2], [0.4, 0.2], [0.4, 0.4]], [[0.1, 0.5], [0.1, 0.5]])
    det = WashingDetector([[0.2, 0.2], [0.4, 0.2], [0.4, 0.4]], [[0, 0.8], [1, 0.8]])
    assert det.analyse(np.zeros((5, 5, 3), np.uint8), T0) == []
    assert det.analyse(np.zeros((360, 640, 3), np.uint8), T0) == []
