"""Doctor checks for cameras, the speaker and the relays."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edge_agent.config import AgentConfig
from edge_agent.doctor.checks import FAIL, PASS, SKIP, Result


def check_cameras(config: AgentConfig, actuate: bool) -> Iterator[Result]:
    """Each camera gives a frame; it is saved with its zones drawn, to be checked by eye."""
    cameras = [c for c in config.cameras if c.enabled]
    if not cameras:
        return
    import cv2
    import numpy as np

    from drivers.camera.capture import CameraCapture, CaptureSettings, redact

    out_dir = Path(config.storage.data_dir) / "doctor"
    for cam in cameras:
        name = f"camera {cam.id}"
        try:
            url = cam.stream_urls()[0]
        except ValueError as exc:
            yield Result(name, FAIL, str(exc), "check cameras[].password (file or env)")
            continue
        got: list[Any] = []
        ready = threading.Event()

        def on_frame(frame: Any, got: list[Any] = got, ready: threading.Event = ready) -> None:
            got.append(frame)
            ready.set()

        capture = CameraCapture(CaptureSettings(cam.id, url, analysis_fps=1.0, open_timeout_s=cam.open_timeout_s,
                                                transport=cam.transport), on_frame=on_frame)
        capture.start()
        ready.wait(cam.open_timeout_s + 5)
        error = capture.health().last_error
        capture.stop()
        if not got:
            yield Result(name, FAIL, f"no picture from {redact(url)}: {error or 'timed out'}",
                         "check the camera has power and network, the RTSP URL, user and password "
                         "(try the URL in VLC), and that its video is H.264/H.265")
            continue
        image = got[0].image.copy()
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

