"""Which real images train which head, under which model label and reporting family.

Images are read in place from ../shared/datasets (never copied). Every folder that fits a
task is used: a folder's own labels where they mean the task's classes, and, for whole-scene
ground cover, our eye labels of photos in other folders (`scene_labels.csv`, file names and
labels only). Each item carries a *family* (vehicle exhaust web photos, CCTV crops, aerial
tiles, ground crops, whole scenes, ...) so the card reports held-out figures per family, not
only pooled.

The held-out split is grouped: crops of one frame, frames of one clip, the same source file
listed in two folders, and near-duplicate pictures (a difference hash within a few bits)
fall on the same side, so no near-copy of a held-out image is trained on.
"""

from __future__ import annotations

import csv
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
SCENE_LABELS = HERE / "scene_labels.csv"


@dataclass(frozen=True)
class Item:
    dataset: str  # folder under datasets/
    file: str  # path inside that folder
    label: str  # the label as written in the source (folder labels.csv or scene_labels.csv)
    target: str  # model label
    family: str  # reporting family
    source: str = ""  # source_path from labels.csv
    group: str = ""  # split group, set by `assign_groups`

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.file}"


Mapping_ = dict[str, tuple[str, str]]  # dataset label -> (model label, family)

SMOKE_LABELS = ("no_smoke", "smoke")
SOIL_LABELS = ("bare_soil", "covered", "hard")

SMOKE_TASK: dict[str, Mapping_] = {
    "smoke": {
        "black_smoke_vehicle": ("smoke", "vehicle exhaust, web photos"),
        "black_smoke_vehicle_cctv_crop": ("smoke", "vehicle exhaust, CCTV crops"),
        "black_smoke_other": ("smoke", "industrial / other black smoke"),
        "no_smoke_vehicle_cctv_crop": ("no_smoke", "vehicles without smoke, CCTV crops"),
        "no_smoke_road_background": ("no_smoke", "road, CCTV crops"),
        "no_smoke_machinery": ("no_smoke", "machinery"),
    },
    "smoke_extra": {
        "black_smoke": ("smoke", "industrial / other black smoke"),
        "fog_mist": ("no_smoke", "fog, mist, haze"),
        "no_smoke": ("no_smoke", "clean roads and sky"),
    },
    "smoke_negatives": {
        "fog": ("no_smoke", "fog, mist, haze"),
        "water_mist": ("no_smoke", "fog, mist, haze"),
        "dust": ("no_smoke", "site dust"),
        "sky": ("no_smoke", "clean roads and sky"),
    },
    "site_soil": {k: ("no_smoke", "site ground") for k in ("bare_soil", "hard_surface", "vegetation")},
    "exit_trucks": {"muddy_road": ("no_smoke", "site ground")},
    "site_vehicles": {k: ("no_smoke", "site trucks") for k in (
        "covered_load", "partial_cover", "uncovered_load", "empty_load", "muck_truck", "truck", "other")},
}

SOIL_TASK: dict[str, Mapping_] = {
    "soil": {
        "bare_land": ("bare_soil", "aerial tiles"),
        "meadow_green_cover": ("covered", "aerial tiles"),
        "parking_paved": ("hard", "aerial tiles"),
        "industrial_built": ("hard", "aerial tiles"),
    },
    "site_soil": {
        "bare_soil": ("bare_soil", "ground-level crops"),
        "hard_surface": ("hard", "ground-level crops"),
        "vegetation": ("covered", "ground-level crops"),
    },
    "exit_trucks": {"muddy_road": ("bare_soil", "ground-level crops")},
}
SCENE_MAP = {"bare_soil": "bare_soil", "hard_surface": "hard", "vegetation": "covered", "covered_net": "covered"}

# Folders whose labels mean something else (ground cover, truck loads): their images are smoke
# negatives, recorded under the model's own label so no foreign name enters the card's label map.
SMOKE_FOREIGN = ("site_soil", "exit_trucks", "site_vehicles")

# Every name a bureau's labels.csv may use, in model terms (eval-detector maps through the card).
SMOKE_LABEL_MAP = {k: v[0] for ds, m in SMOKE_TASK.items() if ds not in SMOKE_FOREIGN for k, v in m.items()} | {
    "fog_mist": "no_smoke", "steam": "no_smoke", "haze": "no_smoke", "mist": "no_smoke", "clean": "no_smoke",
    "black_smoke": "smoke", "vehicle_smoke": "smoke", "industrial_smoke": "smoke"}
SOIL_LABEL_MAP = {k: v[0] for m in SOIL_TASK.values() for k, v in m.items()} | SCENE_MAP | {
    "bare": "bare_soil", "soil": "bare_soil", "bare_earth": "bare_soil",
    "covered_other": "covered", "green_net": "covered", "dust_net": "covered", "net": "covered", "tarp": "covered",
    "grass": "covered", "paved": "hard", "concrete": "hard", "asphalt": "hard"}


def read_folder(root: Path, dataset: str, mapping: Mapping_) -> list[Item]:
    path = root / dataset / "labels.csv"
    if not path.is_file():
        return []
    out = []
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            label = (row.get("label") or "").strip()
            if label in mapping:
                target, family = mapping[label]
                out.append(Item(dataset, row["file"].strip(), label, target, family, (row.get("source_path") or "")))
    return out


def read_scene_labels(root: Path, path: Path = SCENE_LABELS) -> list[Item]:
    """Our eye labels of whole ground-level scenes found in other folders (soil task)."""
    out = []
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if (root / row["dataset"] / row["file"]).is_file():
                family = "whole scenes, eye-labelled" + (" (CCTV road crops)" if "CCTV" in row["what"] else "")
                out.append(Item(row["dataset"], row["file"], row["label"], SCENE_MAP[row["label"]], family))
    return out


def smoke_items(root: Path) -> list[Item]:
    items = [replace(it, label=it.target) if ds in SMOKE_FOREIGN else it
             for ds, m in SMOKE_TASK.items() for it in read_folder(root, ds, m)]
    return assign_groups(root, items)


def soil_items(root: Path) -> list[Item]:
    items = [it for ds, m in SOIL_TASK.items() for it in read_folder(root, ds, m)]
    seen = {it.key for it in items}
    items += [it for it in read_scene_labels(root) if it.key not in seen]
    return assign_groups(root, items)


# --- grouping --------------------------------------------------------------------------------


def dhash(path: Path, size: int = 8) -> int | None:
    """Difference hash: near-identical pictures (re-encodes, resizes, small crops) differ in few bits."""
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        return None
    small = cv2.resize(img, (size + 1, size), interpolation=cv2.INTER_AREA)
    bits = (small[:, 1:] > small[:, :-1]).reshape(-1)
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def _source_key(item: Item) -> str:
    name = Path(item.file).stem
    m = re.match(r"neymarsabin_(\d+_video)", name)
    if m:
        return f"clip:{m.group(1)}"
    m = re.match(r"neymarsabin_(img\d+)", name)
    if m:
        return f"frame:{m.group(1)}"
    if item.source:
        src = re.sub(r"@[0-9a-f]{40}", "", item.source.split("#")[0])
        return f"src:{src}"
    return f"file:{item.key}"


def assign_groups(root: Path, items: list[Item], max_bits: int = 5) -> list[Item]:
    """Union of same clip / frame / source file and near-duplicate pictures (dHash ≤ max_bits apart)."""
    parent = list(range(len(items)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    first: dict[str, int] = {}
    for i, it in enumerate(items):
        for key in (_source_key(it), f"file:{it.key}"):
            if key in first:
                union(i, first[key])
            else:
                first[key] = i
    hashes = [dhash(root / it.dataset / it.file) for it in items]
    valid = [(i, h) for i, h in enumerate(hashes) if h is not None]
    if valid:
        idx = np.array([i for i, _ in valid])
        bits = np.array([[(h >> b) & 1 for b in range(64)] for _, h in valid], np.uint8)
        for a in range(len(valid)):
            near = np.nonzero((bits[a + 1:] != bits[a]).sum(1) <= max_bits)[0]
            for b in near:
                union(int(idx[a]), int(idx[a + 1 + b]))
    return [replace(it, group=f"g{find(i)}") for i, it in enumerate(items)]


def split(items: list[Item], heldout_fraction: float, seed: int,
          stratum: Callable[[Item], str] = lambda it: f"{it.family}|{it.target}") -> tuple[list[Item], list[Item]]:
    """Grouped split, stratified by family and label: groups in seeded order go to held-out
    while every stratum they touch still fits under its quota (rounded, at least one for a
    stratum of three or more items)."""
    groups: dict[str, list[Item]] = defaultdict(list)
    for it in items:
        groups[it.group].append(it)
    totals = Counter(stratum(it) for it in items)
    quota = {k: max(1 if v >= 3 else 0, round(v * heldout_fraction)) for k, v in totals.items()}
    taken: Counter[str] = Counter()
    order = sorted(groups)
    np.random.default_rng(seed).shuffle(order)
    held: set[str] = set()
    for g in order:
        counts = Counter(stratum(it) for it in groups[g])
        if all(taken[k] + n <= quota[k] for k, n in counts.items()):
            held.add(g)
            taken.update(counts)
    return [it for it in items if it.group not in held], [it for it in items if it.group in held]


def folds(items: Iterable[Item], k: int, seed: int) -> list[int]:
    """Grouped fold index per item (for cross-validation on the training split)."""
    items = list(items)
    order = sorted({it.group for it in items})
    np.random.default_rng(seed).shuffle(order)
    fold_of = {g: i % k for i, g in enumerate(order)}
    return [fold_of[it.group] for it in items]


def write_heldout(path: Path, heldout: list[Item]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label", "target", "family"])
        for it in sorted(heldout, key=lambda i: i.key):
            w.writerow([it.key, it.label, it.target, it.family])


def read_boxes(root: Path) -> dict[str, list[tuple[int, int, int, int]]]:
    """Smoke boxes (pixels) of the web photos, keyed by dataset/file."""
    path = root / "smoke" / "boxes_voc.csv"
    boxes: dict[str, list[tuple[int, int, int, int]]] = defaultdict(list)
    if path.is_file():
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                boxes[f"smoke/{row['file']}"].append(
                    (int(row["xmin"]), int(row["ymin"]), int(row["xmax"]), int(row["ymax"])))
    return boxes
