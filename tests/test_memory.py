"""What keeps the box's memory down: evidence pictures held as JPEG, and freed heap handed back."""

from __future__ import annotations

from datetime import datetime, timezone

import cv2
import numpy as np

from detectors.types import Detection
from edge_agent.heap import HeapTrim
from edge_agent.video.evidence import _crops, evidence_jpegs
from edge_agent.video.vision import _seen

T0 = datetime(2025, 6, 1, 10, 0, tzinfo=timezone.utc)


def _picture(h: int = 1080, w: int = 1920) -> np.ndarray:
    rng = np.random.default_rng(0)
    return cv2.resize(rng.integers(0, 256, (h // 8, w // 8, 3), np.uint8), (w, h))


def test_a_started_violation_holds_jpegs_not_frames() -> None:
    frame = _picture()
    d = Detection(detector="washing", camera="cam-exit", time=T0, kind="unwashed_vehicle", key="washing:cam-exit:1",
                  score=0.9, regions=(((0.1, 0.1), (0.5, 0.1), (0.5, 0.5)),), confirmed=True,
                  images={"snapshot": frame, "crop": frame[100:300, 200:500].copy(),
                          "frames": ((T0, frame[::4, ::4]),)})
    seen = _seen(d, "vehicle left without washing")
    assert set(seen.images) == {"snapshot", "crop"}  # a frame history is not a picture for the bundle
    assert all(isinstance(v, bytes) for v in seen.images.values())
    assert sum(len(v) for v in seen.images.values()) < frame.nbytes / 5
    # the bundle gets exactly the JPEGs it got when it encoded the arrays itself
    ok, expected = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok and seen.images["snapshot"] == expected.tobytes()
    files = {f.name: f.data for f in _crops(seen)}
    assert files == {"detector_snapshot.jpg": seen.images["snapshot"], "detector_crop.jpg": seen.images["crop"]}


def test_evidence_jpegs_skips_what_is_not_a_picture() -> None:
    out = evidence_jpegs({"empty": np.zeros((0, 0, 3), np.uint8), "grey": np.full((20, 30), 128, np.uint8),
                          "text": "no", "ready": b"\xff\xd8jpeg"})
    assert set(out) == {"grey", "ready"} and out["ready"] == b"\xff\xd8jpeg"


def test_heap_trim_runs_at_most_every_interval() -> None:
    now = [0.0]
    trim = HeapTrim(every_s=10.0, clock=lambda: now[0])
    assert not trim.maybe()  # not before the first interval
    now[0] = 10.0
    assert trim.maybe() == trim.available
    assert not trim.maybe()
    now[0] = 19.9
    assert not trim.maybe()
    now[0] = 20.0
    assert trim.maybe() == trim.available
    assert trim.trims == (2 if trim.available else 0)


def test_ring_holds_a_keyframe_in_a_mapping_of_its_own_and_clips_read_it() -> None:
    import mmap

    import av

    from drivers.camera.ring import BIG_PACKET, hold

    small = hold(b"\x00\x00\x01" * 10)
    assert isinstance(small, bytes) and small == b"\x00\x00\x01" * 10
    payload = np.random.default_rng(1).integers(0, 256, BIG_PACKET + 12345, np.uint8).tobytes()
    big = hold(av.Packet(payload))
    assert isinstance(big, mmap.mmap) and len(big) == len(payload) and big[:] == payload
    assert bytes(av.Packet(big)) == payload  # what write_clip and decode_at do with it
