"""Real training data from ../shared/datasets (read in place, never copied) and its held-out split.

The split is deterministic (seeded), made by source group (all crops of one source frame, or
all frames of one video clip, fall on the same side, so near-duplicates cannot leak), and
stratified by model label. Held-out images are used for nothing but the card's metrics.
"""

from __future__ import annotations

import csv
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Item:
    dataset: str  # folder name under datasets/
    file: str  # path inside that folder
    label: str  # dataset label
    target: str  # model label
    group: str  # source group for the split

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.file}"


def source_group(dataset: str, file: str, source: str) -> str:
    """Crops cut from one frame, and frames from one clip, share a group."""
    name = Path(file).stem
    m = re.match(r"neymarsabin_(\d+_video)", name)
    if m:
        return f"{dataset}:clip:{m.group(1)}"
    m = re.match(r"neymarsabin_(img\d+)", name)
    if m:
        return f"{dataset}:frame:{m.group(1)}"
    return f"{dataset}:{source or file}"


def read_items(root: Path, dataset: str, label_map: dict[str, str]) -> list[Item]:
    items = []
    with (root / dataset / "labels.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            label = row["label"].strip()
            if label not in label_map:
                continue
            file = row["file"].strip()
            group = source_group(dataset, file, row.get("source_path", ""))
            items.append(Item(dataset, file, label, label_map[label], group))
    return items


def split(items: list[Item], heldout_fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """Greedy grouped, stratified split: groups in seeded order go to held-out while every
    model label they contain still fits under its held-out quota."""
    groups: dict[str, list[Item]] = defaultdict(list)
    for it in items:
        groups[it.group].append(it)
    totals = Counter(it.target for it in items)
    quota = {k: round(v * heldout_fraction) for k, v in totals.items()}
    taken: Counter[str] = Counter()
    order = sorted(groups)
    np.random.default_rng(seed).shuffle(order)
    held: set[str] = set()
    for g in order:
        counts = Counter(it.target for it in groups[g])
        if all(taken[k] + n <= quota[k] for k, n in counts.items()):
            held.add(g)
            taken.update(counts)
    train = [it for it in items if it.group not in held]
    heldout = [it for it in items if it.group in held]
    return train, heldout


def write_heldout(path: Path, heldout: list[Item]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label", "target"])
        for it in sorted(heldout, key=lambda i: i.key):
            w.writerow([it.key, it.label, it.target])


def read_boxes(root: Path) -> dict[str, list[tuple[int, int, int, int]]]:
    """Smoke boxes (pixels) for the web images, keyed by file inside smoke/."""
    path = root / "smoke" / "boxes_voc.csv"
    boxes: dict[str, list[tuple[int, int, int, int]]] = defaultdict(list)
    if path.is_file():
        with path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                boxes[row["file"]].append((int(row["xmin"]), int(row["ymin"]), int(row["xmax"]), int(row["ymax"])))
    return boxes
