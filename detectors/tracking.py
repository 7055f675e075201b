"""A small greedy tracker for blobs from a fixed camera: boxes matched frame to frame by
overlap or centre distance. Enough for slow trucks and plumes at ~1 analysis per second."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import count

from detectors.geometry import iou


@dataclass
class Track:
    id: int
    box: tuple[float, float, float, float]  # normalised x0, y0, x1, y1
    first_seen: int
    last_seen: int
    missed: int = 0
    state: dict[str, object] = field(default_factory=dict)  # detector-owned data

    @property
    def centre(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2


class Tracker:
    """Greedy matching: highest IoU first, then nearest centre within `max_distance`."""

    def __init__(self, max_distance: float = 0.2, max_missed: int = 3, min_iou: float = 0.1) -> None:
        self.max_distance = max_distance
        self.max_missed = max_missed
        self.min_iou = min_iou
        self.tracks: dict[int, Track] = {}
        self._ids = count(1)
        self._step = 0

    def update(self, boxes: list[tuple[float, float, float, float]]) -> tuple[list[Track], list[Track]]:
        """Match boxes to tracks. Returns (track per box, in order; tracks dropped this step)."""
        self._step += 1
        pairs = []
        for bi, box in enumerate(boxes):
            bc = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
            for tid, tr in self.tracks.items():
                overlap = iou(box, tr.box)
                tc = tr.centre
                dist = ((bc[0] - tc[0]) ** 2 + (bc[1] - tc[1]) ** 2) ** 0.5
                if overlap >= self.min_iou or dist <= self.max_distance:
                    pairs.append((-overlap, dist, bi, tid))
        pairs.sort()
        assigned: dict[int, Track] = {}
        used: set[int] = set()
        for _, _, bi, tid in pairs:
            if bi in assigned or tid in used:
                continue
            tr = self.tracks[tid]
            tr.box, tr.last_seen, tr.missed = boxes[bi], self._step, 0
            assigned[bi] = tr
            used.add(tid)
        for bi, box in enumerate(boxes):
            if bi not in assigned:
                tr = Track(next(self._ids), box, self._step, self._step)
                self.tracks[tr.id] = tr
                assigned[bi] = tr
                used.add(tr.id)
        dropped = []
        for tid in list(self.tracks):
            if tid not in used:
                tr = self.tracks[tid]
                tr.missed += 1
                if tr.missed > self.max_missed:
                    dropped.append(self.tracks.pop(tid))
        return [assigned[i] for i in range(len(boxes))], dropped
