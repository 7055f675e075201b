"""Tamper checks on real decoded frames: a synthetic building-site view through H.264 and back.

Each scenario is a video: normal view, then the tamper, then (mostly) normal again. The
frames are judged as the cameras component judges them (small grey image, capture time).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from camera_scenes import covered, decode, defocused, encode, script, site_canvas, view

from edge_agent.config.cameras import TamperConfig
from edge_agent.types import Violation
from edge_agent.video.motion import MotionGate
from edge_agent.video.prep import small_grey
from edge_agent.video.tamper import TamperMonitor

FPS = 5
T0 = datetime(2026, 5, 4, 2, 0, tzinfo=timezone.utc)
CONFIG = TamperConfig(learn_s=2.0, confirm_s=1.0, clear_s=1.0, frozen_image_s=5.0)


@pytest.fixture(scope="module")
def canvas() -> np.ndarray:
    return site_canvas()


def run(tmp_path: Path, seconds: float, pick: Callable[[float], np.ndarray]) -> tuple[list[Violation], TamperMonitor]:
    path = encode(tmp_path / "scene.mp4", script(seconds, FPS, pick), fps=FPS, gop=FPS)
    monitor = TamperMonitor("cam1", CONFIG)
    violations: list[Violation] = []
    for i, image in enumerate(decode(path)):
        violations += monitor.observe(small_grey(image), T0 + timedelta(seconds=i / FPS))
    return violations, monitor


def summary(violations: list[Violation]) -> list[tuple[str, str, str]]:
    return [(v.kind, str(v.figures["reason"]), v.state) for v in violations]


def test_a_normal_scene_raises_nothing(tmp_path: Path, canvas: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    violations, monitor = run(tmp_path, 12, lambda t: view(canvas, t, noise=rng))
    assert monitor.learned
    assert violations == []


def test_covered_lens(tmp_path: Path, canvas: np.ndarray) -> None:
    rng = np.random.default_rng(2)
    violations, _ = run(tmp_path, 10, lambda t: covered(view(canvas, t), rng) if 4 <= t < 7
                        else view(canvas, t, noise=rng))
    assert summary(violations) == [("camera_tamper", "covered", "started"), ("camera_tamper", "covered", "ended")]
    started, ended = violations
    assert started.key == ended.key and started.source == "cam1"
    assert abs((started.started - (T0 + timedelta(seconds=4))).total_seconds()) <= 0.5
    assert started.figures["std"] is not None and float(started.figures["std"]) < CONFIG.covered_std
    assert "遮挡" in started.message


def test_defocus_blur(tmp_path: Path, canvas: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    violations, monitor = run(tmp_path, 8, lambda t: defocused(view(canvas, t, noise=rng)) if t >= 4
                              else view(canvas, t, noise=rng))
    assert summary(violations) == [("camera_tamper", "blurred", "started")]
    figures = violations[0].figures
    sharpness, baseline = float(figures["sharpness"]), float(figures["sharpness_baseline"])  # type: ignore[arg-type]
    assert sharpness < CONFIG.blur_ratio * baseline
    assert monitor.view_tampered


def test_shifted_view(tmp_path: Path, canvas: np.ndarray) -> None:
    rng = np.random.default_rng(4)
    # At 4 s the camera is turned: the view moves by 60 px (~9 % of the width) and stays there.
    violations, _ = run(tmp_path, 8, lambda t: view(canvas, t, dx=60 if t >= 4 else 0, noise=rng))
    assert summary(violations) == [("camera_tamper", "moved", "started")]
    assert float(violations[0].figures["shift"]) > CONFIG.moved_shift  # type: ignore[arg-type]


def test_turned_back_ends_the_moved_violation(tmp_path: Path, canvas: np.ndarray) -> None:
    rng = np.random.default_rng(5)
    violations, _ = run(tmp_path, 10, lambda t: view(canvas, t, dx=120 if 4 <= t < 7 else 0, noise=rng))
    assert summary(violations) == [("camera_tamper", "moved", "started"), ("camera_tamper", "moved", "ended")]


def test_frozen_picture_is_a_device_fault(tmp_path: Path, canvas: np.ndarray) -> None:
    rng = np.random.default_rng(6)
    stuck = view(canvas, 3.0, noise=rng)
    violations, _ = run(tmp_path, 11, lambda t: stuck if t >= 3 else view(canvas, t, noise=rng))
    assert summary(violations) == [("device_fault", "frozen_image", "started")]


def test_stream_events_become_device_faults() -> None:
    monitor = TamperMonitor("cam1", CONFIG)
    frozen = monitor.stream_event("frozen", T0, "no packet for 5.0 s")
    again = monitor.stream_event("lost", T0 + timedelta(seconds=10))  # same outage, not a second fault
    back = monitor.stream_event("connected", T0 + timedelta(seconds=20))
    assert summary(frozen + again + back) == [("device_fault", "stream_frozen", "started"),
                                              ("device_fault", "stream_restored", "ended")]
    assert frozen[0].key == back[0].key


def test_motion_gate_sees_the_truck_not_the_noise(tmp_path: Path, canvas: np.ndarray) -> None:
    rng = np.random.default_rng(7)
    still = view(canvas, 0.0)
    moving = encode(tmp_path / "moving.mp4", script(3, FPS, lambda t: view(canvas, t, noise=rng)), fps=FPS)
    parked = encode(tmp_path / "parked.mp4",
                    script(3, FPS, lambda t: np.clip(still + rng.integers(0, 6, still.shape), 0, 255).astype(np.uint8)),
                    fps=FPS)
    gate = MotionGate(0.002)
    samples = [gate.update(small_grey(img)) for img in decode(moving)][1:]
    assert all(s.moving for s in samples), [s.ratio for s in samples]
    gate.reset()
    samples = [gate.update(small_grey(img)) for img in decode(parked)][1:]
    assert not any(s.moving for s in samples), [s.ratio for s in samples]
