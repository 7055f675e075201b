"""People and vehicles from the shipped COCO detector (SSD MobileNet V1, LiteRT), and a tracker for them.

One SSD pass per analysed frame serves every detector of a camera (washing, uncovered_load,
site_activity): `detect_objects()` goes through the frame's `SharedFeatures` (and, when a
caller has none, the detector's own last-frame cache), keyed by model, crop and tiling. The
model is loaded once for the box through `ModelPool.objects()` (its pass holds a lock).

COCO classes are mapped to the groups the site cares about (card `groups`): person; vehicle
= car + bus + truck (night gantry views of trucks come out as "bus"); motorcycle. Boxes are
normalised (x0, y0, x1, y1) in the whole frame, whatever crop or tiles were used.

`BoxTracker` follows those boxes: IoU against a constant-velocity prediction, a second pass
for low-score boxes that only keeps known tracks alive (ByteTrack), coasting through missed
frames, and refusing a box that swallows two live tracks (two touching trucks merged by the
SSD's own NMS), so touching vehicles stay two tracks.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import count
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from pydantic import Field, model_validator

from detectors.background import half
from detectors.card import ModelError, sha256_file
from detectors.geometry import iou
from detectors.registry import DetectorParams

log = logging.getLogger(__name__)

MODEL_NAME = "ssd_mobilenet_v1_coco_int8"
MODELS_DIR = Path(__file__).resolve().parent / "models"
Box4 = tuple[float, float, float, float]  # normalised x0, y0, x1, y1
DEFAULT_GROUPS: Mapping[str, tuple[str, ...]] = {
    "person": ("person",), "vehicle": ("car", "bus", "truck"), "motorcycle": ("motorcycle",),
}
FLOOR_SCORE = 0.3  # nothing below this leaves the detector: night false positives live under it


@dataclass(frozen=True)
class ObjectBox:
    """One detected object: its group (person, vehicle, motorcycle), COCO label, score and box."""

    group: str
    label: str
    score: float
    box: Box4

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


class ObjectParams(DetectorParams):
    """Parameters every detector built on the shared COCO detector takes.

    Detectors of one camera share one SSD pass only when they agree on `objects_model`,
    `crop` and `tiles`: keep those the same across a camera's detectors.
    """

    objects_model: Path | None = Field(
        None, description="An SSD-style .tflite (TFLite_Detection_PostProcess outputs) with its card (same name, "
        ".yaml) beside it; omit to use the shipped SSD MobileNet V1 COCO.",
    )
    threads: int = Field(1, ge=1, le=8, description="LiteRT threads for the object detector.")
    min_score: float = Field(
        0.5, ge=FLOOR_SCORE, lt=1,
        description="Detector score to count an object or start a track (models README: at least 0.5; "
        "night frames give false positives at 0.3-0.6).",
    )
    keep_score: float = Field(
        0.35, ge=FLOOR_SCORE, lt=1,
        description="Lower score that only keeps an existing track alive (occlusion, spray, touching vehicles).",
    )
    crop: tuple[float, float, float, float] | None = Field(
        None, description="Part of the frame the detector looks at, [x0, y0, x1, y1] normalised; omit for the "
        "whole frame. A tighter crop makes small vehicles and people bigger for the 300x300 model.",
    )
    tiles: tuple[int, int] = Field(
        (1, 1), description="Columns and rows of overlapping tiles over the crop, one SSD pass each (~10 ms on "
        "the build host, several times that on a Pi): for small people in a wide view.",
    )

    @model_validator(mode="after")
    def _objects(self) -> ObjectParams:
        if self.keep_score > self.min_score:
            raise ValueError("keep_score must not exceed min_score")
        if self.crop is not None:
            x0, y0, x1, y1 = self.crop
            if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
                raise ValueError("crop needs 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
        if not (1 <= self.tiles[0] <= 4 and 1 <= self.tiles[1] <= 4):
            raise ValueError("tiles: 1..4 columns and 1..4 rows")
        return self


def shrink_to(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize for a network input: 2x area halvings (OpenCV's fast path) while still twice too big, then linear.

    A single INTER_AREA resize from 1080p to 300x300 costs ~7 ms here; this costs ~0.7 ms
    and still averages pixels instead of skipping them (no aliasing of thin edges).
    """
    img = image
    while img.shape[1] >= 2 * width and img.shape[0] >= 2 * height:
        img = half(img)
    if img.shape[1] != width or img.shape[0] != height:
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
    return img


def tile_boxes(crop: Box4, tiles: tuple[int, int], overlap: float = 0.15) -> list[Box4]:
    """Normalised tile rectangles covering `crop`, neighbours overlapping by `overlap` of a tile."""
    x0, y0, x1, y1 = crop
    cols, rows = tiles
    out = []
    for r in range(rows):
        for c in range(cols):
            tw, th = (x1 - x0) / cols, (y1 - y0) / rows
            mx, my = (tw * overlap if cols > 1 else 0.0), (th * overlap if rows > 1 else 0.0)
            out.append((max(x0, x0 + c * tw - mx), max(y0, y0 + r * th - my),
                        min(x1, x0 + (c + 1) * tw + mx), min(y1, y0 + (r + 1) * th + my)))
    return out


def _contained(a: Box4, b: Box4) -> float:
    """Share of the smaller box inside the other."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return ix * iy / small if small > 0 else 0.0


def merge_boxes(boxes: Iterable[ObjectBox], max_iou: float = 0.5) -> list[ObjectBox]:
    """Per-group NMS across tiles: the same object cut by a tile edge is kept once."""
    kept: list[ObjectBox] = []
    for b in sorted(boxes, key=lambda o: -o.score):
        if not any(k.group == b.group and (iou(k.box, b.box) > max_iou or _contained(k.box, b.box) > 0.8)
                   for k in kept):
            kept.append(b)
    return kept


class ObjectDetector:
    """One loaded SSD, shared by every camera (ModelPool.objects()): each pass holds its lock."""

    def __init__(self, model_path: Path, card: Mapping[str, Any], labels: Sequence[str], threads: int = 1) -> None:
        from detectors.backbone import InferenceLock, open_interpreter

        self.path = model_path
        self.card = card
        self.labels = tuple(labels)
        groups = card.get("groups") or DEFAULT_GROUPS
        self.group_of = {label: str(g) for g, members in groups.items() for label in members}
        interp = open_interpreter(f"object detector {model_path}", threads, path=model_path)
        self._interp = interp
        inp = interp.get_input_details()[0]
        outs = interp.get_output_details()
        if len(outs) != 4:
            raise ModelError(f"object detector {model_path}: expected 4 outputs (boxes, classes, scores, count), "
                             f"got {len(outs)}")
        _, self.height, self.width, channels = (int(v) for v in inp["shape"])
        inp_card = card.get("input") or {}
        if (self.width, self.height, channels) != (int(inp_card.get("width", 0)), int(inp_card.get("height", 0)), 3):
            raise ModelError(f"object detector {model_path}: input {self.width}x{self.height}x{channels} does not "
                             f"match its card")
        if np.dtype(inp["dtype"]) != np.uint8:
            raise ModelError(f"object detector {model_path}: input must be uint8, got {inp['dtype']}")
        self._in = inp["index"]
        by_name = {o["name"]: o["index"] for o in outs}
        base = "TFLite_Detection_PostProcess"
        names = [base, f"{base}:1", f"{base}:2", f"{base}:3"]
        self._outs = [by_name[n] for n in names] if all(n in by_name for n in names) else [o["index"] for o in outs]
        self.key = str(card.get("sha256", ""))[:16]
        self.passes = 0  # SSD invocations so far: tests and health check the sharing with it
        self.lock = InferenceLock()
        self._last: tuple[Hashable, np.ndarray, tuple[ObjectBox, ...]] | None = None

    def _invoke(self, tile_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = cv2.cvtColor(shrink_to(tile_bgr, self.width, self.height), cv2.COLOR_BGR2RGB)[None]
        with self.lock:
            self._interp.set_tensor(self._in, np.ascontiguousarray(x))
            self._interp.invoke()
            boxes, classes, scores, n = (self._interp.get_tensor(i).copy() for i in self._outs)
            self.passes += 1
        k = int(n.reshape(-1)[0])
        return boxes[0, :k], classes[0, :k], scores[0, :k]

    def detect(self, image_bgr: np.ndarray, crop: Box4 | None = None, tiles: tuple[int, int] = (1, 1),
               min_score: float = FLOOR_SCORE) -> tuple[ObjectBox, ...]:
        """Objects of the known groups at `min_score` or more, boxes normalised in the whole image."""
        h, w = image_bgr.shape[:2]
        found: list[ObjectBox] = []
        for tx0, ty0, tx1, ty1 in tile_boxes(crop or (0.0, 0.0, 1.0, 1.0), tiles):
            px0, py0 = round(tx0 * w), round(ty0 * h)
            px1, py1 = max(px0 + 2, round(tx1 * w)), max(py0 + 2, round(ty1 * h))
            boxes, classes, scores = self._invoke(image_bgr[py0:py1, px0:px1])
            sx, sy = (px1 - px0) / w, (py1 - py0) / h
            for (ymin, xmin, ymax, xmax), cls, score in zip(boxes, classes, scores, strict=True):
                label = self.labels[int(cls)] if 0 <= int(cls) < len(self.labels) else ""
                group = self.group_of.get(label)
                if group is None or float(score) < min_score:
                    continue
                box = (px0 / w + float(np.clip(xmin, 0, 1)) * sx, py0 / h + float(np.clip(ymin, 0, 1)) * sy,
                       px0 / w + float(np.clip(xmax, 0, 1)) * sx, py0 / h + float(np.clip(ymax, 0, 1)) * sy)
                if box[2] > box[0] and box[3] > box[1]:
                    found.append(ObjectBox(group, label, round(float(score), 4), box))
        return tuple(merge_boxes(found)) if tiles != (1, 1) else tuple(found)

    def detect_frame(self, image_bgr: np.ndarray, time: datetime, crop: Box4 | None = None,
                     tiles: tuple[int, int] = (1, 1)) -> tuple[ObjectBox, ...]:
        """`detect` once per frame: a second detector asking about the same image and time gets the same answer.

        The fallback for callers without a SharedFeatures; it holds the last image so its id
        cannot be reused by another array while cached.
        """
        key = (id(image_bgr), time, crop, tiles)
        last = self._last
        if last is not None and last[0] == key and last[1] is image_bgr:
            return last[2]
        result = self.detect(image_bgr, crop, tiles)
        self._last = (key, image_bgr, result)
        return result


def load_objects(override: Path | str | None = None, threads: int = 1) -> ObjectDetector:
    """The shipped SSD (or the site's own model with its card beside it), hash-checked against its card."""
    model_path = Path(override) if override else MODELS_DIR / f"{MODEL_NAME}.tflite"
    card_path = model_path.with_suffix(".yaml")
    if not card_path.is_file():
        raise ModelError(f"model card {card_path} not found: every model needs a card beside it")
    if not model_path.is_file():
        raise ModelError(f"model file {model_path} not found")
    try:
        card = yaml.safe_load(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ModelError(f"cannot read model card {card_path}: {exc}") from exc
    if not isinstance(card, dict) or "sha256" not in card or "labels_file" not in card:
        raise ModelError(f"{card_path}: a detector card needs at least sha256, labels_file and input")
    actual = sha256_file(model_path)
    if actual != str(card["sha256"]).lower():
        raise ModelError(f"model {model_path} does not match its card {card_path}: sha256 is {actual}, "
                         f"the card says {card['sha256']}")
    labels_path = model_path.parent / str(card["labels_file"])
    try:
        lines = labels_path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ModelError(f"label map {labels_path} not readable: {exc}") from exc
    labels = [line.strip() for line in lines]
    det = ObjectDetector(model_path, card, labels, threads)
    log.info("loaded object detector %s (%d labels, %d threads)", card.get("name", model_path.name), len(labels),
             threads)
    return det


def detect_objects(detector: ObjectDetector, image: np.ndarray, time: datetime, shared: Any,
                   params: ObjectParams) -> tuple[ObjectBox, ...]:
    """This frame's objects, computed once per frame and camera whoever asks first."""
    crop, tiles = params.crop, tuple(params.tiles)
    assert len(tiles) == 2

    def compute() -> tuple[ObjectBox, ...]:
        return detector.detect_frame(image, time, crop, (tiles[0], tiles[1]))

    if shared is not None and hasattr(shared, "get"):
        found: tuple[ObjectBox, ...] = shared.get(("objects", detector.key, crop, tiles), compute)
        return found
    return compute()


# --- tracking ---------------------------------------------------------------------------------------------


def _shift(box: Box4, dx: float, dy: float) -> Box4:
    return box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy


def _clip(box: Box4) -> Box4:
    x0, y0, x1, y1 = (min(1.0, max(0.0, v)) for v in box)
    return x0, y0, max(x1, x0 + 1e-6), max(y1, y0 + 1e-6)


def _at_edge(box: Box4, margin: float = 0.01) -> bool:
    return box[0] <= margin or box[1] <= margin or box[2] >= 1 - margin or box[3] >= 1 - margin


@dataclass
class ObjectTrack:
    """One followed object. `box` is the filtered box at the last observation; `predict(t)` extrapolates it."""

    id: int
    box: Box4
    label: str
    score: float
    first_time: datetime
    seen_time: datetime  # last observation
    velocity: tuple[float, float] = (0.0, 0.0)  # of the box centre, image widths and heights per second
    hits: int = 1
    missed: int = 0  # analyses in a row without an observation
    observed: bool = True  # matched in the latest update
    scores: list[float] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)  # detector-owned data

    def predict(self, time: datetime, horizon_s: float = 2.0) -> Box4:
        """Constant velocity for at most `horizon_s` past the last observation, then it stands still."""
        dt = min(max((time - self.seen_time).total_seconds(), 0.0), horizon_s)
        return _shift(self.box, self.velocity[0] * dt, self.velocity[1] * dt)

    @property
    def centre(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2

    @property
    def mean_score(self) -> float:
        return float(np.mean(self.scores)) if self.scores else self.score

    def speed(self) -> float:
        """Centre speed, image widths/heights per second."""
        return float((self.velocity[0] ** 2 + self.velocity[1] ** 2) ** 0.5)


class BoxTracker:
    """Greedy multi-object tracker for a fixed camera analysed at ~1 frame per second.

    - association by IoU with each track's predicted box, then by centre distance (relative to
      the track's size) for fast movers whose boxes no longer overlap;
    - boxes between `keep_score` and `min_score` only continue existing tracks (ByteTrack);
    - a box much wider or taller than a track's is not that track (frame-edge cuts excepted);
    - a box that covers two live tracks is a merge of touching objects: it updates neither and
      both coast on their prediction;
    - a new track never starts inside a live one: a missed vehicle coasts, keeping its history;
    - a track is confirmed after `min_hits` observations and dropped after `max_missed` missed
      analyses or `max_coast_s` seconds unseen (tentative tracks after one miss).
    """

    def __init__(self, min_score: float = 0.5, keep_score: float = 0.35, min_hits: int = 2,
                 max_missed: int = 6, max_coast_s: float = 8.0, min_iou: float = 0.1, max_jump: float = 1.0,
                 horizon_s: float = 2.0, alpha: float = 0.7, beta: float = 0.6, max_growth: float = 1.35,
                 size_alpha: float = 0.3) -> None:
        self.min_score = min_score
        self.alpha = alpha  # weight of a new observation in the position (and size)
        self.beta = beta  # weight of a new observation's residual in the velocity
        self.max_growth = max_growth
        self.size_alpha = size_alpha  # weight of a new observation in the size (edges excepted: cut boxes)
        self.keep_score = keep_score
        self.min_hits = min_hits
        self.max_missed = max_missed
        self.max_coast_s = max_coast_s
        self.min_iou = min_iou
        self.max_jump = max_jump  # centre distance gate, in track diagonals
        self.horizon_s = horizon_s
        self.tracks: dict[int, ObjectTrack] = {}
        self._ids = count(1)

    def confirmed(self, track: ObjectTrack) -> bool:
        return track.hits >= self.min_hits

    def _merged(self, box: Box4, predicted: Mapping[int, Box4]) -> bool:
        """True when `box` covers most of two or more distinct live tracks: touching objects seen as one."""
        area = (box[2] - box[0]) * (box[3] - box[1])
        covered: list[Box4] = []
        for p in predicted.values():
            parea = (p[2] - p[0]) * (p[3] - p[1])
            ix = max(0.0, min(box[2], p[2]) - max(box[0], p[0]))
            iy = max(0.0, min(box[3], p[3]) - max(box[1], p[1]))
            if parea > 0 and ix * iy / parea >= 0.6 and area >= 1.1 * parea:
                covered.append(p)
        return any(iou(a, b) < 0.3 for i, a in enumerate(covered) for b in covered[i + 1:])

    def _same_size(self, box: Box4, track_box: Box4, missed: int) -> bool:
        """Width and height within `max_growth` per analysis (compounded over missed ones).

        A side cut by the frame edge (a vehicle driving in or out) changes size legitimately:
        there only the uncut side is compared with the prediction (or the boxes must overlap well).
        """
        limit = self.max_growth ** (1 + missed)
        if iou(box, track_box) >= 0.45 and (_at_edge(box) or _at_edge(track_box)):
            return True
        for lo, hi in ((0, 2), (1, 3)):
            size, tsize = box[hi] - box[lo], track_box[hi] - track_box[lo]
            r = max(size, 1e-9) / max(tsize, 1e-9)
            if 1 / limit <= r <= limit:
                continue
            cut_lo = min(box[lo], track_box[lo]) <= 0.01
            cut_hi = max(box[hi], track_box[hi]) >= 0.99
            if cut_lo == cut_hi:
                return False  # not cut, or cut on both sides: a different object
            k = hi if cut_lo else lo  # the side the frame did not cut
            if abs(box[k] - track_box[k]) > 0.35 * tsize * limit:
                return False
        return True

    def _associate(self, boxes: Sequence[ObjectBox], tids: Sequence[int],
                   predicted: Mapping[int, Box4], slack: int = 0) -> list[tuple[int, int]]:
        """Greedy matching: best IoU with the prediction first, then nearest centre (in track diagonals).

        `slack` loosens the size gate by that many growth steps (the last-chance pass)."""
        pairs: list[tuple[int, float, int, int]] = []  # (pass, cost, box index, track id)
        for bi, ob in enumerate(boxes):
            bc = ((ob.box[0] + ob.box[2]) / 2, (ob.box[1] + ob.box[3]) / 2)
            for tid in tids:
                p = predicted[tid]
                if not self._same_size(ob.box, p, self.tracks[tid].missed + slack):
                    continue  # a much wider or taller box is another object, or two merged
                overlap = iou(ob.box, p)
                if overlap >= self.min_iou:
                    pairs.append((0, -overlap, bi, tid))
                    continue
                pc = ((p[0] + p[2]) / 2, (p[1] + p[3]) / 2)
                diag = max(((p[2] - p[0]) ** 2 + (p[3] - p[1]) ** 2) ** 0.5, 1e-6)
                dist = ((bc[0] - pc[0]) ** 2 + (bc[1] - pc[1]) ** 2) ** 0.5 / diag
                if dist <= self.max_jump * (1 + 0.5 * slack):
                    pairs.append((1, dist, bi, tid))
        pairs.sort()
        used_b: set[int] = set()
        used_t: set[int] = set()
        out = []
        for _, _, bi, tid in pairs:
            if bi in used_b or tid in used_t:
                continue
            used_b.add(bi)
            used_t.add(tid)
            out.append((bi, tid))
        return out

    def _observe(self, tr: ObjectTrack, ob: ObjectBox, time: datetime) -> None:
        """Alpha-beta filter on the centre, a running mean on the size: one odd box (two touching
        vehicles half merged, a box clipped by the frame edge) moves a track less than it would."""
        dt = (time - tr.seen_time).total_seconds()
        if dt > 1e-3:
            p = tr.predict(time, self.horizon_s)
            pc = ((p[0] + p[2]) / 2, (p[1] + p[3]) / 2)
            oc = ((ob.box[0] + ob.box[2]) / 2, (ob.box[1] + ob.box[3]) / 2)
            rx, ry = oc[0] - pc[0], oc[1] - pc[1]
            a, b = (self.alpha, self.beta) if tr.hits > 1 else (1.0, 1.0)
            if tr.hits > 1:
                tr.velocity = (tr.velocity[0] + b * rx / dt, tr.velocity[1] + b * ry / dt)
            else:  # the second sighting gives the first velocity
                tr.velocity = ((oc[0] - (tr.box[0] + tr.box[2]) / 2) / dt, (oc[1] - (tr.box[1] + tr.box[3]) / 2) / dt)
            cx, cy = pc[0] + a * rx, pc[1] + a * ry
            g = self.size_alpha if not (_at_edge(ob.box) or _at_edge(tr.box)) else self.alpha
            w = (1 - g) * (tr.box[2] - tr.box[0]) + g * (ob.box[2] - ob.box[0])
            h = (1 - g) * (tr.box[3] - tr.box[1]) + g * (ob.box[3] - ob.box[1])
            tr.box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        else:
            tr.box = ob.box
        tr.seen_time, tr.label, tr.score = time, ob.label, ob.score
        tr.hits += 1
        tr.missed = 0
        tr.observed = True
        tr.scores.append(ob.score)
        del tr.scores[:-50]

    def update(self, objects: Sequence[ObjectBox], time: datetime) -> list[ObjectTrack]:
        """Feed one analysis' boxes (one group); returns every live track, `observed` set on those seen now."""
        # clipped to the image like the detector's boxes, so a vehicle leaving the frame still overlaps its box
        predicted = {tid: _clip(tr.predict(time, self.horizon_s)) for tid, tr in self.tracks.items()}
        candidates = [o for o in objects if o.score >= self.keep_score and not self._merged(o.box, predicted)]
        high = [o for o in candidates if o.score >= self.min_score]
        low = [o for o in candidates if o.score < self.min_score]
        for tr in self.tracks.values():
            tr.observed = False
        # confirmed tracks pick first, so a new tentative track cannot steal a known vehicle's box
        order = sorted(self.tracks, key=lambda t: (not self.confirmed(self.tracks[t]), t))
        taken: set[int] = set()
        for bi, tid in self._associate(high, order, predicted):
            self._observe(self.tracks[tid], high[bi], time)
            taken.add(bi)
        free_t = [t for t in order if not self.tracks[t].observed]
        for bi, tid in self._associate(low, free_t, predicted):  # ByteTrack: weak boxes only continue tracks
            self._observe(self.tracks[tid], low[bi], time)
        # last chance for a known vehicle before a new track replaces it (and its history): a confirmed
        # track missed so far takes a nearby high-score box with looser size and distance gates
        lost = [t for t in order if not self.tracks[t].observed and self.confirmed(self.tracks[t])]
        rest = [bi for bi in range(len(high)) if bi not in taken]
        for k, tid in self._associate([high[bi] for bi in rest], lost, predicted, slack=1):
            self._observe(self.tracks[tid], high[rest[k]], time)
            taken.add(rest[k])
        for bi, ob in enumerate(high):
            if bi in taken:
                continue
            # a known object's second or odd box: vehicles drive in, they do not appear inside another;
            # a missed track coasts rather than being replaced by a new one (which would lose its history)
            if any(iou(ob.box, p) > 0.3 or _contained(ob.box, p) > 0.6 for p in predicted.values()) or any(
                    iou(ob.box, t.box) > 0.3 for t in self.tracks.values() if t.observed):
                continue
            tid = next(self._ids)
            self.tracks[tid] = ObjectTrack(tid, ob.box, ob.label, ob.score, time, time, scores=[ob.score])
        for tid in list(self.tracks):
            tr = self.tracks[tid]
            if tr.observed:
                continue
            tr.missed += 1
            unseen = (time - tr.seen_time).total_seconds()
            if (not self.confirmed(tr)) or tr.missed > self.max_missed or unseen > self.max_coast_s:
                del self.tracks[tid]
        return list(self.tracks.values())


def for_groups(objects: Iterable[ObjectBox], groups: Iterable[str], min_area: float = 0.0) -> list[ObjectBox]:
    """The objects of some groups, at least `min_area` of the image."""
    wanted = set(groups)
    return [o for o in objects if o.group in wanted and o.area >= min_area]


def box_px(box: Box4, width: int, height: int) -> tuple[int, int, int, int]:
    """A normalised box in pixels, clipped to the image, at least one pixel wide and high."""
    x0 = int(np.clip(np.floor(box[0] * width), 0, width - 1))
    y0 = int(np.clip(np.floor(box[1] * height), 0, height - 1))
    x1 = int(np.clip(np.ceil(box[2] * width), x0 + 1, width))
    y1 = int(np.clip(np.ceil(box[3] * height), y0 + 1, height))
    return x0, y0, x1, y1

