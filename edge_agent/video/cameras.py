"""The cameras component: capture threads for every configured camera, plus what evidence needs.

Per analysis frame it computes the motion gate and the tamper checks, reports tamper and
stream faults as Violations, and hands the frame on (with its motion figure) to detectors.
For evidence it offers a watermarked JPEG (`snapshot`) and a remuxed MP4 clip (`clip`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from drivers.camera import CameraCapture, CaptureSettings, ClipError, ClipInfo, StreamEvent, redact
from drivers.camera.osd import Outline, watermark_jpeg, watermark_jpegs
from drivers.camera.picture import frame_bgr
from drivers.types import Frame
from edge_agent.config.cameras import CameraConfig
from edge_agent.config.detectors import DetectorsConfig
from edge_agent.types import Violation
from edge_agent.video.motion import MotionGate
from edge_agent.video.prep import ANALYSIS_WIDTH, small_grey
from edge_agent.video.streams import Stream, StreamPlan, plan_streams
from edge_agent.video.tamper import TamperMonitor, colour_saturation

log = logging.getLogger(__name__)

# The ring keeps whole GOPs back to the one holding its horizon, so a clip finds its keyframe
# whatever the GOP. It holds pre seconds and a margin, not pre + post: every violation pins its
# clip's start when it is reported (hold_clip), and the pin keeps the video from there until the
# clip is cut, post seconds or a queue of evidence jobs later. The margin covers the time from the
# moment of the violation (a detector's frame is analysed a moment after it was captured) to its
# report. Post seconds in the ring cost ~1/3 more of its memory (bench/box.py: ~5 MB).
RING_MARGIN_S = 5.0


class CameraUnavailable(LookupError):
    """No such camera, or it has no picture to give yet."""


@dataclass(frozen=True)
class CameraFrame:
    """An analysis frame with what the core knows about it."""

    frame: Frame
    motion: float  # share of pixels changed since the previous analysis frame of the same stream
    moving: bool  # motion above the camera's motion_min_ratio: detectors may skip still frames
    tampered: bool  # view covered, blurred or moved: detections on it are not to be trusted
    stream: Stream = "main"  # which stream it was decoded from: its detectors are plan.main or plan.sub


class _Camera:
    """One configured camera: its capture thread(s), per-stream motion gates and its tamper monitor."""

    def __init__(self, cfg: CameraConfig, owner: CamerasComponent, plan: StreamPlan):
        self.cfg = cfg
        self.owner = owner
        self.plan = plan
        self.motion = {"main": MotionGate(cfg.motion_min_ratio), "sub": MotionGate(cfg.motion_min_ratio)}
        self.tamper = TamperMonitor(cfg.id, cfg.tamper, state_dir=owner.state_dir)
        self.error: str | None = None
        self.main: CameraCapture | None = None  # always read: evidence (ring, clips, snapshots)
        self.sub: CameraCapture | None = None  # read only when a detector needs it
        try:
            main, sub = cfg.stream_urls()
        except ValueError as exc:  # an unreadable password secret: this camera stays down, the rest runs
            self.error = str(exc)
            log.error("camera %s: %s", cfg.id, exc)
            return
        ring_s = cfg.clip_pre_s + RING_MARGIN_S
        base = CaptureSettings(
            cfg.id, main, analysis_fps=cfg.analysis_fps, keyframes_min_fps=plan.main_min_fps,
            decode=plan.main_decoded, ring_s=ring_s, watchdog_s=cfg.watchdog_s,
            lost_after_s=cfg.tamper.lost_after_s, open_timeout_s=cfg.open_timeout_s,
            reconnect_min_s=cfg.reconnect_min_s, reconnect_max_s=cfg.reconnect_max_s, transport=cfg.transport,
            small_width=ANALYSIS_WIDTH,
        )
        self.main = CameraCapture(base, on_frame=self._frames("main") if plan.main_decoded else None,
                                  on_event=self._events("main"))
        if plan.sub and sub is not None:  # the small sub-stream, decoded at its rate, never recorded
            self.sub = CameraCapture(
                replace(base, url=sub, analysis_fps=plan.sub_fps, keyframes_min_fps=None, decode=True, ring_s=0.0),
                on_frame=self._frames("sub"), on_event=self._events("sub"))

    def captures(self) -> list[CameraCapture]:
        return [c for c in (self.main, self.sub) if c is not None]

    def _frames(self, stream: Stream) -> Callable[[Frame], None]:
        return lambda frame: self.on_frame(frame, stream)

    def _events(self, stream: Stream) -> Callable[[StreamEvent], None]:
        return lambda event: self.on_event(event, stream)

    def on_frame(self, frame: Frame, stream: Stream = "main") -> None:
        grey = frame.small if frame.small is not None else small_grey(frame.image)
        sample = self.motion[stream].update(grey)
        if stream == self.plan.tamper_stream:
            # Colour vs IR (night) picture: each gets its own reference view, so the switch is not tamper.
            for violation in self.tamper.observe(grey, frame.time, saturation=colour_saturation(frame.image)):
                self.owner._violation(violation)
        self.owner._frame(CameraFrame(frame, sample.ratio, sample.moving, self.tamper.view_tampered, stream))

    def on_event(self, event: StreamEvent, stream: Stream = "main") -> None:
        if event.kind == "connected":
            self.motion[stream].reset()
        if stream != self.plan.tamper_stream:
            # The other stream: its faults are logged and shown in health; clips or some detectors miss the time.
            if event.kind in ("frozen", "lost"):
                log.warning("camera %s: %s stream %s (%s)", self.cfg.id, stream, event.kind, event.detail)
            return
        for violation in self.tamper.stream_event(event.kind, datetime.fromtimestamp(event.time, timezone.utc),
                                                  event.detail):
            self.owner._violation(violation)


class CamerasComponent:
    """The `cameras` Component: start(), stop(), health(); snapshot() and clip() for evidence."""

    name = "cameras"

    def __init__(
        self,
        configs: Sequence[CameraConfig],
        tz: str | ZoneInfo,
        on_frame: Callable[[CameraFrame], None] | None = None,
        on_violation: Callable[[Violation], None] | None = None,
        *,
        site: str = "",
        device: str = "",
        clip_dir: Path | None = None,
        state_dir: Path | None = None,
        detectors: DetectorsConfig | None = None,
    ):
        self.tz = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
        self.on_frame: Callable[[CameraFrame], None] = on_frame or _ignore
        self.on_violation: Callable[[Violation], None] = on_violation or _ignore
        self.site, self.device = site, device
        self.clip_dir = clip_dir
        self.state_dir = state_dir  # each camera's tamper reference view, kept across restarts
        # Which stream each camera's detectors read (detectors=None: entries are registered names).
        self._cameras = {c.id: _Camera(c, self, plan_streams(c, detectors)) for c in configs if c.enabled}

    def subscribe(self, *, frames: Callable[[CameraFrame], None], violations: Callable[[Violation], None]) -> None:
        """Where analysis frames and camera violations go (set once, before start)."""
        self.on_frame, self.on_violation = frames, violations

    # --- Component -------------------------------------------------------------------------

    def start(self) -> None:
        for cam in self._cameras.values():
            for capture in cam.captures():
                capture.start()
                st = capture.settings
                what = (f"at {st.analysis_fps:.2g} analysis fps" if st.decode else "recorded only") + (
                    f", keyframes only while they come every {1 / st.keyframes_min_fps:.3g} s or less"
                    if st.decode and st.keyframes_min_fps else "")
                log.info("camera %s: reading %s %s", cam.cfg.id, redact(st.url), what)

    def stop(self) -> None:
        for cam in self._cameras.values():
            for capture in cam.captures():
                capture.stop()

    def alive(self) -> bool:
        return all(capture.alive() for cam in self._cameras.values() for capture in cam.captures())

    def health(self) -> Mapping[str, Any]:
        cameras: dict[str, Any] = {}
        rank = {"ok": 0, "degraded": 1, "down": 2}
        worst = "ok"
        for cam_id, cam in self._cameras.items():
            if cam.main is None:
                entry: dict[str, Any] = {"state": "down", "last_error": cam.error}
            else:
                entry = cam.main.health().as_dict()  # the main stream: evidence, and keyframe analysis
                entry["detectors"] = list(cam.plan.main)
                if cam.sub is not None:
                    sub = cam.sub.health().as_dict()
                    sub["detectors"] = list(cam.plan.sub)
                    entry["sub_stream"] = sub
                    entry["state"] = max(entry["state"], sub["state"], key=lambda s: rank.get(s, 2))
            entry["tamper"] = cam.tamper.active()
            if entry["tamper"] and entry["state"] == "ok":
                entry["state"] = "degraded"
            cameras[cam_id] = entry
            worst = max(worst, entry["state"], key=lambda s: rank.get(s, 2))
        return {"state": worst if cameras else "ok", "cameras": cameras}

    # --- evidence --------------------------------------------------------------------------

    def relearn_view(self, camera_id: str) -> None:
        """The camera was re-aimed on purpose: forget its reference view and learn the new one."""
        self._get(camera_id).tamper.relearn()
        log.warning("camera %s: reference view forgotten on request; learning the new view", camera_id)

    def camera_ids(self) -> list[str]:
        return list(self._cameras)

    def snapshot(self, camera_id: str, violation_text: str, *, at: datetime | None = None) -> bytes:
        """A JPEG with the watermark (site, device, camera, local time, violation).

        The picture is the latest main-stream analysis frame or, when the main stream is only
        recorded (its detectors read the sub-stream) or when `at` is given, the main-stream frame
        at that time decoded from the packet ring. The stamped time
        is the frame's capture time, not the time of the call.
        """
        taken, image = self._frame_for(camera_id, at)
        return watermark_jpeg(image, self._lines(camera_id, taken, violation_text), owned=True)

    def marked_snapshots(self, camera_id: str, violation_text: str, outlines: Sequence[Outline],
                         label: str = "") -> tuple[bytes, bytes]:
        """(clean, marked) JPEGs of one frame: the marked copy outlines what was seen."""
        taken, image = self._frame_for(camera_id, None)
        return watermark_jpegs(image, self._lines(camera_id, taken, violation_text), outlines, label, owned=True)

    def _frame_for(self, camera_id: str, at: datetime | None) -> tuple[datetime, Any]:
        """(capture time, a BGR picture of its own: stamped and drawn on in place, no copy)."""
        cam = self._get(camera_id)
        ring = cam.main.ring if cam.main is not None else None
        if ring is not None and (at is not None or not cam.plan.main_decoded):
            target = at.timestamp() if at is not None else (ring.newest() or time.time())
            try:
                found = ring.decode_at(target)
            except Exception as exc:
                log.warning("camera %s: decoding the snapshot from the ring failed: %s", camera_id, exc)
                found = None
            if found is not None:
                return datetime.fromtimestamp(found[0], timezone.utc), found[1]
        latest = cam.main.latest_frame() if cam.main is not None else None
        if latest is None and cam.sub is not None:  # no main-stream picture: the sub-stream's, smaller
            latest = cam.sub.latest_frame()
        if latest is None:
            raise CameraUnavailable(f"camera {camera_id} has no picture yet")
        return latest.time, frame_bgr(latest)

    def _lines(self, camera_id: str, taken: datetime, violation_text: str) -> list[str]:
        cam = self._get(camera_id)
        local = taken.astimezone(self.tz)
        return [
            " ".join(x for x in (self.site, self.device, camera_id) if x),
            f"{local:%Y-%m-%d %H:%M:%S} {local:%z} ({self.tz.key})",
            violation_text,
            cam.cfg.osd_text,
        ]

    def hold_clip(self, camera_id: str, around: datetime, pre_s: float | None = None) -> None:
        """Keep the video a clip around `around` needs until that clip is cut (`clip_info` lets it go).

        Called when a violation is reported. The ring holds pre seconds and a margin, so without
        this a clip cut post seconds later (or after a queue of evidence jobs) would open late.
        """
        cam = self._get(camera_id)
        if cam.main is None or cam.main.ring is None:
            return
        start = around.timestamp() - (cam.cfg.clip_pre_s if pre_s is None else pre_s)
        cam.main.ring.pin(start)
        oldest = cam.main.ring.oldest()
        if oldest is not None and oldest > start:
            log.warning("camera %s: the clip for %s will open %.1f s late: the video before %s has left the ring "
                        "(reported %.1f s after the event)", camera_id, around.isoformat(), oldest - start,
                        datetime.fromtimestamp(oldest, timezone.utc).isoformat(), time.time() - around.timestamp())

    def clip_info(self, camera_id: str, around: datetime, pre_s: float | None = None, post_s: float | None = None,
                  *, path: Path | None = None, timeout_s: float | None = None) -> ClipInfo:
        """Wait until `post_s` after `around` is recorded, then remux [around - pre_s, around + post_s].

        The clip starts at the keyframe at or before its start. If the stream dies meanwhile,
        what was recorded is written (check ClipInfo.end); raises ClipError when there is nothing.
        """
        cam = self._get(camera_id)
        if cam.main is None or cam.main.ring is None:
            raise CameraUnavailable(f"camera {camera_id} records no video")
        pre = cam.cfg.clip_pre_s if pre_s is None else pre_s
        post = cam.cfg.clip_post_s if post_s is None else post_s
        start = around.timestamp() - pre
        end = around.timestamp() + post
        wait = (end - time.time()) + cam.cfg.watchdog_s + 2.0 if timeout_s is None else timeout_s
        if not cam.main.ring.wait_until(end, wait):
            log.warning("camera %s: clip until %s is incomplete (stream stalled)", camera_id, around + timedelta(
                seconds=post))
        try:
            if path is None:
                base = self.clip_dir or Path("/tmp")
                base.mkdir(parents=True, exist_ok=True)
                path = base / f"{camera_id}_{around.astimezone(timezone.utc):%Y%m%dT%H%M%S_%f}Z.mp4"
            return cam.main.ring.write_clip(start, end, path)
        finally:
            cam.main.ring.unpin(start)  # hold_clip's, if it was held

    def clip(self, camera_id: str, around: datetime, pre_s: float | None = None, post_s: float | None = None,
             *, path: Path | None = None, timeout_s: float | None = None) -> Path:
        """As clip_info(), returning the MP4's path."""
        return self.clip_info(camera_id, around, pre_s, post_s, path=path, timeout_s=timeout_s).path

    # --- internals -------------------------------------------------------------------------

    def _get(self, camera_id: str) -> _Camera:
        try:
            return self._cameras[camera_id]
        except KeyError:
            raise CameraUnavailable(f"no camera {camera_id!r} (configured: {', '.join(self._cameras)})") from None

    def _violation(self, violation: Violation) -> None:
        (log.warning if violation.state == "started" else log.info)(
            "camera %s: %s %s %s", violation.source, violation.kind, violation.state, violation.figures.get("reason"))
        try:
            self.on_violation(violation)
        except Exception:
            log.exception("violation consumer failed")

    def _frame(self, frame: CameraFrame) -> None:
        try:
            self.on_frame(frame)
        except Exception:
            log.exception("frame consumer failed")


def _ignore(item: object) -> None:
    pass


__all__ = ["CameraFrame", "CameraUnavailable", "CamerasComponent", "ClipError", "ClipInfo"]
