"""`cameras:` config: polygons, URLs and secrets are checked before anything starts."""

from __future__ import annotations

import itertools

import pytest
from pydantic import ValidationError

from drivers.camera.plan import DecodePlan
from edge_agent.config.cameras import CameraConfig


def _cam(**extra: object) -> CameraConfig:
    return CameraConfig.model_validate({"id": "cam1", "url": "rtsp://192.168.1.64/Streaming/Channels/101", **extra})


def test_defaults_are_valid() -> None:
    cam = _cam()
    assert cam.analysis_fps == 1.0 and cam.clip_pre_s == 10 and cam.tamper.enabled
    assert cam.stream_urls() == ("rtsp://192.168.1.64/Streaming/Channels/101", None)


@pytest.mark.parametrize(("zones", "why"), [
    ({"gate": [[0.1, 0.1], [0.9, 0.1]]}, "at least 3 points"),
    ({"gate": [[0.1, 0.1], [1.2, 0.1], [0.5, 0.9]]}, "outside 0..1"),
    ({"gate": [[0, 0], [0.5, 0.5], [1, 1]]}, "no area"),
])
def test_bad_polygons_are_rejected(zones: dict[str, list[list[float]]], why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        _cam(zones=zones)


def test_a_good_polygon_is_kept() -> None:
    assert _cam(zones={"gate": [[0.1, 0.5], [0.4, 0.5], [0.4, 1.0]]}).zones["gate"][1] == (0.4, 0.5)


def test_urls_and_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="rtsp"):
        _cam(url="http://192.168.1.64/")
    with pytest.raises(ValidationError, match="password out of the URL"):
        _cam(url="rtsp://admin:secret@192.168.1.64/")
    with pytest.raises(ValidationError, match="extra"):
        _cam(fps=5)  # a typo is an error, not ignored
    monkeypatch.setenv("CAM_PW", "p@ss:word")
    cam = _cam(username="admin", password={"env": "CAM_PW"}, sub_url="rtsp://192.168.1.64:554/sub")
    assert cam.stream_urls() == ("rtsp://admin:p%40ss%3Aword@192.168.1.64/Streaming/Channels/101",
                                 "rtsp://admin:p%40ss%3Aword@192.168.1.64:554/sub")


def test_duplicate_camera_ids_are_rejected() -> None:
    from pydantic import TypeAdapter

    from edge_agent.config.cameras import Cameras

    with pytest.raises(ValidationError, match="used twice"):
        TypeAdapter(Cameras).validate_python([{"id": "c", "url": "rtsp://h/1"}, {"id": "c", "url": "rtsp://h/2"}])


def _simulate(gop_frames: int, interval: float, fps: int = 25, seconds: int = 20) -> tuple[list[float], DecodePlan]:
    plan, taken = DecodePlan(interval), []
    for i in range(seconds * fps):
        t = i / fps
        if plan.feed(t, i % gop_frames == 0) and plan.take(t):
            taken.append(t)
    return taken, plan


def test_plan_decodes_only_due_keyframes_when_the_gop_is_short() -> None:
    taken, plan = _simulate(25, 1.0)  # keyframe every second, 1 fps analysis
    assert taken == [float(s) for s in range(20)]
    assert plan.keyframes_only and plan.decoded == 20  # 20 of 500 packets decoded
    taken, plan = _simulate(5, 1.0)  # keyframe 5x a second: still one decode per analysis frame
    assert len(taken) == 20 and plan.decoded == 20


def test_plan_stops_decoding_a_long_gop_after_the_last_needed_frame() -> None:
    taken, plan = _simulate(50, 1.0)  # keyframe every 2 s
    assert not plan.keyframes_only
    assert all(abs(b - a - 1.0) < 0.1 for a, b in itertools.pairwise(taken[1:]))  # 1 fps after the 1st GOP
    # Per 2 s GOP: the keyframe plus the P-frames up to the 1 s mark (~25 of 50), never the second half.
    assert 0.45 < plan.decoded / 500 < 0.56
