"""Cameras meet detectors: frames go to the detectors each camera lists, detections become violations.

Detectors know tracks and persistence (a plume confirmed over 3 analyses, a zone uncovered
for 30 minutes); this module only gives those confirmations the violation life cycle
(`started` / `ended`) the rest of the core speaks, and supplies snapshots and clips as
evidence for every violation, whether a camera or a meter raised it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from detectors import registry
from detectors.pool import ModelPool
from detectors.registry import CameraView, Detector
from detectors.types import Detection
from edge_agent.config import AgentConfig
from edge_agent.config.cameras import CameraConfig
from edge_agent.config.rules import Timing
from edge_agent.evidence.bundle import EvidenceFile
from edge_agent.rules.tracker import Condition, Tracker
from edge_agent.types import Violation

log = logging.getLogger(__name__)

ViolationSink = Callable[[Violation], None]

# How long a detector's confirmation may lapse before its violation ends.
DETECTION_TIMING = {
    "black_smoke": Timing(min_duration_s=0, clear_s=30, cooldown_s=60, ongoing_every_s=300),
    "bare_soil": Timing(min_duration_s=0, clear_s=60, cooldown_s=600, ongoing_every_s=1800),
}
TEXT = {
    "black_smoke": "black smoke, Ringelmann grade {ringelmann}",
    "bare_soil": "zone {zone}: {uncovered_ratio} of the surface uncovered",
    "unwashed_vehicle": "vehicle left without washing (dwell {dwell_s} s)",
}


def build_detectors(camera: CameraConfig, config: AgentConfig, pool: ModelPool | None = None) -> list[Detector]:
    """The detector instances one camera runs (each keeps its own per-camera state)."""
    from detectors.geometry import as_polygon

    view = CameraView(camera.id, {name: as_polygon(pts) for name, pts in camera.zones.items()})
    pool = pool or ModelPool()
    return [registry.build(config.detectors.settings(name), view, pool) for name in camera.detectors]


class Vision:
    """Runs each camera's detectors on its analysis frames and raises their violations."""

    name = "detectors"

    def __init__(self, config: AgentConfig, sink: ViolationSink):
        self.sink = sink
        self.detectors: dict[str, list[Detector]] = {}
        self.errors: dict[str, str] = {}
        for cam in config.cameras:
            if not cam.enabled or not cam.detectors:
                continue
            try:
                self.detectors[cam.id] = build_detectors(cam, config)
            except Exception as exc:  # a bad model file must not take the cameras down
                self.errors[cam.id] = str(exc)
                log.error("camera %s: detectors not started: %s", cam.id, exc)
        self._trackers: dict[str, Tracker] = {}
        self._lock = threading.Lock()
        self.analysed = 0
        self.dropped = 0
        self.ms_last: dict[str, float] = {}
        # One worker per camera with a one-frame slot: the capture thread never waits on a
        # detector, and a slow box analyses the newest frame rather than a backlog.
        self._slots: dict[str, queue.Queue[Any]] = {cam: queue.Queue(maxsize=1) for cam in self.detectors}
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for cam, slot in self._slots.items():
            thread = threading.Thread(target=self._work, args=(slot,), name=f"detect-{cam}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        for slot in self._slots.values():
            _replace(slot, None)
        for thread in self._threads:
            thread.join(3)

    def alive(self) -> bool:
        return all(t.is_alive() for t in self._threads)

    def health(self) -> dict[str, Any]:
        return {"state": "degraded" if self.errors else "ok", "cameras": sorted(self.detectors),
                "analysed": self.analysed, "dropped": self.dropped, "errors": self.errors,
                "ms_last": {k: round(v, 1) for k, v in self.ms_last.items()}}

    def on_frame(self, camera_frame: Any) -> None:
        """From a camera thread: hand the frame to that camera's detector worker."""
        slot = self._slots.get(camera_frame.frame.camera_id)
        if slot is not None and _replace(slot, camera_frame):
            self.dropped += 1

    def _work(self, slot: queue.Queue[Any]) -> None:
        while True:
            item = slot.get()
            if item is None:
                return
            self.analyse(item)

    def analyse(self, camera_frame: Any) -> None:
        """Run the camera's detectors on one analysis frame."""
        frame = camera_frame.frame
        if camera_frame.tampered:
            return  # a covered or moved view says nothing about the site
        for det in self.detectors.get(frame.camera_id, ()):
            t0 = time.perf_counter()
            try:
                found = det.analyse(frame.image, frame.time, motion=camera_frame.motion)
            except Exception as exc:
                self.errors[frame.camera_id] = f"{type(det).__name__}: {exc}"
                log.exception("detector %s on %s failed", type(det).__name__, frame.camera_id)
                continue
            self.ms_last[type(det).__name__] = (time.perf_counter() - t0) * 1000
            for detection in found:
                self.on_detection(detection)
        self.analysed += 1

    def on_detection(self, d: Detection) -> None:
        kind = d.kind
        figures = _figures(d)
        message = TEXT.get(kind, kind).format_map(_Safe(figures))
        if kind == "unwashed_vehicle":
            if d.confirmed:  # an event in a moment: started and ended together
                started = d.time
                key = f"{kind}:{d.camera}:{d.key}"
                for state in ("started", "ended"):
                    self.sink(Violation(kind, state, key, d.time, started, d.camera, figures, message))
            return
        timing = DETECTION_TIMING.get(kind)
        if timing is None:
            return
        with self._lock:
            tracker = self._trackers.get(f"{kind}:{d.camera}:{d.key}")
            if tracker is None:
                if not d.confirmed:
                    return
                tracker = self._trackers[f"{kind}:{d.camera}:{d.key}"] = Tracker(kind, d.camera, timing)
            violation = tracker.update(d.time, Condition.OVER if d.confirmed else Condition.CLEAR, figures, message)
        if violation is not None:
            self.sink(violation)


class CameraEvidence:
    """Snapshot and clip for a violation's bundle, from its own camera or the site's first."""

    def __init__(self, cameras: Any, camera_ids: Sequence[str]):
        self.cameras = cameras
        self.camera_ids = list(camera_ids)

    def __call__(self, violation: Violation) -> list[EvidenceFile]:
        camera = violation.source if violation.source in self.camera_ids else (
            self.camera_ids[0] if self.camera_ids else None)
        if camera is None:
            return []
        files: list[EvidenceFile] = []
        text = f"{violation.kind} {violation.message}"[:80]
        try:
            # The latest analysed frame (<= 1 s old at 1 fps): decoding the moment from the packet ring
            # would start a second 1080p decoder and its frame pool (tens of MB) for each bundle.
            files.append(EvidenceFile("snapshot.jpg", self.cameras.snapshot(camera, text)))
        except Exception as exc:
            log.warning("evidence snapshot from %s failed: %s", camera, exc)
        try:
            clip = self.cameras.clip(camera, violation.time)  # the ring holds seconds, not the whole breach
            files.append(EvidenceFile("clip.mp4", clip.read_bytes()))
            clip.unlink(missing_ok=True)  # the bundle holds its own copy
        except Exception as exc:
            log.warning("evidence clip from %s failed: %s", camera, exc)
        return files


def _replace(slot: queue.Queue[Any], item: Any) -> bool:
    """Put `item` in a one-slot queue, displacing what is there; True if something was displaced."""
    displaced = False
    try:
        slot.get_nowait()
        displaced = True
    except queue.Empty:
        pass
    try:
        slot.put_nowait(item)
    except queue.Full:
        displaced = True
    return displaced


def snapshot_command(cameras: Any, store: Any, publish: Callable[..., Any] | None) -> Callable[[Any], Any]:
    """The bureau's `snapshot` command: a watermarked JPEG, as a signed bundle of its own."""
    from edge_agent.evidence.publish import publish_bundle
    from edge_agent.remote import AckResult

    def handle(command: Any) -> Any:
        ids = cameras.camera_ids()
        camera = command.args.get("camera") or (ids[0] if ids else None)
        if camera not in ids:
            return AckResult("failed", "unknown_camera", f"no camera {camera!r}; configured: {', '.join(ids)}")
        try:
            jpeg = cameras.snapshot(camera, f"bureau snapshot {command.id}")
        except Exception as exc:
            return AckResult("failed", "camera_unavailable", str(exc))
        evidence = store.create([EvidenceFile("snapshot.jpg", jpeg)],
                                subject={"command": command.id, "name": "snapshot", "camera": camera})
        if publish is not None:
            publish_bundle(evidence, publish)
        return AckResult("done", data={"evidence": evidence.id, "camera": camera})

    return handle


def _figures(d: Detection) -> dict[str, float | str | None]:
    out: dict[str, float | str | None] = {"detector": d.detector, "score": round(float(d.score), 3)}
    for k, v in d.metrics.items():
        out[k] = round(float(v), 3) if isinstance(v, (int, float)) else str(v)
    return out


class _Safe(dict):
    def __missing__(self, key: str) -> str:
        return "?"
