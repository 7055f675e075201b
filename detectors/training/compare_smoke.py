"""Ideas for the smoke head measured against the shipped one, on the same data, split and cached maps.

    python -m detectors.training.compare_smoke --datasets ../shared/datasets      (one JSON line at the end)

Each row is judged like the shipped head: 5-fold grouped cross-validation on the training
split (x2 seeds) picks the logit offset by train_heads' rule; the held-out split is then read
once, at that offset, for the report. Nothing here changes a shipped file.

- pooling: how the 7x7 map becomes the head's input (mean is shipped; mean+max, mean+std,
  GeM p=3, mean + the strongest 3x3 window);
- tiles: a still photo read whole and through five 60 % tiles (corners, centre), the score
  combined (max, mean with the best tile, ...): the still-photo analogue of the video path's
  candidate crops, for small plumes;
- vehicle gate: for each labelled smoke box of the web photos, the share of it that lies
  inside a vehicle the shipped COCO detector finds (score >= 0.5): how many real plumes a rule
  "a dark region inside a vehicle is the vehicle" would throw away.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detectors.backbone import Backbone, StackedBackbone
from detectors.card import sha256_file
from detectors.training import catalog
from detectors.training import train_heads as th
from detectors.training.catalog import Item
from detectors.training.features import TILES, FeatureCache, default_cache_dir

Pool = Callable[[np.ndarray], np.ndarray]


def _window_max(fmap: np.ndarray, k: int = 3) -> np.ndarray:
    h, w, _ = fmap.shape
    means = [fmap[y:y + k, x:x + k].mean(axis=(0, 1)) for y in range(h - k + 1) for x in range(w - k + 1)]
    out: np.ndarray = np.max(means, axis=0)
    return out


POOLINGS: dict[str, Pool] = {
    "mean (shipped)": lambda f: f.mean(axis=(0, 1)),
    "mean+max": lambda f: np.concatenate([f.mean(axis=(0, 1)), f.max(axis=(0, 1))]),
    "mean+std": lambda f: np.concatenate([f.mean(axis=(0, 1)), f.std(axis=(0, 1))]),
    "GeM p=3": lambda f: np.cbrt((np.maximum(f, 0) ** 3).mean(axis=(0, 1)) + 1e-6),
    "mean+best 3x3 window": lambda f: np.concatenate([f.mean(axis=(0, 1)), _window_max(f)]),
}


@contextlib.contextmanager
def pooled_by(fn: Pool) -> Iterator[None]:
    """train_heads pools every map with `fn` inside the block (its code, its rows, its weights)."""
    saved = th.pool
    th.pool = lambda fmap, pooling: fn(fmap)
    try:
        yield
    finally:
        th.pool = saved


def _f1(pred: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    tp, fp, fn = int((pred & truth).sum()), int((pred & ~truth).sum()), int((~pred & truth).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": round(p, 3), "recall": round(r, 3), "f1": round(2 * p * r / (p + r), 3) if p + r else 0.0,
            "missed": fn, "false_alarms": fp}


def compare_pooling(task: th.Task, train: Sequence[Item], held: Sequence[Item],
                    maps: dict[str, dict[str, np.ndarray]], log: th.Log) -> dict[str, Any]:
    pos = task.labels.index(task.positive)
    out = {}
    for name, fn in POOLINGS.items():
        with pooled_by(fn):
            scored, logp = th.cross_validate(task, train, maps, [], {})
            offset, cv = th.choose_offset(task, scored, logp, lambda m: None)
            head = th.fit_head(task, th.build_rows(task, train, maps, [], {}))
        judged = [it for it in held if it.key in maps]
        z = head.logits(np.stack([fn(maps[it.key]["full"]) for it in judged]))
        z[:, pos] += offset
        truth = np.array([it.target == task.positive for it in judged])
        out[name] = {"cv_f1": cv["f1"], "offset": offset, "heldout": _f1(z.argmax(1) == pos, truth)}
        log(f"  pooling {name}: CV F1 {cv['f1']}, held-out {out[name]['heldout']}")
    return out


def compare_tiles(task: th.Task, train: Sequence[Item], held: Sequence[Item], maps: dict[str, dict[str, np.ndarray]],
                  tile_maps: dict[str, dict[str, np.ndarray]], log: th.Log) -> dict[str, Any]:
    pos = task.labels.index(task.positive)
    usable = [it for it in train if it.key in maps and it.key in tile_maps]

    def scores(head: Any, items: Sequence[Item]) -> tuple[np.ndarray, np.ndarray]:
        full = head.probs(np.stack([th.pool(maps[it.key]["full"], "mean") for it in items]))[:, pos]
        tiles = np.stack([head.probs(np.stack([th.pool(tile_maps[it.key][v], "mean") for it in items]))[:, pos]
                          for v in TILES], axis=1)
        return full, tiles

    got: dict[str, list[tuple[float, np.ndarray]]] = defaultdict(list)
    for seed in (0, 1):
        fold = catalog.folds(usable, th.FOLDS, th.SEED + seed)
        for f in range(th.FOLDS):
            head = th.fit_head(task, th.build_rows(task, [it for it, k in zip(usable, fold, strict=True) if k != f],
                                                   maps, [], {}))
            test = [it for it, k in zip(usable, fold, strict=True) if k == f]
            for it, a, b in zip(test, *scores(head, test), strict=True):
                got[it.key].append((float(a), b))
    truth = np.array([it.target == task.positive for it in usable])
    full = np.array([np.mean([a for a, _ in got[it.key]]) for it in usable])
    tiles = np.stack([np.mean([b for _, b in got[it.key]], axis=0) for it in usable])
    rules: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
        "whole image (shipped)": lambda p, t: p,
        "max of whole and tiles": lambda p, t: np.maximum(p, t.max(1)),
        "mean of whole and best tile": lambda p, t: (p + t.max(1)) / 2,
        "mean of whole and all tiles": lambda p, t: (p + t.sum(1)) / (1 + t.shape[1]),
        "max of whole and 2nd-best tile": lambda p, t: np.maximum(p, np.sort(t, 1)[:, -2]),
    }
    head = th.fit_head(task, th.build_rows(task, train, maps, [], {}))
    judged = [it for it in held if it.key in maps and it.key in tile_maps]
    h_truth = np.array([it.target == task.positive for it in judged])
    h_full, h_tiles = scores(head, judged)
    out = {}
    for name, rule in rules.items():
        cv = {thr: _f1(rule(full, tiles) >= thr, truth) for thr in (0.5, 0.6, 0.7)}
        thr = max(cv, key=lambda k: (cv[k]["f1"], -k))  # the threshold CV likes best
        out[name] = {"cv": cv[thr], "threshold": thr, "heldout": _f1(rule(h_full, h_tiles) >= thr, h_truth)}
        log(f"  tiles, {name}: CV {cv[thr]} at {thr}; held-out {out[name]['heldout']}")
    return out


def vehicle_gate(root: Path, log: th.Log) -> dict[str, Any]:
    """What taking vehicles (and people) out of a smoke candidate would cost on real labelled plumes.

    The gate drops a plume lying mostly inside a vehicle box (COCO detector at 0.5). The mask
    keeps what of a candidate lies outside person and vehicle boxes (at 0.35) and drops it when
    that is under a share of it; `masked_dark_vehicle` counts the candidate as the plume plus
    the boxes it touches (a dark vehicle body joins the plume in the dark-region mask).
    """
    from detectors.objects import box_px, load_objects

    boxes: dict[str, list[tuple[int, int, int, int]]] = defaultdict(list)
    with open(root / "smoke" / "boxes_voc.csv", newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            boxes[r["file"]].append((int(r["xmin"]), int(r["ymin"]), int(r["xmax"]), int(r["ymax"])))
    det = load_objects()
    shares, outside, outside_dark = [], [], []
    for name, plumes in sorted(boxes.items()):
        img = cv2.imread(str(root / "smoke" / name), cv2.IMREAD_COLOR)
        if img is None:
            continue
        h, w = img.shape[:2]
        inside = np.zeros((h, w), bool)
        found = [ob for ob in det.detect(img, min_score=0.35) if ob.group in ("vehicle", "person")]
        for ob in found:
            if ob.group == "vehicle" and ob.score >= 0.5:
                x0, y0, x1, y1 = box_px(ob.box, w, h)
                inside[y0:y1, x0:x1] = True
        shares += [float(inside[y0:y1, x0:x1].mean()) for x0, y0, x1, y1 in plumes]
        masked = np.zeros((h, w), bool)
        for ob in found:
            x0, y0, x1, y1 = box_px(ob.box, w, h)
            masked[y0:y1, x0:x1] = True
        for x0, y0, x1, y1 in plumes:
            plume = np.zeros((h, w), bool)
            plume[y0:y1, x0:x1] = True
            kept = int((plume & ~masked).sum())
            joined = plume.copy()
            for ob in found:
                a0, b0, a1, b1 = box_px(ob.box, w, h)
                if plume[b0:b1, a0:a1].any():
                    joined[b0:b1, a0:a1] = True
            outside.append(kept / max(1, int(plume.sum())))
            outside_dark.append(kept / max(1, int(joined.sum())))
    v, o, d = np.array(shares), np.array(outside), np.array(outside_dark)
    out = {"plumes": len(v), **{f"inside_{c}": int((v >= c).sum()) for c in (0.8, 0.9, 0.95)},
           **{f"masked_below_{c}": int((o < c).sum()) for c in (0.2, 0.35, 0.5)},
           **{f"masked_dark_vehicle_below_{c}": int((d < c).sum()) for c in (0.2, 0.35, 0.5)}}
    log(f"  vehicle gate: of {len(v)} labelled plumes, {out['inside_0.8']} lie >= 80 % inside a detected vehicle, "
        f"{out['inside_0.9']} >= 90 %, {out['inside_0.95']} >= 95 %")
    log(f"  people and vehicles masked out: {out['masked_below_0.35']} plumes keep < 35 % of themselves "
        f"({out['masked_dark_vehicle_below_0.35']} when a dark vehicle joins the plume's region)")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m detectors.training.compare_smoke", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--models", type=Path, default=Path("detectors/models"), help="where the backbones are")
    parser.add_argument("--cache", type=Path, default=default_cache_dir())
    args = parser.parse_args(argv)
    if not (args.datasets / "smoke" / "labels.csv").is_file():
        print(f"datasets folder {args.datasets} not found (or empty)", file=sys.stderr)
        return 2
    cv2.setNumThreads(1)
    log: th.Log = lambda m: print(m, flush=True)  # noqa: E731
    task = th.TASKS["smoke_cls"]
    first = Backbone(args.models / th.BACKBONE, sha256_file(args.models / th.BACKBONE), threads=1)
    stack = StackedBackbone([first, *(th._extra_backbone(args.models / n) for n in task.extra_backbones)])
    cache = FeatureCache(stack, args.cache)
    items = task.items(args.datasets)
    train, held = catalog.split(items, th.HELDOUT, th.SEED)
    maps = th.item_maps(cache, args.datasets, items, task.views, catalog.read_boxes(args.datasets), log)
    tile_maps = th.item_maps(cache, args.datasets, items, list(TILES), {}, log)
    log(f"smoke_cls variants: train {len(train)}, held-out {len(held)}")
    result = {"bench": "compare_smoke", "pooling": compare_pooling(task, train, held, maps, log),
              "tiles": compare_tiles(task, train, held, maps, tile_maps, log),
              "vehicle_gate": vehicle_gate(args.datasets, log)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
