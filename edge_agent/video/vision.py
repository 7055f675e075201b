"""Cameras meet detectors: frames go to the detectors each camera lists, detections become violations.

Which detectors exist, their parameters and how each is built come from the registry in
detectors/registry.py; this module gives each camera one worker thread (two when some of its
detectors read its sub-stream: edge_agent/video/streams.py) and, per analysed frame, one
`SharedFeatures` so detectors on a camera share backbone passes. Models are
loaded once for the whole box (one `ModelPool`): each interpreter is locked for a pass, and
a camera waits only when another camera's pass on that model is running (`health()` counts it).

Detectors know tracks and persistence (a plume confirmed over 3 analyses, a zone uncovered
for 30 minutes); this module only gives those confirmations the violation life cycle
(`started` / `ended`) the rest of the core speaks; a started violation carries what was seen
(its outlines, the detector's evidence crops) so the bundle can show it. Site activity
(people and machines) goes to the ActivityLog, to back up a noise-based `night_work`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from detectors import registry
from detectors.geometry import as_polygon
from detectors.pool import ModelPool
from detectors.registry import CameraView, Detector
from detectors.shared import SharedFeatures
from detectors.types import Detection
from edge_agent.clock import SYSTEM_CLOCK, Clock
from edge_agent.config.cameras import CameraConfig
from edge_agent.config.detectors import DetectorsConfig
from edge_agent.config.rules import Timing
from edge_agent.heap import HeapTrim
from edge_agent.rules.tracker import Condition, Tracker
from edge_agent.types import Seen, Violation
from edge_agent.video.activity import Activity, ActivityLog
from edge_agent.video.evidence import evidence_jpegs
from edge_agent.video.streams import plan_streams

log = logging.getLogger(__name__)

ViolationSink = Callable[[Violation], None]

def camera_view(camera: CameraConfig) -> CameraView:
    return CameraView(camera.id, {name: as_polygon(pts) for name, pts in camera.zones.items()})


def build_detectors(camera: CameraConfig, detectors: DetectorsConfig, pool: ModelPool,
                    names: Sequence[str] | None = None) -> list[Detector]:
    """The detector instances one camera runs (each keeps its own per-camera state).

    Those on the COCO detector run first on each frame, so that bare soil finds the frame's
    vehicles and people already there (SharedFeatures.objects) and leaves the ground they hide.
    """
    view = camera_view(camera)
    built = [registry.build(detectors.settings(name), view, pool)
             for name in (camera.detectors if names is None else names)]
    return sorted(built, key=lambda det: not hasattr(det, "objects"))


def _worker_key(camera_id: str, stream: str) -> str:
    """A camera's detectors on its sub-stream get a worker (and one-frame slot) of their own."""
    return camera_id if stream == "main" else f"{camera_id}#{stream}"


class _CameraWorker:
    """One camera's detectors and the thread that runs them."""

    def __init__(self, camera_id: str, detectors: list[Detector], vision: Vision, stream: str = "main"):
        self.camera_id = camera_id
        self.stream = stream
        self.detectors = detectors
        self.vision = vision
        # A one-frame slot: the capture thread never waits on a detector, and a slow box
        # analyses the newest frame rather than a backlog.
        self.slot: queue.Queue[Any] = queue.Queue(maxsize=1)
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.thread is not None and self.thread.is_alive():
            return
        _drain(self.slot)
        self.thread = threading.Thread(target=self._work, name=f"detect-{_worker_key(self.camera_id, self.stream)}",
                                       daemon=True)
        self.thread.start()

    def stop(self) -> None:
        _replace(self.slot, None)
        if self.thread is not None:
            self.thread.join(3)

    def _work(self) -> None:
        while True:
            try:
                item = self.slot.get(timeout=1.0)
            except queue.Empty:
                continue
            if item is None:
                return
            self.vision.analyse(item)
            del item  # not the last frame's 6 MB while waiting for the next
            self.vision.heap.maybe()  # what this frame's arrays freed goes back to the kernel


class Vision:
    """The component named "detectors": runs each camera's detectors and raises their violations."""

    name = "detectors"

    def __init__(self, cameras: Sequence[CameraConfig], detectors: DetectorsConfig, report: ViolationSink, *,
                 activity: ActivityLog | None = None, clock: Clock = SYSTEM_CLOCK, adapted_dir: Path | None = None,
                 model_cache_dir: Path | None = None):
        self.report = report
        self.activity = activity
        self.clock = clock
        self.errors: dict[str, str] = {}
        self._workers: dict[str, _CameraWorker] = {}
        # One pool for the box: each model loaded once, whichever cameras run it (heads a site
        # trained with `edge-agent adapt` win).
        self.pool = ModelPool(adapted_dir=adapted_dir, cache_dir=model_cache_dir)
        for cam in cameras:
            if not cam.enabled or not cam.detectors:
                continue
            # Detectors that need the full rate may read the camera's sub-stream (edge_agent/video/streams.py).
            plan = plan_streams(cam, detectors)
            try:
                built = {stream: build_detectors(cam, detectors, self.pool, names)
                         for stream, names in (("main", plan.main), ("sub", plan.sub)) if names}
            except Exception as exc:  # a bad model file must not take the cameras down
                self.errors[cam.id] = str(exc)
                log.error("camera %s: detectors not started: %s", cam.id, exc)
                continue
            for stream, dets in built.items():
                self._workers[_worker_key(cam.id, stream)] = _CameraWorker(cam.id, dets, self, stream)
        self.heap = HeapTrim(every_s=10.0)
        self._trackers: dict[str, Tracker] = {}
        # tracker key -> (clock.monotonic(), figures, message) of its last report
        self._reported: dict[str, tuple[float, dict[str, Any], str]] = {}
        self._kinds = registry.violation_kinds()  # which detection kinds are violations, and how
        self._lock = threading.Lock()
        self.analysed = 0
        self.dropped = 0
        self.ms_last: dict[str, float] = {}

    # --- component ----------------------------------------------------------------------------

    def start(self) -> None:
        for worker in self._workers.values():
            worker.start()

    def stop(self) -> None:
        for worker in self._workers.values():
            worker.stop()

    def alive(self) -> bool:
        return all(w.thread is None or w.thread.is_alive() for w in self._workers.values())

    def health(self) -> dict[str, Any]:
        return {"state": "degraded" if self.errors else "ok",
                "cameras": sorted({w.camera_id for w in self._workers.values()}),
                "analysed": self.analysed, "dropped": self.dropped, "errors": dict(self.errors),
                "ms_last": {k: round(v, 1) for k, v in self.ms_last.items()},
                "models": self.pool.loaded(), "inference": self.pool.contention(), "heap_trims": self.heap.trims}

    def detectors(self, camera_id: str) -> list[Detector]:
        return [d for w in self._workers.values() if w.camera_id == camera_id for d in w.detectors]

    # --- frames in --------------------------------------------------------------------------------

    def on_frame(self, camera_frame: Any) -> None:
        """From a camera thread: hand the frame to that camera's detector worker."""
        worker = self._workers.get(_worker_key(camera_frame.frame.camera_id, getattr(camera_frame, "stream", "main")))
        if worker is not None and _replace(worker.slot, camera_frame):
            self.dropped += 1

    def analyse(self, camera_frame: Any) -> None:
        """Run the camera's detectors on one analysis frame (on that camera's worker thread)."""
        frame = camera_frame.frame
        if camera_frame.tampered:
            return  # a covered or moved view says nothing about the site
        worker = self._workers.get(_worker_key(frame.camera_id, getattr(camera_frame, "stream", "main")))
        if worker is None:
            return
        shared = SharedFeatures(frame.image, self.pool)
        for det in worker.detectors:
            t0 = time.perf_counter()
            try:
                found = det.analyse(frame.image, frame.time, motion=camera_frame.motion, shared=shared)
            except Exception as exc:
                self.errors[frame.camera_id] = f"{det.name}: {exc}"
                log.exception("detector %s on %s failed", det.name, frame.camera_id)
                continue
            self.ms_last[det.name] = (time.perf_counter() - t0) * 1000
            for detection in found:
                self.on_detection(detection)
        self.lapse(frame.camera_id, frame.time)
        self.analysed += 1

    def lapse(self, camera_id: str, now: datetime) -> None:
        """End the camera's lasting violations whose track has not been reported for `clear_s`; forget idle trackers.

        A detector reports a track unconfirmed while it still sees it, but a plume that blew
        away or a vehicle that left is simply not reported again: without this its violation
        would stay open for ever. The lapse counts from the last report on the monotonic
        clock, so a detector that looks only every few seconds (bare_soil) keeps its track.
        """
        mono = self.clock.monotonic()
        ended: list[Violation] = []
        with self._lock:
            for key, tracker in list(self._trackers.items()):
                if tracker.source != camera_id:
                    continue
                last, figures, message = self._reported.get(key, (mono, {}, ""))
                if tracker.active and mono - last >= tracker.timing.clear_s:
                    # clear since the last report (or since an earlier unconfirmed one), and now
                    violation = (tracker.update(now, Condition.CLEAR, figures, message, elapsed=last)
                                 or tracker.update(now, Condition.CLEAR, figures, message, elapsed=mono))
                    if violation is not None:
                        ended.append(violation)
                if not tracker.active and (tracker.last_end is None
                                           or mono - tracker.last_end >= tracker.timing.cooldown_s):
                    del self._trackers[key]  # past its cooldown: a new track starts afresh
                    self._reported.pop(key, None)
        for violation in ended:
            log.info("%s on %s: no longer seen for %.0f s, ended", violation.kind, camera_id,
                     self._kinds[violation.kind].clear_s)
            self.report(violation)

    # --- detections out ---------------------------------------------------------------------------

    def on_detection(self, d: Detection) -> None:
        kind = d.kind
        if kind == "site_activity":
            if self.activity is not None:
                m = d.metrics
                self.activity.add(Activity(d.camera, d.time, int(float(m.get("people", 0))),
                                           int(float(m.get("vehicles", 0))), int(float(m.get("moving", 0))),
                                           tuple(d.regions)))
            return
        how = self._kinds.get(kind)
        if how is None:
            return  # not a violation (e.g. a washed vehicle's exit, a covered load)
        figures = _figures(d)
        message = how.text.format_map(_Safe(figures))
        if how.moment:
            if d.confirmed:
                key = f"{kind}:{d.camera}:{d.key}"
                for state in ("started", "ended"):
                    self.report(Violation(kind, state, key, d.time, d.time, d.camera, figures, message,
                                          seen=_seen(d, message) if state == "started" else None, moment=True))
            return
        timing = Timing(min_duration_s=0, clear_s=how.clear_s, cooldown_s=how.cooldown_s,
                        ongoing_every_s=how.ongoing_every_s)
        key = f"{kind}:{d.camera}:{d.key}"
        with self._lock:
            tracker = self._trackers.get(key)
            if tracker is None:
                if not d.confirmed:
                    return
                tracker = self._trackers[key] = Tracker(kind, d.camera, timing)
            self._reported[key] = (self.clock.monotonic(), figures, message)
            violation = tracker.update(d.time, Condition.OVER if d.confirmed else Condition.CLEAR, figures, message,
                                       elapsed=self.clock.monotonic())
        if violation is not None:
            if violation.state == "started":
                violation = replace(violation, seen=_seen(d, message))
            self.report(violation)


def _seen(d: Detection, message: str) -> Seen:
    """What was seen, its pictures already JPEG (as the bundle will hold them).

    A started violation stays in memory while it is open (the violation path's open map, the
    evidence queue): a 1080p BGR snapshot is 6 MB there, its JPEG ~0.3 MB. Made only for a
    started violation: a confirmed plume or zone is reported every frame.
    """
    return Seen(d.camera, message, tuple(d.regions), evidence_jpegs(d.images))


def _replace(slot: queue.Queue[Any], item: Any) -> bool:
    """Put `item` in a one-slot queue, displacing what is there; True if something was displaced."""
    displaced = _drain(slot)
    try:
        slot.put_nowait(item)
    except queue.Full:
        displaced = True
    return displaced


def _drain(slot: queue.Queue[Any]) -> bool:
    try:
        slot.get_nowait()
        return True
    except queue.Empty:
        return False


def _figures(d: Detection) -> dict[str, float | str | None]:
    out: dict[str, float | str | None] = {"detector": d.detector, "score": round(float(d.score), 3)}
    for k, v in d.metrics.items():
        out[k] = round(float(v), 3) if isinstance(v, (int, float)) else str(v)
    return out


class _Safe(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"
