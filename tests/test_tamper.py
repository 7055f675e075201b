"""Tamper checks on real decoded frames: a synthetic building-site view through H.264 and back.

Each scenario is a video: normal view, then the tamper, then (mostly) normal again. The
frames are judged as the cameras component judges them (small grey image, capture time).
The first tests use short timings at 5 fps; the "site's day" ones run the default settings at
1 fps through what a site camera sees that is not tamper (big trucks, people, rain, dusk, a
dark plume, a net pulled off, the IR switch), then real tampering, and restarts with the
reference kept in a state dir. A real site photo from ../shared/datasets is used when present.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest
from camera_scenes import H, W, covered, decode, defocused, encode, script, site_canvas, view

from edge_agent.config.cameras import TamperConfig
from edge_agent.types import Violation
from edge_agent.video.motion import MotionGate
from edge_agent.video.prep import small_grey
from edge_agent.video.tamper import TamperMonitor, colour_saturation

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


# --- a site's day at 1 fps with the default settings: content changes that are not tamper ------------

SITE = TamperConfig()  # as a site runs it: learn 30 s, confirm 10 s, clear 10 s
DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def truck(frame: np.ndarray, x: int, y: int, w: int, h: int, colour: tuple[int, int, int]) -> None:
    """A muck truck side-on: body with ribs, cab, wheels (strong edges, like the real thing)."""
    cv2.rectangle(frame, (x, y), (x + w, y + h), colour, -1)
    cv2.rectangle(frame, (x + w - w // 4, y - h // 3), (x + w, y), tuple(c // 2 for c in colour), -1)
    for k in range(4):
        cv2.line(frame, (x + 6, y + 8 + k * h // 5), (x + w - 6, y + 8 + k * h // 5), tuple(c // 3 for c in colour), 2)
    for wx in (x + w // 6, x + w // 2, x + w - w // 6):
        cv2.circle(frame, (wx, y + h), h // 5, (25, 25, 25), -1)


def traffic(frame: np.ndarray, t: float) -> np.ndarray:
    """Two big trucks crossing both ways, people walking."""
    lanes = ((30, 35, 200, 240, 110, (40, 90, 200)), (45, -50, 150, 200, 90, (60, 160, 60)))
    for period, speed, y, w, h, colour in lanes:  # seconds between trucks, px/s, top, size, colour
        phase = t % period
        x = int(-w + speed * phase) if speed > 0 else int(W + speed * phase)
        truck(frame, x, y, w, h, colour)
    for k in range(4):
        px = int((60 + 23 * t + 150 * k) % W)
        cv2.rectangle(frame, (px, 250 + 12 * k), (px + 10, 280 + 12 * k), (30, 30, 120 + 30 * k), -1)
    return frame


def rain_and_dusk(frame: np.ndarray, t: float, rng: np.random.Generator, dusk_s: float) -> np.ndarray:
    """Rain streaks over a view whose light fades to 35 % over `dusk_s` seconds."""
    streaks = np.zeros(frame.shape[:2], np.uint8)
    for x, y in zip(rng.integers(0, W, 250), rng.integers(0, H, 250), strict=True):
        cv2.line(streaks, (int(x), int(y)), (int(x) + 3, int(y) + 14), 255, 1)
    gain = 1.0 - 0.65 * min(t / dusk_s, 1.0)
    lit = frame.astype(np.float32) * gain
    return np.clip(lit + streaks[..., None].astype(np.float32) * 0.25, 0, 255).astype(np.uint8)


GRID_YX = np.mgrid[0:H, 0:W].astype(np.float32)


def smoke_cloud(frame: np.ndarray, t: float, texture: np.ndarray, cover: float) -> np.ndarray:
    """A big dark smoke cloud (opacity up to 0.95) drifting and churning over about `cover` of the view."""
    yy, xx = GRID_YX
    cx, cy = W * (0.35 + 0.1 * np.sin(t / 20)), H * 0.45
    r = float(np.sqrt(cover * W * H / np.pi))
    churn = np.roll(texture, (int(3 * t), int(7 * t)), axis=(0, 1))
    d = np.hypot((xx - cx) / (1.3 * r), (yy - cy) / (0.8 * r)) * (0.8 + 0.4 * churn)
    a = cv2.merge([np.clip(2.0 * (1.0 - d), 0, 1) * 0.95] * 3)
    smoke = np.full(frame.shape, 14.0, np.float32)  # black smoke scatters little light
    return (frame.astype(np.float32) * (1.0 - a) + smoke * a).astype(np.uint8)


def infrared(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same view after the IR-cut filter drops: near-infrared weights, other gamma and gain, grey, noisier."""
    g = frame.astype(np.float32)
    nir = 0.15 * g[..., 0] + 0.25 * g[..., 1] + 0.6 * g[..., 2]
    ir = np.clip(255 * (nir / 255) ** 0.75 * 1.15 + rng.normal(0, 3.0, nir.shape), 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.GaussianBlur(ir, (3, 3), 0.6), cv2.COLOR_GRAY2BGR)


def rotated(frame: np.ndarray, degrees: float) -> np.ndarray:
    m = cv2.getRotationMatrix2D((W / 2, H / 2), degrees, 1.0)
    return cv2.warpAffine(frame, m, (W, H), borderMode=cv2.BORDER_REFLECT)


def analysis_frames(tmp_path: Path, frames: list[np.ndarray]) -> list[tuple[np.ndarray, float]]:
    """Through H.264 at one keyframe a second (what analysis decodes), to (small grey, saturation)."""
    path = encode(tmp_path / "day.mp4", iter(frames), fps=1, gop=1)
    return [(small_grey(img), colour_saturation(img)) for img in decode(path)]


def watch(monitor: TamperMonitor, frames: list[tuple[np.ndarray, float]], start: datetime = T0, *,
          saturation: bool = True) -> list[Violation]:
    out: list[Violation] = []
    for i, (grey, sat) in enumerate(frames):
        out += monitor.observe(grey, start + timedelta(seconds=i), saturation=sat if saturation else None)
    return out


@pytest.fixture(scope="module")
def normal_day(tmp_path_factory: pytest.TempPathFactory, canvas: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """Two minutes of the ordinary view (a small truck passing, sensor noise), decoded as analysis sees it."""
    rng = np.random.default_rng(20)
    return analysis_frames(tmp_path_factory.mktemp("normal"), [view(canvas, t, noise=rng) for t in range(120)])


def test_traffic_people_rain_and_dusk_are_not_tamper(tmp_path: Path, canvas: np.ndarray) -> None:
    rng = np.random.default_rng(21)
    frames = [rain_and_dusk(traffic(view(canvas, t, noise=rng), t), t - 40, rng, dusk_s=100) if t >= 40
              else traffic(view(canvas, t, noise=rng), t) for t in range(160)]
    monitor = TamperMonitor("cam1", SITE)
    assert watch(monitor, analysis_frames(tmp_path, frames)) == []
    assert monitor.last is not None and monitor.last.match is not None and monitor.last.match >= 0.6


def test_a_large_dark_plume_is_not_tamper(tmp_path: Path, canvas: np.ndarray) -> None:
    from detectors.training.synth import noise

    rng = np.random.default_rng(22)
    texture = noise(H, W, rng, 4)
    frames = [smoke_cloud(view(canvas, t, noise=rng), t, texture, cover=0.6) if t >= 40 else view(canvas, t, noise=rng)
              for t in range(120)]
    monitor = TamperMonitor("cam1", SITE)
    assert watch(monitor, analysis_frames(tmp_path, frames)) == []


def test_a_green_net_pulled_off_part_of_the_view_is_not_tamper(tmp_path: Path, canvas: np.ndarray) -> None:
    from detectors.training.synth import net_texture

    rng = np.random.default_rng(23)
    net = net_texture(H, W, np.random.default_rng(0))  # seed 0: a green one
    x1, y0 = int(W * 0.55), int(H * 0.5)  # the near-left quarter of the view: a stockpile under the net

    def frame(t: float) -> np.ndarray:
        image = view(canvas, t, noise=rng)
        if t < 60:
            image[y0:, :x1] = net[y0:, :x1]
        return image

    monitor = TamperMonitor("cam1", SITE)
    assert watch(monitor, analysis_frames(tmp_path, [frame(t) for t in range(150)])) == []


@pytest.mark.parametrize("saturation", [True, False], ids=["told_by_saturation", "grey_only"])
def test_day_to_ir_switch_is_not_tamper(tmp_path: Path, canvas: np.ndarray, saturation: bool) -> None:
    rng = np.random.default_rng(24)
    frames = [infrared(view(canvas, t, noise=rng), rng) if t >= 50 else view(canvas, t, noise=rng) for t in range(120)]
    monitor = TamperMonitor("cam1", SITE)
    assert watch(monitor, analysis_frames(tmp_path, frames), saturation=saturation) == []
    assert monitor.mode == ("ir" if saturation else "colour")
    assert monitor.learned


def test_turned_at_night_is_caught_against_the_ir_reference(tmp_path: Path, canvas: np.ndarray) -> None:
    rng = np.random.default_rng(25)
    # Day, dusk switch to IR at 35 s (its reference is learned by ~70 s), turned by 80 px (12.5 %) at 90 s.
    frames = [view(canvas, t, noise=rng) if t < 35 else infrared(view(canvas, t, dx=80 if t >= 90 else 0, noise=rng),
                                                                   rng) for t in range(110)]
    monitor = TamperMonitor("cam1", SITE)
    violations = watch(monitor, analysis_frames(tmp_path, frames))
    assert summary(violations) == [("camera_tamper", "moved", "started")]
    assert violations[0].figures["mode"] == "ir"
    assert abs((violations[0].started - (T0 + timedelta(seconds=90))).total_seconds()) <= 3


def test_rotated_view_is_moved(tmp_path: Path, canvas: np.ndarray) -> None:
    rng = np.random.default_rng(26)
    frames = [rotated(view(canvas, t, noise=rng), 7.0) if t >= 50 else view(canvas, t, noise=rng) for t in range(80)]
    violations = watch(TamperMonitor("cam1", SITE), analysis_frames(tmp_path, frames))
    assert summary(violations) == [("camera_tamper", "moved", "started")]
    assert violations[0].figures["shift"] is None  # no shift explains it: the structure is gone


def test_sway_below_moved_shift_is_not_moved(tmp_path: Path, canvas: np.ndarray) -> None:
    rng = np.random.default_rng(27)
    # The pole sways up to 16 px (2.5 % of the width) back and forth in the wind.
    frames = [view(canvas, t, dx=round(16 * np.sin(t / 3)) if t >= 40 else 0, noise=rng) for t in range(120)]
    assert watch(TamperMonitor("cam1", SITE), analysis_frames(tmp_path, frames)) == []


@pytest.mark.skipif(not (DATASETS / "exit_trucks").is_dir(), reason="../shared/datasets is not present")
@pytest.mark.parametrize("name", ["ims_0740.jpg", "ims_1197.jpg"])
def test_real_site_photo_quiet_with_traffic_then_moved(tmp_path: Path, name: str) -> None:
    path = DATASETS / "exit_trucks" / "images" / "muddy_road" / name
    if not path.exists():
        pytest.skip(f"{path} is not present")
    photo = cv2.imread(str(path))
    assert photo is not None
    wide = cv2.resize(photo, (W + 120, H), interpolation=cv2.INTER_CUBIC)  # room to pan by 120 px
    rng = np.random.default_rng(28)

    def frame(t: float) -> np.ndarray:
        dx = 80 if t >= 110 else 0  # turned by 12.5 % at 110 s
        image = traffic(wide[:, dx:dx + W].copy(), t)
        return cv2.add(image, rng.integers(0, 6, image.shape, dtype=np.uint8))

    violations = watch(TamperMonitor("cam1", SITE), analysis_frames(tmp_path, [frame(t) for t in range(140)]))
    assert summary(violations) == [("camera_tamper", "moved", "started")]
    assert violations[0].started >= T0 + timedelta(seconds=110)


# --- across restarts: the learned view is kept in the data dir -------------------------------------------


def learned_monitor(state: Path, normal_day: list[tuple[np.ndarray, float]]) -> TamperMonitor:
    monitor = TamperMonitor("cam1", SITE, state_dir=state)
    assert watch(monitor, normal_day) == []
    assert monitor.learned and (state / "cam1.npz").exists()
    return monitor


def test_restart_keeps_the_view_and_catches_a_cover_at_once(tmp_path: Path, canvas: np.ndarray,
                                                            normal_day: list[tuple[np.ndarray, float]]) -> None:
    first = learned_monitor(tmp_path / "tamper", normal_day)
    assert first.save()
    assert sorted(p.name for p in (tmp_path / "tamper").iterdir()) == ["cam1.npz"]  # no temp file left behind
    restarted = TamperMonitor("cam1", SITE, state_dir=tmp_path / "tamper")
    assert restarted.learned and restarted.baseline == pytest.approx(first.baseline)  # before its first frame
    rng = np.random.default_rng(30)
    later = T0 + timedelta(hours=1)
    # Covered 5 s after the restart, then blurred: both caught at confirm_s, no learning gap.
    frames = analysis_frames(tmp_path, [view(canvas, t, noise=rng) for t in range(5)]
                             + [covered(view(canvas, t), rng) for t in range(5, 30)]
                             + [defocused(view(canvas, t, noise=rng)) for t in range(30, 50)])
    violations = watch(restarted, frames, later)
    assert summary(violations) == [("camera_tamper", "covered", "started"), ("camera_tamper", "covered", "ended"),
                                   ("camera_tamper", "blurred", "started")]
    assert violations[0].started == later + timedelta(seconds=5)
    assert violations[2].started == later + timedelta(seconds=30)


def test_camera_turned_while_the_agent_was_off_is_caught(tmp_path: Path, canvas: np.ndarray,
                                                         normal_day: list[tuple[np.ndarray, float]]) -> None:
    learned_monitor(tmp_path / "tamper", normal_day)
    rng = np.random.default_rng(31)
    frames = analysis_frames(tmp_path, [view(canvas, t, dx=90, noise=rng) for t in range(20)])
    violations = watch(TamperMonitor("cam1", SITE, state_dir=tmp_path / "tamper"), frames, T0 + timedelta(hours=2))
    assert summary(violations) == [("camera_tamper", "moved", "started")]
    assert violations[0].started == T0 + timedelta(hours=2)


def test_relearn_accepts_a_view_re_aimed_on_purpose(tmp_path: Path, canvas: np.ndarray,
                                                    normal_day: list[tuple[np.ndarray, float]]) -> None:
    monitor = learned_monitor(tmp_path / "tamper", normal_day)
    rng = np.random.default_rng(32)
    re_aimed = analysis_frames(tmp_path, [view(canvas, t, dx=90, noise=rng) for t in range(80)])
    start = T0 + timedelta(seconds=len(normal_day))
    violations = watch(monitor, re_aimed[:20], start)
    assert summary(violations) == [("camera_tamper", "moved", "started")]
    monitor.relearn()  # the installer turned it on purpose
    assert not (tmp_path / "tamper" / "cam1.npz").exists()
    violations = watch(monitor, re_aimed[20:], start + timedelta(seconds=20))
    assert summary(violations) == [("camera_tamper", "moved", "ended")]
    assert monitor.learned and (tmp_path / "tamper" / "cam1.npz").exists()


def test_corrupt_or_foreign_state_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                             normal_day: list[tuple[np.ndarray, float]]) -> None:
    state = tmp_path / "tamper"
    learned_monitor(state, normal_day)
    good = (state / "cam1.npz").read_bytes()
    cases = {
        "truncated": good[: len(good) // 2],
        "garbage": b"\x00not a state file" * 50,
    }
    for label, data in cases.items():
        (state / "cam1.npz").write_bytes(data)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="edge_agent.video.tamper"):
            monitor = TamperMonitor("cam1", SITE, state_dir=state)
        assert not monitor.learned, label
        assert "ignored" in caplog.text, label
    # Another camera's file under this name.
    (state / "cam1.npz").write_bytes(good)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edge_agent.video.tamper"):
        (state / "cam2.npz").write_bytes(good)
        assert not TamperMonitor("cam2", SITE, state_dir=state).learned
    assert "belongs to camera 'cam1'" in caplog.text
    # The same camera, now sending another resolution: learned again, never a crash or a false report.
    monitor = TamperMonitor("cam1", SITE, state_dir=state)
    assert monitor.learned
    caplog.clear()
    bigger = [(cv2.resize(g, (640, 360)), s) for g, s in normal_day[:40]]
    with caplog.at_level(logging.WARNING, logger="edge_agent.video.tamper"):
        assert watch(monitor, bigger) == []
    assert "frame size changed" in caplog.text
    assert monitor.learned  # learned anew within learn_s
