"""A lasting vision violation ends when its track is no longer reported (the plume blew away).

Soak finding: black_smoke violations stayed open for ever, because a detector drops a track it
no longer sees instead of reporting it unconfirmed. These drive the Vision component's
detection path directly with a skipping clock (no camera, no model needed).
"""

from __future__ import annotations

from datetime import timedelta

from detectors.types import Detection
from edge_agent.clock import SkippingClock
from edge_agent.config.detectors import DetectorsConfig
from edge_agent.types import Violation
from edge_agent.video.vision import Vision


def _vision() -> tuple[Vision, list[Violation], SkippingClock]:
    out: list[Violation] = []
    clock = SkippingClock()
    return Vision([], DetectorsConfig({}), out.append, clock=clock), out, clock


def _plume(clock: SkippingClock, key: str = "p1", confirmed: bool = True, camera: str = "cam1") -> Detection:
    return Detection("black_smoke", camera, clock.now(), "black_smoke", key, 0.9,
                     metrics={"ringelmann": 3.0}, confirmed=confirmed)


def test_plume_not_reported_again_ends_after_clear_s() -> None:
    vision, out, clock = _vision()
    vision.on_detection(_plume(clock))
    assert [v.state for v in out] == ["started"]
    for _ in range(29):  # frames keep coming, the plume is gone: 29 s < clear_s (30)
        clock.skip(1)
        vision.lapse("cam1", clock.now())
    assert [v.state for v in out] == ["started"]
    clock.skip(1)
    vision.lapse("cam1", clock.now())
    assert [v.state for v in out] == ["started", "ended"]
    assert out[1].key == out[0].key and out[1].figures["ringelmann"] == 3.0
    assert abs((out[1].time - out[0].time) - timedelta(seconds=30)) < timedelta(seconds=1)  # the clock also runs


def test_track_reported_sparsely_stays_open() -> None:
    """A detector that looks only every 10 s (bare_soil's classify_every_s) keeps its violation."""
    vision, out, clock = _vision()
    for _ in range(30):
        vision.on_detection(_plume(clock))
        for _ in range(10):
            clock.skip(1)
            vision.lapse("cam1", clock.now())
    assert [v.state for v in out][:1] == ["started"] and "ended" not in [v.state for v in out]


def test_other_cameras_tracks_are_left_alone() -> None:
    vision, out, clock = _vision()
    vision.on_detection(_plume(clock, camera="cam2"))
    clock.skip(120)
    vision.lapse("cam1", clock.now())
    assert [v.state for v in out] == ["started"]
    vision.lapse("cam2", clock.now())
    assert [v.state for v in out] == ["started", "ended"]


def test_idle_trackers_are_forgotten_after_cooldown() -> None:
    """Every plume is a new track key: trackers must not pile up over days."""
    vision, out, clock = _vision()
    for i in range(50):
        vision.on_detection(_plume(clock, key=f"p{i}"))
        clock.skip(31)
        vision.lapse("cam1", clock.now())
        clock.skip(61)  # past black_smoke's cooldown
        vision.lapse("cam1", clock.now())
    assert [v.state for v in out].count("ended") == 50
    assert len(vision._trackers) == 0 and len(vision._reported) == 0


def test_unconfirmed_report_then_silence_ends_once() -> None:
    vision, out, clock = _vision()
    vision.on_detection(_plume(clock))
    clock.skip(5)
    vision.on_detection(_plume(clock, confirmed=False))  # still seen, no longer confirmed: clear starts
    clock.skip(40)
    vision.lapse("cam1", clock.now())
    vision.lapse("cam1", clock.now())
    assert [v.state for v in out] == ["started", "ended"]


def test_a_truck_leaving_unwashed_is_one_moment_and_a_plume_is_not() -> None:
    """A moment is started and ended at once and says so, so the actions still play its warning."""
    vision, out, clock = _vision()
    vision.on_detection(Detection("washing", "cam1", clock.now(), "unwashed_vehicle", "t1", 0.8,
                                  metrics={"dwell_s": 3.0}, confirmed=True))
    assert [(v.kind, v.state, v.moment) for v in out] == [("unwashed_vehicle", "started", True),
                                                          ("unwashed_vehicle", "ended", True)]
    vision.on_detection(_plume(clock))
    assert (out[-1].kind, out[-1].moment) == ("black_smoke", False)
