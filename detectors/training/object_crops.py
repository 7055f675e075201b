"""Vehicles without smoke, cut from the real photos: hard negatives for the smoke head.

On an exit camera every car that drives past is a dark moving region, so the smoke head is
asked about crops that hold a vehicle and nothing else. Its training photos rarely show one
alone: the positives are exhaust photos, with a vehicle in nearly every one, and the head
learned "vehicle, so smoke" (before these crops it called 13 of 29 held-out vehicle crops
smoke, 8 of 8 of those cut from exhaust photos). The shipped COCO detector finds them; a crop
is kept when it is big enough and, in a photo with labelled smoke boxes, clear of every one of
them (both boxes grown first). A photo without smoke gives all of its own. Only real pixels;
no synthetic data.

People can be cut the same way (`PEOPLE`), but are not: as negatives they cost recall on
plume-like dark blobs (detectors/training/README.md, *Vehicles cut from the photos*).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detectors.objects import ObjectDetector, box_px
from detectors.training.catalog import Item
from detectors.training.features import read_image

# Groups cut, each with its smallest share of the photo (smaller ones give crops of a few dozen pixels).
VEHICLES = {"vehicle": 0.03}
PEOPLE = {"person": 0.01}
MIN_SCORE = 0.5
GROW = 0.1  # the crop's margin around the vehicle's box (the runtime's candidate crops have context too)
SMOKE_GROW = 0.15  # a labelled smoke box is grown by this before "clear of it" is judged
FAMILY = {"vehicle": "vehicles cut from photos, no smoke", "person": "people cut from photos, no smoke"}

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class ObjectCrop:
    key: str  # feature-cache key
    base: Item  # the photo it is cut from (its split group decides where the crop goes)
    box: Box  # pixels of that photo
    group: str  # vehicle, person

    @property
    def family(self) -> str:
        return FAMILY[self.group]


def _grow(box: Sequence[float], share: float, w: int, h: int) -> Box:
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * share, (y1 - y0) * share
    return (max(0, round(x0 - dx)), max(0, round(y0 - dy)), min(w, round(x1 + dx)), min(h, round(y1 + dy)))


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def find(root: Path, items: Sequence[Item], positive: str, smoke_boxes: dict[str, list[Box]],
         detector: ObjectDetector, groups: Mapping[str, float] = VEHICLES) -> list[ObjectCrop]:
    """The crops of these photos' objects of `groups`: from a positive only when its smoke is boxed
    (else we cannot tell a vehicle from its plume), from a negative every one."""
    out = []
    for it in items:
        boxes = smoke_boxes.get(it.key, [])
        if it.target == positive and not boxes:
            continue
        img = read_image(root / it.dataset / it.file)
        if img is None:
            continue
        h, w = img.shape[:2]
        smoke = [_grow(b, SMOKE_GROW, w, h) for b in boxes]
        for k, found in enumerate(detector.detect(img, min_score=MIN_SCORE)):
            if found.group not in groups or found.area < groups[found.group]:
                continue
            box = _grow(box_px(found.box, w, h), GROW, w, h)
            if box[2] - box[0] < 16 or box[3] - box[1] < 16 or any(_overlap(box, s) for s in smoke):
                continue
            key = f"vehicle-crop:v1:{it.key}:{k}" if found.group == "vehicle" else f"object-crop:v1:{it.key}:{k}"
            out.append(ObjectCrop(key, it, box, found.group))
    return out


def image(root: Path, crop: ObjectCrop) -> np.ndarray | None:
    img = read_image(root / crop.base.dataset / crop.base.file)
    if img is None:
        return None
    x0, y0, x1, y1 = crop.box
    return img[y0:y1, x0:x1]
