"""One model pool for the whole box: two camera threads using the same interpreters at once get
exactly what each gets alone, and each model is loaded once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest

from detectors.activity import ActivityParams
from detectors.backbone import InferenceLock
from detectors.bare_soil import SoilParams
from detectors.black_smoke import SmokeParams
from detectors.pool import ModelPool
from detectors.registry import CameraView, Detector, build
from detectors.shared import SharedFeatures
from detectors.training.exit_scene import Car, ExitScene
from detectors.training.synth import SmokeScene, SoilScene
from detectors.uncovered_load import LoadParams
from detectors.washing import WashParams

T0 = datetime(2025, 6, 1, 10, 0, tzinfo=timezone.utc)
ROAD = (0.0, 0.35, 1.0, 1.0)
FRAMES = 10


def _site(pool: ModelPool) -> tuple[list[Detector], list[np.ndarray]]:
    """The site camera of bench/box.py, small: black smoke over a yard with a stockpile zone."""
    yard = SoilScene(width=640, height=360, seed=0)
    smoke = SmokeScene(width=640, height=360, opacity=0.8, kind="site", start=2, seed=3)
    view = CameraView("site", {"stockpile": yard.zone})
    dets = [build(SmokeParams(), view, pool), build(SoilParams(duration_s=0), view, pool)]
    frames = [smoke.frame(i) if i % 3 else yard.frame(i, covered=False) for i in range(FRAMES)]
    return dets, frames


def _exit(pool: ModelPool) -> tuple[list[Detector], list[np.ndarray]]:
    """The exit camera of bench/box.py, small: a car through the wash bay, four detectors on one SSD pass."""
    scene = ExitScene(width=640, height=360, seed=1, cars=[Car(start=0, stop_x=0.46, dwell=3)])
    view = CameraView("exit", {"wash_bay": scene.wash_bay})
    line = scene.exit_line
    dets = [build(WashParams(exit_line=line, crop=ROAD, min_dwell_s=2), view, pool),
            build(LoadParams(exit_line=line, crop=ROAD), view, pool),
            build(ActivityParams(crop=ROAD), view, pool),
            build(SmokeParams(), view, pool)]
    frames = [scene.frame(float(i), spray=1 < i < 4, i=i) for i in range(FRAMES)]
    return dets, frames


def _summary(found: list[Any]) -> list[tuple[Any, ...]]:
    return [(d.detector, d.kind, d.key, d.score, d.confirmed, sorted(d.metrics.items()), d.regions) for d in found]


def _run(dets: list[Detector], frames: list[np.ndarray], pool: ModelPool,
         start: Callable[[], None] = lambda: None) -> list[list[tuple[Any, ...]]]:
    """What a vision worker does with each frame: every detector on one SharedFeatures."""
    start()
    out = []
    for i, frame in enumerate(frames):
        shared = SharedFeatures(frame, pool)
        found = []
        for det in dets:
            found += det.analyse(frame, T0 + timedelta(seconds=i), motion=0.1, shared=shared)
        out.append(_summary(found))
    return out


def test_two_cameras_on_one_pool_at_once_give_what_each_gives_alone() -> None:
    alone_pool = ModelPool()
    site_alone = _run(*_site(alone_pool), alone_pool)
    exit_alone = _run(*_exit(alone_pool), alone_pool)
    assert any(site_alone) and any(exit_alone)  # the detectors really ran their models and found things

    pool = ModelPool()
    site, exit_ = _site(pool), _exit(pool)
    assert len(pool.backbones()) == 2  # V1 (every head) and V2 (smoke's second), once for both cameras
    assert site[0][0].classifier.backbone is exit_[0][3].classifier.backbone  # type: ignore[attr-defined]
    assert exit_[0][0].objects is exit_[0][1].objects is pool.objects(None, 1)  # type: ignore[attr-defined]
    results: dict[str, list[list[tuple[Any, ...]]]] = {}
    errors: list[BaseException] = []
    go = threading.Barrier(2)

    def camera(name: str, dets: list[Detector], frames: list[np.ndarray]) -> None:
        try:
            results[name] = _run(dets, frames * 2, pool, start=go.wait)  # twice over: more overlap
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=camera, args=("site", *site)),
               threading.Thread(target=camera, args=("exit", *exit_))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    # Same detections frame by frame (fresh detectors: the second pass over the frames continues
    # their tracks, so only the first pass is compared with the lone run).
    assert results["site"][:FRAMES] == site_alone
    assert results["exit"][:FRAMES] == exit_alone
    stats = pool.contention()
    assert stats["passes"] > 0 and stats["waits"] >= 0


def test_concurrent_passes_on_one_interpreter_never_mix_inputs() -> None:
    """Back to back, no pacing: the lock keeps set_tensor/invoke/get_tensor of one caller together."""
    pool = ModelPool()
    backbone = pool.classifier("soil_cls").backbone  # type: ignore[attr-defined]  # V1, read by every head
    ssd = pool.objects()
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (120, 160, 3), np.uint8) for _ in range(4)]
    maps = [backbone.feature_map(img) for img in images]
    boxes = [ssd.detect(img, min_score=0.0) for img in images]
    mismatches: list[str] = []

    def hammer(k: int) -> None:
        for r in range(15):
            i = (k + r) % len(images)
            if not np.array_equal(backbone.feature_map(images[i]), maps[i]):
                mismatches.append(f"backbone {k}/{r}")
            if ssd.detect(images[i], min_score=0.0) != boxes[i]:
                mismatches.append(f"ssd {k}/{r}")

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not mismatches
    assert isinstance(backbone.lock, InferenceLock) and isinstance(ssd.lock, InferenceLock)


def test_inference_lock_counts_waits() -> None:
    lock = InferenceLock()
    with lock:
        pass
    assert lock.waits == 0 and lock.waited_s == 0.0  # uncontended: nothing counted, no clock read
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with lock:
            held.set()
            release.wait(5)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(5)
    threading.Timer(0.05, release.set).start()
    with lock:
        pass
    t.join(5)
    assert lock.waits == 1 and lock.waited_s >= 0.03 and lock.max_wait_s == pytest.approx(lock.waited_s)


def test_analysis_copies_average_every_pixel_and_share_the_frames_halvings(monkeypatch: pytest.MonkeyPatch) -> None:
    import cv2

    from detectors.background import downscale

    frame = SmokeScene(width=1920, height=1080, kind="site", start=0, seed=5).frame(4)
    # Two exact halvings are the one quarter-size INTER_AREA copy (the same 4x4 means), up to rounding.
    quarter = downscale(frame, 480)
    direct = cv2.resize(frame, (480, 270), interpolation=cv2.INTER_AREA)
    assert quarter.shape == direct.shape and int(np.abs(quarter.astype(int) - direct).max()) <= 1
    # Any width: halved while at least twice as wide, then one INTER_AREA resize; still the frame's mean.
    for width, shape in ((640, (360, 640, 3)), (1000, (562, 1000, 3)), (1920, frame.shape), (4000, frame.shape)):
        small = downscale(frame, width)
        assert small.shape == shape
        assert abs(float(small.mean()) - float(frame.mean())) < 0.5
    odd = np.ascontiguousarray(frame[:1079, :1919])  # odd sides cannot be halved exactly: one resize
    assert downscale(odd, 480).shape == (270, 480, 3)

    import detectors.shared as shared_module

    halved_inputs: list[tuple[int, ...]] = []
    real_half = shared_module.half

    def counted(image: np.ndarray) -> np.ndarray:
        halved_inputs.append(image.shape)
        return real_half(image)

    monkeypatch.setattr(shared_module, "half", counted)
    shared = SharedFeatures(frame)
    a, b = shared.downscaled(640), shared.downscaled(480)
    assert np.array_equal(a, downscale(frame, 640)) and np.array_equal(b, quarter)
    assert shared.downscaled(480) is b  # once per width and frame
    assert halved_inputs == [(1080, 1920, 3), (540, 960, 3)]  # the 960-wide halving served both widths
