"""Doctor checks for cameras, the speaker and the relays.

A camera's check saves a frame with its zones drawn, and measures the main stream's keyframe
interval: what it costs to analyse (a factory camera's 2-s GOP decoded to 1 fps is ~13 decoded
frames per analysed frame) and what this camera does about it (edge_agent/video/streams.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.config import AgentConfig
from edge_agent.doctor.checks import FAIL, PASS, SKIP, WARN, Result

if TYPE_CHECKING:
    from drivers.camera.capture import CaptureHealth
    from edge_agent.config.cameras import CameraConfig
    from edge_agent.video.streams import StreamPlan


KEYFRAME_WAIT_S = 11.0  # long enough to see two keyframes of a GOP up to 10 s


def check_cameras(config: AgentConfig, actuate: bool) -> Iterator[Result]:
    """Each camera gives a frame (saved with its zones drawn); its keyframe interval is measured and costed."""
    cameras = [c for c in config.cameras if c.enabled]
    if not cameras:
        return
    import cv2
    import numpy as np

    from drivers.camera.capture import redact
    from edge_agent.video.streams import plan_streams

    out_dir = Path(config.storage.data_dir) / "doctor"
    for cam in cameras:
        name = f"camera {cam.id}"
        try:
            url, sub_url = cam.stream_urls()
        except ValueError as exc:
            yield Result(name, FAIL, str(exc), "check cameras[].password (file or env)")
            continue
        plan = plan_streams(cam, config.detectors)
        frame, health = _read_stream(cam, url, cam.analysis_fps, plan.main_min_fps)
        if frame is None:
            yield Result(name, FAIL, f"no picture from {redact(url)}: {health.last_error or 'timed out'}",
                         "check the camera has power and network, the RTSP URL, user and password "
                         "(try the URL in VLC), and that its video is H.264/H.265")
            continue
        image = frame.image.copy()
        h, w = image.shape[:2]
        for zone, points in cam.zones.items():
            pts = (np.asarray(points, dtype=np.float64) * [w, h]).astype(np.int32)
            cv2.polylines(image, [pts], True, (0, 0, 255), max(2, w // 400))
            cv2.putText(image, zone, tuple(int(v) for v in pts[0]), cv2.FONT_HERSHEY_SIMPLEX, max(0.6, w / 1600),
                        (0, 0, 255), max(1, w // 800))
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{cam.id}.jpg"
        cv2.imwrite(str(path), image)
        zones = f", {len(cam.zones)} zone(s) drawn" if cam.zones else ""
        yield Result(name, PASS, f"{w}x{h} frame saved to {path}{zones}: check the view and zones by eye")
        yield keyframe_result(name, plan, health.keyframe_interval_s, health.gop_frames, has_sub=sub_url is not None)
        if plan.sub and sub_url is not None:
            sub_frame, sub_health = _read_stream(cam, sub_url, plan.sub_fps, None)
            if sub_frame is None:
                yield Result(f"{name} sub-stream", FAIL,
                             f"no picture from {redact(sub_url)}: {sub_health.last_error or 'timed out'}",
                             f"{', '.join(plan.sub)} read the sub-stream: check cameras[].sub_url (try it in VLC)")
                continue
            sh, sw = sub_frame.image.shape[:2]
            yield Result(f"{name} sub-stream", PASS,
                         f"{sw}x{sh}, {_keyframes(sub_health.keyframe_interval_s, sub_health.gop_frames)}: "
                         f"{', '.join(plan.sub)} analyse it at {plan.sub_fps:g} fps")


def _read_stream(cam: CameraConfig, url: str, fps: float, min_fps: float | None) -> tuple[Any, CaptureHealth]:
    """The first analysis frame of a stream, and its health once two keyframes gave the keyframe interval."""
    from drivers.camera.capture import CameraCapture, CaptureSettings

    got: list[Any] = []
    ready = threading.Event()

    def on_frame(frame: Any) -> None:
        got.append(frame)
        ready.set()

    capture = CameraCapture(CaptureSettings(cam.id, url, analysis_fps=fps, keyframes_min_fps=min_fps,
                                            open_timeout_s=cam.open_timeout_s, transport=cam.transport),
                            on_frame=on_frame)
    capture.start()
    try:
        ready.wait(cam.open_timeout_s + 5)
        deadline = time.monotonic() + KEYFRAME_WAIT_S
        while got and capture.health().keyframe_interval_s is None and time.monotonic() < deadline:
            time.sleep(0.1)
        return (got[0] if got else None), capture.health()
    finally:
        capture.stop()


def _keyframes(interval_s: float | None, gop_frames: int | None) -> str:
    if interval_s is None:
        return f"no second keyframe within {KEYFRAME_WAIT_S:g} s"
    fps = gop_frames / interval_s if gop_frames else None
    gop = f" (GOP {gop_frames} at {fps:.3g} fps)" if fps else ""
    return f"keyframe every {interval_s:.1f} s{gop}"


def keyframe_result(name: str, plan: StreamPlan, interval_s: float | None, gop_frames: int | None, *,
                    has_sub: bool) -> Result:
    """What the main stream's measured keyframe interval costs this camera, and what would lower it.

    e.g. "keyframe every 2.0 s (GOP 50 at 25 fps): analysing at 1 fps decodes ~13 frames per
    analysed frame; keyframes-only possible for black_smoke, bare_soil; washing needs the sub-stream".
    """
    label = f"{name} keyframes"
    if interval_s is None:
        return Result(label, WARN, f"{_keyframes(None, None)}: the decode cost is unknown",
                      "set the camera's I-frame interval to its frame rate (one keyframe a second)")
    from drivers.camera.plan import decode_cost

    fps = gop_frames / interval_s if gop_frames else 25.0
    rate = plan.analysis_fps
    parts = [_keyframes(interval_s, gop_frames)]
    cost = decode_cost(1 / rate, interval_s, fps)
    parts.append(f"analysing at {rate:g} fps decodes "
                 + ("keyframes only" if cost <= 1.0 else f"~{cost:.0f} frames per analysed frame"))
    served = [n for n in plan.keyframes_ok if plan.served_by_keyframes(n, interval_s)]
    unserved = [n for n in plan.keyframes_ok if n not in served]
    if cost > 1.0 and served:
        parts.append(f"keyframes-only possible for {', '.join(served)}")
    if cost > 1.0 and unserved:
        slowest = min(rate for n, rate in plan.rates if n in unserved and rate)
        parts.append(f"{', '.join(unserved)} need{'s' if len(unserved) == 1 else ''} a keyframe every "
                     f"{1 / slowest:g} s or less")
    if cost > 1.0 and plan.need_rate:
        many = len(plan.need_rate) > 1
        verb = ("read" if many else "reads") if plan.sub else ("need" if many else "needs")
        parts.append(f"{', '.join(plan.need_rate)} {verb} the sub-stream")
    parts = [parts[0] + ": " + parts[1], *parts[2:]]
    if not plan.main_decoded:
        return Result(label, PASS, "; ".join(parts) + "; the main stream is only recorded (clips, snapshots)")
    main_cost = decode_cost(1 / rate, interval_s, fps, plan.main_keyframe_max_s)
    if main_cost <= 1.0:
        step = max(interval_s, 1 / rate)
        return Result(label, PASS, "; ".join(parts) + f"; this camera decodes keyframes only (a frame every "
                      f"{step:.3g} s for {', '.join(plan.main) or 'the tamper watch'})")
    hint = ("give the camera's sub-stream (sub_url) to the detectors that need the rate, or " if not has_sub
            and plan.need_rate else "") + "set the camera's I-frame interval to its frame rate (one keyframe a second)"
    return Result(label, WARN, "; ".join(parts) + f"; this camera decodes ~{main_cost:.0f} frames per analysed "
                  "frame", hint)


def check_speaker(config: AgentConfig, actuate: bool) -> Iterator[Result]:
    """A short test tone through the configured output device."""
    if not config.speaker.enabled:
        yield Result("speaker", SKIP, "speaker.enabled is false")
        return
    import numpy as np

    from drivers.speaker import Pcm, Speaker

    cfg = config.speaker
    speaker = Speaker(cfg.device, cfg.volume, cfg.sample_rate, retry_s=1.0)
    rate = 22050
    t = np.arange(int(rate * 0.6)) / rate
    tone = Pcm((0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), rate)
    try:
        result = speaker.play(tone)
    finally:
        speaker.close()
    if result.outcome == "played":
        yield Result("speaker", PASS, f"played a 1 kHz test tone on {cfg.device or 'the default device'}: "
                     "did you hear it?")
    else:
        yield Result("speaker", FAIL, result.error or f"playback {result.outcome}",
                     "check the amplifier's power and cable; `aplay -l` lists devices; set speaker.device "
                     "to part of the right device's name")


def check_relays(config: AgentConfig, actuate: bool) -> Iterator[Result]:
    """Each relay pin can be claimed; with --actuate, switched on for a second and off again."""
    if not config.relays:
        return
    from drivers.relay import Relay

    for cfg in config.relays:
        name = f"relay {cfg.id}"
        try:
            relay = Relay(cfg.id, cfg.pin, active_high=cfg.active_high)
        except Exception as exc:
            yield Result(name, FAIL, f"pin {cfg.pin}: {exc}",
                         "check relays[].pin (BCM numbering) and that the agent's user is in the gpio group")
            continue
        try:
            if not actuate:
                ok = relay.set(False)
                yield Result(name, PASS if ok else FAIL, f"pin {cfg.pin} claimed, held off "
                             "(run with --actuate to switch it)", "" if ok else "the pin cannot be driven")
                continue
            on = relay.set(True)
            time.sleep(1.0)
            off = relay.set(False)
            if on and off:
                yield Result(name, PASS, f"pin {cfg.pin} switched on for 1 s and off: did it click?")
            else:
                yield Result(name, FAIL, f"pin {cfg.pin} could not be switched", "check the relay board's power")
        finally:
            relay.close()

