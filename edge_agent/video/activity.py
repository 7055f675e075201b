"""Site activity seen on camera, kept for a few minutes, to back up a noise-based `night_work`.

The `site_activity` detector reports, per analysed frame, the people and machines it sees.
When the rules raise `night_work` (noise above the background in restricted hours with no
permit), the violation path asks this log what the cameras saw over the rule's window: the
event then carries the video's word (people / machines seen moving, on which cameras) and
its evidence snapshot outlines them.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from edge_agent.types import Outline, Seen, Violation

KEEP_S = 1800.0  # the longest rule window it may be asked about, in seconds


@dataclass(frozen=True)
class Activity:
    """People and machines a camera saw in one analysed frame."""

    camera: str
    time: datetime
    people: int
    vehicles: int
    moving: int
    outlines: tuple[Outline, ...]


class ActivityLog:
    """The last half hour of site activity per camera (written by vision, read by the violation path)."""

    def __init__(self, keep_s: float = KEEP_S):
        self.keep = timedelta(seconds=keep_s)
        self._by_camera: dict[str, deque[Activity]] = {}
        self._lock = threading.Lock()

    def add(self, entry: Activity) -> None:
        with self._lock:
            buf = self._by_camera.setdefault(entry.camera, deque())
            buf.append(entry)
            while buf and entry.time - buf[0].time > self.keep:
                buf.popleft()

    def between(self, start: datetime, end: datetime) -> list[Activity]:
        """Frames with people or machines seen in [start, end], every camera, oldest first."""
        with self._lock:
            found = [a for buf in self._by_camera.values() for a in buf
                     if start <= a.time <= end and (a.people or a.vehicles)]
        return sorted(found, key=lambda a: a.time)

    def corroborate(self, violation: Violation) -> Violation:
        """`night_work` with what the cameras saw over its window added; other violations unchanged."""
        if violation.kind != "night_work" or violation.state != "started":
            return violation
        window = float(violation.figures.get("window_s") or 300.0)
        seen = self.between(violation.time - timedelta(seconds=window), violation.time)
        moving = [a for a in seen if a.moving]
        figures: dict[str, Any] = dict(violation.figures)
        figures.update({
            "video_corroborated": "yes" if moving else "no",
            "video_frames_with_activity": len(seen),
            "video_frames_moving": len(moving),
            "video_people_max": max((a.people for a in seen), default=0),
            "video_machines_max": max((a.vehicles for a in seen), default=0),
            "video_cameras": ",".join(sorted({a.camera for a in seen})),
        })
        best = max(seen, key=lambda a: (a.moving, a.people + a.vehicles, a.time), default=None)
        marked = Seen(best.camera, "people / machines at work", best.outlines) if best is not None else None
        return replace(violation, figures=figures, seen=marked or violation.seen)
